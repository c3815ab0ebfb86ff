// Package form reads a multipart/form-data request body (RFC 7578) as a
// stream, for uploads of any size.
//
// mime/multipart reads a body through a 4 KiB buffer and copies every byte
// out of it, 4 KiB at a time, scanning each piece for the boundary. An
// upload server spends nearly all its time in one large file part: here a
// part's Read fills the caller's buffer straight from the body and then
// scans it in place, so each byte of the file is copied once (out of the
// TLS record) however large the caller's buffer. Only what follows a
// boundary, and the few bytes that might start one, are kept back and
// copied again.
//
// It accepts what RFC 2046 allows and mime/multipart accepts, with four
// deliberate exceptions: boundary lines must end in CRLF (mime/multipart
// also takes bare LF), the body must start with the boundary (no
// preamble), a part's header block is limited to MaxHeaderBytes, and
// Content-Transfer-Encoding, deprecated for form data, is refused rather
// than decoded. Whatever it accepts, mime/multipart reads the same way
// (FuzzReader checks).
package form

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strings"
)

// MaxHeaderBytes bounds the header block of one part. Form-data part
// headers are a Content-Disposition and perhaps a Content-Type.
const MaxHeaderBytes = 16 << 10

// MaxBoundaryLen is RFC 2046's limit on the length of a boundary.
const MaxBoundaryLen = 70

// Error is a malformed form. The underlying reader's errors are returned
// as they are, except that its end before the form's end is
// io.ErrUnexpectedEOF.
type Error struct{ msg string }

func (e *Error) Error() string { return "malformed multipart form: " + e.msg }

// Reader reads the parts of a form in order.
type Reader struct {
	src   io.Reader
	delim []byte // CRLF "--" boundary: what ends a part
	// buf[r:w] was read from src and not yet consumed.
	buf    []byte
	r, w   int
	srcErr error // src's error, io.EOF included; src is not read again after it
	part   *Part
	done   bool
	// delimLen is the length of the delimiter that ended the part.
	delimLen int
}

// NewReader returns a Reader of the form in src with the given boundary,
// which must be 1 to MaxBoundaryLen characters long.
func NewReader(src io.Reader, boundary string) (*Reader, error) {
	if boundary == "" || len(boundary) > MaxBoundaryLen {
		return nil, &Error{fmt.Sprintf("the boundary must be 1 to %d characters long", MaxBoundaryLen)}
	}
	r := &Reader{src: src, delim: []byte("\r\n--" + boundary), buf: make([]byte, 0, 4<<10)}
	r.delimLen = len(r.delim)
	// The first boundary needs no CRLF before it: supply one, so that
	// the first boundary is found like every other.
	r.buf = append(r.buf, "\r\n"...)
	r.w = len(r.buf)
	return r, nil
}

// Part is one part of a form. Its Read returns io.EOF at the boundary that
// ends it.
type Part struct {
	Header textproto.MIMEHeader
	r      *Reader
	eof    bool
}

