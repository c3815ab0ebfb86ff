package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/conda-upload-server/conda-upload-server/internal/atomicfile"
	"github.com/conda-upload-server/conda-upload-server/internal/channel"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// An index group is the files the proxy serves from one upstream index
// document: its JSON and a .zst the proxy writes itself from the same
// bytes, so that the two never disagree (a proxy whose .zst was never
// refreshed served old data: mamba-org/quetz#711). The upstream's .zst is
// fetched first, for its size, and its .json if it has none.
type indexGroup struct {
	base string
	// verify: the records must carry sha256 and size, and are kept in
	// a records file that packages are checked against.
	verify bool
	// root: a document of the channel's root rather than of a subdir
	// (channeldata.json), which upstreams serve as .json only; the
	// proxy writes no .zst of it either, since clients never ask.
	root bool
}

var indexGroups = []indexGroup{{base: "repodata", verify: true}, {base: "current_repodata"}, {base: "run_exports"}}

// channelData is the group of channeldata.json: the channel's summary by
// package name, which web front ends read (solvers do not).
var channelData = indexGroup{base: "channeldata", root: true}

// channelDataPath reports whether rel is the channeldata.json of the
// upstream's root or of one of its labels, and which label.
func channelDataPath(rel string) (label string, ok bool) {
	if rel == "channeldata.json" {
		return "", true
	}
	parts := strings.Split(rel, "/")
	if len(parts) == 3 && parts[0] == store.LabelDir && store.ValidLabel(parts[1]) && parts[2] == "channeldata.json" {
		return parts[1], true
	}
	return "", false
}

// sources are the upstream files of the group's document, in the order
// they are asked for.
func (g *indexGroup) sources() []string {
	if g.root {
		return []string{g.base + ".json"}
	}
	return []string{g.base + ".json.zst", g.base + ".json"}
}

const (
	shardIndexFile = "repodata_shards.msgpack.zst"
	recordsFile    = "repodata.records"
)

func indexGroupOf(file string) *indexGroup {
	for i, g := range indexGroups {
		if file == g.base+".json" || file == g.base+".json.zst" {
			return &indexGroups[i]
		}
	}
	return nil
}

// meta is what the proxy knows of a cached index file.
type meta struct {
	ETag   string `json:"etag"`
	Source string `json:"source"`
	// Checked is when the upstream last confirmed or replaced it.
	Checked time.Time `json:"checked"`
	// ShardsBase is the absolute URL the shards of a shard index are
	// fetched from.
	ShardsBase string `json:"shards_base,omitempty"`
	// Missing says the upstream answered 404 for it (an upstream without
	// CEP-16 shards, say): answered 404 until the TTL is over, and while
	// the upstream cannot be reached after that.
	Missing bool `json:"missing,omitempty"`
}

func readMeta(dir, base string) (meta, bool) {
	var m meta
	b, err := os.ReadFile(filepath.Join(dir, base+".meta"))
	return m, err == nil && json.Unmarshal(b, &m) == nil
}

func writeMeta(dir, base string, m meta) error {
	b, _ := json.Marshal(m)
	return atomicfile.Write(filepath.Join(dir, base+".meta"), b)
}

// fresh returns the meta of a cached index, refreshing it first if it is
// older than the TTL, or if force. If the upstream cannot be reached and
// a copy is cached, it returns the copy as stale.
func (p *Proxy) fresh(ctx context.Context, dir, base string, force bool, refresh func(context.Context, meta, bool) error) (m meta, stale, fetched bool, err error) {
	m, have := readMeta(dir, base)
	if have && !force && (time.Since(m.Checked) < p.up.IndexTTL || p.flights.busy(filepath.Join(dir, base))) {
		// Fresh; or being refreshed, in which case one request waits
		// for the refresh (of a large repodata.json, seconds) and the
		// others get the copy that was fresh a moment ago.
		if m.Missing {
			return m, false, false, errNotFound
		}
		return m, false, false, nil
	}
	err = p.flights.do(ctx, filepath.Join(dir, base), func() error {
		err := refresh(context.WithoutCancel(ctx), m, have)
		if errors.Is(err, errNotFound) {
			// Remembered, so that every request does not ask again.
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if err := writeMeta(dir, base, meta{Missing: true, Checked: time.Now()}); err != nil {
				return err
			}
		}
		return err
	})
	if err == nil {
		m, _ = readMeta(dir, base)
		return m, false, true, nil
	}
	var e *Error
	if have && m.Missing {
		return m, false, false, errNotFound
	}
	if have && errors.As(err, &e) && e.Status != http.StatusNotFound {
		p.log.Warn("serving a stale index", "file", filepath.Join(dir, base), "err", err)
		p.obs.Stale(p.up.Name)
		return m, true, false, nil
	}
	return m, false, false, err
}

