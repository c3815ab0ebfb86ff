package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/atomicfile"
)

// holdBack is how much of a package a first fetch keeps from its client
// until the whole package is verified. The client gets every byte but
// these as they arrive; on a mismatch its response is cut short of its
// Content-Length, so that no client ever holds a complete wrong package,
// and a package no larger than this gets a clean 502.
const holdBack = 64 << 10

// recheckAfter is how old the records may be before a package they do not
// list makes the proxy ask the upstream again.
const recheckAfter = 30 * time.Second

// aheadSize and aheadDepth are the buffers of a first fetch's read-ahead
// (ahead): 1 MiB in flight per fetch.
const (
	aheadSize  = 256 << 10
	aheadDepth = 4
)

// servePackage serves a package from the cache, or fetches it first,
// checked against its record: from its name's shard if the upstream has
// shards, else from repodata.json.
func (p *Proxy) servePackage(w http.ResponseWriter, r *http.Request, label, subdir, fn, name string) error {
	key := subdir + "/" + fn
	path := filepath.Join(p.dir, "pkgs", subdir, fn)
	if p.lru.touch(key) {
		// One file serves every label that lists it; a label not seen
		// listing it yet (or since the start) is asked once, so that a
		// token of one label gets no package of another from the cache.
		if !p.lru.listedIn(key, label) {
			if _, err := p.record(r.Context(), label, subdir, fn, name); err != nil {
				return err
			}
			p.lru.list(key, label)
		}
		err := p.serveFile(w, r, path, meta{}, false)
		if !errors.Is(err, fs.ErrNotExist) {
			p.obs.Cache(p.up.Name, "package", true)
			return err
		}
		// Removed behind the proxy's back: fetched again.
		p.lru.remove(key)
	}
	rec, err := p.record(r.Context(), label, subdir, fn, name)
	if err != nil {
		return err
	}
	p.obs.Cache(p.up.Name, "package", false)
	if r.Method == http.MethodHead {
		p.packageHeaders(w, fn, rec.Size)
		w.WriteHeader(http.StatusOK)
		return nil
	}
	var led bool
	var hb *holdback
	if r.Header.Get("Range") == "" {
		hb = &holdback{w: w, headers: func() { p.packageHeaders(w, fn, rec.Size) }}
	}
	err = p.flights.do(r.Context(), key, func() error {
		led = true
		// Not the client's context: the fetch goes on for the cache, and
		// for the requests waiting on it, if this client leaves.
		return p.fetchPackage(context.WithoutCancel(r.Context()), label, subdir, fn, rec, path, hb)
	})
	switch {
	case led && hb != nil && err != nil && hb.started:
		// The client has all but the last bytes: cut its response.
		panic(http.ErrAbortHandler)
	case led && hb != nil && err == nil:
		return nil
	case err != nil:
		return err
	}
	p.lru.touch(key)
	return p.serveFile(w, r, path, meta{}, false)
}

// record is a package's record in label's subdir: from its name's shard
// if the upstream has shards, else from repodata.json.
func (p *Proxy) record(ctx context.Context, label, subdir, fn, name string) (record, error) {
	if rec, ok := p.shardRecord(ctx, label, subdir, fn, name); ok {
		return rec, nil
	}
	return p.lookup(ctx, label, subdir, fn)
}

func (p *Proxy) packageHeaders(w http.ResponseWriter, fn string, size int64) {
	p.headers(w, fn)
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
}

// lookup finds a package's record in the label's subdir's repodata,
// asking the upstream again if the records are older than recheckAfter
// and do not list it.
func (p *Proxy) lookup(ctx context.Context, label, subdir, fn string) (record, error) {
	dir := p.cacheDir(label, subdir)
	g := indexGroupOf("repodata.json")
	refresh := func(force bool) (meta, bool, error) {
		m, _, fetched, err := p.fresh(ctx, dir, g.base, force, func(ctx context.Context, m meta, have bool) error {
			return p.refreshIndex(ctx, label, subdir, dir, g, m, have)
		})
		return m, fetched, err
	}
	m, fetched, err := refresh(false)
	if err != nil {
		return record{}, err
	}
	rec, ok, err := findRecord(filepath.Join(dir, recordsFile), fn)
	if err == nil && !ok && !fetched && time.Since(m.Checked) > recheckAfter {
		if _, _, err = refresh(true); err == nil {
			rec, ok, err = findRecord(filepath.Join(dir, recordsFile), fn)
		}
	}
	switch {
	case err != nil:
		return record{}, err
	case !ok:
		return record{}, errNotFound
	}
	return rec, nil
}

