package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/metrics"
	"github.com/conda-upload-server/conda-upload-server/internal/oidctest"
	"github.com/conda-upload-server/conda-upload-server/internal/owners"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
	"github.com/conda-upload-server/conda-upload-server/internal/trusted"
)

const (
	teamA  = "team-a-token"   // may publish pkg-a* only
	teamB  = "team-b-token"   // may publish anything
	teamC  = "team-c-token"   // may publish anything
	ownAdm = "owners-admin-t" // the owners scope, and every admin scope, pkg-a* only
	opAll  = "operator-all-t" // every admin scope, every name
)

// withPolicy gives the server the tokens of the ownership tests, its
// owners in the channel's .admin/owners.json, and policy.
func withPolicy(t *testing.T, root string, firstUpload bool, labels []string) option {
	return func(o *server.Options) {
		admin := []string{auth.ScopeUpload, auth.ScopePromote, auth.ScopeYank, auth.ScopeDelete, auth.ScopeOwners}
		a, err := auth.New(auth.DefaultSalt, []auth.Token{
			{Name: "team-a", Hash: mustHash(teamA), Packages: []string{"pkg-a*"}},
			{Name: "team-b", Hash: mustHash(teamB)},
			{Name: "team-c", Hash: mustHash(teamC)},
			{Name: "owners-admin", Hash: mustHash(ownAdm), Scopes: admin, Packages: []string{"pkg-a*"}},
			{Name: "operator", Hash: mustHash(opAll), Scopes: admin},
		})
		if err != nil {
			t.Fatal(err)
		}
		st, err := owners.Open(filepath.Join(root, ".admin", "owners.json"), nil)
		if err != nil {
			t.Fatal(err)
		}
		o.Auth = a
		o.Policy = server.PolicyOptions{Owners: st, FirstUpload: firstUpload, Labels: labels}
	}
}

func startPolicy(t *testing.T, firstUpload bool, labels []string) *env {
	root := t.TempDir()
	return startAt(t, root, 0, withPolicy(t, root, firstUpload, labels))
}

// pkgUpload sends a package of name by protocol, with tok.
func (e *env) pkgUpload(t *testing.T, protocol, tok, name string, data []byte) response {
	t.Helper()
	fn := name + "-1.0-0.conda"
	switch protocol {
	case "form":
		ct, body := form(part{name: "token", data: []byte(tok)}, part{name: "artifact", filename: fn, data: data})
		return e.post(t, nil, ct, body)
	case "quetz":
		return e.do(t, e.quetzRequest("main", fn, data, apiKey(tok), ""))
	case "artifactory":
		return e.do(t, e.artifactoryRequest("main", "noarch", fn, data, bearer(tok)))
	case "prefix":
		return e.do(t, e.prefixRequest("main", "", bearer(tok), filePart(fn, data, true)))
	}
	t.Fatalf("no protocol %s", protocol)
	return response{}
}

func noarch(t *testing.T, name string) []byte {
	return pkgtest.Conda(t, pkgtest.Simple(name, "1.0", "0", "noarch"))
}

// TestPackageLimits: a token limited to pkg-a* cannot publish pkg-b on
// any protocol; the refusal names the package and the token, is audited,
// and stores nothing. The filename is checked before the body: a body
// that is no package at all still gets 403, not 400.
func TestPackageLimits(t *testing.T) {
	e := startPolicy(t, false, nil)
	for _, p := range []string{"form", "quetz", "artifactory", "prefix"} {
		t.Run(p, func(t *testing.T) {
			name := "pkg-a-" + p
			if r := e.pkgUpload(t, p, teamA, name, noarch(t, name)); r.status != 201 {
				t.Fatalf("own name: %d %s", r.status, r.raw)
			}
			r := e.pkgUpload(t, p, teamA, "pkg-b", noarch(t, "pkg-b"))
			if r.status != 403 || !strings.Contains(r.raw, `package \"pkg-b\"`) || !strings.Contains(r.raw, `token \"team-a\"`) {
				t.Errorf("pkg-b: %d %s", r.status, r.raw)
			}
			if r := e.pkgUpload(t, p, teamA, "pkg-b", []byte("not a package at all")); r.status != 403 {
				t.Errorf("pkg-b, garbage body: %d %s (want 403 before the body is read)", r.status, r.raw)
			}
		})
	}
	for _, f := range e.files(t) {
		if strings.Contains(f, "pkg-b") {
			t.Errorf("stored: %s", f)
		}
	}
	b, err := os.ReadFile(e.audit)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), `"result":"package_forbidden"`); n != 8 {
		t.Errorf("%d audited package_forbidden refusals, want 8", n)
	}
	if !strings.Contains(e.logs.String(), "reason=package_forbidden") {
		t.Error("no package_forbidden in the log")
	}
}

