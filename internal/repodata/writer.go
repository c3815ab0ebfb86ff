package repodata

import (
	"bufio"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/index"
)

// CacheDir is the hidden folder inside each subdir that holds the cache.
const CacheDir = ".index-cache"

// The cache is a journal: a header line, then one JSON line per package
// added, changed or removed. Appending a line costs the same in a subdir
// of ten packages or ten thousand; the journal is rewritten compactly when
// it grows to twice the live entries. It is not fsynced: after a crash a
// torn last line is ignored, and anything lost is read again from the
// packages.
const (
	cacheFile    = "records.jsonl"
	cacheVersion = 1
)

// entry is one package as last indexed.
type entry struct {
	Size   int64           `json:"size"`
	Mtime  int64           `json:"mtime_ns"`
	Record json.RawMessage `json:"record,omitempty"`
	// Invalid holds why a package placed by hand was left out, so that
	// it is not inspected again until it changes.
	Invalid string `json:"invalid,omitempty"`
}

type cacheHeader struct {
	Version int `json:"version"`
}

// cacheLine is one journal line: an entry, or a removal.
type cacheLine struct {
	Name    string          `json:"name"`
	Removed bool            `json:"removed,omitempty"`
	Size    int64           `json:"size,omitempty"`
	Mtime   int64           `json:"mtime_ns,omitempty"`
	Record  json.RawMessage `json:"record,omitempty"`
	Invalid string          `json:"invalid,omitempty"`
}

// Writer writes the index files of the subdirs of one channel. It is the
// built-in [index.Runner]. Runs of one subdir must not overlap (the
// index.Scheduler serialises them); different subdirs may run at once.
type Writer struct {
	root string
	lim  condapkg.Limits
	log  *slog.Logger

	mu      sync.Mutex
	subdirs map[string]*subdirState
}

type subdirState struct {
	mu      sync.Mutex
	loaded  bool
	entries map[string]*entry
	// statted is set once every file has been checked against its entry
	// (the first update in this process). Later updates stat only files
	// they have no entry for: the server never rewrites a package, and a
	// name that appears or disappears is seen from the listing alone.
	statted bool
	// dirty names changed since the journal was last written.
	dirty map[string]bool
	// lines is the number of entry lines in the journal file.
	lines int
}

// New returns a Writer for the channel at root.
func New(root string, lim condapkg.Limits, log *slog.Logger) *Writer {
	return &Writer{root: root, lim: lim, log: log, subdirs: make(map[string]*subdirState)}
}

// Name implements index.Runner.
func (*Writer) Name() string { return "builtin" }

func (x *Writer) state(subdir string) *subdirState {
	x.mu.Lock()
	defer x.mu.Unlock()
	st, ok := x.subdirs[subdir]
	if !ok {
		st = &subdirState{}
		x.subdirs[subdir] = st
	}
	return st
}

// NotePackage implements index.PackageNoter: it takes the record of a
// package just stored, so that the next run need not read the file again
// to hash it. The record is used only while the file's size and
// modification time still match.
func (x *Writer) NotePackage(p index.Package) error {
	record, err := Record(p.IndexJSON, p.Size, p.MD5, p.SHA256)
	if err != nil {
		return err
	}
	st := x.state(p.Subdir)
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.loaded {
		x.load(p.Subdir, st)
	}
	st.entries[p.Filename] = &entry{Size: p.Info.Size(), Mtime: p.Info.ModTime().UnixNano(), Record: record}
	st.dirty[p.Filename] = true
	return nil
}

// Has implements index.Runner: whether the last run of subdir listed
// filename.
func (x *Writer) Has(subdir, filename string) (bool, error) {
	st := x.state(subdir)
	st.mu.Lock()
	defer st.mu.Unlock()
	e, ok := st.entries[filename]
	return ok && e.Record != nil, nil
}

