package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/s3test"
)

// mirrored starts the server with an object-storage mirror on a real S3
// server, and returns it, the gateway, the channel root, and a function
// that starts it again.
func mirrored(t *testing.T, extra ...string) (*proc, *s3test.Gateway, string, func() *proc) {
	t.Helper()
	g := s3test.Start(t, "conda")
	g.PublicRead(t)
	dir := shared(t)
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	ak, sk := filepath.Join(dir, "s3-access-key"), filepath.Join(dir, "s3-secret-key")
	os.WriteFile(ak, []byte(s3test.AccessKey+"\n"), 0o600)
	os.WriteFile(sk, []byte(s3test.SecretKey+"\n"), 0o600)
	port := freePort(t)
	cfg := userConfig(t, dir, fmt.Sprintf(`
[metrics]
enabled = true
[mirror]
%s
[mirror.s3]
endpoint = %q
bucket = "conda"
prefix = "ch/"
path_style = true
access_key_file = %q
secret_key_file = %q
`, strings.Join(extra, "\n"), g.URL(), ak, sk))
	args := []string{"--config", cfg, "-d", root, "-p", strconv.Itoa(port), "-c", cert, "-k", key, "-t", auth.Hash(auth.DefaultSalt, testToken)}
	restart := func() *proc { return startServer(t, pool, port, args...) }
	return restart(), g, root, restart
}

// bucketMatchesDisk waits until the bucket holds every package and index
// file of the channel's subdirs, byte for byte.
func bucketMatchesDisk(t *testing.T, g *s3test.Gateway, root string) {
	t.Helper()
	cl := g.Client()
	var missing string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		missing = ""
		for _, sd := range []string{"noarch", "linux-64"} {
			des, _ := os.ReadDir(filepath.Join(root, sd))
			for _, de := range des {
				name := de.Name()
				if de.IsDir() || strings.HasPrefix(name, ".") {
					continue
				}
				want, _ := os.ReadFile(filepath.Join(root, sd, name))
				out, err := cl.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("conda"), Key: aws.String("ch/" + sd + "/" + name)})
				if err != nil {
					missing = sd + "/" + name
					break
				}
				got, _ := io.ReadAll(out.Body)
				out.Body.Close()
				if !bytes.Equal(got, want) {
					missing = sd + "/" + name + " (differs)"
					break
				}
			}
		}
		if missing == "" {
			return
		}
	}
	t.Fatalf("the bucket does not match the disk: %s", missing)
}

