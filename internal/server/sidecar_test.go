package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
	"github.com/conda-upload-server/conda-upload-server/internal/sidecar"
)

// attestation is a stand-in for a Sigstore bundle, told apart by n.
func attestation(n int) []byte {
	return fmt.Appendf(nil, `{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "n": %d}`, n)
}

// attest uploads data to label with the prefix.dev protocol, with an
// attestation part if att is not nil.
func (e *env) attest(t *testing.T, label, fn string, data, att []byte, tok, query string) response {
	t.Helper()
	parts := []prefixPart{filePart(fn, data, true)}
	if att != nil {
		parts = append([]prefixPart{{name: "attestation", data: att}}, parts...)
	}
	return e.do(t, e.prefixRequest(label, query, bearer(tok), parts...))
}

// sigs returns the elements of a sidecar below the root, as the numbers
// of attestation, and its raw bytes; nil if there is none.
func (e *env) sigs(t *testing.T, rel string) ([]int, []byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.root, rel))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var elems []struct{ N int }
	if err := json.Unmarshal(b, &elems); err != nil {
		t.Fatalf("%s is not a JSON array: %v: %s", rel, err, b)
	}
	ns := []int{}
	for _, el := range elems {
		ns = append(ns, el.N)
	}
	return ns, b
}

// TestAttestationsOnlyAdded: an identical re-upload with a new
// attestation adds it to <file>.sigs, after the ones there, whose bytes
// are kept; the same attestation again, or none, changes nothing;
// concurrent additions are all kept; and an attestation must be one
// JSON object.
func TestAttestationsOnlyAdded(t *testing.T) {
	e := start(t)
	fn := "att-1.0-0.conda"
	data := pkgtest.Conda(t, pkgtest.Simple("att", "1.0", "0", "linux-64"))
	rel := "linux-64/" + fn + ".sigs"
	if r := e.attest(t, "main", fn, data, attestation(1), token, ""); r.status != 201 {
		t.Fatal(r.raw)
	}
	_, first := e.sigs(t, rel)
	if r := e.attest(t, "main", fn, data, attestation(2), token, ""); r.status != 200 {
		t.Fatal(r.raw)
	}
	got, b := e.sigs(t, rel)
	if !slices.Equal(got, []int{1, 2}) || !bytes.HasPrefix(b, first[:len(first)-1]) {
		t.Errorf("after a second attestation: %v %s", got, b)
	}
	for _, att := range [][]byte{attestation(1), []byte(" \n" + string(attestation(2)) + "\n"), nil} {
		if r := e.attest(t, "main", fn, data, att, token, ""); r.status != 200 {
			t.Fatal(r.raw)
		}
		if again, _ := e.sigs(t, rel); !slices.Equal(again, []int{1, 2}) {
			t.Errorf("after %q again: %v", att, again)
		}
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if r := e.attest(t, "main", fn, data, attestation(10+i), token, ""); r.status != 200 {
				t.Errorf("concurrent %d: %d %s", i, r.status, r.raw)
			}
		})
	}
	wg.Wait()
	got, b = e.sigs(t, rel)
	if len(got) > 2 {
		slices.Sort(got[2:])
	}
	if want := []int{1, 2, 10, 11, 12, 13, 14, 15, 16, 17}; !slices.Equal(got, want) || !bytes.HasPrefix(b, first[:len(first)-1]) {
		t.Errorf("after concurrent additions: %v, want %v", got, want)
	}
	for _, bad := range []string{`[{"n": 99}]`, `"n"`, `99`} {
		if r := e.attest(t, "main", fn, data, []byte(bad), token, ""); r.status != 400 {
			t.Errorf("attestation %s: %d %s", bad, r.status, r.raw)
		}
	}
	if got, _ := e.sigs(t, rel); len(got) != 10 {
		t.Errorf("refused attestations changed the sidecar: %v", got)
	}
}

