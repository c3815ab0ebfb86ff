package patch_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/patch"
	"github.com/conda-upload-server/conda-upload-server/internal/record"
)

// FuzzPatch feeds Parse arbitrary instructions and applies what it
// accepts to a real record: nothing panics, a patched record is still a
// JSON object, and a file is removed exactly when remove names it or its
// .tar.bz2 twin.
func FuzzPatch(f *testing.F) {
	for _, s := range []string{
		`{"patch_instructions_version":1,"packages":{"p-1-0.tar.bz2":{"depends":["x"],"features":null,"meta":{"a":{"b":null}}}}}`,
		`{"patch_instructions_version":1,"revoke":["p-1-0.tar.bz2"],"remove":["p-1-0.conda"]}`,
		`{"patch_instructions_version":1,"packages.conda":{"p-1-0.conda":{"size":1e400,"depends":null}}}`,
		`{"patch_instructions_version":1,"packages":{"p-1-0.conda":{"name":7}}}`,
		`{"patch_instructions_version":1,"packages":{"p-1-0.tar.bz2":{"depends":"notalist","version":5,"build_number":"abc"}}}`,
		`{"patch_instructions_version":1,"packages":{"p-1-0.tar.bz2":{"depends":null,"constrains":null,"track_features":null,"license":null}}}`,
		`{"patch_instructions_version":1,"packages.conda":{"p-1-0.conda":{"run_exports":{"weak":null},"noarch":7,"url":"https://x/y.conda"}}}`,
	} {
		f.Add([]byte(s), "p-1-0.conda")
		f.Add([]byte(s), "p-1-0.tar.bz2")
	}
	const rec = `{"build":"0","build_number":0,"depends":["a"],"name":"p","size":10,"timestamp":1652966521286,"version":"1","meta":{"a":{"b":1}}}`
	f.Fuzz(func(t *testing.T, instr []byte, filename string) {
		in, err := patch.Parse(instr, true)
		if err != nil {
			return
		}
		if _, err := in.Marshal(); err != nil {
			t.Fatalf("accepted instructions do not marshal: %v", err)
		}
		out, removed, err := in.Plan().Apply(filename, json.RawMessage(rec))
		if err != nil {
			return // a number JSON cannot hold, for one
		}
		twin := ""
		if len(filename) > 6 && filename[len(filename)-6:] == ".conda" {
			twin = filename[:len(filename)-6] + ".tar.bz2"
		}
		want := slices.Contains(in.Remove, filename) || (twin != "" && slices.Contains(in.Remove, twin))
		if removed != want {
			t.Fatalf("removed = %v, want %v", removed, want)
		}
		if removed {
			return
		}
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.UseNumber()
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("patched record is not a JSON object: %v: %s", err, out)
		}
		if err := record.Check(doc); err != nil {
			t.Fatalf("accepted instructions made a record clients cannot read: %v: %s", err, out)
		}
	})
}
