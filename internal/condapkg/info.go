package condapkg

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/conda-upload-server/conda-upload-server/internal/record"
	"github.com/klauspost/compress/zstd"
)

const (
	indexJSONName      = "info/index.json"
	pathsJSONName      = "info/paths.json"
	runExportsJSONName = "info/run_exports.json"
	aboutJSONName      = "info/about.json"
)

// recipeNames are where a package may keep its rendered recipe; the first
// found is used, as conda-index does.
var recipeNames = []string{"info/recipe/meta.yaml", "info/recipe/meta.yaml.rendered", "info/meta.yaml"}

// infoFiles are the files of info/ that inspection keeps.
type infoFiles struct {
	index      []byte
	runExports []byte // nil if the package has none
	// about is info/about.json and recipe the package's rendered recipe
	// (nil if absent); post what its paths.json says.
	about, recipe []byte
	post          postInstall
}

// errScanLimit is returned by a limitedReader once its budget is spent.
var errScanLimit = errors.New("scan limit reached")

// limitedReader is io.LimitReader with a distinct error, so that running
// out of budget is told apart from a short stream.
type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errScanLimit
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// readInfo scans a tar stream for info/index.json, keeps
// info/run_exports.json, and checks info/paths.json if present. It stops
// once index.json is read and a member outside info/ shows up, so the
// payload of a .tar.bz2 is never decoded. what names the stream in error
// messages.
func readInfo(r io.Reader, what string, lim Limits) (infoFiles, error) {
	files, err := scanInfo(r, what, lim)
	if err != nil {
		return infoFiles{}, err
	}
	if files.runExports != nil {
		doc, err := decodeObject(files.runExports)
		if err != nil {
			return infoFiles{}, errorf("%s: %s is not a JSON object: %v", what, runExportsJSONName, err)
		}
		if err := record.CheckRunExports(doc); err != nil {
			return infoFiles{}, errorf("%s: %s: %v", what, runExportsJSONName, err)
		}
	}
	return files, nil
}

// infoScan is the state of one scan of a tar stream for info/ files.
type infoScan struct {
	tr          *tar.Reader
	what        string
	lim         Limits
	files       infoFiles
	sawDotSlash bool // saw ./info/index.json, which conda-index cannot read
}

// scanInfo reads the tar stream member by member until the payload
// starts (or the stream ends), keeping what the info/ files say.
func scanInfo(r io.Reader, what string, lim Limits) (infoFiles, error) {
	s := &infoScan{tr: tar.NewReader(&limitedReader{r: r, n: lim.MaxScanBytes}), what: what, lim: lim}
	for members := 0; ; members++ {
		if members >= lim.MaxMembers {
			return infoFiles{}, errorf("%s: no %s within the first %d members", what, indexJSONName, lim.MaxMembers)
		}
		hdr, err := s.tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return infoFiles{}, streamError(what, err, lim)
		}
		payload, err := s.member(hdr)
		if err != nil {
			return infoFiles{}, err
		}
		if payload {
			break // conda writes info/ first: the rest is payload.
		}
	}
	return s.finish()
}

// member takes in one tar member, and reports whether it is payload
// after index.json, where the scan stops.
func (s *infoScan) member(hdr *tar.Header) (payload bool, err error) {
	name := hdr.Name
	if name == "./"+indexJSONName {
		s.sawDotSlash = true
	}
	switch {
	case name == indexJSONName:
		return false, s.keep(hdr, &s.files.index)
	case name == runExportsJSONName:
		return false, s.keep(hdr, &s.files.runExports)
	case name == pathsJSONName:
		return false, s.paths(hdr)
	case name == aboutJSONName:
		return false, s.channelFile(hdr, &s.files.about)
	case slices.Contains(recipeNames, name) && s.files.recipe == nil:
		return false, s.channelFile(hdr, &s.files.recipe)
	}
	return s.files.index != nil && !strings.HasPrefix(name, "info/"), nil
}

// keep reads index.json or run_exports.json into dst, once.
func (s *infoScan) keep(hdr *tar.Header, dst *[]byte) error {
	switch {
	case *dst != nil:
		return errorf("%s: duplicate %s", s.what, hdr.Name)
	case !isRegular(hdr):
		return errorf("%s: %s is not a regular file", s.what, hdr.Name)
	case hdr.Size > s.lim.MaxIndexJSON:
		return errorf("%s: %s is %d bytes, over the limit of %d", s.what, hdr.Name, hdr.Size, s.lim.MaxIndexJSON)
	}
	b, err := io.ReadAll(s.tr)
	if err != nil {
		return streamError(s.what, err, s.lim)
	}
	*dst = b
	return nil
}

// paths checks paths.json as it streams, keeping what it says about
// prefixes and scripts.
func (s *infoScan) paths(hdr *tar.Header) error {
	if !isRegular(hdr) {
		return errorf("%s: %s is not a regular file", s.what, pathsJSONName)
	}
	if hdr.Size > s.lim.MaxPathsJSON {
		return errorf("%s: %s is %d bytes, over the limit of %d", s.what, pathsJSONName, hdr.Size, s.lim.MaxPathsJSON)
	}
	post, err := scanPaths(s.tr)
	if err != nil {
		if IsInvalid(err) {
			return errorf("%s: %s is not valid JSON: %v", s.what, pathsJSONName, err)
		}
		return streamError(s.what, err, s.lim)
	}
	s.files.post = post
	return nil
}

