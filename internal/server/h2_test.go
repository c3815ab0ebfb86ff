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
	addr := strings.TrimSuffix(strings.TrimPrefix(e.url, "https://"), "/")
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q", p)
	}
	c.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
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
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
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