// Run implements index.Runner: it reconciles subdir's cache with the files on disk and rewrites its
// repodata.json. It creates the subdir if it is missing, so that an empty
// noarch/repodata.json can always be served.
func (x *Writer) Run(ctx context.Context, subdir string) error {
	dir := filepath.Join(x.root, subdir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create subdir: %w", err)
	}
	st := x.state(subdir)
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.loaded {
		x.load(subdir, st)
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list subdir: %w", err)
	}
	present := make(map[string]bool, len(des))
	for _, de := range des {
		name := de.Name()
		if !de.Type().IsRegular() || strings.HasPrefix(name, ".") ||
			!(strings.HasSuffix(name, ".conda") || strings.HasSuffix(name, ".tar.bz2")) {
			continue
		}
		present[name] = true
		old := st.entries[name]
		if old != nil && st.statted {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := de.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("stat %s: %w", name, err)
		}
		if old != nil && old.Size == fi.Size() && old.Mtime == fi.ModTime().UnixNano() {
			continue
		}
		e, err := x.readEntry(dir, name, fi)
		if err != nil {
			return err
		}
		if e.Invalid != "" {
			x.log.Warn("package left out of the index", "subdir", subdir, "filename", name, "reason", e.Invalid)
		}
		st.entries[name] = e
		st.dirty[name] = true
	}
	for name := range st.entries {
		if !present[name] {
			delete(st.entries, name)
			st.dirty[name] = true
		}
	}
	st.statted = true
	if err := writeFileAtomic(filepath.Join(dir, "repodata.json"), renderRepodata(subdir, st.entries)); err != nil {
		return fmt.Errorf("write repodata.json: %w", err)
	}
	if err := x.save(dir, st); err != nil {
		// The cache is only an optimisation: the index is written.
		x.log.Warn("cannot save index cache", "subdir", subdir, "err", err)
	}
	return nil
}

// readEntry inspects and hashes one package file placed in the subdir
// without going through an upload.
func (x *Writer) readEntry(dir, name string, fi fs.FileInfo) (*entry, error) {
	e := &entry{Size: fi.Size(), Mtime: fi.ModTime().UnixNano()}
	fn, err := condapkg.ParseFilename(name)
	if err != nil {
		e.Invalid = err.Error()
		return e, nil
	}
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	defer f.Close()
	info, err := condapkg.Inspect(fn, f, fi.Size(), x.lim)
	if condapkg.IsInvalid(err) {
		e.Invalid = err.Error()
		return e, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", name, err)
	}
	if info.Subdir != filepath.Base(dir) {
		e.Invalid = fmt.Sprintf("its index.json says subdir %q", info.Subdir)
		return e, nil
	}
	m, s := md5.New(), sha256.New()
	if _, err := io.Copy(io.MultiWriter(m, s), io.NewSectionReader(f, 0, fi.Size())); err != nil {
		return nil, fmt.Errorf("hash %s: %w", name, err)
	}
	e.Record, err = Record(info.IndexJSON, fi.Size(), hex.EncodeToString(m.Sum(nil)), hex.EncodeToString(s.Sum(nil)))
	if err != nil {
		e.Invalid = err.Error()
		e.Record = nil
	}
	return e, nil
}

// load reads the cache of a subdir. A cache that is missing, unreadable or
// of another version is replaced by an empty one, which makes the next
// update read every package again.
func (x *Writer) load(subdir string, st *subdirState) {
	st.loaded = true
	st.entries = make(map[string]*entry)
	st.dirty = make(map[string]bool)
	st.lines = -1 // rewrite the journal at the next save
	f, err := os.Open(filepath.Join(x.root, subdir, CacheDir, cacheFile))
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err == nil {
		defer f.Close()
		var lines int
		lines, err = readJournal(f, st.entries)
		st.lines = lines
	}
	if err != nil {
		x.log.Warn("index cache is unusable; rebuilding it", "subdir", subdir, "err", err)
		clear(st.entries)
		st.lines = -1
	}
}

