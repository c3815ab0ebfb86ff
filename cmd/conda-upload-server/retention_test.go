package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/pkgtest"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// retentionRules keeps 3 builds per package in nightly, none older than
// two days in dev, and 1 in every other label but main, which only a rule
// naming it may prune.
const retentionRules = `
[[retention]]
label = "nightly"
keep_last = 3
[[retention]]
label = "dev"
max_age = "2d"
[[retention]]
label = "*"
keep_last = 1
`

// nightlyBuild is a build of package "tricky" and its build number.
type nightlyBuild struct {
	version, build string
	number         int
}

func (b nightlyBuild) filename() string { return "tricky-" + b.version + "-" + b.build + ".conda" }

// trickyBuilds are newest first in conda's own order (VersionOrder's
// documentation: dev < a < rc < the release < post, and an epoch above
// everything), then the build number. Two builds of 1.0 have build strings
// whose last digits order them the other way round: only the build number
// from the index counts.
var trickyBuilds = []nightlyBuild{
	{"1!0.1", "h0_0", 0},
	{"1.0.post1", "h0_0", 0},
	{"1.0", "h2_0", 1},
	{"1.0", "h1_7", 0},
	{"1.0rc1", "h0_0", 0},
	{"1.0a1", "h0_0", 0},
	{"1.0.dev1", "h0_0", 0},
	{"0.9.post1", "h0_0", 0},
	{"0.9", "h0_0", 0},
}

