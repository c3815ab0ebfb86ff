package proxy

import (
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/atomicfile"
)

// MaxShardSize bounds a shard, compressed and decompressed.
const MaxShardSize = 64 << 20

var shardPattern = regexp.MustCompile(`^[0-9a-f]{64}\.msgpack\.zst$`)

func shardName(file string) bool { return shardPattern.MatchString(file) }

// serveShardIndex serves a label's subdir's filtered shard index.
func (p *Proxy) serveShardIndex(w http.ResponseWriter, r *http.Request, label, subdir string) error {
	dir := p.cacheDir(label, subdir)
	m, stale, fetched, err := p.ensureShardIndex(r.Context(), label, subdir, false)
	if err != nil {
		return err
	}
	p.obs.Cache(p.up.Name, "index", !fetched)
	return p.serveFile(w, r, filepath.Join(dir, shardIndexFile), m, stale)
}

func (p *Proxy) ensureShardIndex(ctx context.Context, label, subdir string, force bool) (meta, bool, bool, error) {
	dir := p.cacheDir(label, subdir)
	return p.fresh(ctx, dir, "shards", force, func(ctx context.Context, m meta, have bool) error {
		etag := ""
		if have {
			etag = m.ETag
		}
		u := p.base.JoinPath(upstreamPath(label, subdir, shardIndexFile))
		f, err := p.get(ctx, u.String(), etag)
		if err != nil {
			return err
		}
		defer f.close()
		switch f.resp.StatusCode {
		case http.StatusNotModified:
			p.reached(nil)
			m.Checked = time.Now()
			return writeMeta(dir, "shards", m)
		case http.StatusOK:
			return p.buildShardIndex(f, dir, u)
		}
		return f.status(shardIndexFile)
	})
}

// buildShardIndex filters the upstream's shard index and keeps it.
func (p *Proxy) buildShardIndex(f *fetch, dir string, u *url.URL) error {
	data, err := readAll(f, p.up.MaxIndexSize)
	if err != nil {
		return err
	}
	ix, err := filterShardIndex(data, p.up.MaxIndexSize, p.keep)
	if err != nil {
		return f.contentErr(err)
	}
	if ix.base == "" {
		ix.base = "./"
	}
	ref, err := url.Parse(ix.base)
	if err != nil {
		return f.contentErr(err)
	}
	base := u.ResolveReference(ref)
	if err := reachable(p.up, p.base, base, "puts its shards on"); err != nil {
		p.obs.UpstreamError(p.up.Name, "redirect")
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, shardIndexFile), ix.data); err != nil {
		return err
	}
	p.mu.Lock()
	p.shards[dir] = ix
	p.mu.Unlock()
	p.reached(nil)
	return writeMeta(dir, "shards", meta{ETag: f.resp.Header.Get("ETag"), Source: shardIndexFile, Checked: time.Now(), ShardsBase: base.String()})
}

// shardIndexOf returns the names of the cached shard index of dir.
func (p *Proxy) shardIndexOf(dir string) (shardIndex, error) {
	p.mu.Lock()
	ix, ok := p.shards[dir]
	p.mu.Unlock()
	if ok {
		return ix, nil
	}
	data, err := os.ReadFile(filepath.Join(dir, shardIndexFile))
	if err != nil {
		return shardIndex{}, err
	}
	if ix, err = filterShardIndex(data, p.up.MaxIndexSize, p.keep); err != nil {
		return shardIndex{}, err
	}
	p.mu.Lock()
	p.shards[dir] = ix
	p.mu.Unlock()
	return ix, nil
}

// serveShard serves a shard the label's subdir's shard index names,
// fetching and checking it first if it is not cached.
func (p *Proxy) serveShard(w http.ResponseWriter, r *http.Request, label, subdir, file string) error {
	path := filepath.Join(p.dir, "shards", subdir, file)
	hit := true
	if _, err := os.Stat(path); err != nil {
		hit = false
		if err := p.fetchShard(r.Context(), label, subdir, file, path); err != nil {
			return err
		}
	}
	p.obs.Cache(p.up.Name, "shard", hit)
	return p.serveFile(w, r, path, meta{Checked: time.Now()}, false)
}

func (p *Proxy) fetchShard(ctx context.Context, label, subdir, file, path string) error {
	dir := p.cacheDir(label, subdir)
	m, _, _, err := p.ensureShardIndex(ctx, label, subdir, false)
	if err != nil {
		return err
	}
	ix, err := p.shardIndexOf(dir)
	if err != nil {
		return err
	}
	b, _ := hex.DecodeString(strings.TrimSuffix(file, ".msgpack.zst"))
	sum := [32]byte(b)
	name, ok := ix.names[sum]
	if !ok {
		return errNotFound
	}
	return p.flights.do(ctx, path, func() error {
		f, err := p.get(context.WithoutCancel(ctx), strings.TrimSuffix(m.ShardsBase, "/")+"/"+file, "")
		if err != nil {
			return err
		}
		defer f.close()
		if f.resp.StatusCode != http.StatusOK {
			// Even a 404: the shard index named it.
			p.obs.UpstreamError(p.up.Name, "status")
			return &Error{Status: http.StatusBadGateway, Msg: "the upstream does not serve a shard its shard index names: " + f.resp.Status}
		}
		data, err := readAll(f, MaxShardSize)
		if err != nil {
			return err
		}
		if err := checkShard(data, sum, name, MaxShardSize); err != nil {
			return f.contentErr(err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		return atomicfile.Write(path, data)
	})
}

// readAll reads f's whole body, of at most max bytes.
func readAll(f *fetch, max int64) ([]byte, error) {
	b, err := io.ReadAll(f.limited(max))
	if err != nil {
		return nil, f.readErr(err)
	}
	return b, nil
}

// shardRecord looks a package's record up in its name's shard, which
// costs a shard (kilobytes) where repodata.json costs hundreds of MB;
// ok is false if the upstream has no shards, or its shard does not list
// fn (the caller then asks repodata.json).
func (p *Proxy) shardRecord(ctx context.Context, label, subdir, fn, name string) (rec record, ok bool) {
	dir := p.cacheDir(label, subdir)
	if _, _, _, err := p.ensureShardIndex(ctx, label, subdir, false); err != nil {
		return record{}, false
	}
	ix, err := p.shardIndexOf(dir)
	if err != nil {
		return record{}, false
	}
	var sum [32]byte
	found := false
	for s, n := range ix.names {
		if n == name {
			sum, found = s, true
			break
		}
	}
	if !found {
		return record{}, false
	}
	file := hex.EncodeToString(sum[:]) + ".msgpack.zst"
	path := filepath.Join(p.dir, "shards", subdir, file)
	if _, err := os.Stat(path); err != nil {
		if err := p.fetchShard(ctx, label, subdir, file, path); err != nil {
			return record{}, false
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return record{}, false
	}
	doc, err := decodeShard(data, MaxShardSize)
	if err != nil {
		return record{}, false
	}
	r, inTar := doc.Packages[fn]
	rc, inConda := doc.PackagesConda[fn]
	if inConda {
		r = rc
	}
	if (!inTar && !inConda) || r.sha256Hex() == "" || r.Size <= 0 {
		return record{}, false
	}
	return record{Name: name, Subdir: subdir, Sha256: r.sha256Hex(), Size: r.Size}, true
}
