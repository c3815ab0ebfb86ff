package mirror_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/mirror"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
	"github.com/conda-upload-server/conda-upload-server/internal/s3test"
	"github.com/conda-upload-server/conda-upload-server/internal/sidecar"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

const bucket = "conda"

type gateway = s3test.Gateway

func startGateway(t *testing.T) *gateway { return s3test.Start(t, bucket) }

func config(g *gateway) mirror.Config {
	return mirror.Config{Endpoint: g.URL(), Bucket: bucket, Prefix: "ch/", PathStyle: true,
		AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, Retention: time.Hour}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// get returns an object's bytes, or nil if there is none.
func get(t *testing.T, c *s3.Client, key string) []byte {
	t.Helper()
	out, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return nil
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// channelWith writes n small packages to a fresh channel's linux-64 and
// indexes it.
type channelEnv struct {
	root string
	x    *repodata.Writer
	st   *store.Store
}

func newChannel(t testing.TB) *channelEnv {
	t.Helper()
	root := t.TempDir()
	st, err := store.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	return &channelEnv{root: root, st: st, x: repodata.New(root, condapkg.DefaultLimits(), quiet())}
}

func (c *channelEnv) add(t testing.TB, name, version string) string {
	t.Helper()
	spec := pkgtest.Simple(name, version, "0", "linux-64")
	fn := spec.Stem() + ".conda"
	os.MkdirAll(filepath.Join(c.root, "linux-64"), 0o755)
	if err := os.WriteFile(filepath.Join(c.root, "linux-64", fn), pkgtest.Conda(t, spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return fn
}

func (c *channelEnv) index(t testing.TB, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := c.x.Run(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSyncCopiesTheChannel syncs an indexed channel and checks that the
// bucket holds every package and index file byte for byte, with the
// headers the channel serves them with and their sha256.
func TestSyncCopiesTheChannel(t *testing.T) {
	testneed.File(t, "/usr/bin/aws", "Debian's awscli", "apt-get install awscli")
	g := startGateway(t)
	c := newChannel(t)
	for i := range 5 {
		c.add(t, fmt.Sprintf("pkg%d", i%2), fmt.Sprintf("1.%d", i))
	}
	c.index(t, "linux-64", "noarch")
	m, err := mirror.New(config(g), c.root, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, d := range []string{"linux-64", "noarch"} {
		if err := m.Sync(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	cl := g.Client()
	for _, d := range []string{"linux-64", "noarch"} {
		des, _ := os.ReadDir(filepath.Join(c.root, d))
		n := 0
		for _, de := range des {
			if de.IsDir() || strings.HasPrefix(de.Name(), ".") {
				continue
			}
			n++
			want, _ := os.ReadFile(filepath.Join(c.root, d, de.Name()))
			if got := get(t, cl, "ch/"+d+"/"+de.Name()); !bytes.Equal(got, want) {
				t.Errorf("%s/%s: the bucket holds %d bytes, not the %d on disk", d, de.Name(), len(got), len(want))
			}
		}
		if n < 3 {
			t.Errorf("%s: only %d files", d, n)
		}
	}
	// Listed by a client this project did not write: Debian's awscli.
	ls := exec.Command("/usr/bin/aws", "--endpoint-url", g.URL(), "s3", "ls", "--recursive", "s3://"+bucket+"/ch/")
	ls.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+s3test.AccessKey, "AWS_SECRET_ACCESS_KEY="+s3test.SecretKey, "AWS_DEFAULT_REGION=us-east-1",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	listing, err := ls.CombinedOutput()
	if err != nil {
		t.Fatalf("aws s3 ls (test/run.sh installs awscli): %v\n%s", err, listing)
	}
	for _, d := range []string{"linux-64", "noarch"} {
		des, _ := os.ReadDir(filepath.Join(c.root, d))
		for _, de := range des {
			if !de.IsDir() && !strings.HasPrefix(de.Name(), ".") && !strings.Contains(string(listing), "ch/"+d+"/"+de.Name()) {
				t.Errorf("aws s3 ls does not list %s/%s:\n%s", d, de.Name(), listing)
			}
		}
	}
	fn := "pkg0-1.0-0.conda"
	head, err := cl.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("ch/linux-64/" + fn)})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha(t, filepath.Join(c.root, "linux-64", fn))
	if aws.ToString(head.ContentType) != "application/octet-stream" || !strings.Contains(aws.ToString(head.CacheControl), "immutable") || head.Metadata["sha256"] != sum {
		t.Errorf("package headers: %s, %s, sha256 %q", aws.ToString(head.ContentType), aws.ToString(head.CacheControl), head.Metadata["sha256"])
	}
	head, err = cl.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("ch/linux-64/repodata.json")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(head.ContentType) != "application/json" || !strings.Contains(aws.ToString(head.CacheControl), "must-revalidate") {
		t.Errorf("index headers: %s, %s", aws.ToString(head.ContentType), aws.ToString(head.CacheControl))
	}
	if !m.Has("linux-64", fn) {
		t.Error("Has says the package is not mirrored")
	}
	// A second sync uploads nothing: the state knows the bucket.
	mtime := objectTime(t, g, "linux-64/"+fn)
	time.Sleep(10 * time.Millisecond)
	if err := m.Sync(ctx, "linux-64"); err != nil {
		t.Fatal(err)
	}
	if objectTime(t, g, "linux-64/"+fn) != mtime {
		t.Error("an unchanged package was uploaded again")
	}
}

func sha(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return hexSHA(b)
}

func hexSHA(b []byte) string {
	h := sha256Sum(b)
	return hex.EncodeToString(h[:])
}

// objectTime is the modification time of an object's file in the
// gateway's POSIX backend.
func objectTime(t *testing.T, g *gateway, key string) time.Time {
	t.Helper()
	fi, err := os.Stat(filepath.Join(g.Dir, bucket, "ch", key))
	if err != nil {
		t.Fatal(err)
	}
	return fi.ModTime()
}

// TestIfNoneMatchHonoured checks what the package writes rely on: the
// gateway refuses a conditional PUT over an existing object. If it did
// not, the conflict test below would prove nothing.
func TestIfNoneMatchHonoured(t *testing.T) {
	g := startGateway(t)
	cl := g.Client()
	ctx := context.Background()
	put := func(body string) error {
		_, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("k"), Body: strings.NewReader(body), IfNoneMatch: aws.String("*")})
		return err
	}
	if err := put("one"); err != nil {
		t.Fatal(err)
	}
	if err := put("two"); err == nil {
		t.Fatal("the S3 server does not honour If-None-Match on PUT: a package could be overwritten")
	}
	if got := get(t, cl, "k"); string(got) != "one" {
		t.Errorf("object is %q", got)
	}
}

// TestConflictAlarm plants a different object under a package's key: the
// sync stops before the index, counts the conflict, and overwrites
// nothing.
func TestConflictAlarm(t *testing.T) {
	g := startGateway(t)
	c := newChannel(t)
	fn := c.add(t, "clash", "1.0")
	c.index(t, "linux-64")
	cl := g.Client()
	ctx := context.Background()
	if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("ch/linux-64/" + fn), Body: strings.NewReader("not this package")}); err != nil {
		t.Fatal(err)
	}
	m, err := mirror.New(config(g), c.root, quiet())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // retries count the key once
		err = m.Sync(ctx, "linux-64")
		if !errors.Is(err, mirror.ErrConflict) || m.Conflicts() != 1 {
			t.Fatalf("sync: %v, conflicts %d", err, m.Conflicts())
		}
	}
	if got := get(t, cl, "ch/linux-64/"+fn); string(got) != "not this package" {
		t.Error("the planted object was overwritten")
	}
	if get(t, cl, "ch/linux-64/repodata.json") != nil {
		t.Error("the index was published over a conflicting package")
	}
	// Resolved by hand (the operator removes the stray object): the
	// next sync publishes, and the alarm clears.
	if _, err := cl.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String("ch/linux-64/" + fn)}); err != nil {
		t.Fatal(err)
	}
	if err := m.Sync(ctx, "linux-64"); err != nil || m.Conflicts() != 0 {
		t.Fatalf("after the fix: %v, conflicts %d", err, m.Conflicts())
	}
	if get(t, cl, "ch/linux-64/repodata.json") == nil {
		t.Error("the index is still not published")
	}
}

