// Package condapkg reads and validates conda packages in both formats.
//
// A package repository must never publish something that breaks the
// channel, so every upload is checked before it is stored: its filename
// must be a bare name-version-build with a known extension, its
// info/index.json must agree with that filename, and its subdir must be
// one the channel accepts. The subdir is taken from the package itself,
// never from the client.
//
// Inspection also keeps what the index files take from a package besides
// its record ([Info]): info/run_exports.json, and for channeldata.json the
// descriptive fields of info/about.json, the recipe's source URLs and what
// info/paths.json says about prefixes and scripts.
//
// Inspection never decompresses a package's payload. For .tar.bz2 the
// info/ members come first in the tar stream, so a [Scanner] fed the upload
// as it streams stops decoding at the first member outside info/. For
// .conda only the small info-<stem>.tar.zst zip member is opened, through
// the zip central directory. Every decompression is bounded by [Limits],
// so a compression bomb is an ordinary validation error.
package condapkg

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Format is the container format of a conda package.
type Format int

const (
	// TarBz2 is the legacy format: a bzip2-compressed tar.
	TarBz2 Format = iota + 1
	// Conda is the v2 format: a zip of metadata.json and two zstd tars.
	Conda
)

// Extension returns the filename extension of the format, with its dot.
func (f Format) Extension() string {
	switch f {
	case TarBz2:
		return ".tar.bz2"
	case Conda:
		return ".conda"
	}
	return ""
}

func (f Format) String() string { return f.Extension() }

// An Error says why a package or its filename was refused. Its message is
// meant for the client: one line, naming what is wrong.
type Error struct {
	Reason string
}

func (e *Error) Error() string { return e.Reason }

func errorf(format string, args ...any) error {
	return &Error{Reason: fmt.Sprintf(format, args...)}
}

// IsInvalid reports whether err says the package itself is invalid, as
// opposed to an I/O failure while reading it.
func IsInvalid(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// MaxFilenameLen is the longest filename accepted, in bytes, which is the
// limit of common Linux file systems.
const MaxFilenameLen = 255

// Filename is a parsed package filename: name-version-build.ext.
type Filename struct {
	Name, Version, Build string
	Format               Format
}

// String returns the filename.
func (f Filename) String() string { return f.Stem() + f.Format.Extension() }

// Stem returns the filename without its extension.
func (f Filename) Stem() string { return f.Name + "-" + f.Version + "-" + f.Build }

// ParseFilename parses a client-supplied filename. It accepts only a bare
// basename of printable ASCII letters, digits and the punctuation conda uses
// in names, versions and build strings (_ . + ! -), so that path separators,
// "..", NUL, control characters, percent-encoding and Unicode look-alikes
// are all refused before the name is ever used as a path.
func ParseFilename(s string) (Filename, error) {
	if s == "" {
		return Filename{}, errorf("artifact has no filename")
	}
	if len(s) > MaxFilenameLen {
		return Filename{}, errorf("filename is longer than %d bytes", MaxFilenameLen)
	}
	if !utf8.ValidString(s) {
		return Filename{}, errorf("filename is not valid UTF-8")
	}
	for _, r := range s {
		switch {
		case r == '/' || r == '\\':
			return Filename{}, errorf("filename %q contains a path separator", s)
		case r < 0x20 || r == 0x7f:
			return Filename{}, errorf("filename %q contains a control character", s)
		case r > 0x7f:
			return Filename{}, errorf("filename %q contains non-ASCII characters", s)
		case !isNameChar(r):
			return Filename{}, errorf("filename %q contains %q; only letters, digits and _ . + ! - are allowed", s, r)
		}
	}
	var f Filename
	var stem string
	switch {
	case strings.HasSuffix(s, ".tar.bz2"):
		f.Format, stem = TarBz2, strings.TrimSuffix(s, ".tar.bz2")
	case strings.HasSuffix(s, ".conda"):
		f.Format, stem = Conda, strings.TrimSuffix(s, ".conda")
	default:
		return Filename{}, errorf("filename %q does not end in .tar.bz2 or .conda", s)
	}
	// Versions and build strings cannot contain "-", names can.
	i := strings.LastIndexByte(stem, '-')
	if i < 0 {
		return Filename{}, errorf("filename %q is not name-version-build%s", s, f.Format.Extension())
	}
	j := strings.LastIndexByte(stem[:i], '-')
	if j < 0 {
		return Filename{}, errorf("filename %q is not name-version-build%s", s, f.Format.Extension())
	}
	f.Name, f.Version, f.Build = stem[:j], stem[j+1:i], stem[i+1:]
	if f.Name == "" || f.Version == "" || f.Build == "" {
		return Filename{}, errorf("filename %q has an empty name, version or build", s)
	}
	if f.Name[0] == '.' || f.Name[0] == '-' {
		return Filename{}, errorf("filename %q must start with a letter, digit or _", s)
	}
	if strings.Contains(s, "..") {
		return Filename{}, errorf("filename %q contains \"..\"", s)
	}
	return f, nil
}

func isNameChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		r == '_' || r == '.' || r == '+' || r == '!' || r == '-'
}

