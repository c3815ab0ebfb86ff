package server_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/owners"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
)

// BenchmarkOwnership measures one small upload through the real handler
// behind TLS (not waiting for the index run, which the policy does not
// touch) with no policy, with 100,000 owned names and a token limited by
// patterns (the name is owned by the token: the common case), and with
// first-upload claiming a new name each time, which rewrites owners.json.
// Report each as a ratio to "none".
func BenchmarkOwnership(b *testing.B) {
	const n = 100000
	for _, mode := range []string{"none", "owned", "claim"} {
		b.Run(mode, func(b *testing.B) {
			root := b.TempDir()
			e := startAt(b, root, 0, func(o *server.Options) {
				o.WaitIndex = false
				if mode == "none" {
					return
				}
				events := make([]owners.Event, n)
				for i := range events {
					events[i] = owners.Event{Call: owners.CallAdd, Name: fmt.Sprintf("owned-%06d", i), Owner: "ci-linux"}
				}
				st, err := owners.Open(filepath.Join(root, ".admin", "owners.json"), events)
				if err != nil {
					b.Fatal(err)
				}
				a, _ := auth.New(auth.DefaultSalt, []auth.Token{{Name: "ci-linux", Hash: mustHash(token), Packages: []string{"lib*", "owned-*", "new-*"}}})
				o.Auth, o.Policy = a, server.PolicyOptions{Owners: st, FirstUpload: mode == "claim"}
			})
			i := 0
			for b.Loop() {
				b.StopTimer()
				name := "owned-000042"
				if mode == "claim" {
					name = fmt.Sprintf("new-%06d", i)
				}
				i++
				spec := pkgtest.Simple(name, "1.0", "0", "noarch")
				ct, body := form(part{name: "token", data: []byte(token)}, part{name: "artifact", filename: spec.Stem() + ".conda", data: pkgtest.Conda(b, spec)})
				os.Remove(filepath.Join(root, "noarch", spec.Stem()+".conda"))
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