// TestOutageCatchUp stops the S3 server while packages are indexed, and
// checks that the backlog shows, and that it drains, with nothing lost,
// once the server is back.
func TestOutageCatchUp(t *testing.T) {
	g := startGateway(t)
	c := newChannel(t)
	m, err := mirror.New(config(g), c.root, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { m.Run(ctx, time.Hour); close(done) }()
	defer func() { cancel(); <-done }()
	c.add(t, "before", "1.0")
	c.index(t, "linux-64")
	m.Mark("linux-64")
	waitFor(t, func() bool { n, _ := m.Backlog(); return n == 0 })
	g.Stop()
	var fns []string
	for i := range 5 {
		fns = append(fns, c.add(t, "during", fmt.Sprintf("1.%d", i)))
		c.index(t, "linux-64")
		m.Mark("linux-64")
	}
	waitFor(t, func() bool { return m.Err() != "" }) // the SDK retries first
	if n, _ := m.Backlog(); n != 1 {
		t.Fatalf("backlog %d while the bucket is down", n)
	}
	g.Restart(t)
	m.Mark("linux-64")
	waitFor(t, func() bool { n, _ := m.Backlog(); return n == 0 })
	cl := g.Client()
	for _, fn := range fns {
		want, _ := os.ReadFile(filepath.Join(c.root, "linux-64", fn))
		if got := get(t, cl, "ch/linux-64/"+fn); !bytes.Equal(got, want) {
			t.Errorf("%s not caught up", fn)
		}
	}
	want, _ := os.ReadFile(filepath.Join(c.root, "linux-64", "repodata.json"))
	if got := get(t, cl, "ch/linux-64/repodata.json"); !bytes.Equal(got, want) {
		t.Error("repodata.json not caught up")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestYankAndDeletePropagate yanks one package and deletes another, and
// checks the bucket: the yanked file stays, out of the index; the deleted
// one stays until the retention period is over, then goes.
func TestYankAndDeletePropagate(t *testing.T) {
	g := startGateway(t)
	c := newChannel(t)
	keep, yank, del := c.add(t, "keep", "1.0"), c.add(t, "yank", "1.0"), c.add(t, "del", "1.0")
	c.index(t, "linux-64")
	cfg := config(g)
	cfg.Retention = 200 * time.Millisecond
	m, err := mirror.New(cfg, c.root, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := m.Sync(ctx, "linux-64"); err != nil {
		t.Fatal(err)
	}
	lc := lifecycle.New(c.st)
	if _, _, err := lc.SetYank("main", "linux-64", yank, true, lifecycle.Yank{Reason: "broken"}); err != nil {
		t.Fatal(err)
	}
	if _, err := lc.Delete("main", "linux-64", del); err != nil {
		t.Fatal(err)
	}
	c.index(t, "linux-64")
	if err := m.Sync(ctx, "linux-64"); err != nil {
		t.Fatal(err)
	}
	cl := g.Client()
	var rd struct {
		Packages map[string]any `json:"packages.conda"`
		Removed  []string       `json:"removed"`
	}
	if err := json.Unmarshal(get(t, cl, "ch/linux-64/repodata.json"), &rd); err != nil {
		t.Fatal(err)
	}
	if _, ok := rd.Packages[yank]; ok || len(rd.Removed) != 1 || rd.Removed[0] != yank {
		t.Errorf("bucket index after the yank: %v removed %v", rd.Packages, rd.Removed)
	}
	if _, ok := rd.Packages[keep]; !ok {
		t.Error("the kept package left the bucket's index")
	}
	if get(t, cl, "ch/linux-64/"+yank) == nil || get(t, cl, "ch/linux-64/"+del) == nil {
		t.Fatal("the yanked file, or the deleted one within its retention, left the bucket")
	}
	time.Sleep(300 * time.Millisecond)
	if err := m.Sync(ctx, "linux-64"); err != nil {
		t.Fatal(err)
	}
	if get(t, cl, "ch/linux-64/"+del) != nil {
		t.Error("the deleted package is still in the bucket after the retention period")
	}
	if get(t, cl, "ch/linux-64/"+yank) == nil {
		t.Error("the yanked package left the bucket")
	}
}

// TestReadersNeverSeeMissingObjects polls the bucket, as a client would,
// while 100 packages are added, indexed and synced one by one: every
// package that repodata.json names, every attestations revision
// (<file>.sigs.<attestations_sha256>) it names, and every shard the shard
// index names, must already be there.
func TestReadersNeverSeeMissingObjects(t *testing.T) {
	g := startGateway(t)
	c := newChannel(t)
	m, err := mirror.New(config(g), c.root, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cl := g.Client()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var problems []string
	polls := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if p := s3test.Missing(cl, bucket, "ch/linux-64/"); p != "" {
				mu.Lock()
				problems = append(problems, p)
				mu.Unlock()
			}
			polls++
		}
	}()
	for i := range 100 {
		fn := c.add(t, fmt.Sprintf("burst%d", i%7), fmt.Sprintf("1.%d", i))
		if i%3 == 0 { // with an attestation, and a later one
			for j := range 2 {
				if _, err := sidecar.Add(filepath.Join(c.root, "linux-64", fn), fmt.Appendf(nil, `{"n":%d}`, 10*i+j)); err != nil {
					t.Fatal(err)
				}
			}
		}
		c.index(t, "linux-64")
		if err := m.Sync(ctx, "linux-64"); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if len(problems) > 0 {
		t.Fatalf("%d inconsistent views, first: %s", len(problems), problems[0])
	}
	if polls < 3 {
		t.Fatalf("only %d polls: the test proved little", polls)
	}
	t.Logf("%d polls of the bucket, all consistent", polls)
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
