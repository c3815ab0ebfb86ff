package proxy

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// TestStatusAndCached: what the upstream's page shows, from a real fetch
// through the proxy: the configuration, when the index was confirmed,
// the packages cached (also after a restart), and the upstream's failure
// once it is gone.
func TestStatusAndCached(t *testing.T) {
	u := newUpstream(t)
	f := newFront(t, u, func(up *Upstream) { up.Exclude = []string{"zlib"}; up.IndexTTL = time.Nanosecond })
	st := f.p.Status()
	if st.Mode != "proxy" || !slices.Equal(st.Subdirs, []string{"linux-64", "noarch"}) || !slices.Equal(st.Exclude, []string{"zlib"}) ||
		st.IndexConfirmed != nil || !st.Reachable || len(f.p.Cached()) != 0 {
		t.Fatalf("before any fetch: %+v, cached %v", st, f.p.Cached())
	}
	fetched := []string{"scipy-1.0-h0_2.tar.bz2", "numpy-1.0-h0_0.conda"}
	for _, fn := range fetched {
		if resp, _ := get(t, f.srv.URL+"/linux-64/"+fn); resp.StatusCode != 200 {
			t.Fatalf("%s: %d", fn, resp.StatusCode)
		}
	}
	f.settle(t)
	want := []Cached{{Subdir: "linux-64", Filename: fetched[1]}, {Subdir: "linux-64", Filename: fetched[0]}}
	check := func(p *Proxy, when string) {
		t.Helper()
		got := p.Cached()
		if len(got) != len(want) {
			t.Fatalf("%s: cached %+v, want %v", when, got, want)
		}
		for i, c := range got {
			if c.Subdir != want[i].Subdir || c.Filename != want[i].Filename || c.Size != int64(len(u.file(t, "linux-64/"+c.Filename))) || c.Used.IsZero() {
				t.Errorf("%s: cached %+v, want %+v with the upstream's size", when, c, want[i])
			}
		}
	}
	check(f.p, "after the fetches")
	st = f.p.Status()
	if st.IndexConfirmed == nil || time.Since(*st.IndexConfirmed) > time.Minute || st.CachedPackages != 2 {
		t.Errorf("after the fetches: %+v", st)
	}
	check(startFront(t, f.p.up, f.dir).p, "after a restart")

	u.srv.Close()
	get(t, f.srv.URL+"/linux-64/repodata.json")
	st = f.p.Status()
	if st.Reachable || st.Failure == "" || st.UnreachableSince == nil {
		t.Errorf("with the upstream gone: %+v", st)
	}
}

// TestLRUAddTwice: a package added again (fetched twice in a race) is
// counted once, so that eviction does not start early.
func TestLRUAddTwice(t *testing.T) {
	l, err := loadLRU(t.TempDir(), []string{"linux-64"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.add("linux-64/a-1-0.conda", 100, "")
	l.add("linux-64/a-1-0.conda", 100, "")
	l.add("linux-64/b-1-0.conda", 10, "")
	if n, total := l.stats(); n != 2 || total != 110 {
		t.Errorf("%d packages, %d bytes; want 2 and 110", n, total)
	}
}

// TestUnreachableSince: "unreachable since" is the first failure since
// the upstream last answered, not the latest.
func TestUnreachableSince(t *testing.T) {
	p := &Proxy{}
	p.reached(errors.New("first"))
	first := p.failedAt
	time.Sleep(time.Millisecond)
	p.reached(errors.New("second"))
	if !p.failedAt.Equal(first) || p.failure != "second" {
		t.Errorf("since %v (first %v), failure %q", p.failedAt, first, p.failure)
	}
	p.reached(nil)
	p.reached(errors.New("third"))
	if !p.failedAt.After(first) {
		t.Error("a failure after the upstream answered again did not start a new outage")
	}
}