// serveIndex serves a file of g: repodata.json, current_repodata.json,
// run_exports.json or their .zst, of a subdir; channeldata.json of the
// channel's root (subdir "").
func (p *Proxy) serveIndex(w http.ResponseWriter, r *http.Request, label, subdir, file string, g *indexGroup) error {
	dir := p.cacheDir(label, subdir)
	m, stale, fetched, err := p.fresh(r.Context(), dir, g.base, false, func(ctx context.Context, m meta, have bool) error {
		return p.refreshIndex(ctx, label, subdir, dir, g, m, have)
	})
	if err != nil {
		return err
	}
	p.obs.Cache(p.up.Name, "index", !fetched)
	return p.serveFile(w, r, filepath.Join(dir, file), m, stale)
}

// refreshIndex asks the upstream for a group's document, conditionally if
// one is cached, and rebuilds the group's files if it changed.
func (p *Proxy) refreshIndex(ctx context.Context, label, subdir, dir string, g *indexGroup, m meta, have bool) error {
	for _, src := range g.sources() {
		etag := ""
		if have && m.Source == src {
			etag = m.ETag
		}
		f, err := p.get(ctx, p.base.JoinPath(upstreamPath(label, subdir, src)).String(), etag)
		if err != nil {
			return err
		}
		err = p.indexAnswer(f, dir, g, subdir, src, m)
		f.close()
		if err != errNotFound || src == g.base+".json" {
			return err
		}
	}
	return errNotFound
}

// indexAnswer handles the upstream's answer for an index document.
func (p *Proxy) indexAnswer(f *fetch, dir string, g *indexGroup, subdir, src string, m meta) error {
	switch f.resp.StatusCode {
	case http.StatusNotModified:
		p.reached(nil)
		m.Checked = time.Now()
		return writeMeta(dir, g.base, m)
	case http.StatusOK:
		if err := p.buildIndex(f, dir, g, subdir, src); err != nil {
			return err
		}
		p.reached(nil)
		return writeMeta(dir, g.base, meta{ETag: f.resp.Header.Get("ETag"), Source: src, Checked: time.Now()})
	}
	return f.status(src)
}

