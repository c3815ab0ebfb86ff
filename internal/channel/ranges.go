package channel

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// MaxRanges is the most byte ranges a request may ask for at once. conda,
// mamba, pixi and rattler ask for one at most (to resume a download); a
// request for many is a way to make a small request cost a large
// multipart answer, so past the bound the ranges are ignored and the
// whole file is sent, as nginx does past max_ranges. A 200 is always a
// correct answer to a Range request (RFC 9110 §14.2), and a client that
// asked in good faith still gets its bytes; a 416 would get it nothing.
const MaxRanges = 16

// checkRanges looks at a request's Range header before http.ServeContent
// answers it, for a file of size bytes. ServeContent bounds the total
// length of the ranges but not their number, so it answers thousands of
// one-byte ranges; and it answers a suffix range of length 0 (bytes=-0),
// which no file can satisfy, with a 206 and an impossible Content-Range.
//
// So: past MaxRanges, or with more than two ranges that overlap or are
// out of order (which RFC 9110 §14.2 lets a server ignore), the header is
// dropped and the whole file is sent. Unsatisfiable suffix ranges of
// length 0 are left out; when nothing satisfiable remains, the header is
// replaced by one that starts at the end of the file, which ServeContent
// answers with 416 and Content-Range: bytes */size, after the
// preconditions it checks first. A header that does not parse is left
// for ServeContent, which refuses it.
func checkRanges(h http.Header, size int64) {
	spec, ok := strings.CutPrefix(h.Get("Range"), "bytes=")
	if !ok || len(h.Values("Range")) != 1 {
		return
	}
	parts := strings.Split(spec, ",")
	if len(parts) > MaxRanges {
		h.Del("Range")
		return
	}
	type span struct{ start, end int64 } // end exclusive
	var kept []string
	var spans []span
	for _, p := range parts {
		p = strings.TrimSpace(p)
		first, last, ok := strings.Cut(p, "-")
		if !ok {
			return
		}
		if first == "" {
			n, err := strconv.ParseInt(last, 10, 64)
			if err != nil || n < 0 {
				return
			}
			if n == 0 {
				continue // a suffix of length 0: unsatisfiable
			}
			spans = append(spans, span{max(0, size-n), size})
		} else {
			a, err := strconv.ParseInt(first, 10, 64)
			if err != nil || a < 0 {
				return
			}
			b := size - 1
			if last != "" {
				if b, err = strconv.ParseInt(last, 10, 64); err != nil || b < a {
					return
				}
			}
			spans = append(spans, span{a, min(b+1, size)})
		}
		kept = append(kept, p)
	}
	if len(spans) > 2 {
		for i := 1; i < len(spans); i++ {
			if spans[i].start < spans[i-1].end {
				h.Del("Range") // overlapping or out of order
				return
			}
		}
	}
	switch {
	case len(kept) == 0:
		h.Set("Range", fmt.Sprintf("bytes=%d-", size))
	case len(kept) < len(parts):
		h.Set("Range", "bytes="+strings.Join(kept, ","))
	}
}
