package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestQuotas sends 8 uploads at once to a label with room for 3, through
// the real server: 3 are stored, 5 get 507 naming the quota and the usage,
// and nothing else is in the label or left behind. An uploader's bytes
// per day get 429 once spent. The usage shows in the admin API and the
// metrics.
func TestQuotas(t *testing.T) {
	p, cert, root, _ := startAdmin(t, "", `
[metrics]
token_names = true
[[label_quotas]]
label = "nightly"
max_files = 3
[[upload_quotas]]
name = "ci"
bytes_per_day = "4KiB"
`)
	pkgs := shared(t)
	var files []string
	for i := range 8 {
		files = append(files, writeBuild(t, pkgs, nightlyBuild{fmt.Sprintf("1.%d", i), "h0_0", 0}))
	}
	type answer struct {
		status int
		body   map[string]any
	}
	answers := make([]answer, len(files))
	var wg sync.WaitGroup
	for i, f := range files {
		wg.Go(func() {
			ct, data := multipartBody(t, ciToken, f, "label", "nightly")
			resp, err := p.client.Post(p.url, ct, bytes.NewReader(data))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			answers[i].status = resp.StatusCode
			json.NewDecoder(resp.Body).Decode(&answers[i].body)
		})
	}
	wg.Wait()
	stored := 0
	for _, a := range answers {
		switch {
		case a.status == 201:
			stored++
		case a.status == 507 && a.body["error"] == "label nightly quota exceeded: max_files 3, used 3, this upload adds 1; nothing stored":
		default:
			t.Errorf("upload answered %d %v", a.status, a.body)
		}
	}
	on := packagesIn(root, "label/nightly/linux-64")
	if stored != 3 || len(on) != 3 {
		t.Errorf("%d uploads stored, %d files in nightly (%v); want 3", stored, len(on), on)
	}
	if inc, _ := os.ReadDir(filepath.Join(root, ".incoming")); len(inc) != 0 {
		t.Errorf("refused uploads left %d temp files", len(inc))
	}
	// With the label full, an Artifactory PUT of 10 MB is refused from
	// its headers: the answer comes though no body byte is ever sent.
	// (net/http reads up to 256 KiB of an unread body before it answers,
	// so a small Content-Length would wait for its body.)
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.port), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "PUT /label/nightly/linux-64/tricky-9.0-h0_0.conda HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\nContent-Length: 10000000\r\n\r\n", ciToken)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer before the body: %v", err)
	}
	early, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 507 || !strings.Contains(string(early), "max_files 3, used 3") {
		t.Errorf("PUT into the full label: %d %s", resp.StatusCode, early)
	}

	// ci has sent 3 packages of under 900 bytes today (the refused ones
	// are not counted): a fourth fits in 4 KiB, a fifth does not.
	if st, body := p.upload(t, ciToken, files[0], "label", "dev"); st != 201 {
		t.Errorf("ci within its day: %d %v", st, body)
	}
	st, body := p.upload(t, ciToken, files[1], "label", "dev")
	if msg, _ := body["error"].(string); st != 429 || !strings.HasPrefix(msg, "upload quota of ci exceeded: bytes_per_day 4096, used ") {
		t.Errorf("ci over its day: %d %v", st, body)
	}
	if on := packagesIn(root, "label/dev/linux-64"); len(on) != 1 {
		t.Errorf("dev holds %v", on)
	}

	code, out, stderr := adminCLI(t, p, cert, operatorToken, "quotas")
	if code != 0 || !strings.Contains(out, `{"label":"nightly","bytes":`) || !strings.Contains(out, `"files":3,"max_files":3}`) || !strings.Contains(out, `"name":"ci"`) {
		t.Errorf("quotas: %d %s %s", code, out, stderr)
	}
	resp, err = p.client.Get(p.url + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`conda_upload_label_files{label="nightly"} 3`, `conda_upload_label_quota_files{label="nightly"} 3`, `conda_upload_uploader_quota_bytes_per_day{token="ci"} 4096`} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
