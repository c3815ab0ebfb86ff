// Package s3test runs a real S3-compatible server for tests: the Versity
// S3 gateway (versitygw, a Go module .ci/run installs) over a POSIX
// directory on loopback, so that the object-storage mirror is tested
// against an S3 implementation this project did not write, not a mock.
package s3test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
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
	bin, err := exec.LookPath("versitygw")
	if err != nil {
		t.Fatalf("versitygw (the S3 server these tests use) is not installed; .ci/run installs it: %v", err)
	}
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
