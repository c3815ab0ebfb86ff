// Package lifecycle changes packages already in the channel: copies and
// moves between labels (promotion), yanks, deletes, and a label's repodata
// patch. A channel is not append-only in real life: a broken build must
// leave solves at once without breaking lock files that pin it, a build
// goes to a staging label before main, and a wrong dependency is fixed
// without a rebuild.
//
// Every change is crash-safe by its order of steps, never by a journal:
//
//   - a copy hard-links the file into the other label and fsyncs that
//     folder, so the bytes are in both or only in the source;
//   - a move is a copy, then the source's link is removed: a crash in
//     between leaves the package in both labels, never in neither;
//   - a delete hard-links the file into .trash/<UTC date>/<label>/<subdir>/
//     before removing it, so the bytes are never lost;
//   - a package's attestations (<filename>.sigs) follow its bytes: a copy
//     carries them (adding those the target lacks), and a move or delete
//     keeps the source's in .trash/ and removes them before the package
//     (store.RemovePackage), so none is ever left beside other bytes;
//   - yanks and the patch are small files in <subdir>/.admin/, replaced
//     atomically; from them the subdir's patch_instructions.json is
//     derived (the file conda-index applies, and the built-in indexer
//     too), and derived again at every start, so a crash between the two
//     writes heals itself.
//
// The caller serialises nothing: a Manager takes its own lock, and asks
// for index runs itself through the caller's function afterwards.
package lifecycle

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/atomicfile"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/patch"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// AdminDir is the hidden folder in a subdir that keeps its yanks and
// patch. Dot-folders are never served.
const AdminDir = ".admin"

const (
	yankFile  = "yanked.json"
	patchFile = "patch.json"
)

var (
	// ErrNoPackage means the label's subdir has no such package.
	ErrNoPackage = errors.New("no such package in this label and subdir")
	// ErrNoLabel means the label has no such subdir (or does not exist).
	ErrNoLabel = errors.New("no such label or subdir")
	// ErrNoPatch means the label's subdir has no patch.
	ErrNoPatch = errors.New("no patch for this label and subdir")
)

// Yank is why and by whom a package was yanked.
type Yank struct {
	Reason string    `json:"reason,omitempty"`
	Token  string    `json:"token,omitempty"`
	Time   time.Time `json:"time"`
}

// File is a package in a label's subdir.
type File struct {
	Filename   string `json:"filename"`
	Size       int64  `json:"size"`
	SHA256     string `json:"sha256"`
	Yanked     bool   `json:"yanked"`
	YankReason string `json:"yank_reason,omitempty"`
}

// Manager changes the packages of one channel.
type Manager struct {
	st  *store.Store
	now func() time.Time

	mu     sync.Mutex
	hashes map[fileID]string
}

// fileID identifies a file's bytes for the hash cache: packages are never
// rewritten in place, so the inode, size and mtime name one content.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

// New returns a Manager of the channel st.
func New(st *store.Store) *Manager {
	return &Manager{st: st, now: time.Now, hashes: map[fileID]string{}}
}

func (m *Manager) abs(dir string) string { return filepath.Join(m.st.Root(), dir) }

// pkgInfo returns the info of a package file in dir, which must be a
// regular file with a package's name.
func (m *Manager) pkgInfo(dir, filename string) (fs.FileInfo, error) {
	if _, err := condapkg.ParseFilename(filename); err != nil {
		return nil, ErrNoPackage
	}
	if fi, err := os.Lstat(m.abs(dir)); err != nil || !fi.IsDir() {
		return nil, ErrNoLabel
	}
	fi, err := os.Lstat(filepath.Join(m.abs(dir), filename))
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.Mode().IsRegular()) {
		return nil, ErrNoPackage
	}
	if err != nil {
		return nil, err
	}
	return fi, nil
}

