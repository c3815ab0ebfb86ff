package config_test

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/config"
)

// TestFiles loads every testdata file: *.good.toml must load and validate,
// *.bad.toml must fail with the message in the table.
func TestFiles(t *testing.T) {
	bad := map[string]string{
		"unknown-key.bad.toml":            `unknown key max_uplod_size`,
		"unknown-index-key.bad.toml":      `unknown key index\.comand`,
		"subdir-write-dir.bad.toml":       `named after a platform subdir`,
		"short-hash.bad.toml":             `must be 64 hex digits`,
		"bad-size.bad.toml":               `bad size "4 gigs"`,
		"bad-duration.bad.toml":           `bad duration "forever"`,
		"bad-subdir.bad.toml":             `"linux-fake" is not a conda platform subdir`,
		"bad-label.bad.toml":              `labels: "../main" is not a label name`,
		"bad-scope.bad.toml":              `scopes: "admin" is not a scope`,
		"bad-mirror.bad.toml":             `mirror.s3.prefix "/channel" must not start with /`,
		"two-hashes.bad.toml":             `only one of token_hash and token_hash_file`,
		"cert-without-key.bad.toml":       `certfile and keyfile must be set together`,
		"bad-token.bad.toml":              `tokens\[0\] \(ci\): token hash must be`,
		"port-string.bad.toml":            `port`,
		"relative-conda.bad.toml":         `must be an absolute path`,
		"bad-landlock.bad.toml":           `sandbox.landlock "strict"`,
		"bad-packages-case.bad.toml":      `packages: pattern "NumPy-\*": 'N' is not a lowercase conda name character`,
		"bad-packages-lookalike.bad.toml": `packages: pattern "pаndas": 'а' is not a lowercase conda name character`,
		"bad-packages-glob.bad.toml":      `packages: pattern "lib\[a-": syntax error in pattern`,
		"bad-packages-empty.bad.toml":     `packages is empty`,
		"bad-publisher-packages.bad.toml": `trusted_publishers\[0\] \(gh\): packages: pattern "a/b": '/'`,
		"bad-policy.bad.toml":             `policy.owners "anyone": want config or first-upload(.|\n)*policy.labels: pattern "Main"`,
		"bad-retention.bad.toml":          `retention\[0\] \(label "nightly"\) needs keep_last above 0`,
	}
	files, _ := filepath.Glob("testdata/*.toml")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			c, err := config.Load(f)
			if err == nil {
				err = c.Validate()
			}
			if err == nil && strings.HasSuffix(name, ".good.toml") {
				_, err = c.AuthTokens("")
			}
			if strings.HasSuffix(name, ".good.toml") {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			want, ok := bad[name]
			if !ok {
				t.Fatalf("no expected error for %s", name)
			}
			if err == nil || !regexp.MustCompile(want).MatchString(err.Error()) {
				t.Fatalf("err = %v, want match for %q", err, want)
			}
		})
	}
}

func TestValues(t *testing.T) {
	c, err := config.Load("testdata/tokens.good.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxUploadSize != 1<<30 || c.ReadHeaderTimeout.D() != 5*time.Second || c.Index.Wait || c.Index.Timeout.D() != time.Minute || c.Port != 8443 {
		t.Errorf("values: %+v", c)
	}
	toks, err := c.AuthTokens("")
	if err != nil || len(toks) != 2 || toks[0].Name != "ci-linux" || toks[0].Hash != toks[1].Hash {
		t.Errorf("tokens %v %v", toks, err)
	}
}

