package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// solved is one record as test/rattler/solve.cjs prints it.
type solved struct {
	Name, Version, Filename, URL, Subdir, SHA256 string
	Size                                         int64
}

// needRattler needs Node.js and the rattler solver from npm, which test/run.sh
// installs.
func needRattler(t *testing.T) {
	t.Helper()
	testneed.Tool(t, "node", "nodejs")
	testneed.File(t, filepath.Join("..", "..", "test", "rattler", "node_modules", "@conda-org", "rattler"),
		"the rattler solver", "cd test/rattler && npm install")
}

// rattlerSolve runs the real rattler solver (the library behind pixi,
// compiled to WebAssembly, from npm) against channel. test/run.sh installs
// Node.js and the package.
func rattlerSolve(t *testing.T, caFile, channel string, specs ...string) ([]solved, error) {
	t.Helper()
	needRattler(t)
	dir, _ := filepath.Abs(filepath.Join("..", "..", "test", "rattler"))
	cmd := exec.Command("node", append([]string{"solve.cjs", channel, "linux-64,noarch"}, specs...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+caFile)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%v: %s", err, stderr.String())
	}
	var recs []solved
	if err := json.Unmarshal(out.Bytes(), &recs); err != nil {
		t.Fatalf("solver output %q: %v", out.String(), err)
	}
	return recs, nil
}

// TestRattlerSolve uploads real packages and solves them through the
// server with rattler: from a public channel, and from a private one
// through a /t/<token>/ channel URL. Each solved record's url, sha256 and
// size must be what was uploaded, and each file it points to must come
// back with the same sha256.
func TestRattlerSolve(t *testing.T) {
	needRattler(t)
	pkgs := solvePkgs
	uploaded := map[string]string{} // filename → sha256
	sizes := map[string]int64{}
	for _, p := range pkgs {
		uploaded[filepath.Base(p)] = sha256File(t, corpusFile(p))
		fi, _ := os.Stat(corpusFile(p))
		sizes[filepath.Base(p)] = fi.Size()
	}
	const readTok = "reader-token-for-rattler"
	for _, access := range []string{"public", "token"} {
		t.Run(access, func(t *testing.T) {
			dir := shared(t)
			cert, key, pool, _ := certPair(t, dir, "")
			root := serviceOwned(t, filepath.Join(dir, "channel"))
			port := freePort(t)
			cfg := userConfig(t, dir, fmt.Sprintf(`
[[tokens]]
name = "reader"
hash = %q
scopes = ["read"]
[download]
enabled = true
access = %q
`, auth.Hash(auth.DefaultSalt, readTok), access))
			p := startServer(t, pool, port, "--config", cfg, "-d", root, "-p", strconv.Itoa(port), "-c", cert, "-k", key,
				"-t", auth.Hash(auth.DefaultSalt, testToken))
			for _, pkg := range pkgs {
				if st, body := p.upload(t, testToken, corpusFile(pkg)); st != 201 || body["indexed"] != true {
					t.Fatalf("upload %s: %d %v", pkg, st, body)
				}
			}
			channel := p.url
			if access == "token" {
				if _, err := rattlerSolve(t, cert, channel, "other-package"); err == nil {
					t.Error("rattler solved from a private channel without a token")
				}
				channel = p.url + "t/" + readTok + "/"
			}
			recs, err := rattlerSolve(t, cert, channel, "stub-depends-run_exports", "other-package", "font-ttf-inconsolata")
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, r := range recs {
				names = append(names, r.Name)
				want, ok := uploaded[r.Filename]
				if !ok {
					t.Errorf("solved %s, which was not uploaded", r.Filename)
					continue
				}
				if r.SHA256 != want || r.Size != sizes[r.Filename] || r.URL != channel+r.Subdir+"/"+r.Filename {
					t.Errorf("record %+v: want sha256 %s, size %d, url %s", r, want, sizes[r.Filename], channel+r.Subdir+"/"+r.Filename)
				}
				resp, err := p.client.Get(r.URL)
				if err != nil {
					t.Fatal(err)
				}
				h := sha256.New()
				io.Copy(h, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || hex.EncodeToString(h.Sum(nil)) != want {
					t.Errorf("download of %s: %d, sha256 %x", r.URL, resp.StatusCode, h.Sum(nil))
				}
			}
			slices.Sort(names)
			if want := []string{"font-ttf-inconsolata", "other-package", "stub-depends-run_exports", "stub-run_exports"}; !slices.Equal(names, want) {
				t.Errorf("solved %v, want %v", names, want)
			}
			// rattler reads the CEP-16 shards the built-in indexer wrote,
			// before (and instead of) repodata.json.
			if !p.logged("path=/t/REDACTED/linux-64/repodata_shards.msgpack.zst") && !p.logged("path=/linux-64/repodata_shards.msgpack.zst") {
				t.Error("rattler did not fetch the shard index")
			}
			if !regexp.MustCompile(`path=\S*/noarch/[0-9a-f]{64}\.msgpack\.zst \S+ status=200`).MatchString(p.stderr.String()) {
				t.Error("rattler fetched no shard")
			}
			if access == "token" && strings.Contains(p.stderr.String(), readTok) {
				t.Error("the read token reached the log")
			}
		})
	}
}
