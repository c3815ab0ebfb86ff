package web

import (
	"net/url"
	"strings"
	"unicode/utf8"
)

// Every string of a package's metadata is hostile until shown: the
// templates escape it (html/template), and these functions bound its
// length, take out the characters that reorder or hide text, and keep
// only links a browser follows without running anything.

const (
	maxSummary     = 300
	maxText        = 200
	maxDescription = 8 << 10
	maxURL         = 2048
	maxSpecs       = 500
)

// clip makes s safe to show: valid UTF-8, without bidirectional
// overrides, isolates or other invisible format characters (which can
// make a name read as another, CVE-2021-42574), and at most n bytes, cut
// at a rune boundary and marked with an ellipsis.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 0x202A && r <= 0x202E, r >= 0x2066 && r <= 0x2069, r == 0x200E, r == 0x200F, r == 0x061C,
			r >= 0x200B && r <= 0x200D, r == 0xFEFF:
			return -1
		case r < 0x20 && r != '\n' && r != '\t', r == 0x7f:
			return -1
		}
		return r
	}, s)
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// link returns s if it is an absolute http or https URL without
// credentials, and "" otherwise: javascript:, data: and relative links
// from a package are not shown as links.
func link(s string) string {
	if len(s) > maxURL {
		return ""
	}
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return ""
	}
	return u.String()
}