// findRecord scans a records file for fn.
func findRecord(path, fn string) (record, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return record{}, false, err
	}
	defer f.Close()
	prefix := []byte(fn + " ")
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if bytes.HasPrefix(sc.Bytes(), prefix) {
			_, rec, ok := parseRecord(sc.Text())
			return rec, ok, nil
		}
	}
	return record{}, false, sc.Err()
}

// fetchPackage fetches a package into the cache, streaming it to hb if
// set, and keeps it only if its size and sha256 are the record's. It
// stops if ctx ends.
func (p *Proxy) fetchPackage(ctx context.Context, label, subdir, fn string, rec record, path string, hb *holdback) error {
	f, err := p.getPackage(ctx, p.base.JoinPath(upstreamPath(label, subdir, fn)).String())
	if err != nil {
		return err
	}
	defer f.close()
	if f.resp.StatusCode != http.StatusOK {
		return f.status(fn)
	}
	if cl := f.resp.ContentLength; cl >= 0 && cl != rec.Size {
		return p.mismatch(fn, "Content-Length "+strconv.FormatInt(cl, 10))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+fn+".tmp-*")
	if err != nil {
		return err
	}
	defer func() { tmp.Close(); os.Remove(tmp.Name()) }()
	h := sha256.New()
	a := ahead{dst: io.MultiWriter(tmp, h), idle: f.idle}
	if hb != nil {
		a.client, a.cut, a.lag = hb, hb.cut, f.stallFor
	}
	n, err := a.copy(f.limited(rec.Size))
	var local localError
	switch {
	case errors.As(err, &local):
		return local.error
	case errors.Is(err, errTooLarge):
		return p.mismatch(fn, "more bytes than its size")
	case err != nil:
		return f.readErr(err)
	}
	if hb != nil && hb.cutOff.Load() {
		p.log.Warn("a client was too slow for the first fetch of a package, and was cut; the fetch went on for the cache", "file", fn)
	}
	if n != rec.Size || hex.EncodeToString(h.Sum(nil)) != rec.Sha256 {
		return p.mismatch(fn, "sha256 "+hex.EncodeToString(h.Sum(nil))+", "+strconv.FormatInt(n, 10)+" bytes")
	}
	// Verified: the client may have the rest while the file is made
	// durable.
	if hb != nil {
		hb.flush()
	}
	if err := keep(tmp, path); err != nil {
		return err
	}
	p.lru.add(subdir+"/"+fn, n, label)
	p.reached(nil)
	return nil
}

// mismatch is the error of a package whose bytes are not its record's.
func (p *Proxy) mismatch(fn, got string) error {
	p.log.Warn("the upstream sent a package that does not match its record; not cached", "file", fn, "got", got)
	p.obs.UpstreamError(p.up.Name, "digest")
	return &Error{Status: http.StatusBadGateway, Msg: "the package from the upstream does not match the sha256 and size of its record; nothing was cached", Err: errDigest}
}

// keep makes a verified temp file durable and puts it at path.
func keep(tmp *os.File, path string) error {
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}

// holdback passes bytes to a client, all but the last holdBack of them
// until flush. A client that fails is dropped; the fetch goes on for the
// cache.
type holdback struct {
	w http.ResponseWriter
	// headers sets the response's headers, before its first byte.
	headers func()
	pending []byte
	started bool
	dead    bool
	// cutOff is set by cut, from another goroutine.
	cutOff atomic.Bool
}

// cut ends the response at once: a write in progress fails, and none
// follows.
func (h *holdback) cut() {
	h.cutOff.Store(true)
	http.NewResponseController(h.w).SetWriteDeadline(time.Now())
}

func (h *holdback) Write(b []byte) (int, error) {
	if len(b) > holdBack {
		// The held bytes and all of b but its last holdBack go out,
		// sent from where they are rather than copied into pending.
		// (A package of holdBack bytes sends nothing before its check.)
		h.send(h.pending, b[:len(b)-holdBack])
		h.pending = append(h.pending[:0], b[len(b)-holdBack:]...)
		return len(b), nil
	}
	h.pending = append(h.pending, b...)
	if over := len(h.pending) - holdBack; over >= holdBack {
		h.send(h.pending[:over])
		h.pending = append(h.pending[:0], h.pending[over:]...)
	}
	return len(b), nil
}

func (h *holdback) send(bs ...[]byte) {
	if h.dead || h.cutOff.Load() {
		h.dead = true
		return
	}
	if !h.started {
		h.headers()
		h.w.Header().Set("X-Cache", "MISS")
	}
	h.started = true
	for _, b := range bs {
		if _, err := h.w.Write(b); err != nil {
			h.dead = true
			return
		}
	}
	// Flushed, so that what is sent is on its way (and what is held
	// back is not).
	http.NewResponseController(h.w).Flush()
}

