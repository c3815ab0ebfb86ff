package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
)

// h2Hog is one attacking HTTP/2 connection: it asks for a package on
// many streams and never reads a byte of any body (its initial window is
// 0 and it never grants more), so every answer waits on it.
type h2Hog struct {
	conn net.Conn
	fr   *http2.Framer
	wmu  sync.Mutex

	mu      sync.Mutex
	status  map[uint32]string // :status of each answered stream
	reset   map[uint32]http2.ErrCode
	goaway  uint32 // last stream the server will process, after GOAWAY
	closed  bool
	changed chan struct{} // signalled on every frame
}

func dialHog(t *testing.T, addr string) *h2Hog {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := &h2Hog{conn: c, fr: http2.NewFramer(c, c), status: map[uint32]string{}, reset: map[uint32]http2.ErrCode{},
		goaway: 1 << 31, changed: make(chan struct{}, 1)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.Write([]byte(http2.ClientPreface))
	h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	go h.read()
	return h
}

// read notes the server's answers, acknowledging its settings and
// granting no window.
func (h *h2Hog) read() {
	for {
		f, err := h.fr.ReadFrame()
		h.mu.Lock()
		switch f := f.(type) {
		case nil:
			h.closed = true
		case *http2.MetaHeadersFrame:
			h.status[f.StreamID] = f.PseudoValue("status")
			if h.status[f.StreamID] == "503" && !hasFields(f.RegularFields(), "retry-after", "strict-transport-security") {
				h.status[f.StreamID] = "503 without Retry-After or HSTS"
			}
		case *http2.RSTStreamFrame:
			h.reset[f.StreamID] = f.ErrCode
		case *http2.GoAwayFrame:
			h.goaway = f.LastStreamID
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.wmu.Lock()
				h.fr.WriteSettingsAck()
				h.wmu.Unlock()
			}
		}
		h.mu.Unlock()
		select {
		case h.changed <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

// hasFields reports whether fields has every one of names.
func hasFields(fields []hpack.HeaderField, names ...string) bool {
	n := 0
	for _, f := range fields {
		for _, name := range names {
			if f.Name == name {
				n++
			}
		}
	}
	return n == len(names)
}

// ask opens n streams that GET paths in turn.
func (h *h2Hog) ask(n int, authority string, paths ...string) {
	blocks := make([][]byte, len(paths))
	for i, p := range paths {
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", authority}, {":path", p}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		blocks[i] = hb.Bytes()
	}
	h.wmu.Lock()
	defer h.wmu.Unlock()
	for i := range n {
		h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: blocks[i%len(blocks)], EndStream: true, EndHeaders: true})
	}
}

// wait blocks until every one of the n streams is answered (headers),
// reset, or beyond a GOAWAY, or the connection is closed; with ok it
// waits for those whose answer was a status too.
func (h *h2Hog) wait(t *testing.T, n int, until func(id uint32, status string, reset bool) bool) {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	for {
		h.mu.Lock()
		done := h.closed
		for i := 0; i < n && !done; i++ {
			id := uint32(2*i + 1)
			_, r := h.reset[id]
			if !until(id, h.status[id], r) && id <= h.goaway {
				break
			}
			done = i == n-1
		}
		h.mu.Unlock()
		if done {
			return
		}
		select {
		case <-h.changed:
		case <-deadline:
			t.Fatal("the server did not answer every stream within 2 minutes")
		}
	}
}

// procStats returns a process's open file descriptors and resident set.
func procStats(t *testing.T, pid int) (fds int, rssKiB int) {
	t.Helper()
	des, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			rssKiB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return len(des), rssKiB
}

// TestH2StreamFlood is the attack of issue 24 item 1 on the real program:
// 80 connections (under max_connections = 100), each asking for a package
// on 250 HTTP/2 streams and never reading. Before, each stream's handler
// held the file open with no deadline: 19,999 of 20,000 descriptors,
// ~930 MiB, accept errors, /readyz 503 and uploads 500. Now the streams
// per connection, the downloads in flight (in total and per connection)
// and the time an answer may wait for its reader are bounded, so the
// descriptors stay under idle + max_connections + download.max_concurrent,
// the resident set under memory_limit, and uploads and /readyz keep
// working; after send_timeout the server resets the streams it was
// sending and closes their files.
func TestH2StreamFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000 streams")
	}
	const (
		conns, streams = 80, 250
		maxConns       = 100
		maxConcurrent  = 256
		perConn        = 64
		maxStreams     = 100
		memoryLimit    = 224 << 20
	)
	dir := shared(t)
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	port := freePort(t)
	cfg := userConfig(t, dir, "max_connections = "+strconv.Itoa(maxConns)+"\nmax_streams_per_connection = "+strconv.Itoa(maxStreams)+
		"\nmemory_limit = "+strconv.Itoa(memoryLimit)+"\n[download]\nenabled = true\nmax_concurrent = "+strconv.Itoa(maxConcurrent)+
		"\nmax_per_connection = "+strconv.Itoa(perConn)+"\nsend_timeout = \"20s\"\n")
	// The shipped build, not this race-instrumented test binary: the
	// race detector's own memory would swamp the figure being bounded.
	p := startCmd(t, exec.Command(releaseBinary(t), "--config", cfg, "-d", root, "-p", strconv.Itoa(port), "-c", cert, "-k", key,
		"-t", auth.Hash(auth.DefaultSalt, testToken)), pool, port)
	// A package larger than a stream's buffers, whose handler holds the
	// file while it waits, and one small enough to be written at once.
	paths := []string{"/linux-64/zlib-1.2.11-h7b6447c_3.conda", "/linux-64/other-package-0.2-0.conda"}
	for _, f := range []string{"conda/linux-64/zlib-1.2.11-h7b6447c_3.conda", "quetz/other-package-0.2-0.conda"} {
		if st, body := p.upload(t, testToken, corpusFile(f)); st != 201 {
			t.Fatalf("upload: %d %v", st, body)
		}
	}
	for _, path := range paths {
		if resp, err := p.client.Get(strings.TrimSuffix(p.url, "/") + path); err != nil || resp.StatusCode != 200 {
			t.Fatalf("download: %v %v", resp, err)
		} else {
			resp.Body.Close()
		}
	}
	pid := p.cmd.Process.Pid
	idleFDs, idleRSS := procStats(t, pid)

	addr := "127.0.0.1:" + strconv.Itoa(port)
	hogs := make([]*h2Hog, conns)
	var wg sync.WaitGroup
	for i := range hogs {
		hogs[i] = dialHog(t, addr)
		wg.Go(func() {
			hogs[i].ask(streams, "localhost", paths...)
			hogs[i].wait(t, streams, func(_ uint32, status string, reset bool) bool { return status != "" || reset })
		})
	}
	wg.Wait()
	fds, rss := procStats(t, pid)

	// Uploads and /readyz work during the attack, over HTTP/1.1 and
	// HTTP/2.
	h2 := tlsClient(pool)
	h2.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	for i, c := range []*http.Client{p.client, h2} {
		pc := *p
		pc.client = c
		f := []string{"quetz/test-package-0.1-0.tar.bz2", "quetz/other-package-0.2-0.tar.bz2"}[i]
		if st, body := pc.upload(t, testToken, corpusFile(f)); st != 201 {
			t.Errorf("upload during the attack: %d %v", st, body)
		}
		if resp, err := c.Get(p.url + "readyz"); err != nil || resp.StatusCode != 200 || resp.ProtoMajor != i+1 {
			t.Errorf("/readyz during the attack: %v %v", resp, err)
		} else {
			resp.Body.Close()
		}
	}

	counts := map[string]int{}
	for _, h := range hogs {
		h.mu.Lock()
		n200 := 0
		for _, st := range h.status {
			counts[st]++
			if st == "200" {
				n200++
			}
		}
		for _, code := range h.reset {
			counts["reset "+code.String()]++
		}
		h.mu.Unlock()
		if n200 > perConn {
			t.Errorf("one connection has %d downloads in flight, more than max_per_connection = %d", n200, perConn)
		}
	}
	t.Logf("idle: %d fds, %d KiB; under attack: %d fds, %d KiB (%.1fx); answers %v", idleFDs, idleRSS, fds, rss, float64(rss)/float64(idleRSS), counts)
	if counts["200"] > maxConcurrent {
		t.Errorf("%d downloads in flight, more than download.max_concurrent = %d", counts["200"], maxConcurrent)
	}
	if counts["503"] == 0 {
		t.Error("no download was refused with 503")
	}
	if bound := idleFDs + maxConns + maxConcurrent; fds > bound {
		t.Errorf("%d fds under attack, more than idle %d + max_connections %d + download.max_concurrent %d", fds, idleFDs, maxConns, maxConcurrent)
	}
	if rss*1024 > memoryLimit {
		t.Errorf("resident set %d KiB under attack, more than memory_limit %d KiB", rss, memoryLimit>>10)
	}
	if strings.Contains(p.stderr.String(), "too many open files") {
		t.Error("the server ran out of file descriptors")
	}

	// The server gives up on the streams it was sending within
	// send_timeout: each is reset, and its file closed.
	for _, h := range hogs {
		h.wait(t, streams, func(id uint32, status string, reset bool) bool { return status != "200" || reset })
	}
	after, _ := procStats(t, pid)
	t.Logf("after send_timeout: %d fds", after)
	if after > idleFDs+maxConns {
		t.Errorf("%d fds after send_timeout, more than idle %d + the attack's %d connections", after, idleFDs, conns)
	}
}