// channelFile keeps about.json or the recipe for channeldata.json; one
// that is odd or too large is left out, as conda-index would leave out
// its fields.
func (s *infoScan) channelFile(hdr *tar.Header, dst *[]byte) error {
	if !isRegular(hdr) || hdr.Size > s.lim.MaxIndexJSON {
		return nil
	}
	b, err := io.ReadAll(s.tr)
	if err != nil {
		return streamError(s.what, err, s.lim)
	}
	*dst = b
	return nil
}

// finish says why a stream without index.json is not a package.
func (s *infoScan) finish() (infoFiles, error) {
	switch {
	case s.files.index != nil:
		return s.files, nil
	case s.sawDotSlash:
		return infoFiles{}, errorf("%s: has ./%s but no %s; conda-index cannot index \"./\"-prefixed members", s.what, indexJSONName, indexJSONName)
	}
	return infoFiles{}, errorf("%s: no %s; not a conda package", s.what, indexJSONName)
}

func isRegular(h *tar.Header) bool {
	return h.Typeflag == tar.TypeReg // the reader reports old-style '\x00' entries as TypeReg
}

// streamError turns a decoding failure into a validation error, keeping
// real I/O errors (reading the upload or the file) as they are.
func streamError(what string, err error, lim Limits) error {
	var pe *passError
	switch {
	case errors.As(err, &pe):
		return pe.err
	case errors.Is(err, errScanLimit):
		return errorf("%s: no %s within the first %d decompressed bytes", what, indexJSONName, lim.MaxScanBytes)
	case errors.Is(err, zstd.ErrWindowSizeExceeded):
		return errorf("%s: zstd window is larger than %d bytes", what, maxZstdWindow)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return errorf("%s: truncated archive", what)
	}
	return errorf("%s: corrupt archive: %v", what, err)
}

// passError marks an error from the underlying reader (not the decoder)
// that must reach the caller unchanged.
type passError struct{ err error }

func (e *passError) Error() string { return e.err.Error() }
func (e *passError) Unwrap() error { return e.err }

// passReader wraps errors of r in passError.
type passReader struct{ r io.Reader }

func (p passReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if err != nil && err != io.EOF {
		err = &passError{err}
	}
	return n, err
}

// decodeObject decodes a JSON object as the channel's indexer will, with
// numbers kept as written. Invalid UTF-8 is refused: encoding/json would
// quietly turn it into U+FFFD, so the record would say what the package
// does not.
func decodeObject(b []byte) (map[string]any, error) {
	if !utf8.Valid(b) {
		return nil, errors.New("not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	if doc == nil {
		return nil, errors.New("null")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("more than one JSON value")
	}
	return doc, nil
}

func jsonError(err error) error {
	var syn *json.SyntaxError
	if errors.As(err, &syn) || errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF {
		return &Error{Reason: err.Error()}
	}
	return err
}

// validate checks index.json against the filename and the allowed subdirs.
func validate(fn Filename, files infoFiles, lim Limits) (*Info, error) {
	index := files.index
	doc, err := decodeObject(index)
	if err != nil {
		return nil, errorf("%s: %s is not a JSON object: %v", fn, indexJSONName, err)
	}
	str := func(key string) (string, bool, error) {
		v, ok := doc[key]
		if !ok {
			return "", false, nil
		}
		s, isStr := v.(string)
		if !isStr {
			return "", true, errorf("%s: %s: %q is not a string", fn, indexJSONName, key)
		}
		return s, true, nil
	}
	for _, f := range []struct{ key, want string }{
		{"name", fn.Name}, {"version", fn.Version}, {"build", fn.Build},
	} {
		got, ok, err := str(f.key)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, errorf("%s: %s has no %q", fn, indexJSONName, f.key)
		}
		if got != f.want {
			return nil, errorf("%s: filename says %s %q but %s says %q", fn, f.key, f.want, indexJSONName, got)
		}
	}
	subdir, ok, err := str("subdir")
	if err != nil {
		return nil, err
	}
	if !ok {
		// Legacy packages (conda-build < 3) carry platform and arch
		// instead. Mapping them would publish records without subdir,
		// which current solvers reject; a fresh CI build always has it.
		return nil, errorf("%s: %s has no \"subdir\" (a legacy package); rebuild it with a current conda-build", fn, indexJSONName)
	}
	if !lim.subdirAllowed(subdir) {
		return nil, errorf("%s: subdir %q in %s is not an allowed platform subdir", fn, subdir, indexJSONName)
	}
	if err := record.Check(doc); err != nil {
		return nil, errorf("%s: %s: %v", fn, indexJSONName, err)
	}
	return &Info{Filename: fn, Subdir: subdir, IndexJSON: bytes.Clone(index), RunExports: bytes.Clone(files.runExports),
		Channel: channelData(files)}, nil
}

// sniff names what the first bytes of a file look like, for error
// messages about a file that is not what its extension says.
func sniff(head []byte) string {
	switch {
	case len(head) == 0:
		return "an empty file"
	case bytes.HasPrefix(head, []byte("version https://git-lfs")):
		return "a Git LFS pointer, not the package itself"
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return "gzip-compressed"
	case bytes.HasPrefix(head, []byte("BZh")):
		return "bzip2-compressed"
	case bytes.HasPrefix(head, []byte("PK\x03\x04")) || bytes.HasPrefix(head, []byte("PK\x05\x06")):
		return "a zip archive"
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "zstd-compressed"
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "xz-compressed"
	case len(head) >= 262 && string(head[257:262]) == "ustar":
		return "an uncompressed tar"
	}
	return fmt.Sprintf("not an archive (starts with %q)", printable(head))
}

func printable(b []byte) string {
	if len(b) > 16 {
		b = b[:16]
	}
	return string(b)
}
