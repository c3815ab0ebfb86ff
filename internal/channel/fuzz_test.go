package channel

import (
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
)

// FuzzResolve: whatever request path the allow-list accepts names only a
// public file: no empty, "." or ".." segment, nothing hidden, no
// backslash or NUL, at most two segments, and a known subdir first.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{"", "linux-64/", "linux-64/repodata.json", "noarch/a-1-0.conda", "channeldata.json",
		"../etc/passwd", "linux-64/../.incoming/x", ".incoming/x", "linux-64/.index-cache/records.jsonl",
		"linux-64//repodata.json", "linux-64\\repodata.json", "linux-64/a-1-0.conda.sigs", "linux-64/" + strings.Repeat("a", 64) + ".msgpack.zst"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rel string) {
		k, err := resolve(rel)
		if err != nil {
			return
		}
		if strings.ContainsAny(rel, "\\\x00") {
			t.Fatalf("%q accepted with a backslash or NUL", rel)
		}
		parts := strings.Split(rel, "/")
		if len(parts) > 2 {
			t.Fatalf("%q accepted with %d segments", rel, len(parts))
		}
		for i, p := range parts {
			if p == "." || p == ".." || strings.HasPrefix(p, ".") || (p == "" && i != len(parts)-1) {
				t.Fatalf("%q accepted with segment %q", rel, p)
			}
		}
		if rel != "" && rel != "channeldata.json" && !condapkg.IsKnownSubdir(parts[0]) {
			t.Fatalf("%q accepted outside a known subdir", rel)
		}
		if k == pkg {
			if _, err := condapkg.ParseFilename(parts[len(parts)-1]); err != nil {
				t.Fatalf("%q served as a package: %v", rel, err)
			}
		}
	})
}