// sha256Of hashes a package, once per content.
func (m *Manager) sha256Of(path string, fi fs.FileInfo) (string, error) {
	st, _ := fi.Sys().(*syscall.Stat_t)
	var id fileID
	if st != nil {
		id = fileID{dev: uint64(st.Dev), ino: st.Ino, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
		if h, ok := m.hashes[id]; ok {
			return h, nil
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", filepath.Base(path), err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if st != nil {
		m.hashes[id] = sum
	}
	return sum, nil
}

// List returns the packages of label's subdir, by filename.
func (m *Manager) List(label, subdir string) ([]File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir := store.Dir(label, subdir)
	des, err := os.ReadDir(m.abs(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoLabel
	}
	if err != nil {
		return nil, err
	}
	yanks, err := m.yanks(dir)
	if err != nil {
		return nil, err
	}
	files := []File{}
	for _, de := range des {
		if _, err := condapkg.ParseFilename(de.Name()); err != nil || !de.Type().IsRegular() {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		sum, err := m.sha256Of(filepath.Join(m.abs(dir), de.Name()), fi)
		if err != nil {
			return nil, err
		}
		y, yanked := yanks[de.Name()]
		files = append(files, File{Filename: de.Name(), Size: fi.Size(), SHA256: sum, Yanked: yanked, YankReason: y.Reason})
	}
	return files, nil
}

// Copied is what a copy or move did.
type Copied struct {
	SHA256 string
	// Created is false when the target label already had the same bytes.
	Created bool
}

// Copy hard-links label's subdir/filename into label to. The same bytes
// already there are no error; a different package of that name is
// store.ErrExists.
func (m *Manager) Copy(label, subdir, filename, to string) (Copied, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.copy(label, subdir, filename, to)
}

func (m *Manager) copy(label, subdir, filename, to string) (Copied, error) {
	from := store.Dir(label, subdir)
	fi, err := m.pkgInfo(from, filename)
	if err != nil {
		return Copied{}, err
	}
	src := filepath.Join(m.abs(from), filename)
	sum, err := m.sha256Of(src, fi)
	if err != nil {
		return Copied{}, err
	}
	dst := store.Dir(to, subdir)
	if err := m.st.MkdirSynced(dst); err != nil {
		return Copied{}, err
	}
	target := filepath.Join(m.abs(dst), filename)
	err = os.Link(src, target)
	if errors.Is(err, fs.ErrExist) {
		tfi, err := os.Lstat(target)
		if err != nil {
			return Copied{}, err
		}
		if !tfi.Mode().IsRegular() {
			return Copied{}, store.ErrExists
		}
		tsum, err := m.sha256Of(target, tfi)
		if err != nil {
			return Copied{}, err
		}
		if tsum != sum {
			return Copied{}, store.ErrExists
		}
		return Copied{SHA256: sum}, m.st.CarrySidecar(from, dst, filename)
	}
	if err != nil {
		return Copied{}, fmt.Errorf("link into label %s: %w", to, err)
	}
	if err := m.st.CarrySidecar(from, dst, filename); err != nil {
		return Copied{}, err
	}
	if err := atomicfile.SyncDir(m.abs(dst)); err != nil {
		return Copied{}, err
	}
	return Copied{SHA256: sum, Created: true}, nil
}

// Move copies, then removes the package from the source label.
func (m *Manager) Move(label, subdir, filename, to string) (Copied, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.copy(label, subdir, filename, to)
	if err != nil {
		return c, err
	}
	return c, m.unlink(store.Dir(label, subdir), filename)
}

// unlink removes a package (and its yank) from dir, once its bytes are
// safe elsewhere; its attestations go to .trash/, whether or not they
// were carried along too.
func (m *Manager) unlink(dir, filename string) error {
	if err := m.st.RemovePackage(dir, filename, m.now()); err != nil {
		return err
	}
	yanks, err := m.yanks(dir)
	if err != nil {
		return err
	}
	if _, ok := yanks[filename]; ok {
		delete(yanks, filename)
		return m.saveYanks(dir, yanks)
	}
	return nil
}

// Deleted is what a delete did.
type Deleted struct {
	SHA256 string
	// Trash is where the bytes went, relative to the channel root.
	Trash string
}

// Delete moves a package into .trash/<UTC date>/<label>/<subdir>/.
func (m *Manager) Delete(label, subdir, filename string) (Deleted, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir := store.Dir(label, subdir)
	fi, err := m.pkgInfo(dir, filename)
	if err != nil {
		return Deleted{}, err
	}
	sum, err := m.sha256Of(filepath.Join(m.abs(dir), filename), fi)
	if err != nil {
		return Deleted{}, err
	}
	rel, err := m.st.Trash(dir, filename, m.now())
	if err != nil {
		return Deleted{}, err
	}
	return Deleted{SHA256: sum, Trash: rel}, m.unlink(dir, filename)
}

// SetYank yanks (or, with yanked false, unyanks) a package. It returns
// the package's sha256 and whether anything changed.
func (m *Manager) SetYank(label, subdir, filename string, yanked bool, y Yank) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir := store.Dir(label, subdir)
	fi, err := m.pkgInfo(dir, filename)
	if err != nil {
		return "", false, err
	}
	sum, err := m.sha256Of(filepath.Join(m.abs(dir), filename), fi)
	if err != nil {
		return "", false, err
	}
	yanks, err := m.yanks(dir)
	if err != nil {
		return "", false, err
	}
	old, was := yanks[filename]
	switch {
	case yanked && was && old.Reason == y.Reason:
		return sum, false, nil
	case !yanked && !was:
		return sum, false, nil
	case yanked:
		if y.Time.IsZero() {
			y.Time = m.now().UTC()
		}
		yanks[filename] = y
	default:
		delete(yanks, filename)
	}
	return sum, true, m.saveYanks(dir, yanks)
}

// Patch returns label's subdir's patch instructions as they were set.
func (m *Manager) Patch(label, subdir string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := os.ReadFile(filepath.Join(m.abs(store.Dir(label, subdir)), AdminDir, patchFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoPatch
	}
	return b, err
}

// SetPatch stores label's subdir's patch instructions (nil removes them)
// and derives its patch_instructions.json. It returns false when there
// was no patch to remove.
func (m *Manager) SetPatch(label, subdir string, in *patch.Instructions) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir := store.Dir(label, subdir)
	if fi, err := os.Lstat(m.abs(dir)); err != nil || !fi.IsDir() {
		return false, ErrNoLabel
	}
	path := filepath.Join(m.abs(dir), AdminDir, patchFile)
	if in == nil {
		err := os.Remove(path)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return true, m.derive(dir)
	}
	b, err := in.Marshal()
	if err != nil {
		return false, err
	}
	if err := m.writeAdmin(dir, patchFile, b); err != nil {
		return false, err
	}
	return true, m.derive(dir)
}

// Refresh derives dir's patch_instructions.json from its yanks and patch
// again, for the start-up, after a crash between the two writes. A
// subdir that has never been changed through a Manager is left alone,
// with any patch_instructions.json put there by hand; once a Manager
// changes it, a hand-placed file is kept as its patch.
func (m *Manager) Refresh(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	adm := filepath.Join(m.abs(dir), AdminDir)
	if _, err := os.Stat(adm); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	// Temp files of a write a crash interrupted.
	if err := atomicfile.RemoveStale(adm); err != nil {
		return err
	}
	return m.derive(dir)
}

// YankReasons returns the reasons of dir's yanked packages by filename,
// for the channel's pages; it is empty if they cannot be read.
func (m *Manager) YankReasons(dir string) map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	yanks, _ := m.yanks(dir)
	out := make(map[string]string, len(yanks))
	for fn, y := range yanks {
		out[fn] = y.Reason
	}
	return out
}

func (m *Manager) yanks(dir string) (map[string]Yank, error) {
	yanks := map[string]Yank{}
	b, err := os.ReadFile(filepath.Join(m.abs(dir), AdminDir, yankFile))
	if errors.Is(err, fs.ErrNotExist) {
		return yanks, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &yanks); err != nil {
		return nil, fmt.Errorf("%s/%s/%s: %w", dir, AdminDir, yankFile, err)
	}
	return yanks, nil
}

func (m *Manager) saveYanks(dir string, yanks map[string]Yank) error {
	b, err := json.MarshalIndent(yanks, "", " ")
	if err != nil {
		return err
	}
	if err := m.writeAdmin(dir, yankFile, b); err != nil {
		return err
	}
	return m.derive(dir)
}

// writeAdmin replaces a file of dir's admin folder. The first time, a
// patch_instructions.json placed by hand is adopted as the patch, so that
// deriving the file does not drop it.
func (m *Manager) writeAdmin(dir, name string, b []byte) error {
	adm := filepath.Join(m.abs(dir), AdminDir)
	if _, err := os.Stat(adm); errors.Is(err, fs.ErrNotExist) {
		if err := m.st.MkdirSynced(filepath.Join(dir, AdminDir)); err != nil {
			return err
		}
		if hand, err := os.ReadFile(filepath.Join(m.abs(dir), patch.FileName)); err == nil && name != patchFile {
			if _, err := patch.Parse(hand, false); err == nil {
				if err := atomicfile.Write(filepath.Join(adm, patchFile), hand); err != nil {
					return err
				}
			}
		}
	}
	return atomicfile.Write(filepath.Join(adm, name), b)
}

// derive writes dir's patch_instructions.json: the patch, with every
// yanked package added to its removals. With neither, the file is
// removed.
func (m *Manager) derive(dir string) error {
	var in patch.Instructions
	b, err := os.ReadFile(filepath.Join(m.abs(dir), AdminDir, patchFile))
	switch {
	case err == nil:
		p, err := patch.Parse(b, false)
		if err != nil {
			return fmt.Errorf("%s/%s/%s: %w", dir, AdminDir, patchFile, err)
		}
		in = *p
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	yanks, err := m.yanks(dir)
	if err != nil {
		return err
	}
	for _, fn := range slices.Sorted(maps.Keys(yanks)) {
		if !slices.Contains(in.Remove, fn) {
			in.Remove = append(in.Remove, fn)
		}
	}
	path := filepath.Join(m.abs(dir), patch.FileName)
	if in.Empty() && len(b) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if in.Version == 0 {
		in.Version = 1
	}
	out, err := in.Marshal()
	if err != nil {
		return err
	}
	return atomicfile.Write(path, out)
}