// TestPackageLimitsAdmin: the admin calls on a package (copy, move, yank,
// unyank, delete) hold a token with packages to its names.
func TestPackageLimitsAdmin(t *testing.T) {
	e := startPolicy(t, false, nil)
	for _, n := range []string{"pkg-a", "pkg-b"} {
		if r := e.pkgUpload(t, "form", teamB, n, noarch(t, n)); r.status != 201 {
			t.Fatalf("%s: %d %s", n, r.status, r.raw)
		}
	}
	calls := []struct{ method, call, body string }{
		{"POST", "/copy", `{"to":"dev"}`}, {"POST", "/yank", `{"reason":"broken"}`}, {"POST", "/unyank", ""},
		{"POST", "/move", `{"to":"staging"}`}, {"DELETE", "", ""},
	}
	for _, c := range calls {
		path := "/api/v1/packages/main/noarch/pkg-b-1.0-0.conda" + c.call
		if r := e.call(t, c.method, path, ownAdm, c.body); r.status != 403 || !strings.Contains(r.raw, "pkg-b") {
			t.Errorf("%s %s: %d %s", c.method, c.call, r.status, r.raw)
		}
	}
	if !slices.Contains(e.files(t), "noarch/pkg-b-1.0-0.conda") {
		t.Error("pkg-b is gone after refused calls")
	}
	for _, c := range calls[:3] {
		path := "/api/v1/packages/main/noarch/pkg-a-1.0-0.conda" + c.call
		if r := e.call(t, c.method, path, ownAdm, c.body); r.status/100 != 2 {
			t.Errorf("pkg-a %s %s: %d %s", c.method, c.call, r.status, r.raw)
		}
	}
}

func (e *env) owners(t *testing.T, tok, name string) []string {
	t.Helper()
	r := e.call(t, "GET", "/api/v1/owners/"+name, tok, "")
	if r.status != 200 {
		t.Fatalf("owners of %s: %d %s", name, r.status, r.raw)
	}
	var out []string
	list, _ := r.body["owners"].([]any)
	for _, o := range list {
		out = append(out, o.(string))
	}
	return out
}

