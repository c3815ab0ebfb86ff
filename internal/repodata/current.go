package repodata

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/condaversion"
)

// CurrentRepodataFile is the subset of repodata.json that conda's classic
// solver tries first.
const CurrentRepodataFile = "current_repodata.json"

// crRecord is a package as conda-index's build_current_repodata sees it,
// through conda's SubdirData and Resolve.
type crRecord struct {
	fn          string
	record      map[string]any
	name        string
	version     string
	v           condaversion.Version
	vOK         bool
	build       string
	buildNumber float64
	timestamp   float64
	noarch      int
	depends     []string
	features    bool
}

// crGroups is Resolve.groups: records by name, each sorted newest first
// by Resolve.version_key (version, build number, noarch last, timestamp,
// build string).
type crGroups map[string][]*crRecord

func newGroups(recs []*crRecord) crGroups {
	g := crGroups{}
	for _, r := range recs {
		g[r.name] = append(g[r.name], r)
	}
	for _, list := range g {
		slices.SortStableFunc(list, func(a, b *crRecord) int { return -versionKey(a, b) })
	}
	return g
}

func versionKey(a, b *crRecord) int {
	switch {
	case a.vOK && b.vOK:
		if c := a.v.Compare(b.v); c != 0 {
			return c
		}
	case a.vOK != b.vOK:
		if a.vOK {
			return 1
		}
		return -1
	}
	if c := cmp.Compare(a.buildNumber, b.buildNumber); c != 0 {
		return c
	}
	if c := cmp.Compare(a.noarch, b.noarch); c != 0 {
		return c
	}
	if c := cmp.Compare(a.timestamp, b.timestamp); c != 0 {
		return c
	}
	return strings.Compare(a.build, b.build)
}

func (g crGroups) find(sp condaversion.Spec) []*crRecord {
	var out []*crRecord
	for _, r := range g[sp.Name] {
		if sp.Match(r.name, r.version, r.build) {
			out = append(out, r)
		}
	}
	return out
}

// sameVersion returns the records of name whose version starts with
// version: conda's MatchSpec "name=version".
func (g crGroups) sameVersion(name string, version condaversion.Version) []*crRecord {
	var out []*crRecord
	for _, r := range g[name] {
		if r.vOK && r.v.StartsWith(version) {
			out = append(out, r)
		}
	}
	return out
}

func (g crGroups) flatten() []*crRecord {
	var out []*crRecord
	for _, name := range slices.Sorted(maps.Keys(g)) {
		out = append(out, g[name]...)
	}
	return out
}

// add puts recs into g[name], once each.
func (g crGroups) add(name string, recs ...*crRecord) {
	for _, r := range recs {
		if !slices.Contains(g[name], r) {
			g[name] = append(g[name], r)
		}
	}
}

func (g crGroups) clone() crGroups {
	c := crGroups{}
	for k, v := range g {
		c[k] = slices.Clone(v)
	}
	return c
}

