package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// BenchmarkProxyLink measures issue #28's first-fetch target in the shape
// it is about: the upstream and the client are other hosts, with a
// network link between each of them and the proxy. Three network
// namespaces stand for the hosts (up, px, cl), joined by two veth pairs
// that tbf shapes to one rate in both directions. px forwards, so that a
// direct fetch crosses the same two links as a proxied one.
//
// The upstream and the proxy are the shipped build of this program, TLS
// on both legs; the client is curl in cl, over HTTP/1.1 as conda's
// requests is. Each round (an iteration) fetches a 100 MiB package
// directly, through the proxy on first fetch (after `admin proxy purge`
// and a HEAD that brings the index back, untimed) and again from the
// proxy's cache; every other round starts with the proxy, so that load
// from outside hits each case alike. Ratios are taken within a round:
//
//	go test ./cmd/conda-upload-server -run '^$' -bench ProxyLink -benchtime 7x
//
// The machine's two cores are shared by the three hosts, so the faster
// links show where the proxy's own work (verify, cache, serve) binds.
func BenchmarkProxyLink(b *testing.B) {
	testneed.Root(b)
	testneed.Tool(b, "ip", "iproute2")
	testneed.Tool(b, "tc", "iproute2")
	testneed.Tool(b, "curl", "curl")
	l := newLab(b)
	l.start(b)
	for _, rate := range []string{"1gbit", "2.5gbit", "4gbit"} {
		b.Run("link="+rate, func(b *testing.B) {
			l.shape(b, rate)
			var rounds [][]linkFetch
			for b.Loop() {
				rounds = append(rounds, l.round(b, len(rounds)%2 == 1))
			}
			report(b, rounds)
		})
	}
}

// The hosts' addresses are from the documentation ranges (RFC 5737):
// they exist only on the links the benchmark makes.
const (
	upAddr   = "198.51.100.1" // up, on the link to px
	pxUpAddr = "198.51.100.2" // px, on the link to up
	pxAddr   = "203.0.113.1"  // px, on the link to cl
	clAddr   = "203.0.113.2"  // cl, on the link to px
	labPort  = "8443"
	labPkg   = "big-1.0-0.conda"
	labSize  = 100 << 20
)

// lab is the three hosts and the servers running in them.
type lab struct {
	ns                map[string]string // host (up, px, cl) to namespace name
	bin, cert, dir    string
	upPID, pxPID      int
	cacheFile, pkgSum string
	pkgSize           int64
	direct, proxyURL  string
	purgeArgs         []string
	devs              [][2]string // every link's ends: namespace, device
}

// newLab makes the namespaces and links, and removes them when b ends.
func newLab(b *testing.B) *lab {
	prefix := "cus" + strconv.Itoa(os.Getpid()) + "-"
	l := &lab{ns: map[string]string{"up": prefix + "up", "px": prefix + "px", "cl": prefix + "cl"}}
	for _, h := range []string{"up", "px", "cl"} {
		must(b, "ip", "netns", "add", l.ns[h])
		// Deleting a namespace deletes the veth ends in it, and so the
		// pairs.
		b.Cleanup(func() { exec.Command("ip", "netns", "del", l.ns[h]).Run() })
		must(b, "ip", "-n", l.ns[h], "link", "set", "lo", "up")
	}
	link := func(a, aDev, aAddr, z, zDev, zAddr string) {
		must(b, "ip", "link", "add", "name", aDev, "netns", l.ns[a], "type", "veth", "peer", "name", zDev, "netns", l.ns[z])
		for _, end := range [][3]string{{a, aDev, aAddr}, {z, zDev, zAddr}} {
			must(b, "ip", "-n", l.ns[end[0]], "addr", "add", end[2]+"/24", "dev", end[1])
			must(b, "ip", "-n", l.ns[end[0]], "link", "set", end[1], "up")
			l.devs = append(l.devs, [2]string{l.ns[end[0]], end[1]})
		}
	}
	link("up", "eth0", upAddr, "px", "up0", pxUpAddr)
	link("px", "cl0", pxAddr, "cl", "eth0", clAddr)
	must(b, "ip", "-n", l.ns["up"], "route", "add", "default", "via", pxUpAddr)
	must(b, "ip", "-n", l.ns["cl"], "route", "add", "default", "via", pxAddr)
	// /proc/sys/net is the namespace's own: only px forwards.
	must(b, "ip", "netns", "exec", l.ns["px"], "sh", "-c", "echo 1 >/proc/sys/net/ipv4/ip_forward")
	return l
}

// shape limits every link to rate in both directions. tbf's burst is
// larger than a GSO packet (64 KiB) and a few timer ticks at 4gbit.
func (l *lab) shape(b *testing.B, rate string) {
	for _, d := range l.devs {
		must(b, "ip", "netns", "exec", d[0], "tc", "qdisc", "replace", "dev", d[1], "root", "tbf", "rate", rate, "burst", "512kb", "latency", "20ms")
	}
}

