package repodata

import (
	"bufio"
	"bytes"
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
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/atomicfile"

	"github.com/klauspost/compress/zstd"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/index"
	"github.com/conda-upload-server/conda-upload-server/internal/patch"
	"github.com/conda-upload-server/conda-upload-server/internal/sidecar"
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
	cacheFile = "records.jsonl"
	// cacheVersion 2 added run_exports, 3 the channeldata fields; an
	// older cache is rebuilt.
	cacheVersion = 3
)

// listed is an indexed package in a sorted list.
type listed struct {
	name string
	e    *entry
}

func byName(a listed, name string) int { return strings.Compare(a.name, name) }

// entry is one package as last indexed.
type entry struct {
	// seen is the listing that last found the file.
	seen   uint64
	Size   int64
	Mtime  int64
	Record json.RawMessage
	// RunExports is the package's info/run_exports.json, normalised, or
	// nil if it has none.
	RunExports json.RawMessage
	// Channel is what channeldata.json takes from the package besides
	// its record (condapkg.Info.Channel).
	Channel json.RawMessage
	// Invalid holds why a package placed by hand was left out, so that
	// it is not inspected again until it changes.
	Invalid string
	// Attest is the record's AttestationsKey, "" if it has none, and
	// sigs fingerprints the package's sidecar names when it was read.
	Attest string
	sigs   fingerprint
}

type cacheHeader struct {
	Version int `json:"version"`
}

// cacheLine is one journal line: an entry, or a removal.
type cacheLine struct {
	Name       string          `json:"name"`
	Removed    bool            `json:"removed,omitempty"`
	Size       int64           `json:"size,omitempty"`
	Mtime      int64           `json:"mtime_ns,omitempty"`
	Record     json.RawMessage `json:"record,omitempty"`
	RunExports json.RawMessage `json:"run_exports,omitempty"`
	Channel    json.RawMessage `json:"channel,omitempty"`
	Invalid    string          `json:"invalid,omitempty"`
	Attest     string          `json:"attestations_sha256,omitempty"`
}

// Writer writes the index files of the subdirs of one channel. It is the
// built-in [index.Runner]. Runs of one subdir must not overlap (the
// index.Scheduler serialises them); different subdirs may run at once.
type Writer struct {
	root  string
	lim   condapkg.Limits
	log   *slog.Logger
	files Files
	zstd  *zstd.Encoder
	now   func() time.Time

	mu      sync.Mutex
	subdirs map[string]*subdirState
	// cdMu serialises the writing of channeldata.json.
	cdMu sync.Mutex
}

// Files says which index files a Writer writes besides repodata.json.
type Files struct {
	// Zst writes repodata.json.zst (and run_exports.json.zst), which
	// mamba and rattler fetch before repodata.json.
	Zst bool
	// Shards writes CEP-16 sharded repodata, which pixi and rattler
	// fetch first.
	Shards bool
	// RunExports writes run_exports.json, which rattler-build reads
	// instead of downloading packages.
	RunExports bool
	// Channeldata writes the channel's channeldata.json, a summary by
	// package name for front ends; solvers do not read it.
	Channeldata bool
	// CurrentRepodata writes current_repodata.json (and .zst), the
	// subset conda's classic solver tries before repodata.json.
	CurrentRepodata bool
	// ShardRetention is how long a shard no index refers to any more is
	// kept, for clients that still hold an older shard index.
	ShardRetention time.Duration
}

// DefaultFiles are written unless configured otherwise.
func DefaultFiles() Files {
	return Files{Zst: true, Shards: true, RunExports: true, ShardRetention: 6 * time.Hour}
}

// An Option configures a Writer.
type Option func(*Writer)

// WithFiles chooses the index files written.
func WithFiles(f Files) Option { return func(x *Writer) { x.files = f } }

