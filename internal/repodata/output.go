package repodata

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/atomicfile"
	"github.com/conda-upload-server/conda-upload-server/internal/patch"
)

// write writes the subdir's index files in an order that keeps every
// state a client can see consistent, even across a crash at any point:
//
//  1. new shards, made durable before anything names them;
//  2. run_exports.json (and .zst), and current_repodata.json (and .zst)
//     when it is on;
//  3. the shard index, which names the new shards;
//  4. repodata.json.zst;
//  5. repodata.json, last.
//
// Each file is replaced atomically (temp file, fsync, rename, fsync of
// the directory), and each compressed file is written on every run, so it
// is never staler than the JSON beside it. A file whose kind is turned off
// is removed, for the same reason. Shards no index refers to any more are
// removed only after the retention period.
func (x *Writer) write(dir, subdir string, st *subdirState, shardFiles map[string]bool) error {
	repodata := x.prepareRepodata(dir, subdir, st)
	if err := x.writeBeforeRepodata(dir, subdir, st, shardFiles); err != nil {
		repodata.abort()
		return err
	}
	if err := x.commitRepodata(dir, repodata); err != nil {
		return err
	}
	return x.removeOrphans(dir, st, shardFiles)
}

// preparedRepodata is repodata.json, and its .zst, written under temp
// names on another core.
type preparedRepodata struct {
	done      chan struct{}
	json, zst *atomicfile.Pending
	err       error
}

// prepareRepodata starts the preparation of repodata.json, the largest
// file by far: on another core, render it, write it under a temp name and
// start its writeback, then compress it, while the other files are
// written. It is committed, by then mostly on the disk, last.
func (x *Writer) prepareRepodata(dir, subdir string, st *subdirState) *preparedRepodata {
	p := &preparedRepodata{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		var repodata []byte
		if repodata, p.err = renderRepodata(nil, subdir, st); p.err != nil {
			return
		}
		if p.json, p.err = atomicfile.Prepare(filepath.Join(dir, "repodata.json"), repodata); p.err != nil {
			return
		}
		if x.files.Zst {
			p.zst, p.err = atomicfile.Prepare(filepath.Join(dir, "repodata.json.zst"), x.zstd.EncodeAll(repodata, nil))
		}
	}()
	return p
}

// abort waits for the preparation and removes its temp files.
func (p *preparedRepodata) abort() {
	<-p.done
	p.json.Abort()
	p.zst.Abort()
}

// writeBeforeRepodata writes steps 1 to 3: the new shards (added to
// shardFiles), run_exports.json, current_repodata.json and the shard
// index.
func (x *Writer) writeBeforeRepodata(dir, subdir string, st *subdirState, shardFiles map[string]bool) error {
	if x.files.Shards {
		written, err := x.writeShards(dir, st, shardFiles)
		if err != nil {
			return fmt.Errorf("write shards: %w", err)
		}
		for _, f := range written {
			shardFiles[f] = true
		}
	}
	runExports := func() ([]byte, error) { return renderRunExports(subdir, st), nil }
	if err := x.writeOrRemove(dir, "run_exports.json", x.files.RunExports, runExports); err != nil {
		return err
	}
	current := func() ([]byte, error) { return renderCurrent(subdir, st) }
	if err := x.writeOrRemove(dir, CurrentRepodataFile, x.files.CurrentRepodata, current); err != nil {
		return err
	}
	return x.writeShardIndex(dir, subdir, st)
}

// writeOrRemove writes name (and name.zst) rendered by render when its
// kind is on, and removes both when it is off, so that a stale copy never
// stays beside the files that are written.
func (x *Writer) writeOrRemove(dir, name string, on bool, render func() ([]byte, error)) error {
	if !on {
		return removeAll(dir, name, name+".zst")
	}
	data, err := render()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return x.writeJSON(dir, name, data)
}

