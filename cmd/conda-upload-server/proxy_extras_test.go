package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// TestProxyRedirectPortConfined runs the real binary as nobody with
// Landlock enforced, in front of an upstream that redirects its packages
// to a "CDN" on a port of its own. Listed in redirect_hosts with that
// port, the CDN is reached: the sandbox opened its port, and no other
// beside the upstream's. A redirect to another port of the same host is
// refused, and the server's log names the host:port.
func TestProxyRedirectPortConfined(t *testing.T) {
	testneed.Root(t)
	testneed.Landlock(t, 4)
	const fn = "big-1.0-0.conda"
	dir := shared(t)
	var to atomic.Value // where the upstream redirects packages
	up, caFile, sub := testChannel(t, dir, fn, func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, ".conda") {
			return false
		}
		http.Redirect(w, r, to.Load().(string)+r.URL.Path, http.StatusFound)
		return true
	})
	cdn := httptest.NewTLSServer(http.FileServer(http.Dir(filepath.Dir(sub))))
	defer cdn.Close()
	cdnHost := strings.TrimPrefix(cdn.URL, "https://")
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	port := freePort(t)
	cfg := userConfig(t, dir, fmt.Sprintf("[download]\nenabled = true\n[sandbox]\nlandlock = \"enforce\"\n"+
		"[[upstreams]]\nname = \"up\"\nurl = %q\nsubdirs = [\"linux-64\"]\nca_file = %q\nredirect_hosts = [%q]\n", up.URL, caFile, cdnHost))
	p := startServer(t, pool, port, "--config", cfg, "-d", root, "-p", strconv.Itoa(port), "-c", cert, "-k", key,
		"-t", auth.Hash(auth.DefaultSalt, testToken))
	ports := []int{portOf(t, up.URL), portOf(t, cdn.URL)}
	slices.Sort(ports)
	if want := fmt.Sprintf("connect only to ports [%d %d]", ports[0], ports[1]); !p.logged(want) {
		t.Errorf("the sandbox does not say %q", want)
	}

	other := "127.0.0.1:" + strconv.Itoa(freePort(t))
	to.Store("https://" + other)
	st, _ := getJSON(t, p.client, p.url+"proxy/up/linux-64/"+fn)
	if want := "the upstream redirected to " + other + ", which is not in redirect_hosts"; st != http.StatusBadGateway || !p.logged(want) {
		t.Errorf("a redirect to an unlisted port: %d, want 502 and %q logged", st, want)
	}

	to.Store(cdn.URL)
	if st, sum := fetchSum(t, p.client, p.url+"proxy/up/linux-64/"+fn); st != 200 || sum != sha256File(t, filepath.Join(sub, fn)) {
		t.Errorf("through the CDN on port %d, under Landlock: %d", portOf(t, cdn.URL), st)
	}
}

// TestProxyChannelData: the server routes an upstream's channeldata.json,
// of its root and of a label, to the proxy, which serves it filtered.
func TestProxyChannelData(t *testing.T) {
	const fn = "big-1.0-0.conda"
	dir := shared(t)
	up, caFile, sub := testChannel(t, dir, fn, nil)
	real, err := os.ReadFile("../../testdata/expected/generated__conda-index-13bd599__corpus-all-modern/raw/channeldata.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"", "label/dev"} {
		os.MkdirAll(filepath.Join(filepath.Dir(sub), d), 0o755)
		os.WriteFile(filepath.Join(filepath.Dir(sub), d, "channeldata.json"), real, 0o644)
	}
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	port := freePort(t)
	cfg := userConfig(t, dir, fmt.Sprintf("[download]\nenabled = true\n"+
		"[[upstreams]]\nname = \"up\"\nurl = %q\nsubdirs = [\"linux-64\"]\nca_file = %q\ninclude = [\"zlib\", \"mock\"]\n", up.URL, caFile))
	p := startServer(t, pool, port, "--config", cfg, "-d", root, "-p", strconv.Itoa(port), "-c", cert, "-k", key,
		"-t", auth.Hash(auth.DefaultSalt, testToken))
	for _, path := range []string{"proxy/up/channeldata.json", "proxy/up/label/dev/channeldata.json"} {
		st, body := getJSON(t, p.client, p.url+path)
		pkgs, _ := body["packages"].(map[string]any)
		if st != 200 || len(pkgs) != 2 || pkgs["zlib"] == nil || pkgs["mock"] == nil || body["channeldata_version"] != 1.0 {
			t.Errorf("%s: %d, %d packages", path, st, len(pkgs))
		}
	}
	req, _ := http.NewRequest(http.MethodPut, p.url+"proxy/up/channeldata.json", strings.NewReader("{}"))
	if resp, err := p.client.Do(req); err != nil || resp.StatusCode != 405 {
		t.Errorf("PUT: %v %v", resp, err)
	}
}

func portOf(t *testing.T, u string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(strings.TrimPrefix(u, "https://"))
	n, _ := strconv.Atoi(port)
	if err != nil || n == 0 {
		t.Fatalf("no port in %s", u)
	}
	return n
}
