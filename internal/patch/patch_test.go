package patch_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/patch"
)

func TestApply(t *testing.T) {
	const rec = `{"build":"0","depends":["a","b"],"features":"x","name":"p","size":10,"timestamp":1652966521286,"meta":{"k":1,"j":2}}`
	tests := []struct {
		name, instr, filename string
		want                  string // "" means removed
	}{
		{"untouched", `{"patch_instructions_version":1,"packages":{"q-1-0.tar.bz2":{"depends":[]}}}`, "p-1-0.tar.bz2", rec},
		{"list replaces", `{"patch_instructions_version":1,"packages":{"p-1-0.tar.bz2":{"depends":["c"]}}}`, "p-1-0.tar.bz2",
			`{"build":"0","depends":["c"],"features":"x","meta":{"j":2,"k":1},"name":"p","size":10,"timestamp":1652966521286}`},
		{"null removes, null on a missing key sets null", `{"patch_instructions_version":1,"packages":{"p-1-0.tar.bz2":{"features":null,"nope":null}}}`, "p-1-0.tar.bz2",
			`{"build":"0","depends":["a","b"],"meta":{"j":2,"k":1},"name":"p","nope":null,"size":10,"timestamp":1652966521286}`},
		{"objects merge", `{"patch_instructions_version":1,"packages":{"p-1-0.tar.bz2":{"meta":{"k":3,"j":null,"n":{"x":1.5}}}}}`, "p-1-0.tar.bz2",
			`{"build":"0","depends":["a","b"],"features":"x","meta":{"k":3,"n":{"x":1.5}},"name":"p","size":10,"timestamp":1652966521286}`},
		{".tar.bz2 fix reaches the .conda twin", `{"patch_instructions_version":1,"packages":{"p-1-0.tar.bz2":{"license":"A"}}}`, "p-1-0.conda",
			`{"build":"0","depends":["a","b"],"features":"x","license":"A","meta":{"j":2,"k":1},"name":"p","size":10,"timestamp":1652966521286}`},
		{"packages.conda after packages", `{"patch_instructions_version":1,"packages":{"p-1-0.tar.bz2":{"license":"A"}},"packages.conda":{"p-1-0.conda":{"license":"B"}}}`, "p-1-0.conda",
			`{"build":"0","depends":["a","b"],"features":"x","license":"B","meta":{"j":2,"k":1},"name":"p","size":10,"timestamp":1652966521286}`},
		{"packages.conda leaves .tar.bz2 alone", `{"patch_instructions_version":1,"packages.conda":{"p-1-0.conda":{"license":"B"}}}`, "p-1-0.tar.bz2", rec},
		{"revoke", `{"patch_instructions_version":1,"revoke":["p-1-0.tar.bz2"]}`, "p-1-0.conda",
			`{"build":"0","depends":["a","b","package_has_been_revoked"],"features":"x","meta":{"j":2,"k":1},"name":"p","revoked":true,"size":10,"timestamp":1652966521286}`},
		{"remove reaches the twin", `{"patch_instructions_version":1,"remove":["p-1-0.tar.bz2"]}`, "p-1-0.conda", ""},
		{"remove of .conda spares the .tar.bz2", `{"patch_instructions_version":1,"remove":["p-1-0.conda"]}`, "p-1-0.tar.bz2", rec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := patch.Parse([]byte(tt.instr), true)
			if err != nil {
				t.Fatal(err)
			}
			got, removed, err := in.Plan().Apply(tt.filename, json.RawMessage(rec))
			if err != nil {
				t.Fatal(err)
			}
			if removed != (tt.want == "") {
				t.Fatalf("removed = %v", removed)
			}
			if tt.want == "" {
				return
			}
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatal(err)
			}
			json.Unmarshal([]byte(tt.want), &w)
			if !reflect.DeepEqual(g, w) {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if strings.Contains(string(got), "e+") {
				t.Errorf("a number lost its form: %s", got)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct{ name, in string }{
		{"not JSON", `{`},
		{"two values", `{"patch_instructions_version":1} {}`},
		{"unknown key", `{"patch_instructions_version":1,"packagez":{}}`},
		{"no version", `{"packages":{}}`},
		{"version 2", `{"patch_instructions_version":2}`},
		{"path in a filename", `{"patch_instructions_version":1,"remove":["../x-1-0.conda"]}`},
		{"empty filename", `{"patch_instructions_version":1,"revoke":[""]}`},
		{"packages.conda names a .tar.bz2", `{"patch_instructions_version":1,"packages.conda":{"x-1-0.tar.bz2":{}}}`},
		{"null fix", `{"patch_instructions_version":1,"packages":{"x-1-0.tar.bz2":null}}`},
		{"fix not an object", `{"patch_instructions_version":1,"packages":{"x-1-0.tar.bz2":[1]}}`},
		{"remove not a list", `{"patch_instructions_version":1,"remove":"x-1-0.conda"}`},
		{"number out of range", `{"patch_instructions_version":1,"packages":{"x-1-0.tar.bz2":{"meta":1e400}}}`},
		{"depends not a list", `{"patch_instructions_version":1,"packages":{"x-1-0.tar.bz2":{"depends":"notalist"}}}`},
		{"version a number", `{"patch_instructions_version":1,"packages":{"x-1-0.tar.bz2":{"version":5}}}`},
		{"build_number a string", `{"patch_instructions_version":1,"packages":{"x-1-0.tar.bz2":{"build_number":"abc"}}}`},
		{"noarch 7", `{"patch_instructions_version":1,"packages.conda":{"x-1-0.conda":{"noarch":7}}}`},
		{"url", `{"patch_instructions_version":1,"packages":{"x-1-0.tar.bz2":{"url":"https://evil/x-1-0.conda"}}}`},
		{"sha256", `{"patch_instructions_version":1,"packages":{"x-1-0.tar.bz2":{"sha256":"00"}}}`},
		{"invalid UTF-8", "{\"patch_instructions_version\":1,\"packages\":{\"x-1-0.tar.bz2\":{\"license\":\"\xff\"}}}"},
		{"over MaxSize", `{"patch_instructions_version":1,"packages":{"x-1-0.tar.bz2":{"license":"` + strings.Repeat("a", patch.MaxSize) + `"}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := patch.Parse([]byte(tt.in), true); err == nil {
				t.Errorf("Parse(%s) accepted it", tt.in)
			}
		})
	}
	// Read leniently, a file conda-index would use is used.
	if _, err := patch.Parse([]byte(`{"packages":{},"extra":1}`), false); err != nil {
		t.Errorf("lenient parse: %v", err)
	}
}

// TestNullKeepsRequiredShape checks that a null fix of a field a record
// lacks sets it to null only where a client can read null: conda-index
// would write "depends": null, which rattler refuses with the whole
// repodata.json.
func TestNullKeepsRequiredShape(t *testing.T) {
	in, err := patch.Parse([]byte(`{"patch_instructions_version":1,"packages":{"p-1-0.conda":{"depends":null,"constrains":null,"license":null}}}`), true)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := in.Plan().Apply("p-1-0.conda", json.RawMessage(`{"build":"0","build_number":0,"name":"p","version":"1"}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"build":"0","build_number":0,"license":null,"name":"p","version":"1"}`; string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}
