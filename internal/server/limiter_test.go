package server_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/server"
)

// TestAuthLimiterKeys: IPv6 addresses count by their prefix (a /64 by
// default, or the configured length), IPv4 and IPv4-mapped IPv6 by
// address, and zones do not make an address new.
func TestAuthLimiterKeys(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name   string
		prefix int
		fail   []string // each fails once, up to the limit of 3
		probe  string
		want   bool // whether probe is blocked
	}{
		{"rotating through a /64", 0, []string{"2001:db8::1", "2001:db8::2", "2001:db8::ffff:1:2:3"}, "2001:db8::abcd", true},
		{"the next /64 is another client", 0, []string{"2001:db8::1", "2001:db8::2", "2001:db8::3"}, "2001:db8:0:1::1", false},
		{"a /56 counts the whole site", 56, []string{"2001:db8::1", "2001:db8:0:1::1", "2001:db8:0:ff::1"}, "2001:db8:0:7::9", true},
		{"128 counts each address", 128, []string{"2001:db8::1", "2001:db8::1", "2001:db8::2"}, "2001:db8::2", false},
		{"128 still blocks one address", 128, []string{"2001:db8::1", "2001:db8::1", "2001:db8::1"}, "2001:db8::1", true},
		{"IPv4 by address", 0, []string{"192.0.2.1", "192.0.2.1", "192.0.2.1"}, "192.0.2.2", false},
		{"IPv4 blocked", 0, []string{"192.0.2.1", "192.0.2.1", "192.0.2.1"}, "192.0.2.1", true},
		{"IPv4-mapped is IPv4", 0, []string{"::ffff:192.0.2.1", "192.0.2.1", "::ffff:c000:201"}, "192.0.2.1", true},
		{"IPv4-mapped neighbours are other IPv4 clients", 0, []string{"::ffff:192.0.2.1", "::ffff:192.0.2.1", "::ffff:192.0.2.1"}, "::ffff:192.0.2.2", false},
		{"zones are the same address", 0, []string{"fe80::1%eth0", "fe80::2%eth1", "fe80::3"}, "fe80::4%lo", true},
		{"loopback", 0, []string{"::1", "::1", "::1"}, "::1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &server.AuthLimiter{Limit: 3, Window: time.Minute, IPv6Prefix: tt.prefix}
			for _, a := range tt.fail {
				l.Fail(a, now)
			}
			if _, got := l.Blocked(tt.probe, now); got != tt.want {
				t.Errorf("%s blocked = %v, want %v", tt.probe, got, tt.want)
			}
		})
	}
}

// fakeRemote serves real TCP connections on loopback, but makes each
// look as if it came from the next address of remotes: the only IPv6
// address a test host has is ::1, and a client that rotates through its
// /64 has to be played this way. (The server never trusts a forwarded
// header, so there is no other way in.)
type fakeRemote struct {
	net.Listener
	mu      sync.Mutex
	remotes []string
}

func (l *fakeRemote) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.remotes) == 0 {
		return c, nil
	}
	addr := &net.TCPAddr{IP: net.ParseIP(l.remotes[0]), Port: 40000}
	l.remotes = l.remotes[1:]
	return remoteConn{c, addr}, nil
}

type remoteConn struct {
	net.Conn
	remote net.Addr
}

func (c remoteConn) RemoteAddr() net.Addr { return c.remote }

// TestIPv6RotationLimited: a client that fails with a new address of its
// /64 each time is refused with 429 once the limit is reached, through
// the real server; a client of another /64 is not. Each request is a
// real connection on loopback, given its address by fakeRemote.
func TestIPv6RotationLimited(t *testing.T) {
	e := start(t, func(o *server.Options) { o.Limits.AuthLimiter = &server.AuthLimiter{Limit: 3, Window: time.Minute} })
	var remotes []string
	for i := range 4 {
		remotes = append(remotes, fmt.Sprintf("2001:db8:1:2:%x::%x", i*0x1111, i+1))
	}
	remotes = append(remotes, "2001:db8:1:3::1", "::ffff:127.0.0.9", "::ffff:127.0.0.9", "::ffff:127.0.0.9", "127.0.0.9")
	hs := httptest.NewUnstartedServer(e.srv)
	hs.Listener = &fakeRemote{Listener: hs.Listener, remotes: remotes}
	hs.StartTLS()
	t.Cleanup(hs.Close)
	want := []int{401, 401, 401, 429, 401, 401, 401, 401, 429}
	for i, w := range want {
		// A new connection per request, so that each has its address.
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}}
		req, _ := http.NewRequest(http.MethodPost, hs.URL+"/api/channels/main/upload/demo-1.0-0.conda", strings.NewReader("x"))
		req.Header.Set("X-API-Key", "wrong")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != w {
			t.Errorf("request %d from %s: %d, want %d", i, remotes[i], resp.StatusCode, w)
		}
	}
	// Real connections from two loopback addresses count apart: IPv4
	// counts by address, not by prefix.
	from := func(ip string) int {
		tr := e.client.Transport.(*http.Transport).Clone()
		tr.DialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext
		tr.DisableKeepAlives = true
		req, _ := http.NewRequest(http.MethodPost, e.url+"api/channels/main/upload/demo-1.0-0.conda", strings.NewReader("x"))
		req.Header.Set("X-API-Key", "wrong")
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i, c := range []struct {
		ip   string
		want int
	}{{"127.0.0.2", 401}, {"127.0.0.2", 401}, {"127.0.0.2", 401}, {"127.0.0.2", 429}, {"127.0.0.3", 401}} {
		if got := from(c.ip); got != c.want {
			t.Errorf("request %d from %s: %d, want %d", i, c.ip, got, c.want)
		}
	}
}
