package quota_test

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/quota"
)

// TestReserve checks the limits one reservation at a time: label bytes
// and files, a token's day, "*", a trusted publisher's token name, a
// release, a file found on disk, and the next UTC day.
func TestReserve(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "label", "nightly", "noarch")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "a-1.0-0.conda"), make([]byte, 400), 0o644)
	os.WriteFile(filepath.Join(dir, "not-a-package.txt"), make([]byte, 9999), 0o644)
	now := time.Date(2026, 12, 6, 23, 0, 0, 0, time.UTC)
	l := quota.New(quota.Options{Root: root, Subdirs: []string{"noarch"}, Now: func() time.Time { return now },
		Labels:    []quota.LabelLimit{{Label: "night*", MaxBytes: 1000, MaxFiles: 3}},
		Uploaders: []quota.UploaderLimit{{Name: "ci", BytesPerDay: 700}, {Name: "*", BytesPerDay: 300}, {Name: "gh", BytesPerDay: 50}}})
	var full *quota.LabelFull
	var day *quota.DailyExceeded
	if _, err := l.Reserve("nightly", "big", 601); !errors.As(err, &full) || full.Error() != "label nightly quota exceeded: max_bytes 1000, used 400, this upload adds 601" {
		t.Fatalf("over the label's bytes: %v", err)
	}
	r, err := l.Reserve("nightly", "ci", 500)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Reserve("nightly", "other", 200); !errors.As(err, &full) {
		t.Fatalf("a reservation in flight was not counted: %v", err)
	}
	r.Release()
	if _, err := l.Reserve("dev", "ci", 701); !errors.As(err, &day) || day.Error() != "upload quota of ci exceeded: bytes_per_day 700, used 0 today (UTC), this upload adds 701" {
		t.Fatalf("over ci's day: %v", err)
	}
	if !day.Reset.Equal(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("resets at %v", day.Reset)
	}
	if _, err := l.Reserve("dev", "someone", 301); !errors.As(err, &day) || day.Quota != 300 {
		t.Fatalf("\"*\" did not apply: %v", err)
	}
	if _, err := l.Reserve("dev", "oidc:gh", 51); !errors.As(err, &day) || day.Quota != 50 {
		t.Fatalf("the publisher's limit did not apply to its token: %v", err)
	}
	for range 2 {
		r, err := l.Reserve("nightly", "ci", 100)
		if err != nil {
			t.Fatal(err)
		}
		r.Stored()
	}
	if _, err := l.Reserve("nightly", "ci", 1); !errors.As(err, &full) || full.What != "files" || full.Used != 3 {
		t.Fatalf("over the label's files: %v", err)
	}
	now = now.Add(2 * time.Hour)
	l.Changed("label/nightly/noarch") // the two were never written: 1 file again
	if r, err := l.Reserve("nightly", "ci", 600); err != nil {
		t.Fatalf("a new day, a recount: %v", err)
	} else {
		r.Release()
	}
	u := l.Usage()
	if len(u.Labels) != 1 || u.Labels[0] != (quota.LabelUsage{Label: "nightly", Bytes: 400, Files: 1, MaxBytes: 1000, MaxFiles: 3}) {
		t.Errorf("usage %+v", u.Labels)
	}
}

// TestConcurrent reserves from 8 goroutines at once, 50 rounds: the label
// never holds more than its quota.
func TestConcurrent(t *testing.T) {
	for range 50 {
		l := quota.New(quota.Options{Root: t.TempDir(), Subdirs: []string{"noarch"}, Labels: []quota.LabelLimit{{Label: "dev", MaxBytes: 350}}})
		var wg sync.WaitGroup
		var mu sync.Mutex
		total := int64(0)
		for range 8 {
			wg.Go(func() {
				r, err := l.Reserve("dev", "ci", 100)
				if err != nil {
					return
				}
				r.Stored()
				mu.Lock()
				total += 100
				mu.Unlock()
			})
		}
		wg.Wait()
		if total != 300 {
			t.Fatalf("%d bytes passed a quota of 350", total)
		}
	}
}