// newCRRecord reads a patched record.
func newCRRecord(fn string, raw json.RawMessage, subdir string) (*crRecord, error) {
	rec, err := decodeObject(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	r := &crRecord{fn: fn, record: rec, name: str(rec["name"], ""), version: str(rec["version"], ""), build: str(rec["build"], "")}
	r.v, err = condaversion.Parse(r.version)
	r.vOK = err == nil
	if n, ok := rec["build_number"].(json.Number); ok {
		r.buildNumber, _ = n.Float64()
	}
	if n, ok := rec["timestamp"].(json.Number); ok {
		r.timestamp, _ = n.Float64()
		if r.timestamp > 253402300799 {
			r.timestamp /= 1000
		}
	}
	if subdir == "noarch" {
		r.noarch = -1
	}
	if deps, ok := rec["depends"].([]any); ok {
		for _, d := range deps {
			if s, ok := d.(string); ok {
				r.depends = append(r.depends, s)
			}
		}
	}
	// conda adds pip to python's dependencies
	// (add_pip_as_python_dependency, on by default).
	if r.name == "python" && (strings.HasPrefix(r.version, "2.") || strings.HasPrefix(r.version, "3.")) {
		r.depends = append(r.depends, "pip")
	}
	r.features = truthy(rec["track_features"]) || truthy(rec["features"])
	return r, nil
}

// renderCurrent builds current_repodata.json as conda-index's
// build_current_repodata does: the newest version of every package (all
// its builds), then, once, the newest version of each dependency those
// lack, then for a package with features the newest older build without
// them. A .tar.bz2 with a .conda twin is left out (as conda's SubdirData
// does), and each .conda record gets legacy_bz2_md5, its twin's md5 (null
// without one).
func renderCurrent(subdir string, st *subdirState) ([]byte, error) {
	pkgs, err := snapshot(st)
	if err != nil {
		return nil, err
	}
	all := make([]*crRecord, 0, len(pkgs))
	for _, p := range pkgs {
		r, err := newCRRecord(p.name, p.record, subdir)
		if err != nil {
			return nil, err
		}
		all = append(all, r)
	}
	orig := newGroups(all)
	keep := withFeatureFallbacks(withMissingDeps(newestVersions(orig), orig), orig)

	packages, condaPackages := map[string]any{}, map[string]any{}
	for _, r := range keep.flatten() {
		stem, isConda := strings.CutSuffix(r.fn, ".conda")
		if !isConda {
			packages[r.fn] = r.record
			continue
		}
		var md5 any
		if l, ok := st.entries[stem+".tar.bz2"]; ok && !st.plan.Removed(stem+".tar.bz2") {
			raw, _, err := st.plan.Apply(stem+".tar.bz2", l.Record)
			if err != nil {
				return nil, err
			}
			t, err := decodeObject(raw)
			if err != nil {
				return nil, err
			}
			md5 = t["md5"]
		}
		rec := maps.Clone(r.record)
		rec["legacy_bz2_md5"] = md5
		condaPackages[r.fn] = rec
	}
	removed := []string{}
	for _, list := range [][]listed{st.tarbz2, st.conda} {
		for _, l := range list {
			if st.plan.Removed(l.name) {
				removed = append(removed, l.name)
			}
		}
	}
	slices.Sort(removed)
	return marshal(map[string]any{
		"info": map[string]any{"subdir": subdir}, "packages": packages, "packages.conda": condaPackages,
		"removed": removed, "repodata_version": 1,
	})
}

// newestVersions keeps the newest version of each name, with all its
// builds (conda's MatchSpec "name=version").
func newestVersions(orig crGroups) crGroups {
	var newest []*crRecord
	for _, name := range slices.Sorted(maps.Keys(orig)) {
		g := orig[name]
		if !g[0].vOK {
			newest = append(newest, g[0])
			continue
		}
		newest = append(newest, orig.sameVersion(name, g[0].v)...)
	}
	return newGroups(newest)
}

// withMissingDeps adds, once and not recursively, the newest version of
// each dependency of cur that cur does not satisfy (_add_missing_deps).
func withMissingDeps(cur, orig crGroups) crGroups {
	expanded := cur.clone()
	seen := map[string]bool{}
	for _, r := range cur.flatten() {
		for _, dep := range r.depends {
			if seen[dep] {
				continue
			}
			seen[dep] = true
			sp, err := condaversion.ParseSpec(dep)
			if err != nil || len(cur.find(sp)) > 0 {
				continue
			}
			if m := orig.find(sp); len(m) > 0 && m[0].vOK {
				expanded.add(sp.Name, orig.sameVersion(sp.Name, m[0].v)...)
			}
		}
	}
	return newGroups(expanded.flatten())
}

// withFeatureFallbacks adds, for a name with a build that has features,
// the newest build at most as new without any (_add_prev_ver_for_features).
func withFeatureFallbacks(cur, orig crGroups) crGroups {
	expanded := cur.clone()
	for _, name := range slices.Sorted(maps.Keys(cur)) {
		g := cur[name]
		if !slices.ContainsFunc(g, func(r *crRecord) bool { return r.features }) {
			continue
		}
		for _, m := range orig[name] {
			if !m.features && (!g[0].vOK || !m.vOK || m.v.Compare(g[0].v) <= 0) {
				expanded.add(name, m)
				break
			}
		}
	}
	return expanded
}
