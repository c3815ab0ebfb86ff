package server_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestHTTP2RapidReset opens streams and cancels each at once (CVE-2023-
// 44487), as fast as the client can. Since Go 1.21.3 the HTTP/2 server
// runs at most MaxConcurrentStreams handlers per connection and queues
// (or, past a bound, drops the connection for) the rest, so the flood
// costs bounded work: other clients are served during it, upload slots
// are all released after it, and nothing is left on disk.
func TestHTTP2RapidReset(t *testing.T) {
	e := start(t)
	addr, fr := dialH2(t, e)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", addr}, {":path", "/"}, {"content-type", "multipart/form-data; boundary=x"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := hb.Bytes()
	ended := make(chan error, 1)
	go func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				ended <- err
				return
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				ended <- errors.New("GOAWAY " + ga.ErrCode.String())
				return
			}
		}
	}()
	// Another client keeps asking for /healthz during the flood.
	stop := make(chan struct{})
	served := make(chan int, 1)
	go func() {
		n := 0
		defer func() { served <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := e.client.Get(strings.TrimSuffix(e.url, "/") + "/healthz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					n++
				}
			}
		}
	}()
	sent := 0
	for id := uint32(1); id < 2*20000; id += 2 {
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true}); err != nil {
			break
		}
		if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			break
		}
		sent++
	}
	close(stop)
	n := <-served
	var how string
	select {
	case err := <-ended:
		how = err.Error()
	default:
		how = "connection still open"
	}
	t.Logf("%d streams opened and reset; %d /healthz served to another client meanwhile; flooding connection: %s", sent, n, how)
	if n == 0 {
		t.Error("no other client was served during the flood")
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.srv.Stats().InFlight != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if f := e.srv.Stats().InFlight; f != 0 {
		t.Errorf("%d upload slots still taken after the flood", f)
	}
	if files := e.files(t); len(files) != 0 {
		t.Errorf("left on disk: %v", files)
	}
	resp, err := e.client.Get(strings.TrimSuffix(e.url, "/") + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("other client: %d", resp.StatusCode)
	}
}

// TestHTTP2Window: the server lets a client have a 4 MiB upload window in
// flight, per stream and per connection, instead of Go's 1 MiB, which
// holds an HTTP/2 upload over a 20 ms link to about 44 MB/s.
func TestHTTP2Window(t *testing.T) {
	_, fr := dialH2(t, start(t))
	const want = 4<<20 - 1
	var stream, conn uint32 = 0, 65535 // the protocol's initial windows
	for stream == 0 || conn == 65535 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("stream window %d, connection window %d, then %v", stream, conn, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
				stream = v
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				conn += f.Increment
			}
		}
	}
	if stream != want || conn != want {
		t.Errorf("stream window %d, connection window %d, want %d each", stream, conn, want)
	}
}

// dialH2 opens an HTTP/2 connection to e's server, sends the client
// preface and settings, and returns the server's address and a framer on
// the connection, which is closed when the test ends.
func dialH2(t *testing.T, e *env) (string, *http2.Framer) {
	t.Helper()
	addr := strings.TrimSuffix(strings.TrimPrefix(e.url, "https://"), "/")
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q", p)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second)) // bounds the flood too
	c.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	return addr, fr
}