// TestFirstUpload: the first token to publish a new name owns it; another
// gets 403, on look-alike names too; a transfer moves the right.
func TestFirstUpload(t *testing.T) {
	e := startPolicy(t, true, nil)
	if r := e.pkgUpload(t, "form", teamB, "tool-x", noarch(t, "tool-x")); r.status != 201 {
		t.Fatalf("claim: %d %s", r.status, r.raw)
	}
	if got := e.owners(t, opAll, "tool-x"); !slices.Equal(got, []string{"team-b"}) {
		t.Errorf("owners = %v", got)
	}
	// Look-alikes: _ for -, . for -, upper case.
	for _, n := range []string{"tool-x", "tool_x", "tool.x", "Tool-X"} {
		for _, p := range []string{"form", "quetz"} {
			r := e.pkgUpload(t, p, teamC, n, noarch(t, n))
			if r.status != 403 || !strings.Contains(r.raw, "owned by team-b") {
				t.Errorf("%s by team-c (%s): %d %s", n, p, r.status, r.raw)
			}
		}
	}
	r := e.call(t, "POST", "/api/v1/owners/tool-x/transfer", opAll, `{"owner":"team-c"}`)
	if r.status != 200 {
		t.Fatalf("transfer: %d %s", r.status, r.raw)
	}
	if r := e.pkgUpload(t, "form", teamB, "tool_x", noarch(t, "tool_x")); r.status != 403 {
		t.Errorf("old owner after transfer: %d %s", r.status, r.raw)
	}
	if r := e.pkgUpload(t, "form", teamC, "tool_x", noarch(t, "tool_x")); r.status != 201 {
		t.Errorf("new owner after transfer: %d %s", r.status, r.raw)
	}
	if r := e.call(t, "POST", "/api/v1/owners/tool-x/add", opAll, `{"owner":"team-b"}`); r.status != 200 {
		t.Errorf("add: %d %s", r.status, r.raw)
	}
	if got := e.owners(t, opAll, "tool-x"); !slices.Equal(got, []string{"team-c", "team-b"}) {
		t.Errorf("owners after add = %v", got)
	}
	if r := e.call(t, "POST", "/api/v1/owners/tool-x/remove", opAll, `{"owner":"team-c"}`); r.status != 200 || r.body["changed"] != true {
		t.Errorf("remove: %d %s", r.status, r.raw)
	}
	if r := e.call(t, "POST", "/api/v1/owners/tool-x/remove", opAll, `{"owner":"team-c"}`); r.status != 200 || r.body["changed"] != false {
		t.Errorf("remove again: %d %s", r.status, r.raw)
	}
	var f owners.File
	b, _ := os.ReadFile(filepath.Join(e.root, ".admin", "owners.json"))
	if err := json.Unmarshal(b, &f); err != nil || !slices.Equal(f.Packages["tool-x"], []string{"team-b"}) {
		t.Errorf("owners.json = %s (%v)", b, err)
	}
	audit, _ := os.ReadFile(e.audit)
	if !strings.Contains(string(audit), `"call":"owners-claim","to":"team-b","package":"tool-x"`) {
		t.Errorf("claim not audited:\n%s", audit)
	}
	if !strings.Contains(string(audit), `"call":"owners-transfer","to":"team-c","package":"tool-x"`) {
		t.Errorf("transfer not audited:\n%s", audit)
	}
}

// TestOwnersAPIRefusals: the owners API needs its scope, holds a limited
// token to its names, and refuses names that are not conda names.
func TestOwnersAPIRefusals(t *testing.T) {
	e := startPolicy(t, true, nil)
	for _, c := range []struct {
		tok, path, body string
		want            int
	}{
		{teamB, "/api/v1/owners", "", 403},                                   // no owners scope
		{"", "/api/v1/owners", "", 401},                                      // no token
		{ownAdm, "/api/v1/owners/pkg-b/add", `{"owner":"team-a"}`, 403},      // not its name
		{ownAdm, "/api/v1/owners/pkg-*/add", `{"owner":"team-a"}`, 400},      // a glob as a name
		{ownAdm, "/api/v1/owners/PKG-A/add", `{"owner":"team-a"}`, 400},      // upper case
		{ownAdm, "/api/v1/owners/pkg-%D0%B0/add", `{"owner":"team-a"}`, 400}, // Cyrillic a
		{ownAdm, "/api/v1/owners/pkg-a/steal", `{"owner":"team-a"}`, 404},    // no such call
		{ownAdm, "/api/v1/owners/pkg-a/add", `{"owner":"has space"}`, 400},   // not an owner name
		{ownAdm, "/api/v1/owners/pkg-a/add", `{"owner":"team-a"}`, 200},      // fine
	} {
		method := "POST"
		if c.body == "" {
			method = "GET"
		}
		if r := e.call(t, method, c.path, c.tok, c.body); r.status != c.want {
			t.Errorf("%s %s: %d %s, want %d", method, c.path, r.status, r.raw, c.want)
		}
	}
}

