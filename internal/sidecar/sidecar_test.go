package sidecar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestAppend(t *testing.T) {
	pretty := "[\n  {\"a\": 1,\n   \"b\": [1, 2]} ,\n\t{\"mediaType\":\"x\"}\n]\n"
	tests := []struct {
		name, current, bundle string
		want                  string // "" when an error is wanted
		added                 bool
		err                   string
	}{
		{"no sidecar yet", "", `{"x":1}`, `[{"x":1}]`, true, ""},
		{"white space only is no sidecar", " \n", `{"x":1}`, `[{"x":1}]`, true, ""},
		{"empty array", "[]", `{"x":1}`, `[{"x":1}]`, true, ""},
		{"made here", `[{"a":1}]`, `{"b":2}`, `[{"a":1},{"b":2}]`, true, ""},
		{"elements kept byte for byte", pretty, ` {"c" : 3}` + "\n", "[{\"a\": 1,\n   \"b\": [1, 2]},{\"mediaType\":\"x\"},{\"c\" : 3}]", true, ""},
		{"the new element's bytes are kept", `[{"a":1}]`, "{ \"b\" :\n 2 }", "[{\"a\":1},{ \"b\" :\n 2 }]", true, ""},
		{"a bundle already there is not added twice", `[{"a":1}, {"b":2}]`, `{"b":2}`, `[{"a":1}, {"b":2}]`, false, ""},
		{"same content, other bytes, is another element", `[{"b":2}]`, `{"b": 2}`, `[{"b":2},{"b": 2}]`, true, ""},
		{"current is an object", `{"a":1}`, `{"b":2}`, "", false, "not a JSON array"},
		{"current is cut short", `[{"a":1}`, `{"b":2}`, "", false, "sidecar"},
		{"data after the array", `[{"a":1}] []`, `{"b":2}`, "", false, "data after the array"},
		{"an element is not an object", `[{"a":1}, 3]`, `{"b":2}`, "", false, "element 1 is not a JSON object"},
		{"new element is an array", `[{"a":1}]`, `[{"b":2}]`, "", false, "not one JSON object"},
		{"new element is two objects", `[{"a":1}]`, `{"b":2}{"c":3}`, "", false, "not one JSON object"},
		{"new element is cut short", `[{"a":1}]`, `{"b":2`, "", false, "not one JSON object"},
		{"new element is empty", `[{"a":1}]`, ``, "", false, "not one JSON object"},
		{"too large", "", `{"x":"` + strings.Repeat("y", MaxSize) + `"}`, "", false, "exceed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, added, err := Append([]byte(tt.current), []byte(tt.bundle))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want || added != tt.added {
				t.Fatalf("got %q, added %v; want %q, %v", got, added, tt.want, tt.added)
			}
		})
	}
}

// A sidecar made here grows by appending bytes: what a client or mirror
// fetched before is a prefix, up to the closing bracket, of what comes
// after.
func TestAppendExtendsByteWise(t *testing.T) {
	var cur []byte
	for i := range 20 {
		next, added, err := Append(cur, fmt.Appendf(nil, `{"n":%d}`, i))
		if err != nil || !added {
			t.Fatalf("append %d: %v, added %v", i, err, added)
		}
		if len(cur) > 0 && !bytes.HasPrefix(next, cur[:len(cur)-1]) {
			t.Fatalf("%q does not extend %q", next, cur)
		}
		cur = next
	}
}

func TestDigest(t *testing.T) {
	// sha256 of "[]", a known value.
	if got := Digest([]byte("[]")); got != "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945" {
		t.Fatal(got)
	}
}

