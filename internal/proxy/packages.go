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
// (copyAhead): 1 MiB in flight per fetch.
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
		err := p.serveFile(w, r, path, meta{}, false)
		if !errors.Is(err, fs.ErrNotExist) {
			p.obs.Cache(p.up.Name, "package", true)
			return err
		}
		// Removed behind the proxy's back: fetched again.
		p.lru.remove(key)
	}
	rec, ok := p.shardRecord(r.Context(), label, subdir, fn, name)
	if !ok {
		var err error
		if rec, err = p.lookup(r.Context(), label, subdir, fn); err != nil {
			return err
		}
	}
	p.obs.Cache(p.up.Name, "package", false)
	if r.Method == http.MethodHead {
		p.packageHeaders(w, fn, rec.Size)
		w.WriteHeader(http.StatusOK)
		return nil
	}
	var err error
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
	var client io.Writer
	if hb != nil {
		client = hb
	}
	n, err := copyAhead(io.MultiWriter(tmp, h), client, f.limited(rec.Size))
	if err != nil {
		if errors.Is(err, errTooLarge) {
			return p.mismatch(fn, "more bytes than its size")
		}
		return f.readErr(err)
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
	p.lru.add(subdir+"/"+fn, n)
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
	if h.dead {
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

// copyAhead copies src to dst, and to client unless it is nil, in three
// stages that overlap: a goroutine reads src a full buffer at a time, dst
// (the file and the hash) takes each buffer here, and another goroutine
// then sends it to client. A TLS connection reads one record (16 KiB) at
// a call, and a first fetch had read, hashed, written to the file and
// sent to the client (encrypting again) each record in turn on one
// goroutine; now the upstream's reads and decryption, the hash and the
// file, and the client's encryption and sends each keep a core busy if
// there is one, and the file and the client get a write per aheadSize
// bytes. A buffer goes back to the reader once both have it. client's
// errors are its own (holdback drops a client that fails); copyAhead
// returns only once client has had its last write. The caller must close
// src's source to end a read in flight if copyAhead returns early.
func copyAhead(dst, client io.Writer, src io.Reader) (int64, error) {
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
	go func() {
		for {
			var b []byte
			select {
			case b = <-free:
			case <-stop:
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
	if client != nil {
		sends := make(chan []byte, aheadDepth)
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			for b := range sends {
				client.Write(b)
				free <- b[:cap(b)]
			}
		}()
		defer func() { close(sends); <-sent }()
		done = func(b []byte) { sends <- b }
	}
	var total int64
	for c := range full {
		if len(c.b) > 0 {
			if _, err := dst.Write(c.b); err != nil {
				return total, err
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