// buildIndex filters the upstream's document into the group's files.
func (p *Proxy) buildIndex(f *fetch, dir string, g *indexGroup, subdir, src string) error {
	max := p.up.MaxIndexSize
	var in io.Reader = f.limited(max)
	if strings.HasSuffix(src, ".zst") {
		zr, err := zstd.NewReader(in, zstd.WithDecoderMaxMemory(uint64(max)), zstd.WithDecoderMaxWindow(64<<20), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return err
		}
		defer zr.Close()
		in = &limitReader{r: zr, left: max}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	out, err := newOutputs(dir, g)
	if err != nil {
		return err
	}
	defer out.discard()
	var seen func(string, record) error
	if g.verify {
		seen = out.record
	}
	var st filterStats
	if g.root {
		st, err = filterChannelData(in, out.writer(), p.keep)
	} else {
		st, err = filter(in, out.writer(), subdir, p.keep, g.verify, seen)
	}
	if err != nil {
		return f.contentErr(err)
	}
	if st.Invalid > 0 {
		p.log.Warn("the upstream's index has invalid records; they are not served", "subdir", subdir, "file", src, "invalid", st.Invalid)
		p.obs.UpstreamError(p.up.Name, "invalid_record")
	}
	return out.commit()
}

// contentErr is the error of an upstream body that could not be used:
// the upstream's failure if reading it failed, else bad content; an
// error writing the cache is the proxy's own.
func (f *fetch) contentErr(err error) error {
	var local localError
	if errors.As(err, &local) {
		return local.error
	}
	if f.bodyErr != nil {
		return f.readErr(f.bodyErr)
	}
	f.p.obs.UpstreamError(f.p.up.Name, "invalid")
	return &Error{Status: http.StatusBadGateway, Msg: "the upstream sent an index the proxy cannot use", Err: err}
}

// outputs are the temp files of an index group being rebuilt.
type outputs struct {
	dir   string
	g     *indexGroup
	files map[string]*os.File // by final name
	zw    *zstd.Encoder
	rec   *bufio.Writer
}

func newOutputs(dir string, g *indexGroup) (*outputs, error) {
	o := &outputs{dir: dir, g: g, files: map[string]*os.File{}}
	names := []string{g.base + ".json"}
	if !g.root {
		names = append(names, g.base+".json.zst")
	}
	if g.verify {
		names = append(names, recordsFile)
	}
	for _, n := range names {
		f, err := os.CreateTemp(dir, "."+n+".tmp-*")
		if err != nil {
			o.discard()
			return nil, err
		}
		o.files[n] = f
	}
	if zf := o.files[g.base+".json.zst"]; zf != nil {
		o.zw, _ = zstd.NewWriter(zf, zstd.WithEncoderConcurrency(1))
	}
	if g.verify {
		o.rec = bufio.NewWriterSize(o.files[recordsFile], 256<<10)
	}
	return o, nil
}

// writer writes the index and its .zst; its errors are localErrors.
func (o *outputs) writer() io.Writer {
	var w io.Writer = o.files[o.g.base+".json"]
	if o.zw != nil {
		w = io.MultiWriter(w, o.zw)
	}
	return localWriter{w}
}

func (o *outputs) record(fn string, r record) error {
	if _, err := fmt.Fprintf(o.rec, "%s %s %d\n", fn, r.Sha256, r.Size); err != nil {
		return localError{err}
	}
	return nil
}

// localWriter marks its writer's errors as the proxy's own.
type localWriter struct{ w io.Writer }

func (l localWriter) Write(b []byte) (int, error) {
	n, err := l.w.Write(b)
	if err != nil {
		err = localError{err}
	}
	return n, err
}

// commit makes the files durable and puts them in place, the records
// first: a package is never checked against records older than the
// index a client was served.
func (o *outputs) commit() error {
	if o.zw != nil {
		if err := o.zw.Close(); err != nil {
			return err
		}
	}
	if o.rec != nil {
		if err := o.rec.Flush(); err != nil {
			return err
		}
	}
	order := []string{recordsFile, o.g.base + ".json.zst", o.g.base + ".json"}
	for _, n := range order {
		f := o.files[n]
		if f == nil {
			continue
		}
		if err := f.Chmod(0o644); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		if err := os.Rename(f.Name(), filepath.Join(o.dir, n)); err != nil {
			return err
		}
	}
	return atomicfile.SyncDir(o.dir)
}

// discard removes what commit did not put in place.
func (o *outputs) discard() {
	for _, f := range o.files {
		f.Close()
		os.Remove(f.Name())
	}
}

// headers sets the Content-Type and Cache-Control of a file of this
// name: those of the local channel's, private where downloads need a
// token, so that shared caches keep nothing.
func (p *Proxy) headers(w http.ResponseWriter, name string) {
	ctype, cc := channel.Headers(name)
	if p.up.Private {
		cc = strings.Replace(cc, "public", "private", 1)
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", cc)
}

// serveFile serves a cached file, an index file marked stale if it is.
func (p *Proxy) serveFile(w http.ResponseWriter, r *http.Request, name string, m meta, stale bool) error {
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("proxy cache: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	h := w.Header()
	p.headers(w, filepath.Base(name))
	h.Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.ModTime().UnixNano(), fi.Size()))
	if !m.Checked.IsZero() {
		h.Set("Age", strconv.Itoa(int(max(time.Since(m.Checked), 0).Seconds())))
	}
	if stale {
		h.Set("Warning", `110 - "Response is Stale"`)
		h.Set("X-Proxy-Stale", "true")
	}
	http.ServeContent(w, r, "", fi.ModTime(), f)
	return nil
}