func FuzzMerge(f *testing.F) {
	f.Add([]byte(""), []byte(`{"a":1}`))
	f.Add([]byte(`[{"a":1}]`), []byte(`{"b":2}`))
	f.Add([]byte("[ {\"a\" : [1,{}]} ,\n{} ]\n"), []byte(` {"a":"\u00e9"} `))
	f.Add([]byte(`[{"a":1}]`), []byte(`{"a":1}`))
	f.Add([]byte(`[]`), []byte(`[]`))
	f.Fuzz(func(t *testing.T, current, bundle []byte) {
		next, added, err := Append(current, bundle)
		if err != nil {
			return
		}
		if !json.Valid(next) {
			t.Fatalf("result %q is not valid JSON", next)
		}
		var old [][]byte
		if len(bytes.TrimSpace(current)) > 0 {
			if old, err = Elements(current); err != nil {
				t.Fatalf("Append accepted a current sidecar that Elements refuses: %v", err)
			}
		}
		got, err := Elements(next)
		if err != nil {
			t.Fatalf("the result does not parse: %v", err)
		}
		if len(got) < len(old) || !slices.EqualFunc(old, got[:len(old)], bytes.Equal) {
			t.Fatalf("old elements %q are not a prefix of %q", old, got)
		}
		want := bytes.TrimSpace(bundle)
		if added {
			if len(got) != len(old)+1 || !bytes.Equal(got[len(got)-1], want) {
				t.Fatalf("added, but the last of %q is not %q", got, want)
			}
		} else if !bytes.Equal(next, current) || !slices.ContainsFunc(got, func(e []byte) bool { return bytes.Equal(e, want) }) {
			t.Fatalf("not added, but %q changed or lacks %q", next, want)
		}
	})
}