// start writes the package into the upstream's channel, starts the
// upstream in up and the proxy in px, and checks that a fetch through
// the proxy gives the client the package's bytes.
func (l *lab) start(b *testing.B) {
	l.bin = releaseBinary(b)
	l.dir = shared(b)
	l.cert, _, _, _ = certPair(b, l.dir, "", net.ParseIP(upAddr), net.ParseIP(pxAddr))
	key := filepath.Join(l.dir, "key.pem")
	token := auth.Hash(auth.DefaultSalt, testToken)

	upDir := shared(b)
	upRoot := serviceOwned(b, filepath.Join(upDir, "channel", "linux-64"))
	l.pkgSum, l.pkgSize = writeLarge(b, filepath.Join(upRoot, labPkg))
	serviceOwned(b, filepath.Dir(upRoot))
	upCfg := userConfig(b, upDir, "[download]\nenabled = true\n")
	l.upPID = l.serve(b, "up", upAddr, "--config", upCfg, "-d", filepath.Dir(upRoot), "-p", labPort, "-c", l.cert, "-k", key, "-t", token)

	pxDir := shared(b)
	pxRoot := serviceOwned(b, filepath.Join(pxDir, "channel"))
	pxCfg := userConfig(b, pxDir, upConfig("https://"+upAddr+":"+labPort, l.cert, "subdirs = [\"linux-64\"]\n"))
	l.pxPID = l.serve(b, "px", pxAddr, "--config", pxCfg, "-d", pxRoot, "-p", labPort, "-c", l.cert, "-k", key, "-t", token)
	l.cacheFile = filepath.Join(pxRoot, ".proxy-cache", "up", "pkgs", "linux-64", labPkg)
	l.direct = "https://" + upAddr + ":" + labPort + "/linux-64/" + labPkg
	l.proxyURL = "https://" + pxAddr + ":" + labPort + "/proxy/up/linux-64/" + labPkg
	l.purgeArgs = []string{l.bin, "admin", "--url", "https://" + pxAddr + ":" + labPort + "/", "--cacert", l.cert, "proxy", "purge", "up"}

	out := must(b, "ip", "netns", "exec", l.ns["cl"], "sh", "-c", "curl -sSf --http1.1 --cacert \"$1\" \"$2\" | sha256sum", "-", l.cert, l.proxyURL)
	if got, _, _ := strings.Cut(out, " "); got != l.pkgSum {
		b.Fatalf("the client got sha256 %s through the proxy, want %s", got, l.pkgSum)
	}
	waitFile(b, l.cacheFile)
}

// writeLarge writes a valid package with a random payload of 100 MiB,
// owned by the server's user, and returns its sha256 and size.
func writeLarge(b *testing.B, path string) (string, int64) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	pkgtest.LargeConda(b, pkgtest.Simple("big", "1.0", "0", "linux-64"), labSize, w)
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	os.Chown(path, nobody, nobody)
	fi, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), fi.Size()
}

// serve starts the server in host's namespace and waits until it
// answers at addr; it is stopped when b ends.
func (l *lab) serve(b *testing.B, host, addr string, args ...string) int {
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.ns[host], l.bin}, args...)...)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	b.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if b.Failed() {
			b.Logf("%s's stderr:\n%s", host, stderr)
		}
	})
	health := "https://" + addr + ":" + labPort + "/healthz"
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if exec.Command("ip", "netns", "exec", l.ns["cl"], "curl", "-sf", "-o", "/dev/null", "--cacert", l.cert, health).Run() == nil {
			return cmd.Process.Pid // ip netns exec execs the server
		}
		select {
		case err := <-done:
			done <- err
			b.Fatalf("%s exited: %v\n%s", host, err, stderr)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s did not start\n%s", host, stderr)
		}
	}
}

// linkFetch is one case of a round.
type linkFetch struct {
	seconds         float64 // curl's time_total
	bytes           int64
	proxyCPU, upCPU float64 // seconds, the servers' user+system time
	clientCPU       float64
	busyCores       float64 // the whole machine's, over the same span as the CPU times
	name            string
}

// round fetches the package directly, through the proxy on first fetch
// and from its cache; proxyFirst puts the direct fetch last.
func (l *lab) round(b *testing.B, proxyFirst bool) []linkFetch {
	direct := func() linkFetch { return l.fetch(b, "direct", l.direct, false) }
	first := func() linkFetch {
		b.StopTimer()
		l.purge(b)
		b.StartTimer()
		return l.fetch(b, "proxy-first", l.proxyURL, true)
	}
	cached := func() linkFetch { return l.fetch(b, "proxy-cached", l.proxyURL, false) }
	if proxyFirst {
		f, c := first(), cached()
		return []linkFetch{direct(), f, c}
	}
	d := direct()
	f := first()
	return []linkFetch{d, f, cached()}
}