// TestSidecarNameTooLong: a package whose file name leaves no room for
// <file>.sigs.<sha256> cannot carry an attestation. It is refused with
// 400 before it is stored, not failed with 500 after; without an
// attestation the same package is stored.
func TestSidecarNameTooLong(t *testing.T) {
	e := start(t)
	name := strings.Repeat("a", 190)
	fn := name + "-1.0-0.conda"
	data := pkgtest.Conda(t, pkgtest.Simple(name, "1.0", "0", "linux-64"))
	if r := e.attest(t, "main", fn, data, attestation(1), token, ""); r.status != 400 || !strings.Contains(r.raw, "too long to carry attestations") {
		t.Fatalf("a long name with an attestation: %d %s", r.status, r.raw)
	}
	if _, err := os.Stat(filepath.Join(e.root, "linux-64", fn)); err == nil {
		t.Fatal("the refused package was stored")
	}
	if r := e.attest(t, "main", fn, data, nil, token, ""); r.status != 201 {
		t.Fatalf("the same package without one: %d %s", r.status, r.raw)
	}
	if r := e.attest(t, "main", fn, data, attestation(1), token, ""); r.status != 400 {
		t.Errorf("an attestation added to it later: %d %s", r.status, r.raw)
	}
}

// TestSidecarLifecycle: a package's attestations describe its bytes and
// follow them. A forced replace sends the old ones to .trash/ with the
// old bytes; a copy carries them, adding those the target lacks; a move
// and a delete keep the source's in .trash/; and a sidecar with no
// package (left by a crash) never ends up beside a new package.
func TestSidecarLifecycle(t *testing.T) {
	e := start(t)
	fn := "life-1.0-0.conda"
	data := pkgtest.Conda(t, pkgtest.Simple("life", "1.0", "0", "linux-64"))
	s := pkgtest.Simple("life", "1.0", "0", "linux-64")
	s.Payload[0].Data = []byte("rebuilt")
	other := pkgtest.Conda(t, s)
	// trashed returns the .sigs in label's trash, after checking that
	// each came with its immutable revision.
	trashed := func(label string) [][]int {
		var out [][]int
		m, _ := filepath.Glob(filepath.Join(e.root, ".trash", "*", label, "linux-64", fn+".sigs"))
		for _, p := range m {
			b, _ := os.ReadFile(p)
			if _, err := os.Stat(p + "." + sidecar.Digest(b)); err != nil {
				t.Errorf("trash: no immutable revision beside %s: %v", p, err)
			}
			rel, _ := filepath.Rel(e.root, p)
			ns, _ := e.sigs(t, rel)
			out = append(out, ns)
		}
		return out
	}
	check := func(what, rel string, want []int) {
		t.Helper()
		got, b := e.sigs(t, rel)
		if !slices.Equal(got, want) {
			t.Errorf("%s: %s holds %v, want %v", what, rel, got, want)
		}
		imm, _ := filepath.Glob(filepath.Join(e.root, rel) + ".*")
		if want == nil && len(imm) > 0 {
			t.Errorf("%s: immutable revisions left without a sidecar: %q", what, imm)
		}
		if b != nil && !slices.Contains(imm, filepath.Join(e.root, rel)+"."+sidecar.Digest(b)) {
			t.Errorf("%s: %s has no immutable revision (%q)", what, rel, imm)
		}
	}

	// A forced replace.
	if r := e.attest(t, "main", fn, data, attestation(1), token, ""); r.status != 201 {
		t.Fatal(r.raw)
	}
	if r := e.do(t, e.quetzRequest("main", fn, other, apiKey(overwriteToken), "force=true")); r.status != 201 || r.body["replaced"] != true {
		t.Fatal(r.raw)
	}
	check("forced replace", "linux-64/"+fn+".sigs", nil)
	if got := trashed("main"); len(got) != 1 || !slices.Equal(got[0], []int{1}) {
		t.Errorf("forced replace: trash holds %v", got)
	}
	if r := e.attest(t, "main", fn, data, attestation(2), overwriteToken, "force=true"); r.status != 201 {
		t.Fatal(r.raw)
	}
	check("forced replace with an attestation", "linux-64/"+fn+".sigs", []int{2})

	// Copies and moves between labels.
	if r := e.attest(t, "dev", fn, data, attestation(3), adminToken, ""); r.status != 201 {
		t.Fatal(r.raw)
	}
	if r := e.call(t, "POST", "api/v1/packages/dev/linux-64/"+fn+"/copy", adminToken, `{"to":"main"}`); r.status != 200 {
		t.Fatal(r.raw)
	}
	check("copy onto the same bytes", "linux-64/"+fn+".sigs", []int{2, 3})
	check("copy source", "label/dev/linux-64/"+fn+".sigs", []int{3})
	if r := e.call(t, "POST", "api/v1/packages/dev/linux-64/"+fn+"/move", adminToken, `{"to":"qa"}`); r.status != 201 {
		t.Fatal(r.raw)
	}
	check("move target", "label/qa/linux-64/"+fn+".sigs", []int{3})
	check("move source", "label/dev/linux-64/"+fn+".sigs", nil)
	if got := trashed("dev"); len(got) != 1 || !slices.Equal(got[0], []int{3}) {
		t.Errorf("move: trash holds %v for dev", got)
	}

	// A delete, then a sidecar a crash left without its package.
	if r := e.call(t, "DELETE", "api/v1/packages/qa/linux-64/"+fn, adminToken, ""); r.status != 200 {
		t.Fatal(r.raw)
	}
	check("delete", "label/qa/linux-64/"+fn+".sigs", nil)
	if got := trashed("qa"); len(got) != 1 || !slices.Equal(got[0], []int{3}) {
		t.Errorf("delete: trash holds %v for qa", got)
	}
	stale := filepath.Join(e.root, "label", "qa", "linux-64", fn+".sigs")
	if err := os.WriteFile(stale, []byte(`[{"n": 4}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := e.attest(t, "qa", fn, other, nil, adminToken, ""); r.status != 201 {
		t.Fatal(r.raw)
	}
	check("a new package where a stale sidecar was", "label/qa/linux-64/"+fn+".sigs", nil)
}

// TestSidecarBeforeIndex: CEP 50's order of publication. A reader that
// polls repodata.json over HTTP while attestations are added, with
// uploads and later, never finds a record naming a revision
// (<file>.sigs.<attestations_sha256>) that cannot be fetched, or whose
// bytes do not hash to its name.
func TestSidecarBeforeIndex(t *testing.T) {
	e := startServing(t, false, func(o *server.Options) {
		h, _ := auth.ParseHash(auth.Hash(auth.DefaultSalt, "att-only"))
		a, err := auth.New(auth.DefaultSalt, []auth.Token{{Name: "ci", Hash: mustHash(token)}, {Name: "att", Hash: h, Scopes: []string{auth.ScopeAttest}}})
		if err != nil {
			t.Fatal(err)
		}
		o.Auth = a
	})
	done := make(chan struct{})
	seen := make(chan int, 1)
	go func() {
		defer close(seen)
		checked := 0
		for {
			select {
			case <-done:
				seen <- checked
				return
			default:
			}
			resp, b := e.get(t, "GET", "/noarch/repodata.json", nil)
			var idx struct {
				Conda map[string]map[string]any `json:"packages.conda"`
			}
			if resp.StatusCode != 200 || json.Unmarshal(b, &idx) != nil {
				continue // not indexed yet
			}
			for fn, rec := range idx.Conda {
				sha, ok := rec["attestations_sha256"].(string)
				if !ok {
					continue
				}
				r, body := e.get(t, "GET", "/noarch/"+fn+".sigs."+sha, nil)
				if r.StatusCode != 200 || sidecar.Digest(body) != sha {
					t.Errorf("the index names %s.sigs.%s: %d, hashing to %s", fn, sha, r.StatusCode, sidecar.Digest(body))
				}
				checked++
			}
		}
	}()
	// Four writers at once, so that index runs overlap additions.
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w * 3; i < w*3+3; i++ {
				fn := fmt.Sprintf("order%d-1.0-0.conda", i)
				data := pkgtest.Conda(t, pkgtest.Simple(fmt.Sprintf("order%d", i), "1.0", "0", "noarch"))
				if r := e.attest(t, "main", fn, data, attestation(i), token, ""); r.status != 201 {
					t.Error(r.raw)
				}
				for j := range 3 {
					if r := e.call(t, "POST", "api/v1/attestations/main/noarch/"+fn, "att-only", string(attestation(100*(j+1)+i))); r.status != 200 {
						t.Error(r.raw)
					}
				}
			}
		})
	}
	wg.Wait()
	close(done)
	if n := <-seen; n == 0 {
		t.Fatal("the reader checked no attested record")
	}
}
