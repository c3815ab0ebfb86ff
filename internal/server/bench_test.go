package server_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
)

// BenchmarkUpload measures one upload end to end through the real handler
// behind TLS on loopback: multipart parsing, hashing, inspection, publish
// (fsync, link) and the built-in index run. Profile it with -cpuprofile
// to see what bounds the upload rate.
func BenchmarkUpload(b *testing.B) {
	for _, size := range []int64{1 << 20, 100 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			t := &testing.T{}
			e := start(t, func(o *server.Options) { o.MaxUploadSize = 1 << 30 })
			// One body for every round, built before the clock (and
			// the profile) start; the stored copy is removed between
			// rounds, so that each upload is a new package.
			var pkg bytes.Buffer
			pkgtest.LargeConda(b, pkgtest.Simple("bench", "1.0", "0", "linux-64"), size, &pkg)
			ct, body := form(part{name: "token", data: []byte(token)}, part{name: "artifact", filename: "bench-1.0-0.conda", data: pkg.Bytes()})
			stored := filepath.Join(e.root, "linux-64", "bench-1.0-0.conda")
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				os.Remove(stored)
				req, _ := http.NewRequest(http.MethodPost, e.url, bytes.NewReader(body))
				req.Header.Set("Content-Type", ct)
				b.StartTimer()
				resp, err := e.client.Do(req)
				if err != nil || resp.StatusCode != 201 {
					b.Fatalf("%v %v", resp, err)
				}
				resp.Body.Close()
			}
		})
	}
}