// TestMirrorEndToEnd uploads through the real server with a mirror, checks
// that the bucket ends up equal to the disk, that rattler solves from the
// bucket's URL alone, and that the answer, /readyz and the metrics say
// what the mirror does.
func TestMirrorEndToEnd(t *testing.T) {
	needRattler(t)
	p, g, root, _ := mirrored(t)
	pkgs := []string{
		"conda-build-local-channel/noarch/stub-run_exports-1.0.0-0.conda",
		"conda-build-local-channel/noarch/stub-run_exports-2.0.0-0.conda",
		"conda-build-local-channel/linux-64/stub-depends-run_exports-1.0.0-h7bf2920_0.conda",
	}
	for _, pkg := range pkgs {
		st, body := p.upload(t, testToken, corpusFile(pkg))
		if st != 201 || body["indexed"] != true {
			t.Fatalf("upload %s: %d %v", pkg, st, body)
		}
		if _, ok := body["mirrored"].(bool); !ok {
			t.Errorf("the answer does not say whether the bucket holds the package: %v", body)
		}
	}
	bucketMatchesDisk(t, g, root)
	channel := g.URL() + "/conda/ch/"
	recs, err := rattlerSolve(t, filepath.Join(root, "..", "cert.pem"), channel, "stub-run_exports")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Version != "2.0.0" || recs[0].URL != channel+"noarch/stub-run_exports-2.0.0-0.conda" {
		t.Errorf("solved from the bucket: %+v", recs)
	}
	resp, err := p.client.Get(p.url + "readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"ready"`) {
		t.Errorf("readyz: %d %s", resp.StatusCode, b)
	}
	// The bucket can match the disk a moment before the sync that made
	// it so has finished (its state is saved last).
	waitUntil(t, func() bool {
		resp, err := p.client.Get(p.url + "metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(b), "conda_upload_mirror_backlog_subdirs 0")
	})
	for _, m := range []string{"conda_upload_mirror_backlog_subdirs 0", "conda_upload_mirror_conflicts 0", "conda_upload_mirror_lag_seconds 0", "conda_upload_mirror_behind_objects 0"} {
		if !strings.Contains(string(b), m) {
			t.Errorf("metrics lack %q", m)
		}
	}
}

// TestMirrorWait checks [mirror] wait: the answer comes once the bucket
// holds the package, so a CI job may fetch it from there next.
func TestMirrorWait(t *testing.T) {
	p, g, _, _ := mirrored(t, "wait = true", `wait_timeout = "60s"`)
	pkg := corpusFile("conda-build-local-channel/noarch/stub-run_exports-1.0.0-0.conda")
	st, body := p.upload(t, testToken, pkg)
	if st != 201 || body["mirrored"] != true {
		t.Fatalf("upload with wait: %d %v", st, body)
	}
	out, err := g.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("conda"), Key: aws.String("ch/noarch/stub-run_exports-1.0.0-0.conda")})
	if err != nil {
		t.Fatalf("the answer said mirrored, but the bucket lacks the package: %v", err)
	}
	got, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if want, _ := os.ReadFile(pkg); !bytes.Equal(got, want) {
		t.Error("the bucket's copy differs")
	}
}

// TestMirrorKillAndReconcile kills the server with -9 while it uploads and
// mirrors a burst, starts it again, and checks that it reconciles: the
// bucket ends up equal to the disk, every package stored is mirrored.
func TestMirrorKillAndReconcile(t *testing.T) {
	p, g, root, restart := mirrored(t)
	dir := t.TempDir()
	var paths []string
	for i := range 12 {
		path := filepath.Join(dir, fmt.Sprintf("burst-1.%d-0.conda", i))
		writeSynthetic(t, path, "burst", fmt.Sprintf("1.%d", i), "0", "noarch")
		paths = append(paths, path)
	}
	// Half are stored (and being mirrored) for sure; the other half race
	// the kill, which lands while the mirror works through the first.
	for _, path := range paths[:6] {
		if st, body := p.upload(t, testToken, path); st != 201 {
			t.Fatalf("upload %s: %d %v", filepath.Base(path), st, body)
		}
	}
	var wg sync.WaitGroup
	for _, path := range paths[6:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ct, data := multipartBody(t, testToken, path)
			if resp, err := p.client.Post(p.url, ct, bytes.NewReader(data)); err == nil {
				resp.Body.Close()
			}
		}()
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	wg.Wait()
	err := <-p.done
	p.done <- err
	restart()
	bucketMatchesDisk(t, g, root)
	des, _ := os.ReadDir(filepath.Join(root, "noarch"))
	n := 0
	for _, de := range des {
		if strings.HasPrefix(de.Name(), "burst-") {
			n++
		}
	}
	if n < 6 {
		t.Fatalf("only %d packages stored, though 6 were answered 201", n)
	}
	t.Logf("%d of %d packages stored around the kill, all mirrored after the restart", n, len(paths))
}