func pkg(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "pkg-1.0-0.conda")
	if err := os.WriteFile(p, []byte("package"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAdd(t *testing.T) {
	p := pkg(t)
	first, err := Add(p, []byte(`{"n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	second, err := Add(p, []byte(`{"n":2}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(read(t, p+".sigs")) != `[{"n":1},{"n":2}]` {
		t.Fatalf(".sigs is %q", read(t, p+".sigs"))
	}
	for _, pub := range []Published{first, second} {
		if !pub.Added || Digest(read(t, pub.Immutable)) != pub.SHA256 || pub.Immutable != p+".sigs."+pub.SHA256 {
			t.Fatalf("%+v: the immutable copy is missing or does not hash to its name", pub)
		}
	}
	if string(read(t, first.Immutable)) != `[{"n":1}]` {
		t.Fatal("the first revision's immutable copy changed")
	}
	sha, ok, err := Current(p)
	if err != nil || !ok || sha != second.SHA256 {
		t.Fatalf("Current = %s, %v, %v; want %s", sha, ok, err, second.SHA256)
	}
	again, err := Add(p, []byte(`{"n":2}`))
	if err != nil || again.Added || again.SHA256 != second.SHA256 {
		t.Fatalf("a repeated bundle: %+v, %v", again, err)
	}
	paths, err := Paths(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{p + ".sigs", first.Immutable, second.Immutable}
	slices.Sort(want[1:])
	if !slices.Equal(paths, want) {
		t.Fatalf("Paths = %q, want %q", paths, want)
	}
}

func TestAddWithoutPackage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "gone-1.0-0.conda")
	if _, err := Add(p, []byte(`{"n":1}`)); err == nil {
		t.Fatal("a sidecar was added for a package that is not there")
	}
	if paths, err := Paths(p); err != nil || len(paths) != 0 {
		t.Fatalf("files left: %q, %v", paths, err)
	}
}

func TestCurrentWithoutSidecar(t *testing.T) {
	sha, ok, err := Current(pkg(t))
	if err != nil || ok || sha != "" {
		t.Fatalf("Current = %q, %v, %v", sha, ok, err)
	}
}

// A sidecar that is not a JSON array is never overwritten: the bundles in
// it may be all that is left of them.
func TestAddRefusesACorruptSidecar(t *testing.T) {
	p := pkg(t)
	if err := os.WriteFile(p+".sigs", []byte(`[{"n":1},`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Add(p, []byte(`{"n":2}`)); err == nil {
		t.Fatal("added to a corrupt sidecar")
	}
	if string(read(t, p+".sigs")) != `[{"n":1},` {
		t.Fatal("the corrupt sidecar was changed")
	}
	if paths, _ := Paths(p); len(paths) != 1 {
		t.Fatalf("files left: %q", paths)
	}
}

func TestPathsIgnoresOtherFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a[1]*-1.0-0.conda") // glob metacharacters
	hex := strings.Repeat("ab", 32)
	for _, name := range []string{
		"a[1]*-1.0-0.conda.sigs." + hex,
		"a[1]*-1.0-0.conda.sigs." + hex + "0",                // not a digest
		"a[1]*-1.0-0.conda.sigs." + strings.ToUpper(hex),     // not lowercase
		".a[1]*-1.0-0.conda.sigs.tmp-123",                    // a temp file
		"a11-1.0-0.conda.sigs." + hex,                        // another package the pattern would match
		"a[1]*-1.0-0.conda.sigs.a" + strings.Repeat("b", 63), // another digest
	} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Paths(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "a[1]*-1.0-0.conda.sigs."+hex), filepath.Join(dir, "a[1]*-1.0-0.conda.sigs.a"+strings.Repeat("b", 63))}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("Paths = %q, want %q", got, want)
	}
}

// Serialized additions from many goroutines (the store's lock) are never
// lost, and a reader that sees a revision of <file>.sigs always finds its
// immutable copy already there.
func TestAddConcurrent(t *testing.T) {
	p := pkg(t)
	var mu sync.Mutex
	const n = 40
	stop := make(chan struct{})
	readerErr := make(chan error, 1)
	go func() {
		defer close(readerErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := os.ReadFile(p + ".sigs")
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				readerErr <- err
				return
			}
			if _, err := os.Stat(Immutable(p, Digest(b))); err != nil {
				readerErr <- fmt.Errorf("a reader saw .sigs before its immutable copy: %w", err)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			mu.Lock()
			_, err := Add(p, fmt.Appendf(nil, `{"n":%d}`, i))
			mu.Unlock()
			errs <- err
		})
	}
	wg.Wait()
	close(stop)
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-readerErr; err != nil {
		t.Fatal(err)
	}
	elems, err := Elements(read(t, p+".sigs"))
	if err != nil {
		t.Fatal(err)
	}
	if len(elems) != n {
		t.Fatalf("%d of %d concurrent additions are in the sidecar", len(elems), n)
	}
	paths, _ := Paths(p)
	if len(paths) != n+1 {
		t.Fatalf("%d sidecar files, want %d immutable revisions and .sigs", len(paths), n)
	}
}

// Carry links every sidecar file to a copy without one, and appends the
// elements a copy lacks to its own, publishing a new immutable revision.
func TestCarry(t *testing.T) {
	from := pkg(t)
	if _, err := Add(from, []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := Add(from, []byte(`{"n":2}`)); err != nil {
		t.Fatal(err)
	}
	to := pkg(t)
	if err := Carry(from, to); err != nil {
		t.Fatal(err)
	}
	src, _ := Paths(from)
	dst, _ := Paths(to)
	if len(dst) != 3 || len(src) != 3 {
		t.Fatalf("carried %q from %q", dst, src)
	}
	for i := range src {
		if !bytes.Equal(read(t, src[i]), read(t, dst[i])) {
			t.Errorf("%s differs from %s", dst[i], src[i])
		}
	}
	other := pkg(t)
	if _, err := Add(other, []byte(`{"n":3}`)); err != nil {
		t.Fatal(err)
	}
	if err := Carry(from, other); err != nil {
		t.Fatal(err)
	}
	if got := string(read(t, other+".sigs")); got != `[{"n":3},{"n":1},{"n":2}]` {
		t.Fatalf("merged: %s", got)
	}
	if sha, _, _ := Current(other); !slices.Contains(must(Paths(other)), Immutable(other, sha)) {
		t.Fatal("no immutable copy of the merged sidecar")
	}
	if err := Carry(pkg(t), other); err != nil {
		t.Fatal("carrying nothing:", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestIsName(t *testing.T) {
	hex := strings.Repeat("0f", 32)
	for _, tt := range []struct {
		name, pkg string
		immutable bool
		ok        bool
	}{
		{"a-1-0.conda.sigs", "a-1-0.conda", false, true},
		{"a-1-0.conda.sigs." + hex, "a-1-0.conda", true, true},
		{"a-1-0.conda.sigs." + strings.ToUpper(hex), "", false, false},
		{"a-1-0.conda.sigs.x", "", false, false},
		{"a-1-0.conda", "", false, false},
	} {
		pkg, imm, ok := IsName(tt.name)
		if pkg != tt.pkg || imm != tt.immutable || ok != tt.ok {
			t.Errorf("IsName(%q) = %q, %v, %v", tt.name, pkg, imm, ok)
		}
	}
}
