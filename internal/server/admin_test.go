package server_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
)

// call sends an admin API request with a bearer token ("" for none).
func (e *env) call(t *testing.T, method, path, tok, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+strings.TrimPrefix(path, "/"), rd)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return e.do(t, req)
}

// uploadTo uploads a package to a label with the form's label field.
func (e *env) uploadTo(t *testing.T, tok, label, filename string, data []byte) response {
	t.Helper()
	ct, body := form(part{name: "token", data: []byte(tok)}, part{name: "label", data: []byte(label)}, part{name: "artifact", filename: filename, data: data})
	return e.post(t, nil, ct, body)
}

// listedIn returns the filenames in a label's subdir's repodata.json, and
// its removed list.
func (e *env) listedIn(t *testing.T, dir string) (names, removed []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.root, dir, "repodata.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Packages      map[string]any `json:"packages"`
		PackagesConda map[string]any `json:"packages.conda"`
		Removed       []string       `json:"removed"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for k := range doc.Packages {
		names = append(names, k)
	}
	for k := range doc.PackagesConda {
		names = append(names, k)
	}
	slices.Sort(names)
	return names, doc.Removed
}

// auditRecords returns the audit log's records.
func (e *env) auditRecords(t *testing.T) []map[string]any {
	t.Helper()
	f, err := os.Open(e.audit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func (e *env) exists(rel string) bool {
	_, err := os.Lstat(filepath.Join(e.root, rel))
	return err == nil
}

// TestLabelUploads uploads to a label by each protocol and checks that
// the package lands in label/<L>/<subdir>/, is indexed there with a noarch
// index beside it, is served under /label/<L>/, and that a token limited
// to a label cannot upload elsewhere.
func TestLabelUploads(t *testing.T) {
	e := startServing(t, false)
	specs := map[string][]byte{}
	for i, proto := range []string{"form", "quetz", "prefix", "artifactory"} {
		spec := pkgtest.Simple("labelled", fmt.Sprintf("1.%d", i), "0", "linux-64")
		data := pkgtest.Conda(t, spec)
		fn := spec.Stem() + ".conda"
		specs[fn] = data
		var r response
		switch proto {
		case "form":
			r = e.uploadTo(t, token, "dev", fn, data)
		case "quetz":
			r = e.do(t, e.quetzRequest("dev", fn, data, apiKey(token), ""))
		case "prefix":
			r = e.do(t, e.prefixRequest("dev", "", bearer(token), filePart(fn, data, true)))
		case "artifactory":
			req, _ := http.NewRequest(http.MethodPut, e.url+"label/dev/linux-64/"+fn, bytes.NewReader(data))
			req.Header.Set("Authorization", "Bearer "+token)
			r = e.do(t, req)
		}
		if r.status != http.StatusCreated || r.body["label"] != "dev" || r.body["indexed"] != true {
			t.Fatalf("%s upload to dev: %d %s", proto, r.status, r.raw)
		}
		if !e.exists("label/dev/linux-64/"+fn) || e.exists("linux-64/"+fn) {
			t.Errorf("%s: %s not in label/dev/linux-64 alone", proto, fn)
		}
	}
	names, _ := e.listedIn(t, "label/dev/linux-64")
	if len(names) != len(specs) {
		t.Errorf("label dev lists %v", names)
	}
	if names, _ := e.listedIn(t, "label/dev/noarch"); len(names) != 0 {
		t.Errorf("label dev noarch lists %v", names)
	}
	if e.exists("linux-64/repodata.json") {
		t.Error("an upload to a label indexed main's linux-64")
	}
	tests := []struct {
		name, tok, label string
		status           int
		msg              string
	}{
		{"dev token to dev", devToken, "dev", 201, ""},
		{"dev token to main", devToken, "main", 403, "may not upload to label main"},
		{"dev token to other", devToken, "staging", 403, "may not upload to label staging"},
		{"bad label", token, "../main", 400, "not a label name"},
		{"upper case label", token, "Dev", 400, "not a label name"},
		{"explicit main", token, "main", 201, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := pkgtest.Simple("limited", fmt.Sprintf("2.%d", i), "0", "noarch")
			r := e.uploadTo(t, tt.tok, tt.label, spec.Stem()+".conda", pkgtest.Conda(t, spec))
			if r.status != tt.status || !strings.Contains(r.raw, tt.msg) {
				t.Errorf("got %d %s, want %d %q", r.status, r.raw, tt.status, tt.msg)
			}
		})
	}
	// Served under /label/dev/ like the root channel.
	noFollow := *e.client
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if resp, err := noFollow.Get(e.url + "label/dev"); err != nil || resp.StatusCode != 301 || resp.Header.Get("Location") != "dev/" {
		t.Errorf("GET /label/dev: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	for path, want := range map[string]int{
		"label/dev/linux-64/repodata.json": 200, "label/dev/noarch/repodata.json": 200, "label/dev/": 200, "label/": 200,
		"label/dev/linux-64/labelled-1.0-0.conda": 200, "label/Dev/linux-64/repodata.json": 404,
		"label/dev/linux-64/.index-cache/records.jsonl": 404, "label/nope/linux-64/repodata.json": 404,
	} {
		resp, err := e.client.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET /%s: %d, want %d", path, resp.StatusCode, want)
		}
		if path == "label/dev/linux-64/labelled-1.0-0.conda" && !bytes.Equal(b, specs["labelled-1.0-0.conda"]) {
			t.Error("downloaded package differs from the upload")
		}
	}
}

// TestAdminScopes calls each admin API call with a token that has its
// scope, with one that has not (403), and with none (401).
func TestAdminScopes(t *testing.T) {
	e := start(t)
	spec := pkgtest.Simple("scoped", "1.0", "0", "linux-64")
	fn := spec.Stem() + ".conda"
	if r := e.upload(t, fn, pkgtest.Conda(t, spec)); r.status != 201 {
		t.Fatal(r.raw)
	}
	base := "api/v1/packages/main/linux-64/"
	patchBody := `{"patch_instructions_version":1,"packages":{"` + fn + `":{"depends":["x"]}}}`
	calls := []struct {
		name, method, path, body string
		ok                       int
	}{
		{"list", "GET", "api/v1/packages/main/linux-64", "", 200},
		{"copy", "POST", base + fn + "/copy", `{"to":"staging"}`, 201},
		{"yank", "POST", base + fn + "/yank", `{"reason":"broken"}`, 200},
		{"unyank", "POST", base + fn + "/unyank", "", 200},
		{"patch put", "PUT", "api/v1/patches/main/linux-64", patchBody, 200},
		{"patch get", "GET", "api/v1/patches/main/linux-64", "", 200},
		{"patch delete", "DELETE", "api/v1/patches/main/linux-64", "", 200},
		{"move", "POST", "api/v1/packages/staging/linux-64/" + fn + "/move", `{"to":"old"}`, 201},
		{"delete", "DELETE", "api/v1/packages/old/linux-64/" + fn, "", 200},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			// Without the scope first: nothing may change.
			for _, tok := range []string{token, readToken, devToken} {
				if c.name == "list" && tok == readToken {
					continue // read is list's scope
				}
				if r := e.call(t, c.method, c.path, tok, c.body); r.status != http.StatusForbidden {
					t.Errorf("without the scope: %d %s", r.status, r.raw)
				}
			}
			if r := e.call(t, c.method, c.path, "", c.body); r.status != http.StatusUnauthorized {
				t.Errorf("without a token: %d %s", r.status, r.raw)
			}
			r := e.call(t, c.method, c.path, adminToken, c.body)
			if r.status != c.ok {
				t.Fatalf("with the scope: %d %s", r.status, r.raw)
			}
			if strings.Count(r.raw, "\n") != 1 {
				t.Errorf("response is not one line: %q", r.raw)
			}
		})
	}
	if r := e.call(t, "GET", "api/v1/packages/main/linux-64", readToken, ""); r.status != 200 {
		t.Errorf("list with read: %d %s", r.status, r.raw)
	}
	// Every change is audited with its token, call and sha256.
	calls2 := map[string]bool{}
	for _, rec := range e.auditRecords(t) {
		if c, ok := rec["call"].(string); ok && rec["status"].(float64) < 300 {
			calls2[c] = true
			if rec["token"] != "operator" || rec["label"] == nil {
				t.Errorf("audit record %v", rec)
			}
			if c != "patch-delete" && len(fmt.Sprint(rec["sha256"])) != 64 {
				t.Errorf("audit record without sha256: %v", rec)
			}
		}
	}
	for _, c := range []string{"copy", "move", "yank", "unyank", "delete", "patch-put", "patch-delete"} {
		if !calls2[c] {
			t.Errorf("no audit record of a successful %s", c)
		}
	}
}

// TestPromotionYankDelete runs each call and checks the files on disk,
// the index of every label touched, and the downloads.
func TestPromotionYankDelete(t *testing.T) {
	e := startServing(t, false)
	spec := pkgtest.Simple("promo", "1.0", "0", "linux-64")
	fn := spec.Stem() + ".conda"
	data := pkgtest.Conda(t, spec)
	if r := e.uploadTo(t, devToken, "dev", fn, data); r.status != 201 {
		t.Fatal(r.raw)
	}
	copyTo := func(from, to string) response {
		return e.call(t, "POST", "api/v1/packages/"+from+"/linux-64/"+fn+"/copy", devToken, `{"to":"`+to+`"}`)
	}
	if r := copyTo("dev", "main"); r.status != 403 {
		t.Errorf("dev token promoted to main: %d %s", r.status, r.raw)
	}
	r := e.call(t, "POST", "api/v1/packages/dev/linux-64/"+fn+"/copy", adminToken, `{"to":"main"}`)
	if r.status != 201 || r.body["created"] != true || r.body["indexed"] != true {
		t.Fatalf("copy: %d %s", r.status, r.raw)
	}
	if names, _ := e.listedIn(t, "linux-64"); !slices.Equal(names, []string{fn}) {
		t.Errorf("main lists %v after the copy", names)
	}
	if r := e.call(t, "POST", "api/v1/packages/dev/linux-64/"+fn+"/copy", adminToken, `{"to":"main"}`); r.status != 200 || r.body["created"] == true {
		t.Errorf("copy again: %d %s", r.status, r.raw)
	}
	// A different package of the same name in the target: 409.
	other := pkgtest.Simple("promo", "1.0", "0", "linux-64")
	other.Index = map[string]any{"depends": []any{"zlib"}}
	if r := e.uploadTo(t, token, "qa", fn, pkgtest.Conda(t, other)); r.status != 201 {
		t.Fatal(r.raw)
	}
	if r := e.call(t, "POST", "api/v1/packages/dev/linux-64/"+fn+"/copy", adminToken, `{"to":"qa"}`); r.status != 409 {
		t.Errorf("copy over a different package: %d %s", r.status, r.raw)
	}
	// Move dev → staging: gone from dev, in staging, both indexed.
	r = e.call(t, "POST", "api/v1/packages/dev/linux-64/"+fn+"/move", adminToken, `{"to":"staging"}`)
	if r.status != 201 || r.body["moved"] != true {
		t.Fatalf("move: %d %s", r.status, r.raw)
	}
	if e.exists("label/dev/linux-64/"+fn) || !e.exists("label/staging/linux-64/"+fn) {
		t.Error("move did not move the file")
	}
	if names, _ := e.listedIn(t, "label/dev/linux-64"); len(names) != 0 {
		t.Errorf("dev still lists %v", names)
	}
	if names, _ := e.listedIn(t, "label/staging/linux-64"); !slices.Equal(names, []string{fn}) {
		t.Errorf("staging lists %v", names)
	}
	// Yank in main: out of packages, in removed, still downloadable.
	r = e.call(t, "POST", "api/v1/packages/main/linux-64/"+fn+"/yank", adminToken, `{"reason":"segfaults on import"}`)
	if r.status != 200 || r.body["yanked"] != true || r.body["changed"] != true {
		t.Fatalf("yank: %d %s", r.status, r.raw)
	}
	if names, removed := e.listedIn(t, "linux-64"); len(names) != 0 || !slices.Equal(removed, []string{fn}) {
		t.Errorf("after yank: listed %v, removed %v", names, removed)
	}
	resp, err := e.client.Get(e.url + "linux-64/" + fn)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(b, data) {
		t.Errorf("download of a yanked package: %d", resp.StatusCode)
	}
	list := e.call(t, "GET", "api/v1/packages/main/linux-64", adminToken, "")
	files, _ := list.body["files"].([]any)
	if len(files) != 1 || files[0].(map[string]any)["yanked"] != true || files[0].(map[string]any)["yank_reason"] != "segfaults on import" ||
		files[0].(map[string]any)["sha256"] != hexSHA(data) {
		t.Errorf("list after yank: %s", list.raw)
	}
	if r := e.call(t, "POST", "api/v1/packages/main/linux-64/"+fn+"/unyank", adminToken, ""); r.status != 200 || r.body["changed"] != true {
		t.Fatalf("unyank: %d %s", r.status, r.raw)
	}
	if names, removed := e.listedIn(t, "linux-64"); !slices.Equal(names, []string{fn}) || len(removed) != 0 {
		t.Errorf("after unyank: listed %v, removed %v", names, removed)
	}
	// Delete: into .trash/<date>/main/linux-64/, out of the index.
	r = e.call(t, "DELETE", "api/v1/packages/main/linux-64/"+fn, adminToken, "")
	if r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	want := filepath.Join(".trash", time.Now().UTC().Format("2006-01-02"), "main", "linux-64", fn)
	if r.body["trash"] != want || !e.exists(want) || e.exists("linux-64/"+fn) {
		t.Errorf("delete: trash %v, want %s", r.body["trash"], want)
	}
	if names, _ := e.listedIn(t, "linux-64"); len(names) != 0 {
		t.Errorf("main lists %v after delete", names)
	}
	if r := e.call(t, "DELETE", "api/v1/packages/main/linux-64/"+fn, adminToken, ""); r.status != 404 {
		t.Errorf("delete again: %d %s", r.status, r.raw)
	}
}

// TestPatchAPI sets, reads and removes a label's patch through the API,
// and checks that the index follows.
func TestPatchAPI(t *testing.T) {
	e := start(t)
	spec := pkgtest.Simple("patchy", "1.0", "0", "linux-64")
	fn := spec.Stem() + ".conda"
	if r := e.uploadTo(t, token, "dev", fn, pkgtest.Conda(t, spec)); r.status != 201 {
		t.Fatal(r.raw)
	}
	path := "api/v1/patches/dev/linux-64"
	if r := e.call(t, "GET", path, adminToken, ""); r.status != 404 {
		t.Errorf("GET of no patch: %d %s", r.status, r.raw)
	}
	body := `{"patch_instructions_version":1,"packages":{"patchy-1.0-0.tar.bz2":{"depends":["python >=3.9"],"license":"MIT"}}}`
	if r := e.call(t, "PUT", path, adminToken, body); r.status != 200 || r.body["indexed"] != true {
		t.Fatalf("PUT: %d %s", r.status, r.raw)
	}
	rd := readRepodata(t, filepath.Join(e.root, "label/dev/linux-64/repodata.json"))
	rec := rd["packages.conda"].(map[string]any)[fn].(map[string]any)
	if fmt.Sprint(rec["depends"]) != "[python >=3.9]" || rec["license"] != "MIT" {
		t.Errorf("patched record %v", rec)
	}
	if r := e.call(t, "GET", path, adminToken, ""); r.status != 200 || strings.TrimSpace(r.raw) != body {
		t.Errorf("GET: %d %s", r.status, r.raw)
	}
	if r := e.call(t, "DELETE", path, adminToken, ""); r.status != 200 {
		t.Fatalf("DELETE: %d %s", r.status, r.raw)
	}
	rd = readRepodata(t, filepath.Join(e.root, "label/dev/linux-64/repodata.json"))
	if rec := rd["packages.conda"].(map[string]any)[fn].(map[string]any); rec["license"] != "BSD-3-Clause" || fmt.Sprint(rec["depends"]) != "[]" {
		t.Errorf("record still patched: %v", rec)
	}
	if e.exists("label/dev/linux-64/patch_instructions.json") {
		t.Error("patch_instructions.json left behind")
	}
	if r := e.call(t, "DELETE", path, adminToken, ""); r.status != 404 {
		t.Errorf("DELETE of no patch: %d %s", r.status, r.raw)
	}
}

func readRepodata(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestAdminHostile sends the admin API what it must refuse, each with a
// precise status and a one-line JSON error, and checks that nothing on
// disk changed.
func TestAdminHostile(t *testing.T) {
	e := start(t)
	spec := pkgtest.Simple("target", "1.0", "0", "linux-64")
	fn := spec.Stem() + ".conda"
	if r := e.upload(t, fn, pkgtest.Conda(t, spec)); r.status != 201 {
		t.Fatal(r.raw)
	}
	pkg := "api/v1/packages/main/linux-64/" + fn
	big := `{"to":"` + strings.Repeat("a", 70<<10) + `"}`
	tests := []struct {
		name, method, path, body, ctype string
		status                          int
		msg                             string
	}{
		{"traversal in label", "GET", "api/v1/packages/..%2F..%2Fetc/linux-64", "", "", 400, "malformed request path"},
		{"encoded slash in label", "GET", "api/v1/packages/a%2Fb/linux-64", "", "", 400, "malformed request path"},
		{"dot label", "POST", "api/v1/packages/.admin/linux-64/" + fn + "/yank", "", "", 400, "not a label name"},
		{"upper case label", "GET", "api/v1/packages/Main/linux-64", "", "", 400, "not a label name"},
		{"label too long", "GET", "api/v1/packages/" + strings.Repeat("a", 65) + "/linux-64", "", "", 400, "not a label name"},
		{"traversal in subdir", "GET", "api/v1/packages/main/..%2Flabel", "", "", 400, "malformed request path"},
		{"traversal in filename", "POST", "api/v1/packages/main/linux-64/..%2F..%2Fx-1-0.conda/yank", "", "", 400, "malformed request path"},
		{"encoded slash in filename", "POST", "api/v1/packages/main/linux-64/x%2Fx-1-0.conda/yank", "", "", 400, "malformed request path"},
		{"unknown subdir", "GET", "api/v1/packages/main/linux-65", "", "", 400, "not a conda platform subdir"},
		{"hidden filename", "DELETE", "api/v1/packages/main/linux-64/.index-cache", "", "", 400, "not a package filename"},
		{"index file as filename", "DELETE", "api/v1/packages/main/linux-64/repodata.json", "", "", 400, "not a package filename"},
		{"unknown label", "GET", "api/v1/packages/nope/linux-64", "", "", 404, "no such label"},
		{"unknown package", "POST", "api/v1/packages/main/linux-64/ghost-1.0-0.conda/yank", "", "", 404, "no such package"},
		{"copy from unknown label", "POST", "api/v1/packages/nope/linux-64/" + fn + "/copy", `{"to":"dev"}`, "", 404, "no such label"},
		{"unknown call", "POST", pkg + "/promote", `{"to":"dev"}`, "", 404, "no call"},
		{"body too large", "POST", pkg + "/copy", big, "", 413, "larger than"},
		{"not JSON", "POST", pkg + "/copy", `{"to":`, "", 400, "not the JSON"},
		{"wrong JSON type", "POST", pkg + "/copy", `{"to":7}`, "", 400, "not the JSON"},
		{"unknown field", "POST", pkg + "/copy", `{"to":"dev","force":true}`, "", 400, "not the JSON"},
		{"two values", "POST", pkg + "/copy", `{"to":"dev"}{"to":"qa"}`, "", 400, "more than one"},
		{"no target", "POST", pkg + "/copy", `{}`, "", 400, "must name the target"},
		{"target is the source", "POST", pkg + "/move", `{"to":"main"}`, "", 400, "already in label main"},
		{"target not a label", "POST", pkg + "/copy", `{"to":"../x"}`, "", 400, "not a label name"},
		{"wrong content type", "POST", pkg + "/copy", `to=dev`, "application/x-www-form-urlencoded", 415, "application/json"},
		{"reason too long", "POST", pkg + "/yank", `{"reason":"` + strings.Repeat("r", 2000) + `"}`, "", 400, "longer than"},
		{"unyank with reason", "POST", pkg + "/unyank", `{"reason":"x"}`, "", 400, "no reason"},
		{"patch not JSON", "PUT", "api/v1/patches/main/linux-64", `nope`, "", 400, "not the JSON"},
		{"patch empty", "PUT", "api/v1/patches/main/linux-64", ``, "", 400, "must be patch instructions"},
		{"patch without version", "PUT", "api/v1/patches/main/linux-64", `{"remove":["` + fn + `"]}`, "", 400, "patch_instructions_version"},
		{"patch unknown key", "PUT", "api/v1/patches/main/linux-64", `{"patch_instructions_version":1,"rm":[]}`, "", 400, "unknown field"},
		{"patch path filename", "PUT", "api/v1/patches/main/linux-64", `{"patch_instructions_version":1,"remove":["../x.conda"]}`, "", 400, "not a package filename"},
		{"patch of unknown label", "PUT", "api/v1/patches/nope/linux-64", `{"patch_instructions_version":1}`, "", 404, "no such label"},
		{"wrong method", "PATCH", "api/v1/patches/main/linux-64", ``, "", 405, "method not allowed"},
		{"get of a call", "GET", pkg + "/copy", ``, "", 405, "method not allowed"},
	}
	before := e.files(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rd io.Reader
			if tt.body != "" {
				rd = strings.NewReader(tt.body)
			}
			req, err := http.NewRequest(tt.method, e.url+tt.path, rd)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+adminToken)
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			} else if tt.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			r := e.do(t, req)
			if r.status != tt.status || !strings.Contains(r.raw, tt.msg) {
				t.Errorf("got %d %s, want %d %q", r.status, r.raw, tt.status, tt.msg)
			}
			if strings.Count(r.raw, "\n") != 1 || r.body["status"] != float64(r.status) {
				t.Errorf("not a one-line JSON error: %q", r.raw)
			}
		})
	}
	if after := e.files(t); !slices.Equal(before, after) {
		t.Errorf("files changed:\nbefore %v\nafter  %v", before, after)
	}
	if names, _ := e.listedIn(t, "linux-64"); !slices.Equal(names, []string{fn}) {
		t.Errorf("index changed: %v", names)
	}
}