// WithClock sets the clock, for shard retention tests.
func WithClock(now func() time.Time) Option { return func(x *Writer) { x.now = now } }

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

	// tarbz2 and conda are the indexed packages of each format, kept
	// sorted by filename as entries come and go, so that a run over
	// 100,000 packages neither sorts them nor looks each one up again.
	tarbz2, conda []listed
	// gen counts listings of the directory, to mark the entries seen.
	gen uint64
	// direntBuf is the getdents buffer of the directory listing.
	direntBuf []byte
	// pkgPrint fingerprints the names of the entries, and shardPrint
	// those of onDisk, the shard files in the directory: a listing whose
	// names fingerprint the same has nothing new, and its 100,000 names
	// need not be looked up one by one.
	pkgPrint, shardPrint fingerprint
	onDisk               map[string]bool
	// sigsPrint fingerprints the sidecar names (internal/sidecar): an
	// attestation added adds a content-addressed one.
	sigsPrint fingerprint
	// byName lists each package name's filenames, for its shard.
	byName map[string]map[string]bool
	// shards maps each package name to its shard as last written, and
	// dirtyNames lists the names whose shard must be written again.
	shards     map[string]shard
	dirtyNames map[string]bool
	// orphans are shard files no index refers to, since when.
	orphans map[string]time.Time
	// patchRaw is the subdir's patch_instructions.json as last applied,
	// and plan what it does; every shard is encoded again when it
	// changes.
	patchRaw []byte
	plan     *patch.Plan
}