func writeBuild(t *testing.T, dir string, b nightlyBuild) string {
	t.Helper()
	s := pkgtest.Simple("tricky", b.version, b.build, "linux-64")
	s.Index = map[string]any{"build_number": b.number}
	path := filepath.Join(dir, b.filename())
	if err := os.WriteFile(path, pkgtest.Build(t, s, ".conda"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// packagesIn lists the package files of a label's subdir on disk.
func packagesIn(root, dir string) []string {
	des, _ := os.ReadDir(filepath.Join(root, dir))
	var out []string
	for _, de := range des {
		if strings.HasSuffix(de.Name(), ".conda") || strings.HasSuffix(de.Name(), ".tar.bz2") {
			out = append(out, de.Name())
		}
	}
	slices.Sort(out)
	return out
}

// indexed lists the packages a label subdir's repodata.json holds.
func indexed(root, dir string) []string {
	b, _ := os.ReadFile(filepath.Join(root, dir, "repodata.json"))
	var rd struct {
		Conda map[string]json.RawMessage `json:"packages.conda"`
	}
	json.Unmarshal(b, &rd)
	var out []string
	for fn := range rd.Conda {
		out = append(out, fn)
	}
	slices.Sort(out)
	return out
}

// settled waits until a label's subdir holds exactly want, on disk and in
// its index: retention runs after the index run an upload waited for.
func settled(t *testing.T, p *proc, root, dir string, want []string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Equal(packagesIn(root, dir), want) || !slices.Equal(indexed(root, dir), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %v, indexes %v; want %v\n%s", dir, packagesIn(root, dir), indexed(root, dir), want, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func inTrash(root, label, fn string) bool {
	m, _ := filepath.Glob(filepath.Join(root, ".trash", "*", label, "linux-64", fn))
	return len(m) > 0
}

// TestRetention uploads builds with tricky versions to nightly in a random
// order through the real server, and checks that exactly the newest three
// by conda's order stay; that a build main also holds is removed from
// nightly only; that main is not pruned by a glob; that the removals are
// in the trash and the audit log; and that the CLI's dry run says what
// would go and why, and leaves it.
func TestRetention(t *testing.T) {
	p, cert, root, auditFile := startAdmin(t, "", retentionRules)

	pkgs := shared(t)
	order := rand.Perm(len(trickyBuilds))
	for _, i := range order {
		if st, body := p.upload(t, ciToken, writeBuild(t, pkgs, trickyBuilds[i]), "label", "nightly"); st != 201 {
			t.Fatalf("upload %s: %d %v", trickyBuilds[i].filename(), st, body)
		}
	}
	var kept []string
	for _, b := range trickyBuilds[:3] {
		kept = append(kept, b.filename())
	}
	nightly := "label/nightly/linux-64"
	settled(t, p, root, nightly, kept)
	for _, b := range trickyBuilds[3:] {
		if !inTrash(root, "nightly", b.filename()) {
			t.Errorf("%s is not in the trash", b.filename())
		}
	}

	// Main holds two builds; one of them is copied into nightly, where
	// retention removes it again. Main keeps both.
	held := nightlyBuild{"0.8", "h0_0", 0}
	for _, b := range []nightlyBuild{held, {"0.7", "h0_0", 0}} {
		if st, body := p.upload(t, ciToken, writeBuild(t, pkgs, b), "label", "main"); st != 201 {
			t.Fatalf("upload %s to main: %d %v", b.filename(), st, body)
		}
	}
	if code, out, stderr := adminCLI(t, p, cert, operatorToken, "copy", "main", "linux-64", held.filename(), "nightly"); code != 0 {
		t.Fatalf("copy into nightly: %d %s %s", code, out, stderr)
	}
	settled(t, p, root, nightly, kept)
	settled(t, p, root, "linux-64", []string{held.filename(), "tricky-0.7-h0_0.conda"})
	if !inTrash(root, "nightly", held.filename()) {
		t.Errorf("%s left nightly but is not in its trash", held.filename())
	}

	// A build in dev that grows old without an index run is seen by a
	// dry run, which leaves it, and removed by a pass.
	if st, body := p.upload(t, ciToken, filepath.Join(pkgs, "tricky-0.9-h0_0.conda"), "label", "dev"); st != 201 {
		t.Fatalf("upload to dev: %d %v", st, body)
	}
	old := filepath.Join(root, "label/dev/linux-64/tricky-0.9-h0_0.conda")
	settled(t, p, root, "label/dev/linux-64", []string{filepath.Base(old)})
	if err := os.Chtimes(old, time.Time{}, time.Now().Add(-10*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := adminCLI(t, p, cert, operatorToken, "retention", "--dry-run")
	if code != 0 || !strings.Contains(out, `"filename":"tricky-0.9-h0_0.conda"`) || !strings.Contains(out, "stored 10d ago, over max_age = 2d") || !strings.Contains(out, `"dry_run":true`) {
		t.Fatalf("dry run: %d %s %s", code, out, stderr)
	}
	if _, err := os.Stat(old); err != nil {
		t.Fatalf("the dry run removed it: %v", err)
	}
	if code, out, stderr := adminCLI(t, p, cert, ciToken, "retention"); code != 1 || !strings.Contains(stderr, "403") {
		t.Errorf("an upload token ran retention: %d %s %s", code, out, stderr)
	}
	if code, out, stderr := adminCLI(t, p, cert, operatorToken, "retention"); code != 0 || !strings.Contains(out, "tricky-0.9-h0_0.conda") {
		t.Fatalf("retention: %d %s %s", code, out, stderr)
	}
	settled(t, p, root, "label/dev/linux-64", nil)
	settled(t, p, root, nightly, kept)

	b, err := os.ReadFile(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	removals := strings.Count(string(b), `"call":"retention","reason":"newer 3 of its builds kept`)
	if want := len(trickyBuilds) - 3 + 1; removals != want || !strings.Contains(string(b), `"reason":"stored 10d ago`) {
		t.Errorf("%d retention removals audited, want %d:\n%s", removals, want, b)
	}
}

// TestRetentionKill9 kills the server with SIGKILL in the middle of the
// retention pass at start, several times: the channel must end with
// exactly the newest builds in nightly and the others whole in the trash,
// and main's copies untouched.
func TestRetentionKill9(t *testing.T) {
	testneed.Root(t)
	dir := shared(t)
	cert, key, pool, _ := certPair(t, dir, "")
	root := serviceOwned(t, filepath.Join(dir, "channel"))
	nightly := serviceOwned(t, filepath.Join(root, "label", "nightly", "linux-64"))
	main := serviceOwned(t, filepath.Join(root, "linux-64"))
	const builds, keep = 200, 3
	var all []string
	for i := range builds {
		b := nightlyBuild{fmt.Sprintf("1.%d", i), "h0_0", 0}
		path := writeBuild(t, nightly, b)
		all = append(all, b.filename())
		if i%50 == 0 {
			os.Link(path, filepath.Join(main, b.filename()))
		}
	}
	serviceOwned(t, root)
	rules := "[[retention]]\nlabel = \"nightly\"\nkeep_last = 3\n"
	kills := 0
	for round := range 6 {
		port := freePort(t)
		cfg := userConfig(t, dir, rules)
		trashed := func() int {
			m, _ := filepath.Glob(filepath.Join(root, ".trash", "*", "nightly", "linux-64", "*.conda"))
			return len(m)
		}
		before := trashed()
		p := startServer(t, pool, port, "--config", cfg, "-d", root, "-p", strconv.Itoa(port), "-c", cert, "-k", key, "-t", auth.Hash(auth.DefaultSalt, testToken))
		// Kill as soon as the pass has removed a few more files.
		deadline := time.Now().Add(20 * time.Second)
		for trashed() < before+1+round*3 && len(packagesIn(root, "label/nightly/linux-64")) > keep && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if len(packagesIn(root, "label/nightly/linux-64")) > keep {
			kills++
		}
		p.cmd.Process.Kill()
		<-p.done
		p.done <- nil
	}
	if kills == 0 {
		t.Fatal("no kill fell in the middle of a pass")
	}
	// A trash day past trash_retention (30 days) is emptied at start,
	// and counted.
	oldDay := filepath.Join(root, ".trash", "2020-01-01")
	os.MkdirAll(filepath.Join(oldDay, "nightly", "linux-64"), 0o755)
	os.WriteFile(filepath.Join(oldDay, "nightly", "linux-64", "old-1.0-0.conda"), make([]byte, 1234), 0o644)
	serviceOwned(t, oldDay)
	port := freePort(t)
	p := startServer(t, pool, port, "--config", userConfig(t, dir, rules), "-d", root, "-p", strconv.Itoa(port), "-c", cert, "-k", key, "-t", auth.Hash(auth.DefaultSalt, testToken))
	settled(t, p, root, "label/nightly/linux-64", slices.Clone(all[builds-keep:]))
	for _, fn := range all[:builds-keep] {
		if !inTrash(root, "nightly", fn) {
			t.Errorf("%s is neither in nightly nor in the trash", fn)
		}
	}
	for i := 0; i < builds; i += 50 {
		if _, err := os.Stat(filepath.Join(main, all[i])); err != nil {
			t.Errorf("main lost %s: %v", all[i], err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := p.client.Get(p.url + "metrics")
		if err != nil {
			t.Fatal(err)
		}
		m, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(m), "conda_upload_trash_emptied_files_total 1\n") && strings.Contains(string(m), "conda_upload_trash_emptied_bytes_total 1234\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the old trash day was not counted:\n%s", m)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(oldDay); err == nil {
		t.Errorf("%s is still there", oldDay)
	}
	if len(packagesIn(root, ".trash/"+time.Now().UTC().Format(time.DateOnly)+"/nightly/linux-64")) == 0 {
		t.Error("today's trash was emptied too")
	}
	t.Logf("%d of 6 kills fell in the middle of the pass", kills)
}