// TestExample checks that config.example.toml loads and validates, that
// it mentions every key the program reads, and that docs/configuration.md
// documents every key in its table's section and no key that does not
// exist. The keys come from the Config type's toml tags, so a key added,
// moved or renamed without its documentation fails here.
func TestExample(t *testing.T) {
	c, err := config.Load("../../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	keys, tables := tomlKeys(reflect.TypeFor[config.Config](), "")
	if len(keys) < 60 || len(tables) < 10 {
		t.Fatalf("only %d keys and %d tables found: %v %v", len(keys), len(tables), keys, tables)
	}
	example, err := os.ReadFile("../../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range append(slices.Clone(tables), keys...) {
		if name := k[strings.LastIndex(k, ".")+1:]; !strings.Contains(string(example), name) {
			t.Errorf("config.example.toml does not mention %s (%s)", name, k)
		}
	}
	const doc = "../../docs/configuration.md"
	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	documented, headings := documentedKeys(string(b))
	section := func(key string) string {
		table := ""
		if i := strings.LastIndex(key, "."); i >= 0 {
			table = key[:i]
		}
		if h, ok := headings[table]; ok {
			return h
		}
		return "a new heading \"### `[" + table + "]`\""
	}
	for _, k := range keys {
		if !documented[k] {
			t.Errorf("docs/configuration.md does not document %s: add a row for `%s` to the table under %q", k, k[strings.LastIndex(k, ".")+1:], section(k))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(documented)) {
		if !slices.Contains(keys, k) {
			t.Errorf("docs/configuration.md documents %s under %q, a key the program does not read: remove or fix the row", k, section(k))
		}
	}
}

// tomlKeys lists the keys of a struct type's toml tags, qualified by
// their table ("write_dir", "index.zst", "tokens.name",
// "mirror.s3.endpoint"), and the tables ("index", "tokens", "mirror.s3").
func tomlKeys(typ reflect.Type, prefix string) (keys, tables []string) {
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft.PkgPath() == typ.PkgPath() {
			k, tb := tomlKeys(ft, prefix+name+".")
			keys, tables = append(keys, k...), append(append(tables, prefix+name), tb...)
			continue
		}
		keys = append(keys, prefix+name)
	}
	return keys, tables
}

var (
	codeSpan   = regexp.MustCompile("`([^`]+)`")
	tableTitle = regexp.MustCompile("^### `\\[{1,2}([a-z0-9_.]+)\\]{1,2}`")
)

// documentedKeys reads the key tables of docs/configuration.md: under
// "## Keys", each "### `[table]`" (or "### `[[table]]`") heading starts a
// table's section, and any other "###" heading the top level's; the code
// spans in the first column of a table row are keys of that table. It
// returns the keys, qualified as tomlKeys does, and each table's heading.
func documentedKeys(doc string) (keys map[string]bool, headings map[string]string) {
	keys, headings = map[string]bool{}, map[string]string{}
	inKeys, table := false, ""
	for line := range strings.Lines(doc) {
		switch {
		case strings.HasPrefix(line, "## "):
			inKeys = strings.TrimSpace(line) == "## Keys"
		case !inKeys:
		case strings.HasPrefix(line, "### "):
			table = ""
			if m := tableTitle.FindStringSubmatch(line); m != nil {
				table = m[1]
			}
			headings[table] = strings.TrimSpace(line)
		case strings.HasPrefix(line, "| `"):
			first, _, _ := strings.Cut(line[1:], "|")
			for _, m := range codeSpan.FindAllStringSubmatch(first, -1) {
				if table != "" {
					m[1] = table + "." + m[1]
				}
				keys[m[1]] = true
			}
		}
	}
	return keys, headings
}

func TestTokenSources(t *testing.T) {
	dir := t.TempDir()
	hash := strings.Repeat("ab", 32)
	file := filepath.Join(dir, "token.hash")
	os.WriteFile(file, []byte(hash+"\n"), 0o600)
	cred := filepath.Join(dir, "creds")
	os.Mkdir(cred, 0o700)
	os.WriteFile(filepath.Join(cred, "token-hash"), []byte(strings.Repeat("cd", 32)), 0o600)

	c := config.Default()
	c.TokenHashFile = file
	toks, err := c.AuthTokens("")
	if err != nil || len(toks) != 1 || toks[0].Name != "default" || toks[0].Hash[0] != 0xab {
		t.Errorf("from file: %v %v", toks, err)
	}
	toks, err = c.AuthTokens(cred)
	if err != nil || len(toks) != 1 || toks[0].Hash[0] != 0xcd {
		t.Errorf("credential must win over the file: %v %v", toks, err)
	}
	c.TokenHashFile = filepath.Join(dir, "missing")
	if _, err := c.AuthTokens(""); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := config.Default().AuthTokens(""); err == nil {
		t.Error("no tokens accepted")
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "4GiB": 4 << 30, "100MB": 100e6, "512 MiB": 512 << 20, "0": 0} {
		got, err := config.ParseByteSize(in)
		if err != nil || int64(got) != want {
			t.Errorf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5GiB", "lots", "99999999999TiB"} {
		if _, err := config.ParseByteSize(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// TestSectionDefaults: a section that sets one key keeps the defaults of
// the keys it leaves out.
func TestSectionDefaults(t *testing.T) {
	for _, tt := range []struct {
		name, toml string
		check      func(*config.Config) bool
	}{
		{"download enabled only", "[download]\nenabled = true\n", func(c *config.Config) bool {
			return c.Download.Enabled && c.Download.Access == "public" && c.Download.RateWhileUploading == 32<<20
		}},
		{"download pacing off", "[download]\nrate_while_uploading = \"0\"\n", func(c *config.Config) bool {
			return c.Download.RateWhileUploading == 0 && c.Download.Access == "public"
		}},
		{"index zst off only", "[index]\nzst = false\n", func(c *config.Config) bool {
			return !c.Index.Zst && c.Index.Shards && c.Index.RunExports && c.Index.ShardRetention.D() == 6*time.Hour && c.Index.Wait
		}},
		{"metrics disabled only", "[metrics]\nenabled = false\n", func(c *config.Config) bool {
			return !c.Metrics.Enabled && len(c.Metrics.Allow) == 2
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "c.toml")
			if err := os.WriteFile(f, []byte(tt.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := config.Load(f)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("defaults lost: download %+v, index %+v, metrics %+v", c.Download, c.Index, c.Metrics)
			}
		})
	}
}
