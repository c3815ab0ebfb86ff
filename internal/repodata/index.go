package repodata

import (
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
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
)

// CacheDir is the hidden folder inside each subdir that holds the cache.
const CacheDir = ".index-cache"

const (
	cacheFile    = "records.json"
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

type cacheDoc struct {
	Version  int               `json:"version"`
	Packages map[string]*entry `json:"packages"`
}

// Index writes repodata.json for the subdirs of one channel. Updates of
// one subdir must not run concurrently (the index package serialises
// them); different subdirs may be updated at once.
type Index struct {
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
}

// New returns an Index for the channel at root.
func New(root string, lim condapkg.Limits, log *slog.Logger) *Index {
	return &Index{root: root, lim: lim, log: log, subdirs: make(map[string]*subdirState)}
}

func (x *Index) state(subdir string) *subdirState {
	x.mu.Lock()
	defer x.mu.Unlock()
	st, ok := x.subdirs[subdir]
	if !ok {
		st = &subdirState{}
		x.subdirs[subdir] = st
	}
	return st
}

// Prime tells the index the record of a package just stored, so that the
// next Update need not read the file again to hash it. The record is used
// only while the file's size and modification time still match.
func (x *Index) Prime(subdir, filename string, fi fs.FileInfo, record json.RawMessage) {
	st := x.state(subdir)
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.loaded {
		x.load(subdir, st)
	}
	st.entries[filename] = &entry{Size: fi.Size(), Mtime: fi.ModTime().UnixNano(), Record: record}
}

// Has reports whether the last update of subdir listed filename.
func (x *Index) Has(subdir, filename string) bool {
	st := x.state(subdir)
	st.mu.Lock()
	defer st.mu.Unlock()
	e, ok := st.entries[filename]
	return ok && e.Record != nil
}

// Update reconciles subdir's cache with the files on disk and rewrites its
// repodata.json. It creates the subdir if it is missing, so that an empty
// noarch/repodata.json can always be served.
func (x *Index) Update(ctx context.Context, subdir string) error {
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
	changed := false
	for _, de := range des {
		name := de.Name()
		if !de.Type().IsRegular() || strings.HasPrefix(name, ".") ||
			!(strings.HasSuffix(name, ".conda") || strings.HasSuffix(name, ".tar.bz2")) {
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
		present[name] = true
		if e := st.entries[name]; e != nil && e.Size == fi.Size() && e.Mtime == fi.ModTime().UnixNano() {
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
		changed = true
	}
	for name := range st.entries {
		if !present[name] {
			delete(st.entries, name)
			changed = true
		}
	}
	if err := writeFileAtomic(filepath.Join(dir, "repodata.json"), renderRepodata(subdir, st.entries)); err != nil {
		return fmt.Errorf("write repodata.json: %w", err)
	}
	if changed || !fileExists(filepath.Join(dir, CacheDir, cacheFile)) {
		if err := x.save(dir, st); err != nil {
			// The cache is only an optimisation: the index is written.
			x.log.Warn("cannot save index cache", "subdir", subdir, "err", err)
		}
	}
	return nil
}

// readEntry inspects and hashes one package file placed in the subdir
// without going through an upload.
func (x *Index) readEntry(dir, name string, fi fs.FileInfo) (*entry, error) {
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
func (x *Index) load(subdir string, st *subdirState) {
	st.loaded = true
	st.entries = make(map[string]*entry)
	b, err := os.ReadFile(filepath.Join(x.root, subdir, CacheDir, cacheFile))
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var doc cacheDoc
	if err == nil {
		err = json.Unmarshal(b, &doc)
	}
	if err == nil && doc.Version != cacheVersion {
		err = fmt.Errorf("version %d, want %d", doc.Version, cacheVersion)
	}
	if err == nil {
		for name, e := range doc.Packages {
			if e == nil || (e.Record == nil) == (e.Invalid == "") || (e.Record != nil && !json.Valid(e.Record)) {
				err = fmt.Errorf("bad entry for %q", name)
				break
			}
		}
	}
	if err != nil {
		x.log.Warn("index cache is unusable; rebuilding it", "subdir", subdir, "err", err)
		return
	}
	st.entries = doc.Packages
}

func (x *Index) save(dir string, st *subdirState) error {
	if err := os.MkdirAll(filepath.Join(dir, CacheDir), 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(cacheDoc{Version: cacheVersion, Packages: st.entries})
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, CacheDir, cacheFile), b)
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

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
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
