package record_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/record"
)

// good is a record as conda-build writes index.json.
const good = `{"arch":"x86_64","build":"py39_0","build_number":0,"constrains":["b >=2"],"depends":["python >=3.9,<3.10.0a0","conda-forge::zlib","__glibc >=2.17","pkg[version='>=1']"],` +
	`"license":"MIT","license_family":"MIT","name":"p","noarch":"python","platform":"linux","subdir":"linux-64","timestamp":1700000000000,"track_features":"a b",` +
	`"features":null,"run_exports":{"weak":["p >=1"]},"purls":["pkg:pypi/p@1"],"python_site_packages_path":"lib/python3.13t/site-packages","version":"1.0","extra":{"any":[1,"x"]}}`

func decode(t *testing.T, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// with returns the good record with key set to the JSON value v, or
// removed if v is "".
func with(t *testing.T, key, v string) map[string]any {
	doc := decode(t, good)
	if v == "" {
		delete(doc, key)
	} else {
		doc[key] = decode(t, `{"v":`+v+`}`)["v"]
	}
	return doc
}

func TestCheck(t *testing.T) {
	if err := record.Check(decode(t, good)); err != nil {
		t.Fatalf("a good record is refused: %v", err)
	}
	deep := strings.Repeat("[", record.MaxDepth+2) + strings.Repeat("]", record.MaxDepth+2)
	tests := []struct{ field, value, wantField string }{
		{"depends", `"notalist"`, "depends"},
		{"Depends", `"notalist"`, "Depends"},
		{"constrainS", `"str"`, "constrainS"},
		{"FN", `"other.conda"`, "FN"},
		{"depends", `[5,{}]`, "depends[0]"},
		{"depends", `null`, "depends"},
		{"depends", `[""]`, "depends[0]"},
		{"depends", `["a\nb"]`, "depends[0]"},
		{"depends", `["a\u0000"]`, "depends[0]"},
		{"depends", `[" a"]`, "depends[0]"},
		{"depends", `[">=1"]`, "depends[0]"},
		{"constrains", `"str"`, "constrains"},
		{"build_number", `"abc"`, "build_number"},
		{"build_number", `-1`, "build_number"},
		{"build_number", `1.5`, "build_number"},
		{"build_number", `1e3`, "build_number"},
		{"build_number", `18446744073709551616`, "build_number"},
		{"build_number", `null`, "build_number"},
		{"build_number", ``, "build_number"},
		{"noarch", `7`, "noarch"},
		{"noarch", `"java"`, "noarch"},
		{"noarch", `""`, "noarch"},
		{"noarch", `{}`, "noarch"},
		{"version", `5`, "version"},
		{"version", `"1..0"`, "version"},
		{"version", `"1 0"`, "version"},
		{"name", `["p"]`, "name"},
		{"name", `""`, "name"},
		{"build", `null`, "build"},
		{"fn", `"other-1-0.conda"`, "fn"},
		{"url", `"https://evil.example/x.conda"`, "url"},
		{"channel", `"evil"`, "channel"},
		{"schannel", `"evil"`, "schannel"},
		{"timestamp", `-5`, "timestamp"},
		{"timestamp", `1e400`, "timestamp"},
		{"timestamp", `1700000000000.5`, "timestamp"},
		{"timestamp", `253402207201000`, "timestamp"},
		{"timestamp", `"2024"`, "timestamp"},
		{"size", `-1`, "size"},
		{"md5", `"xyz"`, "md5"},
		{"sha256", `5`, "sha256"},
		{"track_features", `7`, "track_features"},
		{"track_features", `[1]`, "track_features[0]"},
		{"track_features", `null`, "track_features"},
		{"features", `["a"]`, "features"},
		{"license", `{}`, "license"},
		{"license", `"MIT\u0000"`, "license"},
		{"subdir", `7`, "subdir"},
		{"arch", `64`, "arch"},
		{"platform", `true`, "platform"},
		{"run_exports", `"x"`, "run_exports"},
		{"run_exports", `{"weak":"x"}`, "run_exports.weak"},
		{"run_exports", `{"strong":[5]}`, "run_exports.strong[0]"},
		{"purls", `["pypi/p"]`, "purls[0]"},
		{"purls", `"pkg:pypi/p"`, "purls"},
		{"python_site_packages_path", `"/usr/lib/python3/site-packages"`, "python_site_packages_path"},
		{"python_site_packages_path", `"lib/../../etc"`, "python_site_packages_path"},
		{"extra_depends", `{"x":"y"}`, "extra_depends.x"},
		{"revoked", `"yes"`, "revoked"},
		{"extra", `1e400`, "extra"},
		{"extra", deep, "extra"},
	}
	for _, tt := range tests {
		t.Run(tt.field+"="+tt.value, func(t *testing.T) {
			err := record.Check(with(t, tt.field, tt.value))
			var re *record.Error
			if !errors.As(err, &re) {
				t.Fatalf("accepted, or not a record.Error: %v", err)
			}
			if re.Field != tt.wantField {
				t.Errorf("field %q, want %q (%v)", re.Field, tt.wantField, err)
			}
			if !strings.Contains(err.Error(), `"`+tt.wantField+`"`) || strings.Contains(err.Error(), "\n") {
				t.Errorf("message does not name the field on one line: %q", err)
			}
		})
	}
}

func TestCheckFix(t *testing.T) {
	ok := []string{
		`{"depends":["x >=1"],"license":"MIT"}`,
		`{"features":null,"track_features":null,"depends":null}`,
		`{"revoked":true,"timestamp":1700000000000,"run_exports":{"weak":["p"]}}`,
		`{"anything":{"nested":null}}`,
	}
	for _, s := range ok {
		if err := record.CheckFix(decode(t, s)); err != nil {
			t.Errorf("CheckFix(%s): %v", s, err)
		}
	}
	bad := []struct{ fix, field string }{
		{`{"depends":"notalist"}`, "depends"},
		{`{"version":5}`, "version"},
		{`{"version":"2.0"}`, "version"},
		{`{"name":"other"}`, "name"},
		{`{"build_number":"abc"}`, "build_number"},
		{`{"build_number":null}`, "build_number"},
		{`{"sha256":"00"}`, "sha256"},
		{`{"size":1}`, "size"},
		{`{"url":"https://x/y.conda"}`, "url"},
		{`{"fn":"y.conda"}`, "fn"},
		{`{"run_exports":{"weak":null}}`, "run_exports.weak"},
		{`{"x":1e400}`, "x"},
		{`{"buiLd_number":null}`, "buiLd_number"}, // a null case twin: found by FuzzPatch
		{`{"Depends":["x"]}`, "Depends"},
	}
	for _, tt := range bad {
		var re *record.Error
		if err := record.CheckFix(decode(t, tt.fix)); !errors.As(err, &re) || re.Field != tt.field {
			t.Errorf("CheckFix(%s) = %v, want an error naming %q", tt.fix, err, tt.field)
		}
	}
}

func TestNullable(t *testing.T) {
	for key, want := range map[string]bool{"depends": false, "build_number": false, "license": true, "features": true, "unknown": true} {
		if got := record.Nullable(key); got != want {
			t.Errorf("Nullable(%q) = %v, want %v", key, got, want)
		}
	}
}

// FuzzCheck feeds Check arbitrary JSON objects: it never panics, and a
// record it accepts survives encoding/json's round trip with its
// required fields of the right types.
func FuzzCheck(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(`{"name":"p","version":"1","build":"0","build_number":0,"depends":"notalist"}`))
	f.Add([]byte(`{"name":"p","version":"1","build":"0","build_number":1e400,"noarch":7}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var doc map[string]any
		if dec.Decode(&doc) != nil || doc == nil {
			return
		}
		if record.Check(doc) != nil {
			return
		}
		out, err := json.Marshal(doc)
		if err != nil {
			t.Fatalf("an accepted record does not encode: %v", err)
		}
		var back struct {
			Name        string   `json:"name"`
			Version     string   `json:"version"`
			Build       string   `json:"build"`
			BuildNumber uint64   `json:"build_number"`
			Depends     []string `json:"depends"`
			Constrains  []string `json:"constrains"`
		}
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("an accepted record does not read back typed: %v: %s", err, out)
		}
	})
}
