package server_test

import (
	"bytes"
	"fmt"
	"net/http"
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
			i := 0
			b.SetBytes(size)
			for b.Loop() {
				b.StopTimer()
				var pkg bytes.Buffer
				pkgtest.LargeConda(b, pkgtest.Simple("bench", "1.0", fmt.Sprint(i), "linux-64"), size, &pkg)
				ct, body := form(part{name: "token", data: []byte(token)}, part{name: "artifact", filename: fmt.Sprintf("bench-1.0-%d.conda", i), data: pkg.Bytes()})
				i++
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
