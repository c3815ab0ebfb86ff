// Command loadgen drives the upload benchmark: it POSTs valid, distinct
// .conda packages as multipart forms (token field, then artifact), the
// way CI clients do, with a Content-Length, and prints one JSON line of
// figures per run.
//
// Packages are generated while they are sent: the payload member is a
// random 4 MiB chunk repeated (stored, so it does not compress away) and
// only the small info- member and the names differ per request, so a
// 1 GiB upload costs no disk and little CPU on the client.
package main

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"log"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/config"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
)

const chunkSize = 4 << 20

type gen struct {
	size   int64
	chunk  []byte
	crc    uint32
	subdir string
	prefix string
}

// payloadCRC is the CRC-32 of size bytes of the repeated chunk.
func (g *gen) payloadCRC() uint32 {
	h := crc32.NewIEEE()
	for left := g.size; left > 0; left -= chunkSize {
		h.Write(g.chunk[:min(chunkSize, left)])
	}
	return h.Sum32()
}

// writePackage writes package number i.
func (g *gen) writePackage(w io.Writer, i int) error {
	spec := pkgtest.Simple(g.prefix, "1.0", fmt.Sprintf("%08d", i), g.subdir)
	entries := pkgtest.CondaEntries(pkgtest.Exit{}, spec)
	zw := zip.NewWriter(w)
	if err := writeEntry(zw, entries[0].Name, entries[0].Data); err != nil {
		return err
	}
	fw, err := zw.CreateRaw(&zip.FileHeader{Name: entries[1].Name, Method: zip.Store, CRC32: g.crc,
		CompressedSize64: uint64(g.size), UncompressedSize64: uint64(g.size)})
	if err != nil {
		return err
	}
	for left := g.size; left > 0; left -= chunkSize {
		if _, err := fw.Write(g.chunk[:min(chunkSize, left)]); err != nil {
			return err
		}
	}
	if err := writeEntry(zw, entries[2].Name, entries[2].Data); err != nil {
		return err
	}
	return zw.Close()
}

func writeEntry(zw *zip.Writer, name string, data []byte) error {
	fw, err := zw.CreateRaw(&zip.FileHeader{Name: name, Method: zip.Store, CRC32: crc32.ChecksumIEEE(data),
		CompressedSize64: uint64(len(data)), UncompressedSize64: uint64(len(data))})
	if err != nil {
		return err
	}
	_, err = fw.Write(data)
	return err
}

// body writes the whole multipart body of request i.
func (g *gen) body(w io.Writer, boundary, token string, i int) error {
	mw := multipart.NewWriter(w)
	mw.SetBoundary(boundary)
	mw.WriteField("token", token)
	fw, err := mw.CreateFormFile("artifact", fmt.Sprintf("%s-1.0-%08d.conda", g.prefix, i))
	if err != nil {
		return err
	}
	if err := g.writePackage(fw, i); err != nil {
		return err
	}
	return mw.Close()
}

type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// Result is one run's figures.
type Result struct {
	Target      string  `json:"target"`
	Size        int64   `json:"size"`
	Concurrency int     `json:"concurrency"`
	Requests    int     `json:"requests"`
	OK          int     `json:"ok"`
	Errors      int     `json:"errors"`
	Seconds     float64 `json:"seconds"`
	GoodputMBs  float64 `json:"goodput_mb_s"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	FirstError  string  `json:"first_error,omitempty"`
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("loadgen: ")
	url := flag.String("url", "", "upload URL")
	target := flag.String("target", "", "name of the target, for the output")
	conc := flag.Int("c", 1, "concurrent clients")
	n := flag.Int("n", 1, "requests in all")
	size := flag.String("size", "1MiB", "payload size per package")
	token := flag.String("token", "", "upload token")
	subdir := flag.String("subdir", "linux-64", "subdir of the packages")
	prefix := flag.String("prefix", "bench", "package name (distinct per run)")
	first := flag.Int("first", 0, "number of the first package (distinct per run)")
	h2 := flag.Bool("http2", false, "upload over HTTP/2 instead of HTTP/1.1")
	expect := flag.String("expect", "", "after the run, write the sha256 of each package stored to this file, in sha256sum's format, to check the stored files against")
	flag.Parse()
	sz, err := config.ParseByteSize(*size)
	if err != nil {
		log.Fatal(err)
	}
	g := &gen{size: int64(sz), chunk: make([]byte, chunkSize), subdir: *subdir, prefix: *prefix}
	rand.NewChaCha8([32]byte{7}).Read(g.chunk)
	g.crc = g.payloadCRC()
	const boundary = "loadgenboundary0123456789"
	// The length of a body, found by writing it to a counter: cheap, the
	// payload is the same chunk again and again.
	bodyLen := func(i int) int64 {
		var c counter
		if err := g.body(&c, boundary, *token, i); err != nil {
			log.Fatal(err)
		}
		return c.n
	}
	var total atomic.Int64
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true},
		MaxIdleConnsPerHost: *conc,
		WriteBufferSize:     256 << 10,
		ForceAttemptHTTP2:   *h2,
	}}
	var next atomic.Int64
	next.Store(int64(*first))
	last := int64(*first + *n)
	var mu sync.Mutex
	var lat []time.Duration
	var stored []int
	res := Result{Target: *target, Size: int64(sz), Concurrency: *conc, Requests: *n}
	start := time.Now()
	var wg sync.WaitGroup
	for range *conc {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= last {
					return
				}
				pr, pw := io.Pipe()
				go func() { pw.CloseWithError(g.body(pw, boundary, *token, int(i))) }()
				req, _ := http.NewRequest(http.MethodPost, *url, pr)
				length := bodyLen(int(i))
				req.ContentLength = length
				req.Header.Set("Content-Type", "multipart/form-data; boundary="+boundary)
				t0 := time.Now()
				resp, err := client.Do(req)
				d := time.Since(t0)
				var msg string
				ok := false
				if err != nil {
					msg = err.Error()
				} else {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					ok = resp.StatusCode == 201
					if ok {
						total.Add(length)
					}
					if !ok {
						msg = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
					}
				}
				pr.Close()
				mu.Lock()
				lat = append(lat, d)
				if ok {
					res.OK++
					stored = append(stored, int(i))
				} else {
					res.Errors++
					if res.FirstError == "" {
						res.FirstError = msg
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.GoodputMBs = float64(total.Load()) / 1e6 / res.Seconds
	slices.Sort(lat)
	if len(lat) > 0 {
		res.P50ms = float64(lat[len(lat)/2].Microseconds()) / 1000
		res.P99ms = float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds()) / 1000
	}
	if *expect != "" {
		// After the timed part: the packages are regenerated, so the
		// client's CPU does not count against the run.
		if err := writeSums(*expect, g, stored); err != nil {
			log.Fatal(err)
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

// writeSums writes "sha256  filename" for each package in stored.
func writeSums(path string, g *gen, stored []int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	for _, i := range stored {
		h := sha256.New()
		if err := g.writePackage(h, i); err != nil {
			return err
		}
		fmt.Fprintf(f, "%x  %s-1.0-%08d.conda\n", h.Sum(nil), g.prefix, i)
	}
	return f.Close()
}