// NextPart skips what is left of the current part and returns the next
// one, or io.EOF after the last.
func (r *Reader) NextPart() (*Part, error) {
	if r.done {
		return nil, io.EOF
	}
	if r.part == nil {
		// The first part. A preamble, which RFC 2046 allows and says to
		// ignore, is refused: no form-data client sends one, and
		// mime/multipart's reading of it differs from the RFC's.
		if err := r.need(len(r.delim)); err != nil {
			return nil, err
		}
		if !bytes.HasPrefix(r.buf[r.r:r.w], r.delim) {
			return nil, &Error{"the body must start with the boundary"}
		}
	} else if !r.part.eof {
		if _, err := io.Copy(io.Discard, r.part); err != nil {
			return nil, err
		}
	}
	// buf[r:] starts with the delimiter.
	r.r += r.delimLen
	r.delimLen = len(r.delim)
	if err := r.need(2); err != nil {
		return nil, err
	}
	final := r.buf[r.r] == '-' && r.buf[r.r+1] == '-'
	if final {
		r.r += 2
	}
	// Transport padding, then CRLF (or, after the last boundary, the end
	// of the body).
	for pad := 0; ; pad++ {
		err := r.need(2)
		if final && err == io.ErrUnexpectedEOF && r.srcErr == io.EOF {
			if r.w-r.r == 0 || (r.w-r.r == 1 && (r.buf[r.r] == ' ' || r.buf[r.r] == '\t')) {
				r.r = r.w
				r.done = true
				return nil, io.EOF
			}
		}
		if err != nil {
			return nil, err
		}
		c := r.buf[r.r]
		if c != ' ' && c != '\t' {
			break
		}
		if pad == MaxHeaderBytes {
			return nil, &Error{"padding after a boundary is too long"}
		}
		r.r++
	}
	if r.buf[r.r] != '\r' || r.buf[r.r+1] != '\n' {
		return nil, &Error{"a boundary line must end in CRLF"}
	}
	r.r += 2
	if final {
		r.done = true
		return nil, io.EOF
	}
	hdr, err := r.header()
	if err != nil {
		return nil, err
	}
	if cte := strings.ToLower(strings.TrimSpace(hdr.Get("Content-Transfer-Encoding"))); cte != "" && cte != "binary" && cte != "8bit" && cte != "7bit" {
		return nil, &Error{fmt.Sprintf("Content-Transfer-Encoding %q is not supported; send the bytes as they are", cte)}
	}
	r.part = &Part{Header: hdr, r: r}
	// RFC 2046 lets a part end right after its headers: then the CRLF
	// of the empty line that ends them is also the CRLF of the next
	// boundary, and the boundary follows at once.
	dash := r.delim[2:]
	if r.need(len(dash)+2) == nil && bytes.HasPrefix(r.buf[r.r:r.w], dash) {
		if _, found := r.scan(append([]byte("\r\n"), r.buf[r.r:r.r+len(dash)+2]...)); found {
			r.part.eof = true
			r.delimLen = len(dash)
		}
	}
	return r.part, nil
}

// header reads a part's header block and the empty line that ends it.
// Lines are split as net/textproto splits them, which parses the block.
func (r *Reader) header() (textproto.MIMEHeader, error) {
	scanned := 0 // bytes of buf[r:] split into lines so far
	for end := false; !end; {
		for !end {
			i := bytes.IndexByte(r.buf[r.r+scanned:r.w], '\n')
			if i < 0 {
				break
			}
			line := r.buf[r.r+scanned : r.r+scanned+i]
			scanned += i + 1
			end = len(line) == 0 || len(line) == 1 && line[0] == '\r'
		}
		if scanned > MaxHeaderBytes || !end && r.w-r.r > MaxHeaderBytes {
			return nil, &Error{fmt.Sprintf("a part's header is longer than %d bytes", MaxHeaderBytes)}
		}
		if !end {
			if err := r.more(); err != nil {
				return nil, err
			}
		}
	}
	block := r.buf[r.r : r.r+scanned]
	r.r += scanned
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(block))).ReadMIMEHeader()
	if err != nil {
		return nil, &Error{"bad part header: " + err.Error()}
	}
	return h, nil
}

// need makes at least n bytes available in buf[r:w].
func (r *Reader) need(n int) error {
	for r.w-r.r < n {
		if err := r.more(); err != nil {
			return err
		}
	}
	return nil
}

// more reads at least one more byte into buf.
func (r *Reader) more() error {
	if r.srcErr != nil {
		return r.failure()
	}
	if r.r > 0 {
		r.w = copy(r.buf, r.buf[r.r:r.w])
		r.r = 0
		r.buf = r.buf[:r.w]
	}
	if r.w == cap(r.buf) {
		r.buf = append(r.buf, 0)[:r.w]
	}
	for range maxEmptyReads {
		n, err := r.src.Read(r.buf[r.w:cap(r.buf)])
		r.w += n
		r.buf = r.buf[:r.w]
		r.srcErr = err
		if n > 0 {
			return nil
		}
		if err != nil {
			return r.failure()
		}
	}
	r.srcErr = io.ErrNoProgress
	return r.srcErr
}

