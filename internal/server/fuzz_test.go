package server_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/index"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// FuzzUpload feeds arbitrary request bodies to the upload handler under a
// fixed multipart boundary. Whatever the body, the handler must answer
// with a known status, leave no temp file, and store a package only when
// it says 201 or 200.
func FuzzUpload(f *testing.F) {
	testneed.Tool(f, "bzip2", "bzip2")
	const boundary = "fuzzboundary"
	s := pkgtest.Simple("fz", "1.0", "0", "noarch")
	conda, tarbz2 := pkgtest.Conda(f, s), pkgtest.TarBz2(f, s)
	seed := func(parts ...part) {
		var buf bytes.Buffer
		for _, p := range parts {
			buf.WriteString("--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + p.name + "\"")
			if p.filename != "" {
				buf.WriteString("; filename=\"" + p.filename + "\"")
			}
			buf.WriteString("\r\n\r\n")
			buf.Write(p.data)
			buf.WriteString("\r\n")
		}
		buf.WriteString("--" + boundary + "--\r\n")
		f.Add(buf.Bytes())
	}
	tok := part{name: "token", data: []byte(token)}
	seed(tok, part{name: "artifact", filename: "fz-1.0-0.conda", data: conda})
	seed(tok, part{name: "artifact", filename: "fz-1.0-0.tar.bz2", data: tarbz2})
	seed(tok, part{name: "arch", data: []byte("linux-64")}, part{name: "artifact", filename: "fz-1.0-0.conda", data: conda[:len(conda)/2]})
	seed(part{name: "artifact", filename: "fz-1.0-0.conda", data: conda}, tok)
	f.Add([]byte("--" + boundary + "\r\n"))

	root := f.TempDir()
	st, err := store.Open(root)
	if err != nil {
		f.Fatal(err)
	}
	h, _ := auth.ParseHash(auth.Hash(auth.DefaultSalt, token))
	a, _ := auth.New(auth.DefaultSalt, []auth.Token{{Name: "fuzz", Hash: h}})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rd := repodata.New(root, condapkg.DefaultLimits(), log)
	ix := index.New(rd, log, index.WithTimeout(time.Minute))
	f.Cleanup(ix.Close)
	lim := condapkg.DefaultLimits()
	lim.MaxScanBytes = 4 << 20
	srv := server.New(server.Options{Store: st, Auth: a, Indexer: ix, WaitIndex: true, Log: log,
		Limits: server.Limits{Package: lim, MaxUploadSize: 8 << 20, MaxConcurrent: 4}})

	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		req.Header.Set("Content-Type", "multipart/form-data; boundary="+boundary)
		rec := httptest.NewRecorder()
		before := countPackages(root)
		srv.ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 201, 400, 401, 409, 413, 500:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if des, _ := os.ReadDir(filepath.Join(root, store.IncomingDir)); len(des) != 0 {
			t.Fatalf("temp files left after %d", rec.Code)
		}
		if after := countPackages(root); after != before && rec.Code != 201 {
			t.Fatalf("package count %d -> %d with status %d", before, after, rec.Code)
		}
	})
}

func countPackages(root string) int {
	n := 0
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (filepath.Ext(p) == ".conda" || filepath.Ext(p) == ".bz2") {
			n++
		}
		return nil
	})
	return n
}