// TestMirrorBurstReaders sends a burst of 100 uploads through the real
// server while a reader polls the bucket as a client would: no view may
// name an object the bucket lacks, and in the end the bucket equals the
// disk.
func TestMirrorBurstReaders(t *testing.T) {
	p, g, root, _ := mirrored(t)
	dir := t.TempDir()
	var paths []string
	for i := range 100 {
		path := filepath.Join(dir, fmt.Sprintf("burst%d-1.%d-0.conda", i%9, i))
		writeSynthetic(t, path, fmt.Sprintf("burst%d", i%9), fmt.Sprintf("1.%d", i), "0", "noarch")
		paths = append(paths, path)
	}
	stop := make(chan struct{})
	var problems []string
	polls := 0
	var pollers sync.WaitGroup
	pollers.Add(1)
	go func() {
		defer pollers.Done()
		cl := g.Client()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if m := s3test.Missing(cl, "conda", "ch/noarch/"); m != "" {
				problems = append(problems, m)
			}
			polls++
		}
	}()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, path := range paths {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if st, body := p.upload(t, testToken, path); st != 201 {
				t.Errorf("upload %s: %d %v", filepath.Base(path), st, body)
			}
		}()
	}
	wg.Wait()
	bucketMatchesDisk(t, g, root)
	close(stop)
	pollers.Wait()
	if len(problems) > 0 {
		t.Fatalf("%d inconsistent views of the bucket, first: %s", len(problems), problems[0])
	}
	if polls < 2 {
		t.Fatalf("only %d polls: the test proved little", polls)
	}
	t.Logf("%d polls during 100 uploads, all consistent", polls)
}

// TestMirrorOutageAndConflict stops the S3 server: uploads still succeed,
// the backlog shows in the metrics and /readyz says degraded, the error is
// logged once, and all is caught up once the server is back. Then a
// package is planted in the bucket before it is uploaded: the alarm
// fires and the planted object stays.
func TestMirrorOutageAndConflict(t *testing.T) {
	p, g, root, _ := mirrored(t)
	g.Stop()
	dir := t.TempDir()
	for i := range 3 {
		path := filepath.Join(dir, fmt.Sprintf("outage-1.%d-0.conda", i))
		writeSynthetic(t, path, "outage", fmt.Sprintf("1.%d", i), "0", "noarch")
		st, body := p.upload(t, testToken, path)
		if st != 201 || body["indexed"] != true || body["mirrored"] != false {
			t.Fatalf("upload while the bucket is down: %d %v", st, body)
		}
	}
	get := func(path string) string {
		resp, err := p.client.Get(p.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	waitUntil(t, func() bool { return strings.Contains(get("readyz"), `"degraded"`) })
	if m := get("metrics"); !strings.Contains(m, "conda_upload_mirror_backlog_subdirs 1") || !strings.Contains(m, "conda_upload_mirror_behind_objects ") ||
		strings.Contains(m, "conda_upload_mirror_behind_objects 0\n") {
		t.Errorf("metrics while the bucket is down lack the backlog:\n%s", m)
	}
	time.Sleep(3 * time.Second) // a few retries
	if n := strings.Count(p.stderr.String(), "mirror sync failed"); n != 1 {
		t.Errorf("the outage was logged %d times, want once", n)
	}
	g.Restart(t)
	bucketMatchesDisk(t, g, root)
	waitUntil(t, func() bool { return strings.Contains(get("readyz"), `"ready"`) })
	if !p.logged("mirror caught up after errors") {
		t.Error("the recovery was not logged")
	}

	// A different object under a package's key, then the upload.
	planted := "ch/noarch/clash-1.0-0.conda"
	if _, err := g.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("conda"), Key: aws.String(planted), Body: strings.NewReader("planted")}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "clash-1.0-0.conda")
	writeSynthetic(t, path, "clash", "1.0", "0", "noarch")
	if st, body := p.upload(t, testToken, path); st != 201 {
		t.Fatalf("upload: %d %v", st, body)
	}
	waitUntil(t, func() bool { return strings.Contains(get("metrics"), "conda_upload_mirror_conflicts 1") })
	if r := get("readyz"); !strings.Contains(r, `"degraded"`) || !strings.Contains(r, "differ") {
		t.Errorf("readyz after a conflict: %s", r)
	}
	out, err := g.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("conda"), Key: aws.String(planted)})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if string(b) != "planted" {
		t.Error("the planted object was overwritten")
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}
