package server

import (
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzCleanPath: a request target the guard lets through has, decoded,
// no dot or empty segment (but a trailing slash), no backslash, NUL,
// control byte or semicolon, is valid UTF-8, and had no percent-encoded
// slash, backslash or NUL.
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/", "/linux-64/repodata.json", "/../etc/passwd", "/%2e%2e/x", "/a%2fb", "/a%5cb", "/a%00",
		"/%c0%ae%c0%ae/x", "/a//b", "/./a", "/a/..;/b", "/t/tok/noarch/", "/linux-64/pkg%2B1-0.conda"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil || !cleanPath(u) {
			return
		}
		raw := strings.ToLower(u.EscapedPath())
		for _, enc := range []string{"%2f", "%5c", "%00"} {
			if strings.Contains(raw, enc) {
				t.Fatalf("%q let through with %s", target, enc)
			}
		}
		p := u.Path
		if !utf8.ValidString(p) || strings.ContainsAny(p, "\\;\x00") {
			t.Fatalf("%q let through as %q", target, p)
		}
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		for i, part := range parts {
			if part == "." || part == ".." || (part == "" && i != len(parts)-1) {
				t.Fatalf("%q let through with segment %q", target, part)
			}
			for _, c := range []byte(part) {
				if c < 0x20 || c == 0x7f {
					t.Fatalf("%q let through with a control byte", target)
				}
			}
		}
	})
}