// writeShardIndex writes the shard index, which names the shards of st;
// with shards off, it forgets them and removes the index.
func (x *Writer) writeShardIndex(dir, subdir string, st *subdirState) error {
	if !x.files.Shards {
		clear(st.shards)
		return removeAll(dir, ShardIndexFile)
	}
	idx, err := x.encodeShardIndex(subdir, shardRefs(st.shards), x.now())
	if err != nil {
		return fmt.Errorf("encode shard index: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, ShardIndexFile), idx); err != nil {
		return fmt.Errorf("write %s: %w", ShardIndexFile, err)
	}
	return nil
}

// commitRepodata waits for the preparation, then puts repodata.json.zst
// in place (or removes a stale one), then repodata.json.
func (x *Writer) commitRepodata(dir string, p *preparedRepodata) error {
	<-p.done
	if p.err != nil {
		p.abort()
		return fmt.Errorf("write repodata.json: %w", p.err)
	}
	if x.files.Zst {
		if err := p.zst.Commit(); err != nil {
			p.json.Abort()
			return fmt.Errorf("write repodata.json.zst: %w", err)
		}
	} else if err := removeAll(dir, "repodata.json.zst"); err != nil {
		p.json.Abort()
		return err
	}
	if err := p.json.Commit(); err != nil {
		return fmt.Errorf("write repodata.json: %w", err)
	}
	return nil
}

// writeJSON writes name, and before it name.zst (or removes a stale one).
func (x *Writer) writeJSON(dir, name string, data []byte) error {
	if x.files.Zst {
		zst := x.zstd.EncodeAll(data, nil)
		if err := atomicfile.Write(filepath.Join(dir, name+".zst"), zst); err != nil {
			return fmt.Errorf("write %s.zst: %w", name, err)
		}
	} else if err := removeAll(dir, name+".zst"); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, name), data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// syncEach is how many new shards are fsynced one by one; more are made
// durable with one syncfs(2), which costs the same for ten thousand.
const syncEach = 32

// writeShards encodes the shard of every package name that changed, and
// writes those not already on disk: each to a temp file, then all made
// durable, then renamed to their final names, so a shard file under its
// final name is always complete. It returns the files written.
func (x *Writer) writeShards(dir string, st *subdirState, onDisk map[string]bool) ([]string, error) {
	fresh, refs, err := x.encodeChangedShards(st, onDisk)
	if err != nil {
		return nil, err
	}
	written, err := writeShardFiles(dir, fresh)
	if err != nil {
		return nil, err
	}
	// The shards are durable: the index may name them from now on.
	for name := range st.dirtyNames {
		if sh, ok := refs[name]; ok {
			st.shards[name] = shard{sum: sh.sum}
		} else {
			delete(st.shards, name)
		}
	}
	clear(st.dirtyNames)
	return written, nil
}

// encodeChangedShards encodes the shard of every package name that
// changed. It returns them by name (refs), and those not yet on disk by
// file name (fresh).
func (x *Writer) encodeChangedShards(st *subdirState, onDisk map[string]bool) (fresh, refs map[string]shard, err error) {
	// A shard the index names that is no longer on disk (deleted by
	// hand) is encoded and written again.
	for name, sh := range st.shards {
		if !onDisk[sh.file()] {
			st.dirtyNames[name] = true
		}
	}
	fresh = map[string]shard{}
	refs = map[string]shard{}
	for name := range st.dirtyNames {
		files := st.byName[name]
		if len(files) == 0 {
			continue
		}
		sh, ok, err := x.encodeShard(slices.Sorted(maps.Keys(files)), st.entries, st.plan)
		if err != nil {
			return nil, nil, fmt.Errorf("shard %s: %w", name, err)
		}
		if !ok {
			continue // every file of the name is removed by a patch
		}
		refs[name] = sh
		if !onDisk[sh.file()] {
			fresh[sh.file()] = sh
		}
	}
	return fresh, refs, nil
}

// writeShardFiles writes each shard of fresh to a temp file, makes them all
// durable, then renames them to their file names and makes the renames
// durable. It returns the file names written.
func writeShardFiles(dir string, fresh map[string]shard) ([]string, error) {
	var temps []*os.File
	defer func() {
		for _, f := range temps {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	for _, sh := range fresh {
		f, err := os.CreateTemp(dir, "."+sh.file()+".tmp-*")
		if err != nil {
			return nil, err
		}
		temps = append(temps, f)
		if _, err := f.Write(sh.data); err != nil {
			return nil, err
		}
		if err := f.Chmod(0o644); err != nil {
			return nil, err
		}
		if len(fresh) <= syncEach {
			if err := f.Sync(); err != nil {
				return nil, err
			}
		}
	}
	if len(fresh) > syncEach {
		if err := atomicfile.SyncFS(temps[0]); err != nil {
			return nil, fmt.Errorf("syncfs: %w", err)
		}
	}
	var written []string
	for _, f := range temps {
		final := strings.TrimPrefix(filepath.Base(f.Name()), ".")
		final = final[:strings.Index(final, ".tmp-")]
		if err := os.Rename(f.Name(), filepath.Join(dir, final)); err != nil {
			return nil, err
		}
		written = append(written, final)
	}
	for _, f := range temps {
		f.Close()
	}
	temps = nil
	if len(written) > 0 {
		if err := atomicfile.SyncDir(dir); err != nil {
			return nil, err
		}
	}
	return written, nil
}

func shardRefs(shards map[string]shard) map[string][sha256.Size]byte {
	refs := make(map[string][sha256.Size]byte, len(shards))
	for name, sh := range shards {
		refs[name] = sh.sum
	}
	return refs
}

// removeOrphans removes shard files that no index has named for the
// retention period. A shard is an orphan from the first run that finds
// it unnamed; after a restart, from the first run of the new process.
func (x *Writer) removeOrphans(dir string, st *subdirState, onDisk map[string]bool) error {
	named := make(map[string]bool, len(st.shards))
	for _, sh := range st.shards {
		named[sh.file()] = true
	}
	now := x.now()
	for f := range st.orphans {
		if named[f] || !onDisk[f] {
			delete(st.orphans, f)
		}
	}
	for f := range onDisk {
		if named[f] {
			continue
		}
		since, ok := st.orphans[f]
		if !ok {
			st.orphans[f] = now
			continue
		}
		if now.Sub(since) >= x.files.ShardRetention {
			if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove old shard: %w", err)
			}
			delete(st.orphans, f)
			delete(onDisk, f)
		}
	}
	return nil
}

func removeAll(dir string, names ...string) error {
	for _, n := range names {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", n, err)
		}
	}
	return nil
}

// normalise re-encodes a package's run_exports.json as compact JSON with
// sorted keys, as conda-index writes it; nil stays nil.
func normalise(runExports []byte) (json.RawMessage, error) {
	if runExports == nil {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(runExports))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("run_exports.json: %w", err)
	}
	return marshal(v)
}