func readJournal(r io.Reader, entries map[string]*entry) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	if !sc.Scan() {
		return 0, fmt.Errorf("no header: %v", sc.Err())
	}
	var h cacheHeader
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil || h.Version != cacheVersion {
		return 0, fmt.Errorf("bad header %.40q", sc.Bytes())
	}
	lines := 0
	var pending error // a bad line is only forgiven if it is the last
	for sc.Scan() {
		if pending != nil {
			return 0, pending
		}
		var l cacheLine
		err := json.Unmarshal(sc.Bytes(), &l)
		switch {
		case err != nil:
			pending = fmt.Errorf("line %d: %w", lines+2, err)
		case l.Name == "":
			pending = fmt.Errorf("line %d: no name", lines+2)
		case l.Removed:
			delete(entries, l.Name)
		case (l.Record == nil) == (l.Invalid == ""):
			pending = fmt.Errorf("line %d: bad entry for %q", lines+2, l.Name)
		default:
			entries[l.Name] = &entry{Size: l.Size, Mtime: l.Mtime, Record: l.Record, Invalid: l.Invalid}
		}
		lines++
	}
	return lines, sc.Err()
}

// save appends the dirty entries to the journal, or rewrites it when it
// is missing or has grown to twice the live entries.
func (x *Writer) save(dir string, st *subdirState) error {
	if len(st.dirty) == 0 && st.lines >= 0 {
		return nil
	}
	path := filepath.Join(dir, CacheDir, cacheFile)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	var b []byte
	appendLine := func(name string) error {
		l := cacheLine{Name: name, Removed: true}
		if e := st.entries[name]; e != nil {
			l = cacheLine{Name: name, Size: e.Size, Mtime: e.Mtime, Record: e.Record, Invalid: e.Invalid}
		}
		line, err := json.Marshal(l)
		if err != nil {
			return err
		}
		b = append(append(b, line...), '\n')
		return nil
	}
	if st.lines < 0 || st.lines+len(st.dirty) > 2*len(st.entries)+64 {
		b = append(b, fmt.Sprintf("{\"version\":%d}\n", cacheVersion)...)
		names := slices.Sorted(maps.Keys(st.entries))
		for _, name := range names {
			if err := appendLine(name); err != nil {
				return err
			}
		}
		if err := writeFileAtomic(path, b); err != nil {
			return err
		}
		st.lines = len(names)
	} else {
		for _, name := range slices.Sorted(maps.Keys(st.dirty)) {
			if err := appendLine(name); err != nil {
				return err
			}
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			st.lines = -1
			return err
		}
		_, err = f.Write(b)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			st.lines = -1
			return err
		}
		st.lines += len(st.dirty)
	}
	clear(st.dirty)
	return nil
}

// renderRepodata writes the subdir document in conda-index's layout, with
// records in filename order.
func renderRepodata(subdir string, entries map[string]*entry) []byte {
	var tarbz2, conda []string
	size := 128
	for name, e := range entries {
		if e.Record == nil {
			continue
		}
		size += len(name) + len(e.Record) + 4
		if strings.HasSuffix(name, ".conda") {
			conda = append(conda, name)
		} else {
			tarbz2 = append(tarbz2, name)
		}
	}
	slices.Sort(tarbz2)
	slices.Sort(conda)
	b := make([]byte, 0, size)
	sub, _ := json.Marshal(subdir)
	b = append(b, `{"info":{"subdir":`...)
	b = append(b, sub...)
	b = append(b, `},"packages":`...)
	b = appendRecords(b, tarbz2, entries)
	b = append(b, `,"packages.conda":`...)
	b = appendRecords(b, conda, entries)
	b = append(b, `,"removed":[],"repodata_version":1}`...)
	return b
}

func appendRecords(b []byte, names []string, entries map[string]*entry) []byte {
	b = append(b, '{')
	for i, name := range names {
		if i > 0 {
			b = append(b, ',')
		}
		k, _ := json.Marshal(name) // filenames are plain ASCII, but be exact
		b = append(b, k...)
		b = append(b, ':')
		b = append(b, entries[name].Record...)
	}
	return append(b, '}')
}

// writeFileAtomic replaces path with data: temp file in the same directory,
// fsync, rename, fsync of the directory. Readers see the old or the new
// file, never a mix.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// RemoveStaleTemps deletes temp files that a crash left in subdir and its
// cache folder. It is called at start, before any update runs.
func RemoveStaleTemps(subdirPath string) error {
	for _, dir := range []string{subdirPath, filepath.Join(subdirPath, CacheDir)} {
		matches, err := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if err := os.Remove(m); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}