// purge empties the proxy's cache, then brings its index back with a
// HEAD of the package, so that the fetch measured is the package's.
func (l *lab) purge(b *testing.B) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.ns["cl"]}, l.purgeArgs...)...)
	cmd.Stdin = strings.NewReader(adminTok + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("admin proxy purge: %v\n%s", err, out)
	}
	if _, err := os.Stat(l.cacheFile); err == nil {
		b.Fatal("the package is still cached after a purge")
	}
	must(b, "ip", "netns", "exec", l.ns["cl"], "curl", "-sSf", "-I", "-o", "/dev/null", "--cacert", l.cert, l.proxyURL)
}

// fetch downloads url in cl with curl. A first fetch ends when the proxy
// has made the package durable, after the client has its last byte: the
// CPU time counts until then, the client's time does not.
func (l *lab) fetch(b *testing.B, name, url string, first bool) linkFetch {
	px0, up0 := cpuOf(b, l.pxPID), cpuOf(b, l.upPID)
	busy0, total0 := machineCPU(b)
	cmd := exec.Command("ip", "netns", "exec", l.ns["cl"], "curl", "-sS", "--http1.1", "-o", "/dev/null", "--cacert", l.cert,
		"-w", "%{http_code} %{size_download} %{time_total}", url)
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	var code, size int64
	var secs float64
	if _, err := fmt.Sscan(string(out), &code, &size, &secs); err != nil || code != 200 || size != l.pkgSize {
		b.Fatalf("%s: curl says %q", name, out)
	}
	if first {
		waitFile(b, l.cacheFile)
	}
	busy1, total1 := machineCPU(b)
	return linkFetch{
		name: name, seconds: secs, bytes: size,
		proxyCPU: cpuOf(b, l.pxPID) - px0, upCPU: cpuOf(b, l.upPID) - up0,
		clientCPU: (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds(),
		busyCores: (busy1 - busy0) / (total1 - total0) * float64(runtime.NumCPU()),
	}
}

// cpuOf is a process's user and system time so far, in seconds.
func cpuOf(b *testing.B, pid int) float64 {
	s, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	// After the command's name, in parentheses: utime and stime are the
	// 12th and 13th fields, in clock ticks (100 a second).
	f := strings.Fields(string(s[strings.LastIndexByte(string(s), ')')+1:]))
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100
}

// machineCPU is the jiffies every CPU spent busy, and in all, so far.
func machineCPU(b *testing.B) (busy, total float64) {
	s, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(s), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// report gives the medians of the rounds as metrics, and a table of the
// medians with their ranges in the log (which a benchmark's log keeps to
// 10 lines).
func report(b *testing.B, rounds [][]linkFetch) {
	cols := []struct {
		what string
		of   func(r []linkFetch, i int) float64
	}{
		{"MB/s", func(r []linkFetch, i int) float64 { return float64(r[i].bytes) / r[i].seconds / 1e6 }},
		{"/direct", func(r []linkFetch, i int) float64 { return r[0].seconds / r[i].seconds }},
		{"proxy CPU ms", func(r []linkFetch, i int) float64 { return r[i].proxyCPU * 1000 }},
		{"upstream CPU ms", func(r []linkFetch, i int) float64 { return r[i].upCPU * 1000 }},
		{"client CPU ms", func(r []linkFetch, i int) float64 { return r[i].clientCPU * 1000 }},
		{"busy cores", func(r []linkFetch, i int) float64 { return r[i].busyCores }},
	}
	load, _ := os.ReadFile("/proc/loadavg")
	var tab strings.Builder
	fmt.Fprintf(&tab, "%d rounds, median (min-max); load average at the end: %s%-13s", len(rounds), load, "")
	for _, c := range cols {
		fmt.Fprintf(&tab, " | %-17s", c.what)
	}
	for i, f := range rounds[0] {
		fmt.Fprintf(&tab, "\n%-13s", f.name)
		for _, c := range cols {
			med, lo, hi := spread(rounds, func(r []linkFetch) float64 { return c.of(r, i) })
			fmt.Fprintf(&tab, " | %-17s", fmt.Sprintf("%.3g (%.3g-%.3g)", med, lo, hi))
			short := strings.TrimPrefix(f.name, "proxy-")
			switch {
			case c.what == "MB/s":
				b.ReportMetric(med, short+"-MB/s")
			case i > 0 && c.what == "/direct":
				b.ReportMetric(med, short+"/direct")
			case i > 0 && c.what == "proxy CPU ms":
				b.ReportMetric(med, short+"-proxy-CPU-ms")
			}
		}
	}
	b.Log("\n" + tab.String())
}

// spread is the median, least and greatest of a measure of the rounds.
func spread(rounds [][]linkFetch, of func(r []linkFetch) float64) (med, lo, hi float64) {
	var xs []float64
	for _, r := range rounds {
		xs = append(xs, of(r))
	}
	slices.Sort(xs)
	n := len(xs)
	return (xs[(n-1)/2] + xs[n/2]) / 2, xs[0], xs[n-1]
}

// waitFile waits for path to exist.
func waitFile(b *testing.B, path string) {
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s did not appear", path)
		}
	}
}

// must runs a command and returns its output, failing b if it fails.
func must(b *testing.B, name string, args ...string) string {
	b.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		b.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
