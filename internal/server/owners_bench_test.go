package server_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/owners"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
)

// BenchmarkOwnership measures one small upload through the real handler
// behind TLS (not waiting for the index run, which the policy does not
// touch) on three servers side by side, one upload to each per round so
// that the load of a shared machine falls on all three alike: with no
// policy; with 100,000 owned names and a token limited by patterns,
// uploading a name it owns (the common case); and with first-upload
// claiming a new name each time, which rewrites owners.json. It reports
// each one's mean, and the ratios to no policy.
func BenchmarkOwnership(b *testing.B) {
	const n = 100000
	modes := []string{"none", "owned", "claim"}
	envs := map[string]*env{}
	for _, mode := range modes {
		root := b.TempDir()
		envs[mode] = startAt(b, root, 0, func(o *server.Options) {
			o.WaitIndex = false
			if mode != "none" {
				o.Auth, o.Policy = ownedPolicy(b, root, n, mode == "claim")
			}
		})
	}
	spent := map[string]time.Duration{}
	i := 0
	for b.Loop() {
		for _, mode := range modes {
			name := "owned-000042"
			if mode == "claim" {
				name = fmt.Sprintf("new-%06d", i)
			}
			spent[mode] += timeUpload(b, envs[mode], name)
		}
		i++
	}
	for _, mode := range modes {
		b.ReportMetric(float64(spent[mode].Microseconds())/float64(i)/1000, mode+"-ms")
	}
	b.ReportMetric(float64(spent["owned"])/float64(spent["none"]), "owned/none")
	b.ReportMetric(float64(spent["claim"])/float64(spent["none"]), "claim/none")
}

// ownedPolicy is a token limited to some patterns, which owns n names.
func ownedPolicy(b *testing.B, root string, n int, firstUpload bool) (*auth.Authenticator, server.PolicyOptions) {
	events := make([]owners.Event, n)
	for i := range events {
		events[i] = owners.Event{Call: owners.CallAdd, Name: fmt.Sprintf("owned-%06d", i), Owner: "ci-linux"}
	}
	st, err := owners.Open(filepath.Join(root, ".admin", "owners.json"), events)
	if err != nil {
		b.Fatal(err)
	}
	a, err := auth.New(auth.DefaultSalt, []auth.Token{{Name: "ci-linux", Hash: mustHash(token), Packages: []string{"lib*", "owned-*", "new-*"}}})
	if err != nil {
		b.Fatal(err)
	}
	return a, server.PolicyOptions{Owners: st, FirstUpload: firstUpload}
}

// timeUpload uploads a new package of name to e, and returns how long
// the request took; building it and clearing the last one are not timed.
func timeUpload(b *testing.B, e *env, name string) time.Duration {
	spec := pkgtest.Simple(name, "1.0", "0", "noarch")
	ct, body := form(part{name: "token", data: []byte(token)}, part{name: "artifact", filename: spec.Stem() + ".conda", data: pkgtest.Conda(b, spec)})
	os.Remove(filepath.Join(e.root, "noarch", spec.Stem()+".conda"))
	req, _ := http.NewRequest(http.MethodPost, e.url, bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	start := time.Now()
	resp, err := e.client.Do(req)
	if err != nil || resp.StatusCode != 201 {
		b.Fatalf("%v %v", resp, err)
	}
	resp.Body.Close()
	return time.Since(start)
}