// renderRunExports writes run_exports.json as conda-index does: each
// package's run exports ({} if it has none), by filename.
func renderRunExports(subdir string, st *subdirState) []byte {
	sub, _ := json.Marshal(subdir)
	b := append([]byte(`{"info":{"subdir":`), sub...)
	b = append(b, `,"version":1},"packages":`...)
	b = appendRunExports(b, st.tarbz2)
	b = append(b, `,"packages.conda":`...)
	b = appendRunExports(b, st.conda)
	return append(b, '}')
}

func appendRunExports(b []byte, list []listed) []byte {
	b = append(b, '{')
	for i, l := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, l.name)
		b = append(b, `:{"run_exports":`...)
		if re := l.e.RunExports; re != nil {
			b = append(b, re...)
		} else {
			b = append(b, "{}"...)
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// renderRepodata writes the subdir document in conda-index's layout, with
// records in filename order, patched by the subdir's instructions.
func renderRepodata(b []byte, subdir string, st *subdirState) ([]byte, error) {
	size := 128
	for _, list := range [][]listed{st.tarbz2, st.conda} {
		for _, l := range list {
			size += len(l.name) + len(l.e.Record) + 4
		}
	}
	b = slices.Grow(b[:0], size)
	sub, _ := json.Marshal(subdir)
	b = append(b, `{"info":{"subdir":`...)
	b = append(b, sub...)
	b = append(b, `},"packages":`...)
	var removed []string
	var err error
	if b, err = appendRecords(b, st.tarbz2, st.plan, &removed); err != nil {
		return nil, err
	}
	b = append(b, `,"packages.conda":`...)
	if b, err = appendRecords(b, st.conda, st.plan, &removed); err != nil {
		return nil, err
	}
	slices.Sort(removed)
	b = append(b, `,"removed":[`...)
	for i, fn := range removed {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, fn)
	}
	b = append(b, `],"repodata_version":1}`...)
	return b, nil
}

func appendRecords(b []byte, list []listed, plan *patch.Plan, removed *[]string) ([]byte, error) {
	b = append(b, '{')
	first := true
	for _, l := range list {
		rec := l.e.Record
		if plan.Len() > 0 {
			var gone bool
			var err error
			if rec, gone, err = plan.Apply(l.name, rec); err != nil {
				return nil, err
			}
			if gone {
				*removed = append(*removed, l.name)
				continue
			}
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, l.name)
		b = append(b, ':')
		b = append(b, rec...)
	}
	return append(b, '}'), nil
}

// appendString appends s as a JSON string. Package filenames are plain
// ASCII that needs no escaping; anything else goes through encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			k, _ := json.Marshal(s)
			return append(b, k...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