// New returns a Writer for the channel at root.
func New(root string, lim condapkg.Limits, log *slog.Logger, opts ...Option) *Writer {
	// The level is chosen by measurement (BENCHMARKS.md): on the
	// repodata.json of 100,000 packages the fastest level compresses 6.1
	// times at 360 MB/s, the default 5.5 times at 150 MB/s, and higher
	// levels no better for several times the time.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(2))
	if err != nil {
		panic(err) // only for invalid options
	}
	x := &Writer{root: root, lim: lim, log: log, files: DefaultFiles(), zstd: enc, now: time.Now, subdirs: make(map[string]*subdirState)}
	for _, o := range opts {
		o(x)
	}
	return x
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
	runExports, err := normalise(p.RunExports)
	if err != nil {
		return err
	}
	e := &entry{Size: p.Info.Size(), Mtime: p.Info.ModTime().UnixNano(), Record: record, RunExports: runExports, Channel: p.Channel}
	if e.Attest, err = currentAttestations(filepath.Join(x.root, p.Subdir), p.Filename); err == nil && e.Attest != "" {
		e.Record, err = withAttestations(record, e.Attest)
	}
	if err != nil {
		return err
	}
	st.put(p.Filename, e)
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

// Run implements index.Runner: it reconciles subdir's cache with the
// files on disk and rewrites its index files. It creates the subdir if it
// is missing, so that an empty noarch/repodata.json can always be served.
func (x *Writer) Run(ctx context.Context, subdir string) error {
	if err := x.run(ctx, subdir); err != nil {
		return err
	}
	return x.channeldata(filepath.Dir(subdir))
}

func (x *Writer) run(ctx context.Context, subdir string) error {
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
	shardFiles, err := x.reconcile(ctx, dir, subdir, st)
	if err != nil {
		return err
	}
	if err := x.loadPatch(dir, st); err != nil {
		return err
	}
	if err := x.write(dir, filepath.Base(subdir), st, shardFiles); err != nil {
		st.onDisk = nil // list it whole next time
		return err
	}
	st.setOnDisk(shardFiles)
	if err := x.save(dir, st); err != nil {
		// The cache is only an optimisation: the index is written.
		x.log.Warn("cannot save index cache", "subdir", subdir, "err", err)
	}
	return nil
}

// loadPatch reads the subdir's patch instructions. A file that cannot be
// read or parsed fails the run, rather than publish an unpatched index
// that would bring back what it removed.
func (x *Writer) loadPatch(dir string, st *subdirState) error {
	raw, err := os.ReadFile(filepath.Join(dir, patch.FileName))
	if errors.Is(err, fs.ErrNotExist) {
		raw, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", patch.FileName, err)
	}
	if bytes.Equal(raw, st.patchRaw) && (raw == nil) == (st.patchRaw == nil) {
		return nil
	}
	var plan *patch.Plan
	if raw != nil {
		in, err := patch.Parse(raw, false)
		if err != nil {
			return err
		}
		plan = in.Plan()
	}
	st.patchRaw, st.plan = raw, plan
	for name := range st.byName {
		st.dirtyNames[name] = true
	}
	return nil
}

// reconcile brings the entries up to date with the packages in dir, and
// returns the shard files it saw there.
func (x *Writer) reconcile(ctx context.Context, dir, subdir string, st *subdirState) (map[string]bool, error) {
	if st.statted && st.onDisk != nil {
		same, err := st.sameNames(dir)
		if err != nil || same {
			return st.onDisk, err // nothing added or removed by hand
		}
	}
	st.gen++
	shardFiles := map[string]bool{}
	attested := map[string]fingerprint{}
	st.sigsPrint = fingerprint{}
	var fresh []string // package files with no entry, or not yet statted
	err := scanDir(dir, &st.direntBuf, func(b []byte, maybeFile bool) {
		switch classify(b, maybeFile) {
		case sigsName:
			st.sigsPrint.add(b)
			pkg, _, _ := sidecar.IsName(string(b))
			f := attested[pkg]
			f.add(b)
			attested[pkg] = f
		case shardName:
			shardFiles[string(b)] = true
		case pkgName:
			// The lookup with string(b) does not allocate: most names
			// of a large subdir cost nothing more than this.
			if old := st.entries[string(b)]; old != nil && st.statted {
				old.seen = st.gen
			} else {
				fresh = append(fresh, string(b))
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list subdir: %w", err)
	}
	for _, name := range fresh {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		fi, err := os.Lstat(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("stat %s: %w", name, err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		old := st.entries[name]
		if old != nil && old.Size == fi.Size() && old.Mtime == fi.ModTime().UnixNano() {
			old.seen = st.gen
			continue
		}
		e, err := x.readEntry(dir, name, fi)
		if err != nil {
			return nil, err
		}
		if e.Invalid != "" {
			x.log.Warn("package left out of the index", "subdir", subdir, "filename", name, "reason", e.Invalid)
		}
		e.seen = st.gen
		st.put(name, e)
	}
	for name := range st.entries {
		if e := st.entries[name]; e.seen != st.gen {
			st.remove(name)
		}
	}
	st.statted = true
	return shardFiles, st.setAttestations(dir, attested)
}

// sameNames lists dir and reports whether its package, shard and sidecar
// names fingerprint as at the last run.
func (st *subdirState) sameNames(dir string) (bool, error) {
	var pkgs, shards, sigs fingerprint
	err := scanDir(dir, &st.direntBuf, func(b []byte, maybeFile bool) {
		switch classify(b, maybeFile) {
		case pkgName:
			pkgs.add(b)
		case shardName:
			shards.add(b)
		case sigsName:
			sigs.add(b)
		}
	})
	if err != nil {
		return false, fmt.Errorf("list subdir: %w", err)
	}
	return pkgs == st.pkgPrint && shards == st.shardPrint && sigs == st.sigsPrint, nil
}

// put sets a package's entry and marks what depends on it as changed.
func (st *subdirState) put(filename string, e *entry) {
	st.remove(filename)
	st.entries[filename] = e
	st.dirty[filename] = true
	st.pkgPrint.add([]byte(filename))
	if e.Record == nil {
		return
	}
	list := st.listOf(filename)
	if i, found := slices.BinarySearchFunc(*list, filename, byName); !found {
		*list = slices.Insert(*list, i, listed{filename, e})
	}
	name := packageName(filename)
	if st.byName[name] == nil {
		st.byName[name] = map[string]bool{}
	}
	st.byName[name][filename] = true
	st.dirtyNames[name] = true
}

// remove drops a package's entry and marks what depends on it as changed.
func (st *subdirState) remove(filename string) {
	if _, ok := st.entries[filename]; !ok {
		return
	}
	delete(st.entries, filename)
	st.dirty[filename] = true
	st.pkgPrint.sub([]byte(filename))
	list := st.listOf(filename)
	if i, found := slices.BinarySearchFunc(*list, filename, byName); found {
		*list = slices.Delete(*list, i, i+1)
	}
	name := packageName(filename)
	if files := st.byName[name]; files[filename] {
		delete(files, filename)
		if len(files) == 0 {
			delete(st.byName, name)
		}
		st.dirtyNames[name] = true
	}
}

// Kinds of directory entries for reconcile.
const (
	otherName = iota
	pkgName
	shardName
	sigsName
)

func classify(b []byte, maybeFile bool) int {
	switch {
	case len(b) == 0 || b[0] == '.' || !maybeFile:
		return otherName
	case bytes.HasSuffix(b, []byte(shardSuffix)):
		if string(b) == ShardIndexFile {
			return otherName
		}
		return shardName
	case bytes.HasSuffix(b, []byte(".conda")) || bytes.HasSuffix(b, []byte(".tar.bz2")):
		return pkgName
	case bytes.Contains(b, []byte(sidecar.Suffix)):
		if _, _, ok := sidecar.IsName(string(b)); ok {
			return sigsName
		}
	}
	return otherName
}

// fingerprint is an order-independent digest of a set of names: their
// count and the XOR of their FNV-1a hashes.
type fingerprint struct {
	n int
	x uint64
}

func (f *fingerprint) add(b []byte) { f.n++; f.x ^= fnv64(b) }
func (f *fingerprint) sub(b []byte) { f.n--; f.x ^= fnv64(b) }

func fnv64(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// setOnDisk records the shard files in the directory after a run.
func (st *subdirState) setOnDisk(files map[string]bool) {
	st.onDisk = files
	st.shardPrint = fingerprint{}
	for f := range files {
		st.shardPrint.add([]byte(f))
	}
}

// listOf returns the sorted list a filename belongs in.
func (st *subdirState) listOf(filename string) *[]listed {
	if strings.HasSuffix(filename, ".conda") {
		return &st.conda
	}
	return &st.tarbz2
}

// packageName is the package name of a valid package's filename (which
// equals the name in its index.json: inspection checks that).
func packageName(filename string) string {
	fn, err := condapkg.ParseFilename(filename)
	if err != nil {
		return filename
	}
	return fn.Name
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
	if err == nil {
		e.RunExports, err = normalise(info.RunExports)
		e.Channel = info.Channel
	}
	if err != nil {
		e.Invalid = err.Error()
		e.Record, e.RunExports = nil, nil
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
	st.byName = make(map[string]map[string]bool)
	st.shards = make(map[string]shard)
	st.dirtyNames = make(map[string]bool)
	st.orphans = make(map[string]time.Time)
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
	st.tarbz2, st.conda = nil, nil
	st.pkgPrint = fingerprint{}
	for fn, e := range st.entries {
		st.pkgPrint.add([]byte(fn))
		if e.Record != nil {
			list := st.listOf(fn)
			*list = append(*list, listed{fn, e})
			name := packageName(fn)
			if st.byName[name] == nil {
				st.byName[name] = map[string]bool{}
			}
			st.byName[name][fn] = true
			st.dirtyNames[name] = true
		}
	}
	cmp := func(a, b listed) int { return strings.Compare(a.name, b.name) }
	slices.SortFunc(st.tarbz2, cmp)
	slices.SortFunc(st.conda, cmp)
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
			entries[l.Name] = &entry{Size: l.Size, Mtime: l.Mtime, Record: l.Record, RunExports: l.RunExports, Channel: l.Channel, Invalid: l.Invalid, Attest: l.Attest}
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
			l = cacheLine{Name: name, Size: e.Size, Mtime: e.Mtime, Record: e.Record, RunExports: e.RunExports, Channel: e.Channel, Invalid: e.Invalid, Attest: e.Attest}
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
		if err := atomicfile.Write(path, b); err != nil {
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

// RemoveStaleTemps deletes temp files that a crash left in subdir and its
// cache folder. It is called at start, before any update runs.
func RemoveStaleTemps(subdirPath string) error {
	for _, dir := range []string{subdirPath, filepath.Join(subdirPath, CacheDir)} {
		if err := atomicfile.RemoveStale(dir); err != nil {
			return err
		}
	}
	return nil
}