func (h *holdback) flush() {
	h.send(h.pending)
	h.pending = nil
}

// ahead is a first fetch's copy: three stages that overlap. A goroutine
// reads the upstream a full buffer at a time, dst (the file and the
// hash) takes each buffer, and another goroutine then sends it to
// client. A TLS connection reads one record (16 KiB) at a call, and a
// first fetch had read, hashed, written to the file and sent to the
// client (encrypting again) each record in turn on one goroutine; now
// each stage keeps a core busy if there is one, and the file and the
// client get a write per aheadSize bytes. A buffer goes back to the
// reader once both have it.
type ahead struct {
	dst io.Writer
	// client, if set, takes every byte too. Its errors are its own
	// (holdback drops a client that fails).
	client io.Writer
	// cut, if set, ends client's response at once. It is called when
	// client has kept the reader waiting for lag: a client slower than
	// that does not hold up the fetch, which goes on for the cache and
	// the requests waiting on it.
	cut func()
	lag time.Duration
	// idle, if set, is told when the reader starts (true) and stops
	// (false) waiting for a buffer: that time is this side's, not the
	// upstream's (fetch.idle stops the upstream's stall clock).
	idle func(bool)
}

// copy copies src as a describes, and returns once client has had its
// last write. An error of dst is a localError. The caller must close
// src's source to end a read in flight if copy returns early.
func (a ahead) copy(src io.Reader) (int64, error) {
	type chunk struct {
		b   []byte
		err error
	}
	// At most aheadDepth buffers are out at once, so that no send on
	// these channels ever blocks.
	full := make(chan chunk, aheadDepth)
	free := make(chan []byte, aheadDepth)
	for range aheadDepth {
		free <- make([]byte, aheadSize)
	}
	stop := make(chan struct{})
	defer close(stop)
	var sending atomic.Int32 // buffers the client's goroutine holds
	go func() {
		for {
			b := a.next(free, stop, &sending)
			if b == nil {
				return
			}
			n, err := io.ReadFull(src, b)
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			full <- chunk{b[:n], err}
			if err != nil {
				return
			}
		}
	}()
	done := func(b []byte) { free <- b[:cap(b)] }
	if a.client != nil {
		sends := make(chan []byte, aheadDepth)
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			for b := range sends {
				a.client.Write(b)
				sending.Add(-1)
				free <- b[:cap(b)]
			}
		}()
		// The client's last writes, cut if they take past lag.
		defer func() { close(sends); await(a, sent, nil, &sending) }()
		done = func(b []byte) { sending.Add(1); sends <- b }
	}
	var total int64
	for c := range full {
		if len(c.b) > 0 {
			if _, err := a.dst.Write(c.b); err != nil {
				return total, localError{err}
			}
			total += int64(len(c.b))
		}
		if c.err != nil {
			if len(c.b) > 0 {
				done(c.b)
			}
			if c.err == io.EOF {
				return total, nil
			}
			return total, c.err
		}
		done(c.b)
	}
	return total, nil
}

// next is the reader's next free buffer, or nil once stop is closed.
// While it waits, the upstream's stall clock is stopped (idle).
func (a ahead) next(free chan []byte, stop chan struct{}, sending *atomic.Int32) []byte {
	select {
	case b := <-free:
		return b
	default:
	}
	if a.idle != nil {
		a.idle(true)
		defer a.idle(false)
	}
	b, _ := await(a, free, stop, sending)
	return b
}

// await waits for a value of ch, or for ch or stop to close. If a's
// client holds buffers past a.lag meanwhile, it is cut, and again every
// lag/10 until ch answers: a send deadline moved on between two writes
// can undo a cut.
func await[T any](a ahead, ch <-chan T, stop <-chan struct{}, sending *atomic.Int32) (T, bool) {
	var late <-chan time.Time
	if a.client != nil && a.cut != nil && a.lag > 0 {
		t := time.NewTimer(a.lag)
		defer t.Stop()
		late = t.C
	}
	for {
		select {
		case v, ok := <-ch:
			return v, ok
		case <-stop:
			var zero T
			return zero, false
		case <-late:
			if sending.Load() > 0 {
				a.cut()
			}
			late = time.After(a.lag / 10)
		}
	}
}

// localError is an error of the proxy's own side (writing the cache),
// not the upstream's: a full disk is the server's 507, not a 502.
type localError struct{ error }

func (e localError) Unwrap() error { return e.error }
