package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/systemd"
	"github.com/conda-upload-server/conda-upload-server/internal/testneed"
)

// TestServiceExposure scores the shipped service unit with systemd's own
// analyzer. --threshold is on a ×10 scale: 10 fails anything above 1.0.
func TestServiceExposure(t *testing.T) {
	testneed.Tool(t, "systemd-analyze", "systemd")
	out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--threshold=10", "../../systemd/conda-upload.service").CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for conda-upload\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze: %v\n%s", err, out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("exposure %.1f", score)
	if err != nil || score > 1.0 {
		t.Errorf("exposure %.1f (err %v), want ≤ 1.0", score, err)
	}
}

// TestMirrorDropInExposure applies systemd/mirror.conf, the drop-in a
// mirror needs (the service gets the network, and only the bucket's
// address on it), to the service unit and scores the result: it must stay
// at or below 1.0 too.
func TestMirrorDropInExposure(t *testing.T) {
	if score := dropInExposure(t, "mirror.conf"); score > 1.0 {
		t.Errorf("exposure with the mirror drop-in %.1f, want ≤ 1.0", score)
	}
}

// dropInExposure is systemd-analyze's exposure of the unit with the
// drop-in systemd/<name> applied.
func dropInExposure(t *testing.T, name string) float64 {
	t.Helper()
	testneed.Tool(t, "systemd-analyze", "systemd")
	svc, err := os.ReadFile("../../systemd/conda-upload.service")
	if err != nil {
		t.Fatal(err)
	}
	dropIn, err := os.ReadFile("../../systemd/" + name)
	if err != nil {
		t.Fatal(err)
	}
	unit := string(svc)
	for _, line := range strings.Split(string(dropIn), "\n") {
		key, _, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		// A drop-in's setting replaces a single-valued one, and adds to
		// a list.
		if re := regexp.MustCompile("(?m)^" + regexp.QuoteMeta(key) + "=.*$"); key == "PrivateNetwork" && re.MatchString(unit) {
			unit = re.ReplaceAllString(unit, line)
		} else {
			unit = strings.Replace(unit, "[Service]\n", "[Service]\n"+line+"\n", 1)
		}
	}
	path := filepath.Join(t.TempDir(), "conda-upload.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--threshold=10", path).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for conda-upload\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze: %v\n%s", err, out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("exposure with the %s drop-in %.1f", name, score)
	if err != nil {
		t.Errorf("systemd-analyze: %v", err)
	}
	if !strings.Contains(unit, "PrivateNetwork=no") {
		t.Error("the drop-in was not applied")
	}
	return score
}

// TestUnits checks the settings the daemon relies on.
func TestUnits(t *testing.T) {
	sock, _ := os.ReadFile("../../systemd/conda-upload.socket")
	svc, _ := os.ReadFile("../../systemd/conda-upload.service")
	for _, want := range []string{"ListenStream=8443", "BindIPv6Only=both", "FileDescriptorName=" + systemd.FDName, "Accept=no"} {
		if !strings.Contains(string(sock), "\n"+want+"\n") {
			t.Errorf("socket unit lacks %s", want)
		}
	}
	for _, want := range []string{"Type=notify", "NotifyAccess=main", "WatchdogSec=", "Restart=on-failure", "User=conda-upload", "Group=conda-upload",
		"landlock_create_ruleset landlock_add_rule landlock_restrict_self", "LoadCredential=tls-key:", "LoadCredential=token-hash:"} {
		if !strings.Contains(string(svc), want) {
			t.Errorf("service unit lacks %s", want)
		}
	}
}
