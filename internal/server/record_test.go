package server_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/patch"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
)

// hostileIndex returns the index.json of name-1.0-0 for linux-64 with
// key set to the raw JSON value (or left out if raw is ""), written by
// hand so that values encoding/json cannot make (1e400, invalid UTF-8,
// duplicate keys) reach the server as a client would send them.
func hostileIndex(name, key, raw string) []byte {
	base := [][2]string{
		{"name", `"` + name + `"`}, {"version", `"1.0"`}, {"build", `"0"`}, {"build_number", `0`},
		{"subdir", `"linux-64"`}, {"depends", `[]`}, {"license", `"MIT"`}, {"timestamp", `1700000000000`},
	}
	i := slices.IndexFunc(base, func(kv [2]string) bool { return kv[0] == key })
	switch {
	case i >= 0 && raw == "":
		base = slices.Delete(base, i, i+1)
	case i >= 0:
		base[i][1] = raw
	default:
		base = append(base, [2]string{key, raw})
	}
	var b strings.Builder
	b.WriteString("{")
	for j, kv := range base {
		if j > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%q:%s", kv[0], kv[1])
	}
	b.WriteString("}")
	return []byte(b.String())
}

// channelState is what a refused request must leave as it was: every
// file of the channel and the subdir's repodata.json.
func channelState(t *testing.T, e *env) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.root, "linux-64", "repodata.json"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(e.files(t), "\n") + "\n" + string(b)
}

// TestHostileIndexJSON uploads packages whose index.json holds a field
// of the wrong type or shape, each of which would make rattler refuse
// the whole repodata.json, or conda fail on the record: each is 400
// naming the field, and the channel is left as it was.
func TestHostileIndexJSON(t *testing.T) {
	e := start(t)
	good := pkgtest.Simple("good", "1.0", "0", "linux-64")
	if r := e.upload(t, good.Stem()+".conda", pkgtest.Conda(t, good)); r.status != http.StatusCreated {
		t.Fatal(r.raw)
	}
	before := channelState(t, e)
	long := `"` + strings.Repeat("a", 100) + `"`
	tests := []struct{ key, raw, field string }{
		{"depends", `"notalist"`, "depends"},
		{"depends", `[5, {}]`, "depends[0]"},
		{"depends", `null`, "depends"},
		{"depends", `["python >=3.9", ""]`, "depends[1]"},
		{"depends", `["a\nb"]`, "depends[0]"},
		{"depends", `["zlib\u0000"]`, "depends[0]"},
		{"depends", `[` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `]`, "depends"},
		{"constrains", `"str"`, "constrains"},
		{"constrains", `[{"a":1}]`, "constrains[0]"},
		{"build_number", `"abc"`, "build_number"},
		{"build_number", `-1`, "build_number"},
		{"build_number", `1.5`, "build_number"},
		{"build_number", `1e400`, "build_number"},
		{"build_number", `99999999999999999999999`, "build_number"},
		{"build_number", `null`, "build_number"},
		{"build_number", ``, "build_number"},
		{"noarch", `7`, "noarch"},
		{"noarch", `"java"`, "noarch"},
		{"noarch", `{}`, "noarch"},
		{"fn", `"other-1.0-0.conda"`, "fn"},
		{"url", `"https://evil.example/linux-64/other-1.0-0.conda"`, "url"},
		{"channel", `"https://evil.example"`, "channel"},
		{"timestamp", `1e400`, "timestamp"},
		{"timestamp", `-1`, "timestamp"},
		{"timestamp", `"yesterday"`, "timestamp"},
		{"track_features", `{"a":1}`, "track_features"},
		{"features", `["a"]`, "features"},
		{"license", `["MIT"]`, "license"},
		{"license", `"MIT\u0000GPL"`, "license"},
		{"license_family", `5`, "license_family"},
		{"arch", `{}`, "arch"},
		{"platform", `7`, "platform"},
		{"md5", `"not-hex"`, "md5"},
		{"sha256", `5`, "sha256"},
		{"size", `-5`, "size"},
		{"purls", `"pkg:pypi/x"`, "purls"},
		{"run_exports", `{"weak":"x"}`, "run_exports.weak"},
		{"python_site_packages_path", `"../../../etc"`, "python_site_packages_path"},
		{"python_site_packages_path", `"/usr/lib/python3/site-packages"`, "python_site_packages_path"},
		{"extra_depends", `[]`, "extra_depends"},
		{"unknown", `1e400`, "unknown"},
		{"unknown", strings.Repeat("[", 40) + strings.Repeat("]", 40), "unknown"},
		{"license", "\"\xff\xfe\"", "UTF-8"},
		{"license", long, ""}, // a long string is fine: index.json's size bounds it
	}
	for i, tt := range tests {
		ext := []string{".conda", ".tar.bz2"}[i%2]
		t.Run(tt.key+"="+tt.raw+ext, func(t *testing.T) {
			spec := pkgtest.Simple("hostile", "1.0", "0", "linux-64")
			spec.RawIndex = hostileIndex(spec.Name, tt.key, tt.raw)
			r := e.upload(t, spec.Stem()+ext, pkgtest.Build(t, spec, ext))
			if tt.field == "" {
				if r.status != http.StatusCreated {
					t.Fatalf("a valid package is refused: %s", r.raw)
				}
				if r := e.call(t, "DELETE", "api/v1/packages/main/linux-64/"+spec.Stem()+ext, adminToken, ""); r.status != http.StatusOK {
					t.Fatal(r.raw)
				}
				return
			}
			msg, _ := r.body["error"].(string)
			if r.status != http.StatusBadRequest || !strings.Contains(msg, tt.field) {
				t.Fatalf("want 400 naming %q, got %d %s", tt.field, r.status, r.raw)
			}
			if after := channelState(t, e); after != before {
				t.Fatalf("the refused upload changed the channel:\n%s\nwas\n%s", after, before)
			}
		})
	}
}

