// Command sink is the benchmark's plain Go baseline: a standard-library
// HTTPS server that writes each multipart upload's file part to disk and
// answers 201. No auth, hashing, validation or indexing: what any Go
// upload server pays before doing its job.
package main

import (
	"crypto/tls"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	dir := flag.String("dir", os.TempDir(), "where to write bodies")
	cert := flag.String("cert", "", "certificate")
	key := flag.String("key", "", "key")
	flag.Parse()
	http.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		mr, err := r.MultipartReader()
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			if p.FileName() == "" {
				io.Copy(io.Discard, p)
				continue
			}
			f, err := os.CreateTemp(*dir, "sink-*")
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			_, err = io.Copy(f, p)
			f.Close()
			os.Remove(f.Name())
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
		}
		w.WriteHeader(201)
	})
	srv := &http.Server{Addr: *addr, TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
	log.Fatal(srv.ListenAndServeTLS(filepath.Clean(*cert), filepath.Clean(*key)))
}