// TestFirstUploadRace: eight tokens publish one new name at once;
// exactly one claims it, and only its package is stored.
func TestFirstUploadRace(t *testing.T) {
	root := t.TempDir()
	var toks []auth.Token
	for i := range 8 {
		toks = append(toks, auth.Token{Name: fmt.Sprintf("racer-%d", i), Hash: mustHash(fmt.Sprintf("racer-token-%d", i))})
	}
	e := startAt(t, root, 0, withPolicy(t, root, true, nil), func(o *server.Options) {
		o.Auth, _ = auth.New(auth.DefaultSalt, toks)
	})
	var wg sync.WaitGroup
	status := make([]int, 8)
	for i := range 8 {
		wg.Go(func() {
			spec := pkgtest.Simple("contested", "1.0", fmt.Sprintf("r%d", i), "noarch")
			ct, body := form(part{name: "token", data: []byte(fmt.Sprintf("racer-token-%d", i))},
				part{name: "artifact", filename: spec.Stem() + ".conda", data: pkgtest.Conda(t, spec)})
			status[i] = e.post(t, nil, ct, body).status
		})
	}
	wg.Wait()
	var won []int
	for i, s := range status {
		switch s {
		case 201:
			won = append(won, i)
		case 403:
		default:
			t.Errorf("racer %d: %d", i, s)
		}
	}
	if len(won) != 1 {
		t.Fatalf("winners: %v (statuses %v)", won, status)
	}
	st, err := owners.Open(filepath.Join(root, ".admin", "owners.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Of("contested"); !slices.Equal(got, []string{fmt.Sprintf("racer-%d", won[0])}) {
		t.Errorf("owners = %v, winner racer-%d", got, won[0])
	}
	if got := e.files(t); len(slices.DeleteFunc(got, func(f string) bool { return !strings.Contains(f, "contested") })) != 1 {
		t.Errorf("stored: %v", got)
	}
}

// TestLabelPolicy: with [policy] labels, an upload may create only the
// labels named; another is 404, as an unknown channel is.
func TestLabelPolicy(t *testing.T) {
	e := startPolicy(t, false, []string{"main", "dev", "nightly-*"})
	for _, c := range []struct {
		label string
		want  int
	}{{"main", 201}, {"dev", 201}, {"nightly-2026", 201}, {"staging", 404}, {"nightly", 404}} {
		n := "lbl-" + strings.ReplaceAll(c.label, "-", "")
		if r := e.uploadTo(t, teamB, c.label, n+"-1.0-0.conda", noarch(t, n)); r.status != c.want {
			t.Errorf("form to %s: %d %s, want %d", c.label, r.status, r.raw, c.want)
		}
		req := e.quetzRequest(c.label, n+"-1.0-0.conda", noarch(t, n), apiKey(teamB), "")
		if c.label == "main" {
			continue
		}
		if r := e.do(t, req); r.status != c.want && !(c.want == 201 && r.status == 200) {
			t.Errorf("quetz to %s: %d %s, want %d", c.label, r.status, r.raw, c.want)
		}
	}
	// Artifactory names a label in its path: /label/<label>/<subdir>/<file>.
	for label, want := range map[string]int{"staging": 404, "nightly-x": 201} {
		data := noarch(t, "lbl-art")
		req := e.artifactoryRequest("label/"+label, "noarch", "lbl-art-1.0-0.conda", data, bearer(teamB))
		if r := e.do(t, req); r.status != want {
			t.Errorf("artifactory to %s: %d %s, want %d", label, r.status, r.raw, want)
		}
	}
	if _, err := os.Stat(filepath.Join(e.root, "label", "staging")); err == nil {
		t.Error("label staging was created")
	}
	// An admin copy may still make a label; uploads may then use it.
	if r := e.call(t, "POST", "/api/v1/packages/main/noarch/lbl-main-1.0-0.conda/copy", opAll, `{"to":"staging"}`); r.status != 201 {
		t.Fatalf("copy: %d %s", r.status, r.raw)
	}
	if r := e.uploadTo(t, teamB, "staging", "lbl-late-1.0-0.conda", noarch(t, "lbl-late")); r.status != 201 {
		t.Errorf("upload to a label an admin made: %d %s", r.status, r.raw)
	}
}

// TestPublisherPackages: a trusted publisher limited to recipes-* cannot
// publish another name, with its ID token or a minted one; its first
// upload of a new name claims it as oidc:<publisher>, which a token then
// cannot publish; each refusal is counted in the upload metrics.
func TestPublisherPackages(t *testing.T) {
	is := oidctest.NewIssuer(t)
	v, err := trusted.New([]trusted.Publisher{{
		Name: "gh-recipes", Issuer: is.URL, Audiences: []string{"conda-upload.example.org"}, CAFile: is.CAFile,
		Claims:   map[string]string{"repository": "myorg/recipes", "workflow": "release.yml"},
		Packages: []string{"recipes-*"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New("test", "", false)
	root := t.TempDir()
	e := startAt(t, root, 0, withPolicy(t, root, true, nil), func(o *server.Options) { o.Trusted, o.Observe.Metrics = v, m })
	jti := 0
	idToken := func() string {
		jti++
		c := oidctest.GitHubClaims(is.URL, time.Now())
		c["jti"] = fmt.Sprint("jti-", jti)
		return is.Sign(t, c)
	}
	for _, p := range []string{"form", "quetz", "prefix"} {
		r := e.pkgUpload(t, p, idToken(), "other-tool", noarch(t, "other-tool"))
		if r.status != 403 || !strings.Contains(r.raw, `trusted publisher \"gh-recipes\" may not publish (not in its packages) package \"other-tool\"`) {
			t.Errorf("%s: other-tool: %d %s", p, r.status, r.raw)
		}
	}
	resp, err := e.client.Post(e.url+"api/oidc/mint_token", "application/json", strings.NewReader(fmt.Sprintf(`{"token":%q}`, idToken())))
	if err != nil {
		t.Fatal(err)
	}
	minted, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if r := e.pkgUpload(t, "prefix", string(minted), "other-tool", noarch(t, "other-tool")); r.status != 403 {
		t.Errorf("minted token, other-tool: %d %s", r.status, r.raw)
	}
	if r := e.pkgUpload(t, "artifactory", idToken(), "recipes-cli", noarch(t, "recipes-cli")); r.status != 201 {
		t.Fatalf("recipes-cli: %d %s", r.status, r.raw)
	}
	if got := e.owners(t, opAll, "recipes-cli"); !slices.Equal(got, []string{"oidc:gh-recipes"}) {
		t.Errorf("owners = %v", got)
	}
	if r := e.pkgUpload(t, "quetz", teamB, "recipes_cli", noarch(t, "recipes_cli")); r.status != 403 || !strings.Contains(r.raw, "owned by oidc:gh-recipes") {
		t.Errorf("a token on the publisher's name: %d %s", r.status, r.raw)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if want := `conda_upload_requests_total{code="403",reason="package_forbidden"} 5`; !strings.Contains(rec.Body.String(), want) {
		t.Errorf("metrics lack %s:\n%s", want, rec.Body.String())
	}
}

// TestHostileNames: a token limited to pkg-a* cannot get another name
// past the limit with a glob in the filename, upper case, _ for -, or a
// Unicode look-alike; nothing is stored.
func TestHostileNames(t *testing.T) {
	e := startPolicy(t, true, nil)
	for _, c := range []struct {
		name string
		want int
	}{
		{"pkg-a*", 400},       // a glob in a filename is no name at all
		{"pkg-a?x", 400},      //
		{"[p]kg-a", 400},      //
		{"PKG-A-x", 403},      // upper case matches no lowercase pattern
		{"pkg_a-x", 403},      // _ is not -
		{"pkg.a-x", 403},      // nor is .
		{"pkg-\u0430-x", 400}, // Cyrillic a: not ASCII
		{"pkg-a\u200b", 400},  // a zero-width space
		{"pkg-a-x", 201},
	} {
		for _, p := range []string{"form", "quetz"} {
			name := c.name
			if p == "quetz" {
				name = strings.ReplaceAll(strings.ReplaceAll(name, "?", "%3F"), "[", "%5B")
			}
			r := e.pkgUpload(t, p, teamA, name, noarch(t, c.name))
			if r.status != c.want && !(c.want == 201 && r.status == 200) {
				t.Errorf("%s by %s: %d %s, want %d", c.name, p, r.status, r.raw, c.want)
			}
		}
	}
	if got := slices.DeleteFunc(e.files(t), func(f string) bool { return f == ".admin/owners.json" }); !slices.Equal(got, []string{"noarch/pkg-a-x-1.0-0.conda"}) {
		t.Errorf("stored: %v", got)
	}
	// The look-alikes of a claimed name are its owner's.
	if got := e.owners(t, opAll, "pkg-a-x"); !slices.Equal(got, []string{"team-a"}) {
		t.Errorf("owners of pkg-a-x: %v", got)
	}
	for _, n := range []string{"pkg_a_x", "pkg.a.x", "Pkg-A-X", "pkg-a_x"} {
		if r := e.pkgUpload(t, "form", teamB, n, noarch(t, n)); r.status != 403 {
			t.Errorf("%s by team-b: %d %s", n, r.status, r.raw)
		}
	}
}