// TestHostilePatch sends patch instructions that would write such fields
// into repodata.json, or rename a record, or cost every later index run
// too much: each is refused with the field named (or 413), and no patch
// is stored.
func TestHostilePatch(t *testing.T) {
	e := start(t)
	spec := pkgtest.Simple("patchme", "1.0", "0", "linux-64")
	fn := spec.Stem() + ".conda"
	if r := e.upload(t, fn, pkgtest.Conda(t, spec)); r.status != http.StatusCreated {
		t.Fatal(r.raw)
	}
	before := channelState(t, e)
	fix := func(s string) string {
		return `{"patch_instructions_version":1,"packages.conda":{"` + fn + `":` + s + `}}`
	}
	tests := []struct {
		name, body, field string
		status            int
	}{
		{"the probe's", fix(`{"depends":"notalist","version":5,"build_number":"abc"}`), "build_number", http.StatusBadRequest},
		{"depends not a list", fix(`{"depends":"notalist"}`), "depends", http.StatusBadRequest},
		{"depends of numbers", fix(`{"depends":[5,{}]}`), "depends[0]", http.StatusBadRequest},
		{"constrains a string", fix(`{"constrains":"str"}`), "constrains", http.StatusBadRequest},
		{"version a number", fix(`{"version":5}`), "version", http.StatusBadRequest},
		{"version changed", fix(`{"version":"9.9"}`), "version", http.StatusBadRequest},
		{"name changed", fix(`{"name":"numpy"}`), "name", http.StatusBadRequest},
		{"build_number a string", fix(`{"build_number":"abc"}`), "build_number", http.StatusBadRequest},
		{"build_number removed", fix(`{"build_number":null}`), "build_number", http.StatusBadRequest},
		{"build_number negative", fix(`{"build_number":-1}`), "build_number", http.StatusBadRequest},
		{"noarch 7", fix(`{"noarch":7}`), "noarch", http.StatusBadRequest},
		{"sha256 changed", fix(`{"sha256":"` + strings.Repeat("0", 64) + `"}`), "sha256", http.StatusBadRequest},
		{"size changed", fix(`{"size":1}`), "size", http.StatusBadRequest},
		{"url", fix(`{"url":"https://evil.example/x.conda"}`), "url", http.StatusBadRequest},
		{"fn", fix(`{"fn":"other-1.0-0.conda"}`), "fn", http.StatusBadRequest},
		{"timestamp 1e400", fix(`{"timestamp":1e400}`), "timestamp", http.StatusBadRequest},
		{"run_exports weak null", fix(`{"run_exports":{"weak":null}}`), "run_exports.weak", http.StatusBadRequest},
		{"license NUL", fix(`{"license":"MIT\u0000"}`), "license", http.StatusBadRequest},
		{"deep nesting", fix(`{"meta":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`), "meta", http.StatusBadRequest},
		{"invalid UTF-8", fix("{\"license\":\"\xff\"}"), "UTF-8", http.StatusBadRequest},
		{"over MaxSize", fix(`{"license":"` + strings.Repeat("a", patch.MaxSize) + `"}`), "larger than", http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.call(t, "PUT", "api/v1/patches/main/linux-64", adminToken, tt.body)
			msg, _ := r.body["error"].(string)
			if r.status != tt.status || !strings.Contains(msg, tt.field) {
				t.Fatalf("want %d naming %q, got %d %s", tt.status, tt.field, r.status, r.raw)
			}
			if r := e.call(t, "GET", "api/v1/patches/main/linux-64", adminToken, ""); r.status != http.StatusNotFound {
				t.Errorf("a patch is stored: %d %s", r.status, r.raw)
			}
			if after := channelState(t, e); after != before {
				t.Fatalf("the refused patch changed the channel:\n%s\nwas\n%s", after, before)
			}
		})
	}
	// A valid patch of the same size class still works.
	if r := e.call(t, "PUT", "api/v1/patches/main/linux-64", adminToken, fix(`{"depends":["python >=3.9"],"license":null}`)); r.status != http.StatusOK {
		t.Fatalf("a valid patch is refused: %d %s", r.status, r.raw)
	}
}