// KnownSubdirs returns the platform subdirs conda-index recognises
// (conda's PLATFORM_DIRECTORIES plus noarch), in a new slice. conda-index
// silently ignores a directory of any other name, so a package claiming
// one would never become installable.
func KnownSubdirs() []string {
	return []string{
		"noarch",
		"linux-32", "linux-64", "linux-aarch64", "linux-armv6l", "linux-armv7l",
		"linux-ppc64", "linux-ppc64le", "linux-riscv64", "linux-s390x",
		"osx-64", "osx-arm64",
		"win-32", "win-64", "win-arm64",
		"freebsd-64", "zos-z", "emscripten-wasm32", "wasi-wasm32",
	}
}

// IsKnownSubdir reports whether s is one of KnownSubdirs.
func IsKnownSubdir(s string) bool { return slices.Contains(KnownSubdirs(), s) }

// Limits bound the work and memory spent inspecting one package.
type Limits struct {
	// MaxScanBytes bounds the decompressed bytes read while looking for
	// info/index.json: the whole .tar.bz2 stream up to it, or the
	// info-<stem>.tar.zst member of a .conda.
	MaxScanBytes int64
	// MaxMembers bounds the tar members scanned.
	MaxMembers int
	// MaxIndexJSON bounds the size of info/index.json.
	MaxIndexJSON int64
	// MaxPathsJSON bounds the size of info/paths.json, which is checked for
	// well-formedness as it streams and never held in memory.
	MaxPathsJSON int64
	// AllowedSubdirs lists the subdirs accepted; empty means KnownSubdirs.
	AllowedSubdirs []string
}

// DefaultLimits are generous for real packages: conda-forge's largest
// info/ sections are a few MiB, and index.json is under a few KiB.
func DefaultLimits() Limits {
	return Limits{
		MaxScanBytes:   256 << 20,
		MaxMembers:     100_000,
		MaxIndexJSON:   1 << 20,
		MaxPathsJSON:   128 << 20,
		AllowedSubdirs: KnownSubdirs(),
	}
}

func (l Limits) subdirAllowed(s string) bool {
	if len(l.AllowedSubdirs) == 0 {
		return IsKnownSubdir(s)
	}
	return slices.Contains(l.AllowedSubdirs, s)
}

// Info is what inspection learns about a valid package.
type Info struct {
	Filename Filename
	// Subdir is the platform subdir from info/index.json.
	Subdir string
	// IndexJSON is info/index.json as found in the package.
	IndexJSON []byte
	// RunExports is info/run_exports.json (a JSON object), or nil if the
	// package has none.
	RunExports []byte
	// Channel is what channeldata.json takes from the package besides its
	// record: about.json's descriptive fields, the recipe's source URLs,
	// and what paths.json says about prefixes and scripts (a JSON object).
	Channel []byte
}
