package server

import (
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// TestPanicNeverLogsToken: a handler that panics with the request's
// token in its value (a bug anywhere behind the guard) is logged once,
// with the path redacted and the value scrubbed, and neither the
// server's log nor the http.Server's own error log holds the token.
func TestPanicNeverLogsToken(t *testing.T) {
	const secret = "SECRET-in-a-panic-42"
	// Files take writes from many goroutines.
	logs, errLog := logFile(t), logFile(t)
	s := New(Options{Log: slog.New(slog.NewTextHandler(logs, nil))})
	bug := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _, _ := credentials(r)
		panic("cannot serve " + r.URL.Path + " for token " + tok)
	})
	hs := httptest.NewUnstartedServer(s.guard(bug))
	hs.EnableHTTP2 = true
	hs.Config.ErrorLog = log.New(errLog, "", 0)
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
	server, _ := os.ReadFile(logs.Name())
	httpServer, _ := os.ReadFile(errLog.Name())
	all := string(server) + string(httpServer)
	if strings.Contains(all, secret) {
		t.Errorf("the token was logged:\n%s", all)
	}
	if n := strings.Count(string(server), "panic serving a request"); n != 2 || !strings.Contains(string(server), "for token REDACTED") {
		t.Errorf("the panics were not logged, redacted, once each:\n%s", all)
	}
}

func logFile(t *testing.T) *os.File {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
