package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// TestTLSScan runs Debian's testssl.sh against the running server:
// protocols, cipher suites, forward secrecy, server preferences, known
// vulnerabilities and HTTP headers. No finding may be HIGH or CRITICAL,
// and TLS 1.0 and 1.1 must be refused. The certificate checks are left
// out: the test's certificate is self-signed and short-lived on purpose.
func TestTLSScan(t *testing.T) {
	testneed.Tool(t, "testssl", "testssl.sh")
	p, _ := startWith(t, "")
	out := filepath.Join(t.TempDir(), "testssl.json")
	cmd := exec.Command("testssl", "--quiet", "--color", "0", "--warnings", "off", "--ip", "127.0.0.1",
		"-p", "-s", "-f", "-P", "-U", "-h", "--jsonfile", out, fmt.Sprintf("https://localhost:%d/", p.port))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testssl: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var findings []struct{ ID, Severity, Finding string }
	if err := json.Unmarshal(b, &findings); err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, f := range findings {
		seen[f.ID] = f.Finding
		if f.Severity == "HIGH" || f.Severity == "CRITICAL" {
			t.Errorf("%s %s: %s", f.Severity, f.ID, f.Finding)
		}
		if f.Severity == "MEDIUM" || f.Severity == "LOW" {
			t.Logf("%s %s: %s", f.Severity, f.ID, f.Finding)
		}
	}
	for _, id := range []string{"SSLv2", "SSLv3", "TLS1", "TLS1_1"} {
		if !strings.HasPrefix(seen[id], "not offered") {
			t.Errorf("%s: %q, want not offered", id, seen[id])
		}
	}
	if !strings.HasPrefix(seen["TLS1_3"], "offered") {
		t.Errorf("TLS1_3: %q", seen["TLS1_3"])
	}
}
