// Package s3test runs a real S3-compatible server for tests: the Versity
// S3 gateway (versitygw, a Go module test/run.sh installs) over a POSIX
// directory on loopback, so that the object-storage mirror is tested
// against an S3 implementation this project did not write, not a mock.
package s3test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// The gateway's root keys.
const (
	AccessKey = "mirror-test-key"
	SecretKey = "mirror-test-secret-0123456789"
)

// Gateway is a running S3 server with one bucket.
type Gateway struct {
	Addr, Dir, Bucket string
	cmd               *exec.Cmd
}

// Start starts a gateway with an empty bucket, stopped when the test
// ends.
func Start(t testing.TB, bucket string) *Gateway {
	t.Helper()
	g := &Gateway{Dir: t.TempDir(), Bucket: bucket}
	if err := os.Mkdir(filepath.Join(g.Dir, bucket), 0o755); err != nil { // a bucket is a folder
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.Addr = l.Addr().String()
	l.Close()
	g.Restart(t)
	t.Cleanup(g.Stop)
	return g
}

// Restart starts the gateway again on the same address and directory.
func (g *Gateway) Restart(t testing.TB) {
	t.Helper()
	bin := testneed.GoTool(t, "versitygw", "github.com/versity/versitygw/cmd/versitygw@v1.8.0")
	g.cmd = exec.Command(bin, "--port", g.Addr, "posix", g.Dir)
	g.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+AccessKey, "ROOT_SECRET_KEY="+SecretKey)
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		if c, err := net.Dial("tcp", g.Addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("versitygw did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the gateway.
func (g *Gateway) Stop() {
	if g.cmd != nil && g.cmd.Process != nil {
		g.cmd.Process.Kill()
		g.cmd.Wait()
		g.cmd = nil
	}
}

// URL is the gateway's endpoint.
func (g *Gateway) URL() string { return "http://" + g.Addr }

// Client returns an S3 client with the root keys.
func (g *Gateway) Client() *s3.Client {
	return s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(g.URL()), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, "")})
}

// PublicRead lets anyone GET the bucket's objects, as a bucket behind a
// CDN is set up.
func (g *Gateway) PublicRead(t testing.TB) {
	t.Helper()
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::` + g.Bucket + `/*"]}]}`
	if _, err := g.Client().PutBucketPolicy(context.Background(), &s3.PutBucketPolicyInput{Bucket: aws.String(g.Bucket), Policy: aws.String(policy)}); err != nil {
		t.Fatal(err)
	}
}

// Missing reads the index files a client reads from dir (a key prefix
// ending in "/") and returns the first object they name that the bucket
// lacks, or a reason they cannot be read, or "" when the view is whole.
func Missing(cl *s3.Client, bucket, dir string) string {
	ctx := context.Background()
	get := func(key string) []byte {
		out, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		if err != nil {
			return nil
		}
		defer out.Body.Close()
		b, _ := io.ReadAll(out.Body)
		return b
	}
	has := func(key string) bool {
		_, err := cl.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		return err == nil
	}
	if rd := get(dir + "repodata.json"); rd != nil {
		var doc struct {
			Packages      map[string]any `json:"packages"`
			PackagesConda map[string]any `json:"packages.conda"`
		}
		if err := json.Unmarshal(rd, &doc); err != nil {
			return "repodata.json is not whole: " + err.Error()
		}
		for _, m := range []map[string]any{doc.Packages, doc.PackagesConda} {
			for fn, rec := range m {
				if !has(dir + fn) {
					return "repodata.json names " + fn + ", which the bucket lacks"
				}
				// CEP 50: the attestations revision the record names.
				if sha, ok := rec.(map[string]any)["attestations_sha256"].(string); ok && !has(dir+fn+".sigs."+sha) {
					return "repodata.json names " + fn + ".sigs." + sha + ", which the bucket lacks"
				}
				// and the revision of <file>.sigs as the bucket holds it.
				if sigs := get(dir + fn + ".sigs"); sigs != nil {
					if sum := sha256.Sum256(sigs); !has(dir + fn + ".sigs." + hex.EncodeToString(sum[:])) {
						return "the bucket's " + fn + ".sigs has no revision beside it"
					}
				}
			}
		}
	}
	if idx := get(dir + "repodata_shards.msgpack.zst"); idx != nil {
		dec, _ := zstd.NewReader(nil)
		raw, err := dec.DecodeAll(idx, nil)
		dec.Close()
		if err != nil {
			return "shard index is not whole: " + err.Error()
		}
		var doc struct {
			Shards map[string][]byte `msgpack:"shards"`
		}
		if err := msgpack.Unmarshal(raw, &doc); err != nil {
			return "shard index does not decode: " + err.Error()
		}
		for name, sum := range doc.Shards {
			if !has(dir + hex.EncodeToString(sum) + ".msgpack.zst") {
				return "the shard index names the shard of " + name + ", which the bucket lacks"
			}
		}
	}
	return ""
}
