// Package internal_test guards the dependency budget of a hardened
// daemon, as go-containerregistry's depcheck_test.go does: every package
// of the module lists the packages beyond the standard library that it may
// import, so that a new dependency, or a new edge between our own
// packages, shows up in review as a change to this table.
package internal_test

import (
	"go/build"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/conda-upload-server/conda-upload-server/"

// allowed maps each package directory to the imports it may have beyond
// the standard library; ours are written without the module prefix.
var allowed = map[string][]string{
	"cmd/conda-upload-server": {"internal/admincli", "internal/auth", "internal/config", "internal/daemon"},
	"internal/admincli":       nil,
	"internal/audit":          nil,
	"internal/atomicfile":     {"golang.org/x/sys/unix"},
	"internal/auth":           nil,
	"internal/channel":        {"internal/condapkg", "internal/sidecar", "internal/store"},
	"internal/condapkg":       {"github.com/klauspost/compress/zstd", "internal/record"},
	"internal/config":         {"github.com/BurntSushi/toml", "internal/auth", "internal/condapkg", "internal/owners", "internal/quota", "internal/retention", "internal/store", "internal/trusted"},
	"internal/condaversion":   nil,
	"internal/corpus":         nil,
	"internal/daemon": {"internal/attest", "internal/audit", "internal/auth", "internal/channel", "internal/condapkg", "internal/config", "internal/index",
		"internal/lifecycle", "internal/metrics", "internal/mirror", "internal/owners", "internal/proxy", "internal/quota", "internal/repodata", "internal/retention", "internal/sandbox", "internal/server", "internal/stats", "internal/store", "internal/systemd", "internal/trusted", "internal/web"},
	"internal/form":      nil,
	"internal/index":     nil,
	"internal/lifecycle": {"internal/atomicfile", "internal/condapkg", "internal/patch", "internal/store"},
	"internal/owners":    {"internal/atomicfile", "internal/audit"},
	"internal/quota":     {"internal/condapkg", "internal/store"},
	"internal/retention": {"internal/condapkg", "internal/condaversion", "internal/store"},
	"internal/patch":     {"internal/record"},
	"internal/record":    {"internal/condaversion"},
	// The mirror's S3 client: the AWS SDK, which speaks every S3 dialect
	// and sends If-None-Match and checksum headers as the protocol says.
	"internal/mirror": {"github.com/aws/aws-sdk-go-v2/aws", "github.com/aws/aws-sdk-go-v2/credentials",
		"github.com/aws/aws-sdk-go-v2/service/s3", "github.com/aws/smithy-go",
		"internal/atomicfile", "internal/channel", "internal/condapkg", "internal/sidecar"},
	// Attestations are Sigstore bundles: sigstore-go is the reference
	// verifier (chain, log inclusion, timestamps) that PyPI's and
	// prefix.dev's checks rest on; writing our own would be the risk.
	"internal/attest": {"github.com/sigstore/sigstore-go/pkg/bundle", "github.com/sigstore/sigstore-go/pkg/fulcio/certificate",
		"github.com/sigstore/sigstore-go/pkg/root", "github.com/sigstore/sigstore-go/pkg/verify", "internal/sidecar"},
	// A test-only offline Sigstore (the test imports of internal/attest
	// before): imported by tests alone.
	"internal/attest/attesttest": {"github.com/google/certificate-transparency-go", "github.com/google/certificate-transparency-go/tls",
		"github.com/google/certificate-transparency-go/x509util", "github.com/secure-systems-lab/go-securesystemslib/dsse",
		"github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1", "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1",
		"github.com/sigstore/protobuf-specs/gen/pb-go/dsse", "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1",
		"github.com/sigstore/sigstore-go/pkg/root", "github.com/sigstore/sigstore-go/pkg/testing/ca", "github.com/sigstore/sigstore-go/pkg/tlog",
		"google.golang.org/protobuf/encoding/protojson"},
	"internal/s3test": {"github.com/aws/aws-sdk-go-v2/aws", "github.com/aws/aws-sdk-go-v2/credentials",
		"github.com/aws/aws-sdk-go-v2/service/s3", "github.com/klauspost/compress/zstd", "github.com/vmihailenco/msgpack/v5", "internal/testneed"},
	"internal/metrics": {"github.com/prometheus/client_golang/prometheus",
		"github.com/prometheus/client_golang/prometheus/collectors", "github.com/prometheus/client_golang/prometheus/promhttp", "internal/quota"},
	"internal/pkgtest": {"github.com/klauspost/compress/zstd"},
	// The proxy of upstream channels: zstd and msgpack for their index
	// files and CEP-16 shards, as the indexer reads and writes them.
	"internal/proxy": {"github.com/klauspost/compress/zstd", "github.com/vmihailenco/msgpack/v5",
		"internal/atomicfile", "internal/channel", "internal/condapkg", "internal/store"},
	"internal/repodata": {"github.com/klauspost/compress/zstd", "github.com/vmihailenco/msgpack/v5", "golang.org/x/sys/unix",
		"internal/atomicfile", "internal/condapkg", "internal/condaversion", "internal/index", "internal/patch", "internal/sidecar"},
	"internal/sandbox": {"github.com/landlock-lsm/go-landlock/landlock", "github.com/landlock-lsm/go-landlock/landlock/syscall",
		"golang.org/x/sys/unix", "kernel.org/pub/linux/libs/security/libcap/psx"},
	"internal/server": {"internal/audit", "internal/auth", "internal/channel", "internal/condapkg", "internal/form", "internal/index",
		"internal/attest", "internal/lifecycle", "internal/metrics", "internal/owners", "internal/patch", "internal/proxy", "internal/quota", "internal/retention", "internal/sidecar", "internal/stats", "internal/store", "internal/trusted", "internal/web"},
	"internal/sidecar": {"internal/atomicfile"},
	// Download counts: an append-only log of our own (no store
	// dependency; chosen over go.etcd.io/bbolt by measurement).
	"internal/stats": {"internal/atomicfile", "internal/condapkg"},
	"internal/store": {"internal/atomicfile", "internal/sidecar"},
	// The channel's pages: built from what the indexer holds, and from
	// what the proxies of upstream channels report of themselves.
	"internal/web":      {"internal/condapkg", "internal/condaversion", "internal/proxy", "internal/repodata", "internal/stats"},
	"internal/oidctest": {"github.com/go-jose/go-jose/v4"},
	"internal/trusted":  {"github.com/coreos/go-oidc/v3/oidc", "github.com/go-jose/go-jose/v4", "internal/auth"},
	"internal/systemd":  {"github.com/coreos/go-systemd/v22/activation", "github.com/coreos/go-systemd/v22/daemon"},
	"internal/testneed": {"github.com/landlock-lsm/go-landlock/landlock/syscall"},
}

func TestDependencies(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, top := range []string{"cmd", "internal"} {
		filepath.WalkDir(filepath.Join(root, top), func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() || d.Name() == "testdata" {
				if d != nil && d.Name() == "testdata" {
					return filepath.SkipDir
				}
				return err
			}
			pkg, err := build.ImportDir(path, 0)
			if err != nil || len(pkg.GoFiles) == 0 {
				return nil // no non-test Go files here
			}
			rel, _ := filepath.Rel(root, path)
			seen[rel] = true
			want, ok := allowed[rel]
			if !ok {
				t.Errorf("%s is not in the dependency table; add it with the imports it needs", rel)
				return nil
			}
			for _, imp := range pkg.Imports {
				if !strings.Contains(strings.Split(imp, "/")[0], ".") {
					continue // standard library
				}
				name := strings.TrimPrefix(imp, module)
				if !slices.Contains(want, name) {
					t.Errorf("%s imports %s, which the dependency table does not allow", rel, name)
				}
			}
			return nil
		})
	}
	for dir := range allowed {
		if !seen[dir] {
			t.Errorf("the dependency table lists %s, which has no Go package", dir)
		}
	}
}
