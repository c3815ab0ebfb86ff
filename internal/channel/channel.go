// Package channel serves a conda channel's public files over HTTP GET and
// HEAD: packages, the index files beside them, and small HTML listings for
// people, with the validators, ranges and cache lifetimes conda, mamba,
// pixi and rattler use.
//
// What is public is decided by an allow-list of names, not by cleaning a
// path: a known platform subdir, and in it a package filename or one of
// the index files. Everything else is absent, whatever the file system
// holds: dot-files and dot-folders (.incoming, .index-cache, temp files),
// unknown folders, and symlinks of any kind. A label (label/<name>/) is a
// channel of its own, under the same rules. Files are opened through an
// os.Root of the channel directory with O_NOFOLLOW, so that even a name
// the allow-list accepts can never lead outside the channel.
package channel

import (
	"errors"
	"fmt"
	"html"
	"io"
	"io/fs"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/sidecar"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// ErrNotFound is returned for anything that is not a public file of the
// channel.
var ErrNotFound = errors.New("not found")

// Channel serves one channel directory.
type Channel struct {
	root *os.Root
	// private makes responses cacheable by the client only, for a
	// channel that needs a token.
	private bool
}

// Open returns a Channel serving dir. With private, responses say
// Cache-Control: private, so that shared caches keep nothing.
func Open(dir string, private bool) (*Channel, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	return &Channel{root: r, private: private}, nil
}

// Close releases the channel directory.
func (c *Channel) Close() error { return c.root.Close() }

// kind is what a public name is, which decides its headers.
type kind int

const (
	listing      kind = iota
	pkg               // a package: immutable once stored
	shard             // a CEP-16 shard: named by its content, immutable
	index             // an index file: replaced on every run
	redirect          // a subdir without its trailing slash
	sigs              // a package's CEP 50 sidecar, <file>.sigs: grows
	sigsRevision      // <file>.sigs.<sha256>: named by its content, immutable
)

// IndexMaxAge is how long a client may use an index file without asking
// again. The built-in indexer keeps unnamed shards far longer than this
// (shard_retention is at least an hour), so a client holding an index
// within its lifetime always finds its shards.
const IndexMaxAge = 30 * time.Second

var (
	shardName = regexp.MustCompile(`^[0-9a-f]{64}\.msgpack\.zst$`)
	// indexNames are the index files a subdir may hold.
	indexNames = []string{
		"repodata.json", "repodata.json.zst", "repodata.json.bz2",
		"repodata_shards.msgpack.zst",
		"current_repodata.json", "current_repodata.json.zst",
		"run_exports.json", "run_exports.json.zst",
		"patch_instructions.json",
	}
)

// resolve checks rel, the request path below the channel root without
// its leading slash, against the allow-list.
func resolve(rel string) (kind, error) {
	if rel == "" {
		return listing, nil
	}
	if !utf8.ValidString(rel) || strings.ContainsAny(rel, "\\\x00") {
		return 0, ErrNotFound
	}
	parts := strings.Split(rel, "/")
	for i, p := range parts {
		// Only the last part may be empty (a trailing slash).
		if (p == "" && i != len(parts)-1) || strings.HasPrefix(p, ".") || len(p) > 255 {
			return 0, ErrNotFound
		}
	}
	if parts[0] == store.LabelDir {
		// Labels: /label/ lists them, /label/<L>/ is a channel of its
		// own.
		switch {
		case len(parts) == 1:
			return redirect, nil
		case len(parts) == 2 && parts[1] == "":
			return listing, nil
		case !store.ValidLabel(parts[1]):
			return 0, ErrNotFound
		case len(parts) == 2:
			return redirect, nil
		case len(parts) == 3 && parts[2] == "":
			return listing, nil
		}
		parts = parts[2:]
	}
	switch {
	case len(parts) == 1 && parts[0] == "channeldata.json":
		return index, nil
	case !condapkg.IsKnownSubdir(parts[0]):
		return 0, ErrNotFound
	case len(parts) == 1:
		return redirect, nil
	case len(parts) == 2 && parts[1] == "":
		return listing, nil
	case len(parts) != 2:
		return 0, ErrNotFound
	}
	if k, ok := fileKind(parts[1]); ok {
		return k, nil
	}
	return 0, ErrNotFound
}

// fileKind is what a file name in a subdir is, and whether it is public.
func fileKind(name string) (kind, bool) {
	switch {
	case slices.Contains(indexNames, name):
		return index, true
	case shardName.MatchString(name):
		return shard, true
	}
	if _, err := condapkg.ParseFilename(name); err == nil {
		return pkg, true
	}
	// CEP 50 attestations of a package.
	if base, immutable, ok := sidecar.IsName(name); ok {
		if _, err := condapkg.ParseFilename(base); err == nil {
			return map[bool]kind{false: sigs, true: sigsRevision}[immutable], true
		}
	}
	return 0, false
}

// Serve answers a GET or HEAD of rel, the path below the channel root
// without its leading slash (so "", "linux-64/", "linux-64/repodata.json").
// It writes the whole response itself and returns ErrNotFound, without
// writing anything, for a name that is not a public file.
func (c *Channel) Serve(w http.ResponseWriter, r *http.Request, rel string) error {
	k, err := resolve(rel)
	if err != nil {
		return err
	}
	switch k {
	case redirect:
		// Relative, so that a /t/<token>/ prefix is kept (http.Redirect
		// would make it absolute).
		w.Header().Set("Location", rel[strings.LastIndexByte(rel, '/')+1:]+"/")
		w.WriteHeader(http.StatusMovedPermanently)
		return nil
	case listing:
		return c.list(w, r, strings.TrimSuffix(rel, "/"))
	}
	return c.file(w, r, rel, k)
}

// file serves one file, never following a symlink, with its validators.
func (c *Channel) file(w http.ResponseWriter, r *http.Request, rel string, k kind) error {
	if !c.realDirs(rel[:max(0, strings.LastIndexByte(rel, '/'))]) {
		return ErrNotFound
	}
	// os.Root keeps every step inside the channel, but it follows a
	// symlink that stays inside (into .incoming, say). A public file is
	// a regular file: Lstat says so, and the file opened must be that
	// same inode, in case the name was swapped in between.
	lfi, err := c.root.Lstat(rel)
	if err != nil || !lfi.Mode().IsRegular() {
		return ErrNotFound
	}
	f, err := c.root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return ErrNotFound
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || !os.SameFile(fi, lfi) {
		return ErrNotFound
	}
	h := w.Header()
	h.Set("Content-Type", contentType(rel))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", c.cacheControl(k))
	h.Set("ETag", etag(fi))
	if k == pkg {
		h.Set("Content-Disposition", "attachment")
	}
	if r.Header.Get("Range") != "" {
		r = r.WithContext(r.Context())
		r.Header = r.Header.Clone()
		checkRanges(r.Header, fi.Size())
	}
	// ServeContent answers conditional requests (ETag, Last-Modified),
	// ranges (206, multipart/byteranges, 416) and HEAD, streaming the
	// file, never holding it in memory.
	j := &jsonErrors{ResponseWriter: w}
	http.ServeContent(j, r, "", fi.ModTime(), f)
	j.finish()
	return nil
}

// realDirs reports whether dir (a path below the channel root, "" for
// the root) and every folder on the way to it are folders, not symlinks.
// os.Root keeps every step inside the channel, but it follows a symlink
// that stays inside: a label folder, or a subdir of a label, that links
// to .trash/ or .incoming/ would serve what was deleted or is not yet
// checked. The public tree has no symlinks at any level.
func (c *Channel) realDirs(dir string) bool {
	if dir == "" {
		return true
	}
	for i := 0; i <= len(dir); i++ {
		if i < len(dir) && dir[i] != '/' {
			continue
		}
		if fi, err := c.root.Lstat(dir[:i]); err != nil || !fi.IsDir() {
			return false // missing, a file, or a symlink to a folder
		}
	}
	return true
}

// etag is a strong validator from the file's identity: a package never
// changes once stored, and an index file is replaced by rename (a new
// inode) whenever it changes.
func etag(fi fs.FileInfo) string {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return fmt.Sprintf(`"%x-%x-%x"`, ino, fi.Size(), fi.ModTime().UnixNano())
}

func (c *Channel) cacheControl(k kind) string {
	scope := "public"
	if c.private {
		scope = "private"
	}
	switch k {
	case pkg, shard, sigsRevision:
		return scope + ", max-age=31536000, immutable"
	case sigs:
		return scope + ", no-cache"
	}
	return fmt.Sprintf("%s, max-age=%d, must-revalidate", scope, int(IndexMaxAge.Seconds()))
}

// Headers returns the Content-Type and the public Cache-Control that the
// channel serves a file of this name with, for copies of the channel
// served by others (an object-storage mirror).
func Headers(name string) (ctype, cacheControl string) {
	k, ok := fileKind(name[strings.LastIndexByte(name, '/')+1:])
	if !ok {
		k = index
	}
	return contentType(name), (&Channel{}).cacheControl(k)
}

func contentType(name string) string {
	_, _, sidecar := sidecar.IsName(name[strings.LastIndexByte(name, '/')+1:])
	switch {
	case strings.HasSuffix(name, ".json") || sidecar:
		return "application/json"
	case strings.HasSuffix(name, ".zst"):
		return "application/zstd"
	case strings.HasSuffix(name, ".bz2"):
		return "application/x-bzip2"
	}
	return "application/octet-stream"
}

// jsonErrors turns the plain-text errors of http.ServeContent (such as
// 416 for a range past the end) into the server's one-line JSON errors.
type jsonErrors struct {
	http.ResponseWriter
	status int
}

func (j *jsonErrors) WriteHeader(code int) {
	if code >= 400 {
		j.status = code
		h := j.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		h.Del("Content-Length")
		return
	}
	j.ResponseWriter.WriteHeader(code)
}

// finish sends an error whose status was set with no body to follow:
// http.ServeContent answers a failed If-Match or If-Unmodified-Since with
// WriteHeader(412) alone, which would otherwise leave the response at an
// empty 200.
func (j *jsonErrors) finish() {
	if j.status > 0 {
		j.Write([]byte(http.StatusText(j.status)))
	}
}

func (j *jsonErrors) Write(p []byte) (int, error) {
	if j.status == 0 {
		return j.ResponseWriter.Write(p)
	}
	msg := strings.TrimSpace(string(p))
	j.ResponseWriter.WriteHeader(j.status)
	fmt.Fprintf(j.ResponseWriter, "{\"error\":%q,\"status\":%d}\n", msg, j.status)
	j.status = -1 // written; ignore what follows
	return len(p), nil
}

// ReadFrom keeps the server's sendfile path for plain HTTP.
func (j *jsonErrors) ReadFrom(src io.Reader) (int64, error) {
	if rf, ok := j.ResponseWriter.(io.ReaderFrom); ok && j.status == 0 {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{j}, src)
}

func (j *jsonErrors) Unwrap() http.ResponseWriter { return j.ResponseWriter }

// list writes a small HTML page of the subdirs (and labels), or of a
// subdir's public files, for a person with a browser.
func (c *Channel) list(w http.ResponseWriter, r *http.Request, subdir string) error {
	type row struct {
		name string
		size int64
		mod  time.Time
	}
	var rows []row
	dir := "."
	if subdir != "" {
		dir = subdir
	}
	if !c.realDirs(subdir) {
		return ErrNotFound
	}
	d, err := c.root.Open(dir)
	if err != nil {
		return ErrNotFound
	}
	des, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, de := range des {
		name := de.Name()
		rel := name
		if subdir != "" {
			rel = subdir + "/" + name
		}
		k, err := resolve(rel)
		switch {
		case de.IsDir() && k == redirect && err == nil:
			rows = append(rows, row{name: name + "/"})
		case err == nil && k != redirect && k != listing && de.Type().IsRegular():
			if fi, err := de.Info(); err == nil {
				rows = append(rows, row{name, fi.Size(), fi.ModTime()})
			}
		}
	}
	slices.SortFunc(rows, func(a, b row) int { return strings.Compare(a.name, b.name) })
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", c.cacheControl(index))
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return nil
	}
	title := "/" + subdir
	if subdir != "" {
		title += "/"
	}
	fmt.Fprintf(w, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>%s</title></head><body>\n<h1>%s</h1>\n<table>\n",
		html.EscapeString(title), html.EscapeString(title))
	if subdir != "" {
		fmt.Fprint(w, "<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n")
	}
	for _, rw := range rows {
		size, mod := "", ""
		if !strings.HasSuffix(rw.name, "/") {
			size, mod = fmt.Sprint(rw.size), rw.mod.UTC().Format(time.RFC3339)
		}
		n := html.EscapeString(rw.name)
		fmt.Fprintf(w, "<tr><td><a href=\"%s\">%s</a></td><td>%s</td><td>%s</td></tr>\n", n, n, size, mod)
	}
	fmt.Fprint(w, "</table>\n</body></html>\n")
	return nil
}