// maxEmptyReads bounds the reads that return neither data nor an error,
// as bufio does.
const maxEmptyReads = 100

// failure is what src's error means for the form, which is not over.
func (r *Reader) failure() error {
	if r.srcErr == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return r.srcErr
}

// Read reads the part's data.
func (p *Part) Read(b []byte) (int, error) {
	r := p.r
	if p.eof {
		return 0, io.EOF
	}
	if len(b) == 0 {
		return 0, nil
	}
	for {
		if r.w > r.r || len(b) < 2*len(r.delim) || r.srcErr != nil {
			// From the buffer: what is there, or what a small
			// read of the caller's would not find a boundary in.
			if r.w > r.r {
				n, found := r.scan(r.buf[r.r:r.w])
				if n > 0 {
					n = copy(b, r.buf[r.r:r.r+n])
					r.r += n
					return n, nil
				}
				if found {
					p.eof = true
					return 0, io.EOF
				}
			}
			if err := r.more(); err != nil {
				return 0, err
			}
			continue
		}
		// Straight into the caller's buffer, keeping back what is
		// not this part's data.
		n, err := r.src.Read(b)
		r.srcErr = err
		if n == 0 {
			if err == nil {
				// Wait for data through the buffer, which gives
				// up on a source that never sends any.
				if err := r.more(); err != nil {
					return 0, err
				}
			}
			continue
		}
		data, found := r.scan(b[:n])
		r.r, r.w = 0, 0
		r.buf = append(r.buf[:0], b[data:n]...)
		r.w = len(r.buf)
		if data > 0 {
			return data, nil
		}
		if found {
			p.eof = true
			return 0, io.EOF
		}
	}
}

// scan returns how much of d is surely part data, and whether the
// delimiter that ends the part starts right after it. Bytes after the
// returned length may be the start of a delimiter that more input will
// confirm or not.
func (r *Reader) scan(d []byte) (int, bool) {
	off := 0
	for {
		i := bytes.Index(d[off:], r.delim)
		if i < 0 {
			break
		}
		i += off
		after := i + len(r.delim)
		if after == len(d) {
			// What follows decides; at the end of input, the form
			// is cut short, which the next step reports.
			return i, r.srcErr != nil
		}
		switch d[after] {
		case ' ', '\t', '\r', '\n':
			return i, true
		case '-':
			// Only "--" makes the last boundary.
			if after+1 == len(d) {
				return i, r.srcErr != nil
			}
			if d[after+1] == '-' {
				return i, true
			}
		}
		// "--boundaryX" is not the boundary "--boundary".
		off = i + 1
	}
	// Keep back a tail that may be the start of a delimiter.
	start := max(off, len(d)-len(r.delim)+1)
	for j := start; j < len(d); j++ {
		if d[j] == r.delim[0] && bytes.HasPrefix(r.delim, d[j:]) {
			if r.srcErr != nil {
				return len(d), false // it cannot become one
			}
			return j, false
		}
	}
	return len(d), false
}

// Epilogue returns what follows the end of the form: what was read past
// it, then the rest of the source. Call it after NextPart returned
// io.EOF.
func (r *Reader) Epilogue() io.Reader {
	rest := bytes.NewReader(r.buf[r.r:r.w])
	switch r.srcErr {
	case nil:
		return io.MultiReader(rest, r.src)
	case io.EOF:
		return rest
	}
	return io.MultiReader(rest, errReader{r.srcErr})
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// IsMalformed reports whether err is a malformed form (as opposed to a
// failure to read it).
func IsMalformed(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
