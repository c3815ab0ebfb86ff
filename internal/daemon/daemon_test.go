package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/config"
	"github.com/conda-upload-server/conda-upload-server/internal/daemon"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestLifecycle runs the daemon in this process through all its phases,
// with plain HTTP and Landlock off (so that the test process stays
// unconfined): it serves uploads' health and metrics listeners, answers
// /readyz from the one health check, and when its context ends, drains
// and closes every listener it opened, the metrics one included.
func TestLifecycle(t *testing.T) {
	addr, metricsAddr := freeAddr(t), freeAddr(t)
	root := filepath.Join(t.TempDir(), "channel")
	cfg := config.Default()
	cfg.WriteDir = root
	cfg.Listen = addr
	cfg.AllowRoot = true
	cfg.Sandbox.Landlock = "off"
	cfg.Metrics.Listen = metricsAddr
	cfg.ShutdownGrace = config.Duration(2 * time.Second)
	cfg.Tokens = []config.TokenConfig{{Name: "ci", Hash: auth.Hash(cfg.Salt, "tok")}}
	var logs bytes.Buffer
	logw := &syncWriter{w: &logs}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Options{Config: cfg, InsecureHTTP: true, Log: slog.New(slog.NewTextHandler(logw, nil)), Stdout: io.Discard})
	}()
	get := func(url string) (int, string, error) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _, err := get("http://" + addr + "/healthz"); err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("daemon did not serve")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body, err := get("http://" + addr + "/readyz"); err != nil || code != 200 {
		t.Errorf("readyz: %d %s %v", code, body, err)
	}
	if code, body, err := get("http://" + metricsAddr + "/metrics"); err != nil || code != 200 || !strings.Contains(body, "conda_upload_build_info") {
		t.Errorf("metrics: %d %v", code, err)
	}
	if _, err := os.Stat(filepath.Join(root, "noarch", "repodata.json")); err != nil {
		t.Errorf("noarch not indexed at start: %v", err)
	}
	// A metrics client that keeps its connection open: drain must close
	// it, not only the listener.
	kept, err := net.Dial("tcp", metricsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	fmt.Fprintf(kept, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(kept)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	kept.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("an open metrics connection outlived the drain: read %v", err)
	}
	for _, a := range []string{addr, metricsAddr} {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after drain", a)
		}
	}
	logw.mu.Lock()
	defer logw.mu.Unlock()
	if !strings.Contains(logs.String(), "msg=stopped") {
		t.Errorf("no stop logged:\n%s", logs.String())
	}
}

// syncWriter serialises the daemon's log writes, from many goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
