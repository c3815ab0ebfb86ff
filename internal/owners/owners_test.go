package owners_test

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/audit"
	"github.com/conda-upload-server/conda-upload-server/internal/owners"
)

// TestMatch: patterns match conda names as they are; look-alikes of an
// allowed name do not match it.
func TestMatch(t *testing.T) {
	pats := []string{"mypkg", "mypkg-*", "lib?"}
	for _, c := range []struct {
		name string
		want bool
	}{
		{"mypkg", true}, {"mypkg-cli", true}, {"libz", true},
		{"mypkg_cli", false}, // _ and - are distinct conda names
		{"MyPkg", false},     // case: a limited token never publishes upper case
		{"mypkg.cli", false},
		{"libzz", false},
		{"mypkg*", false}, // a literal glob is not a wildcard for the name
		{"myрkg", false},  // Cyrillic р
		{"xmypkg", false},
	} {
		if got := owners.Match(pats, c.name); got != c.want {
			t.Errorf("Match(%q) = %v, want %v", c.name, got, c.want)
		}
	}
	if !owners.Match(nil, "Anything_At-All") {
		t.Error("no patterns must match every name")
	}
}

func TestCheckPattern(t *testing.T) {
	for p, ok := range map[string]bool{
		"mypkg": true, "mypkg-*": true, "[ab]*": true, "_private": true, "py3.x?": true,
		"": false, "MyPkg": false, "pаndas": false, "a/b": false, "lib[": false, "a b": false, `a\*`: false,
	} {
		if err := owners.CheckPattern(p); (err == nil) != ok {
			t.Errorf("CheckPattern(%q) = %v", p, err)
		}
	}
}

// TestFold: look-alike names share one key of owners.
func TestFold(t *testing.T) {
	for _, n := range []string{"my-pkg", "my_pkg", "my.pkg", "My-Pkg", "MY_PKG"} {
		if got := owners.Fold(n); got != "my-pkg" {
			t.Errorf("Fold(%q) = %q", n, got)
		}
	}
}

// TestRebuildFromAudit: with owners.json lost, the owners come back from
// the audit log as a real audit.Log wrote it: claims and the API's
// changes, in order; uploads, refusals and admin calls on packages change
// nothing.
func TestRebuildFromAudit(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "audit.jsonl")
	al, err := audit.Open(logPath, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, r := range []audit.Record{
		{Token: "team-a", Call: owners.CallClaim, Package: "tool", To: "team-a", Status: 200, Result: "claimed"},
		{Token: "team-a", Filename: "tool-1.0-0.conda", Protocol: "form", Status: 201, Result: "created"},
		{Token: "team-b", Call: owners.CallClaim, Package: "tool_x", To: "team-b", Status: 200, Result: "claimed"},
		{Token: "team-b", Filename: "tool-2.0-0.conda", Protocol: "form", Status: 403, Result: "package_forbidden"},
		{Token: "oidc:gh", Call: owners.CallClaim, Package: "other", To: "oidc:gh", Status: 200, Result: "claimed"},
		{Token: "team-c", Filename: "unclaimed-2.0-0.conda", Protocol: "form", Status: 201, Result: "created"},
		{Token: "ops", Call: "delete", Filename: "gone-1.0-0.conda", Status: 200, Result: "identical"},
		{Token: "ops", Call: owners.CallTransfer, Package: "tool", To: "team-c", Status: 200, Result: "identical"},
		{Token: "ops", Call: owners.CallAdd, Package: "other", To: "team-c", Status: 200, Result: "identical"},
		{Token: "ops", Call: owners.CallRemove, Package: "tool-x", To: "team-b", Status: 200, Result: "identical"},
		{Token: "ops", Call: owners.CallAdd, Package: "nope", To: "x", Status: 403, Result: "forbidden"},
	} {
		r.Time = now
		if err := al.Record(r); err != nil {
			t.Fatal(err)
		}
	}
	al.Close()
	// A line torn by a crash at the end is skipped.
	f, _ := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"time":"2026-`)
	f.Close()

	want := []owners.Owned{{Name: "other", Owners: []string{"oidc:gh", "team-c"}}, {Name: "tool", Owners: []string{"team-c"}}}
	events, err := owners.FromAudit(logPath)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, ".admin", "owners.json")
	st, err := owners.Open(path, events)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.List(); !slices.EqualFunc(got, want, func(a, b owners.Owned) bool { return a.Name == b.Name && slices.Equal(a.Owners, b.Owners) }) {
		t.Errorf("rebuilt %v, want %v", got, want)
	}
	// Written: the next start reads the file, not the log.
	again, err := owners.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := again.Of("tool"); !slices.Equal(got, []string{"team-c"}) {
		t.Errorf("reread: %v", got)
	}
}

// BenchmarkOwns measures the owner check of the upload path with 100,000
// owned names, against the check with none.
func BenchmarkOwns(b *testing.B) {
	for _, n := range []int{0, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			st := ownedStore(b, n)
			i := 0
			for b.Loop() {
				name := fmt.Sprintf("pkg-%06d", i%100000)
				i++
				if !st.Owns(name, "team") || !owners.Match([]string{"pkg-*", "lib*"}, name) {
					b.Fatal("not owned")
				}
			}
		})
	}
}

// BenchmarkClaim measures a claim of a new name among 100,000 owned
// ones: the owners file is written whole (temp file, fsync, rename).
func BenchmarkClaim(b *testing.B) {
	st := ownedStore(b, 100000)
	i := 0
	for b.Loop() {
		if _, claimed, err := st.Claim(fmt.Sprintf("new-%06d", i), "team"); err != nil || !claimed {
			b.Fatal(err)
		}
		i++
	}
}

// TestFileRoundTrip: what the store writes reads back the same, for
// owner names that JSON must escape too.
func TestFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "owners.json")
	st, err := owners.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	weird := []string{`team "a"`, `back\slash`, "tëam", "<tag>&", "oidc:gh-recipes"}
	for i, o := range weird {
		if _, _, err := st.Change(owners.Event{Call: owners.CallAdd, Name: fmt.Sprint("pkg-", i%2), Owner: o}); err != nil {
			t.Fatal(err)
		}
	}
	again, err := owners.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := fmt.Sprint(st.List()), fmt.Sprint(again.List()); a != b {
		t.Errorf("wrote %s, read %s", a, b)
	}
}

// ownedStore is a store where team owns pkg-000000 to pkg-<n-1>.
func ownedStore(b *testing.B, n int) *owners.Store {
	events := make([]owners.Event, n)
	for i := range events {
		events[i] = owners.Event{Call: owners.CallAdd, Name: fmt.Sprintf("pkg-%06d", i), Owner: "team"}
	}
	st, err := owners.Open(filepath.Join(b.TempDir(), "owners.json"), events)
	if err != nil {
		b.Fatal(err)
	}
	return st
}
