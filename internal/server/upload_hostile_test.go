package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/server"
)

// trickle starts a POST / form without a token, as the probe did: it
// waits for the server's 100 Continue (sent when the handler first reads
// the body, and before that read in the old code an upload slot was
// taken), then sends a junk first field at 20 bytes per second until
// stop is closed. It returns the connection, for reading the answer.
func (e *env) trickle(t *testing.T, stop <-chan struct{}) *tls.Conn {
	t.Helper()
	c := e.dialRaw(t)
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=zz\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || !strings.Contains(line, " 100 ") {
		t.Fatalf("no 100 Continue: %q %v", line, err)
	}
	br.ReadString('\n') // the blank line after it
	c.Write([]byte("--zz\r\nContent-Disposition: form-data; name=\"junk\"\r\n\r\n"))
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := c.Write([]byte("j")); err != nil {
					return
				}
			}
		}
	}()
	return c
}

// TestFloodWithoutTokenHoldsNoSlot: 16 forms without a token, trickling a
// junk first field, take none of the 16 upload slots: a legitimate upload
// by each protocol succeeds while they run.
func TestFloodWithoutTokenHoldsNoSlot(t *testing.T) {
	e := start(t, func(o *server.Options) { o.Limits.MaxConcurrent = 16 })
	stop := make(chan struct{})
	defer close(stop)
	for range 16 {
		e.trickle(t, stop)
	}
	if n := e.srv.Stats().InFlight; n != 0 {
		t.Errorf("%d uploads in flight with only unauthenticated requests", n)
	}
	pkg := func(name string) []byte { return pkgtest.Conda(t, pkgtest.Simple(name, "1.0", "0", "linux-64")) }
	formData, quetzData, prefixData, artData := pkg("viaform"), pkg("viaquetz"), pkg("viaprefix"), pkg("viaart")
	for _, c := range []struct {
		name string
		do   func() response
	}{
		{"form", func() response { return e.upload(t, "viaform-1.0-0.conda", formData) }},
		{"quetz", func() response {
			return e.do(t, e.quetzRequest("main", "viaquetz-1.0-0.conda", quetzData, apiKey(token), "force=false"))
		}},
		{"prefix", func() response {
			return e.do(t, e.prefixRequest("main", "", bearer(token), filePart("viaprefix-1.0-0.conda", prefixData, true)))
		}},
		{"artifactory", func() response {
			return e.do(t, e.artifactoryRequest("main", "linux-64", "viaart-1.0-0.conda", artData, basic(token)))
		}},
	} {
		if r := c.do(); r.status != 201 {
			t.Errorf("%s during the flood: %d %s", c.name, r.status, r.raw)
		}
	}
}

// TestSlowUnauthenticatedCut: a form whose token does not arrive within
// the auth deadline is cut with 408, over HTTP/1.1 and HTTP/2, and each
// counts against the address as a failed login, so that the address is
// soon refused with 429.
func TestSlowUnauthenticatedCut(t *testing.T) {
	e := start(t, func(o *server.Options) {
		o.Limits.AuthDeadline = 300 * time.Millisecond
		o.Limits.AuthLimiter = &server.AuthLimiter{Limit: 2, Window: time.Minute}
	})
	stop := make(chan struct{})
	defer close(stop)
	c := e.trickle(t, stop)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("HTTP/1.1: no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 408 || !strings.Contains(string(b), "no valid token within") {
		t.Errorf("HTTP/1.1: %d %s", resp.StatusCode, b)
	}

	// The same over HTTP/2: the header part of a form, then nothing.
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url, pr)
	req.Header.Set("Content-Type", "multipart/form-data; boundary=zz")
	go pw.Write([]byte("--zz\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\n" + token[:3]))
	r := e.do(t, req)
	if r.status != 408 {
		t.Errorf("HTTP/2: %d %s", r.status, r.raw)
	}

	// Two failures: the address is over its limit, even with a token.
	if r := e.upload(t, "demo-1.0-0.conda", pkgtest.Conda(t, pkgtest.Simple("demo", "1.0", "0", "noarch"))); r.status != 429 {
		t.Errorf("after two slow unauthenticated requests: %d %s", r.status, r.raw)
	}
}
