package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/oidctest"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
	"github.com/conda-upload-server/conda-upload-server/internal/trusted"
)

// TestStrictJSON: every JSON body the server reads (the admin calls,
// patch instructions, both OIDC mint endpoints) takes its keys exactly
// and once: a key in another case, an unknown key or a key given twice,
// at any depth, is 400 and changes nothing, where encoding/json alone
// would read {"TO": "x"} as "to" and keep the last of two keys.
func TestStrictJSON(t *testing.T) {
	is := oidctest.NewIssuer(t)
	v, err := trusted.New([]trusted.Publisher{{
		Name: "gh", Issuer: is.URL, Audiences: []string{"conda-upload.example.org"}, CAFile: is.CAFile,
		Claims: map[string]string{"repository": "myorg/recipes"}, Subdirs: []string{"noarch"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, func(o *server.Options) { o.Trusted = v })
	spec := pkgtest.Simple("strict", "1.0", "0", "linux-64")
	fn := spec.Stem() + ".conda"
	if r := e.upload(t, fn, pkgtest.Conda(t, spec)); r.status != 201 {
		t.Fatal(r.raw)
	}
	pkg := "api/v1/packages/main/linux-64/" + fn
	deep := `{"to":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`
	record := func(fix string) string {
		return `{"patch_instructions_version":1,"packages":{"` + fn + `":` + fix + `}}`
	}
	refused := []struct{ name, method, path, body string }{
		{"upper-case key", "POST", pkg + "/copy", `{"TO":"dev2"}`},
		{"title-case key", "POST", pkg + "/copy", `{"To":"dev2"}`},
		{"exact and upper-case key", "POST", pkg + "/copy", `{"to":"dev3","TO":"dev4"}`},
		{"duplicate key", "POST", pkg + "/copy", `{"to":"dev5","to":"dev6"}`},
		{"unknown key", "POST", pkg + "/copy", `{"to":"dev7","force":true}`},
		{"too deep", "POST", pkg + "/copy", deep},
		{"move, upper-case key", "POST", pkg + "/move", `{"TO":"dev8"}`},
		{"yank, upper-case key", "POST", pkg + "/yank", `{"REASON":"x"}`},
		{"yank, duplicate key", "POST", pkg + "/yank", `{"reason":"a","reason":"b"}`},
		{"unyank, unknown key", "POST", pkg + "/unyank", `{"why":"x"}`},
		{"patch, upper-case envelope key", "PUT", "api/v1/patches/main/linux-64", `{"PATCH_INSTRUCTIONS_VERSION":1}`},
		{"patch, title-case envelope key", "PUT", "api/v1/patches/main/linux-64", `{"patch_instructions_version":1,"Packages":{"` + fn + `":{"depends":[]}}}`},
		{"patch, duplicate envelope key", "PUT", "api/v1/patches/main/linux-64", `{"patch_instructions_version":1,"revoke":[],"revoke":["` + fn + `"]}`},
		{"patch, duplicate filename", "PUT", "api/v1/patches/main/linux-64", `{"patch_instructions_version":1,"packages":{"` + fn + `":{},"` + fn + `":{"depends":["x"]}}}`},
		{"patch, duplicate record field", "PUT", "api/v1/patches/main/linux-64", record(`{"depends":[],"depends":["x"]}`)},
		{"patch, duplicate nested key", "PUT", "api/v1/patches/main/linux-64", record(`{"run_exports":{"weak":["a"],"weak":["b"]}}`)},
	}
	for _, c := range refused {
		if r := e.call(t, c.method, c.path, adminToken, c.body); r.status != http.StatusBadRequest {
			t.Errorf("%s: %s: %d %s, want 400", c.name, c.body, r.status, r.raw)
		}
	}
	for _, l := range []string{"dev2", "dev3", "dev4", "dev5", "dev6", "dev7", "dev8"} {
		if e.exists("label/" + l) {
			t.Errorf("a refused body made label %s", l)
		}
	}
	if e.exists("linux-64/patch_instructions.json") || strings.Contains(e.call(t, "GET", "api/v1/packages/main/linux-64", adminToken, "").raw, `"yanked":true`) {
		t.Error("a refused body changed the patch or the yank")
	}
	// The exact forms work.
	if r := e.call(t, "POST", pkg+"/copy", adminToken, `{"to":"dev9"}`); r.status != 201 {
		t.Errorf("exact copy: %d %s", r.status, r.raw)
	}
	if r := e.call(t, "PUT", "api/v1/patches/main/linux-64", adminToken, record(`{"depends":["x"]}`)); r.status != 200 {
		t.Errorf("exact patch: %d %s", r.status, r.raw)
	}

	// OIDC: a refused body leaves its ID token unused, so the exact
	// body that follows mints with it.
	for _, path := range []string{"/api/oidc/mint_token", "/_/oidc/mint-token"} {
		c := oidctest.GitHubClaims(is.URL, time.Now())
		c["jti"] = "strict" + path
		jwt := is.Sign(t, c)
		for _, body := range []string{`{"TOKEN":"` + jwt + `"}`, `{"Token":"` + jwt + `"}`, `{"token":"` + jwt + `","token":"x"}`,
			`{"token":"x","TOKEN":"` + jwt + `"}`, `{"token":"` + jwt + `","audience":"x"}`} {
			resp, b := e.rawJSON(t, path, body)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s %s: %d %s, want 400", path, body, resp.StatusCode, b)
			}
		}
		if resp, b := e.rawJSON(t, path, `{"token":"`+jwt+`"}`); resp.StatusCode != 200 {
			t.Errorf("%s, exact: %d %s", path, resp.StatusCode, b)
		}
	}
}

// rawJSON posts a JSON body as it is.
func (e *env) rawJSON(t *testing.T, path, body string) (*http.Response, string) {
	t.Helper()
	resp, err := e.client.Post(strings.TrimSuffix(e.url, "/")+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}
