package server

import (
	"bytes"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPanicNeverLogsToken: a handler that panics with the request's
// token in its value (a bug anywhere behind the guard) is logged once,
// with the path redacted and the value scrubbed, and neither the
// server's log nor the http.Server's own error log holds the token.
func TestPanicNeverLogsToken(t *testing.T) {
	const secret = "SECRET-in-a-panic-42"
	var logs, errLog syncBuffer
	s := New(Options{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	bug := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _, _ := credentials(r)
		panic("cannot serve " + r.URL.Path + " for token " + tok)
	})
	hs := httptest.NewUnstartedServer(s.guard(bug))
	hs.EnableHTTP2 = true
	hs.Config.ErrorLog = log.New(&errLog, "", 0)
	hs.StartTLS()
	defer hs.Close()
	h1 := hs.Client().Transport.(*http.Transport).Clone()
	h1.ForceAttemptHTTP2 = false
	h1.TLSClientConfig.NextProtos = []string{"http/1.1"}
	for _, c := range []*http.Client{{Transport: h1}, hs.Client()} {
		resp, err := c.Get(hs.URL + "/t/" + secret + "/linux-64/repodata.json")
		if err == nil {
			resp.Body.Close()
			t.Errorf("a panic was answered: %s %d", resp.Proto, resp.StatusCode)
		}
	}
	hs.Close() // flush the http.Server's log
	all := logs.String() + errLog.String()
	if strings.Contains(all, secret) {
		t.Errorf("the token was logged:\n%s", all)
	}
	if n := strings.Count(logs.String(), "panic serving a request"); n != 2 || !strings.Contains(logs.String(), "for token REDACTED") {
		t.Errorf("the panics were not logged, redacted, once each:\n%s", all)
	}
}
