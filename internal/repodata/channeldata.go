package repodata

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/atomicfile"
	"github.com/conda-upload-server/conda-upload-server/internal/condaversion"
)

// ChanneldataFile is the channel-level summary by package name.
const ChanneldataFile = "channeldata.json"

// channeldataKeep are the fields whose newest value channeldata.json
// keeps, in conda-index's order (_update_channeldata).
var channeldataKeep = []string{
	"description", "dev_url", "doc_url", "doc_source_url", "home", "license", "source_url", "source_git_url",
	"summary", "icon_url", "icon_hash", "tags", "identifiers", "keywords", "recipe_origin", "version",
}

// channeldataAny are the fields that are true if any build has them.
var channeldataAny = []string{"binary_prefix", "text_prefix", "activate.d", "deactivate.d", "pre_link", "post_link", "pre_unlink"}

// cdPackage is one indexed package as channeldata.json reads it.
type cdPackage struct {
	name       string
	record     json.RawMessage // patched
	channel    json.RawMessage
	runExports json.RawMessage
}

// channeldata writes (or, when it is off, removes) the channeldata.json of
// the channel whose subdirs are the folders below prefix ("." for the
// root, label/<L> for a label), from every subdir this Writer has
// indexed there, built anew each time.
func (x *Writer) channeldata(prefix string) error {
	path := filepath.Join(x.root, prefix, ChanneldataFile)
	if !x.files.Channeldata {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	x.cdMu.Lock()
	defer x.cdMu.Unlock()
	x.mu.Lock()
	var keys []string
	for k := range x.subdirs {
		if filepath.Dir(k) == prefix {
			keys = append(keys, k)
		}
	}
	x.mu.Unlock()
	slices.SortFunc(keys, func(a, b string) int { return strings.Compare(filepath.Base(a), filepath.Base(b)) })
	packages := map[string]map[string]any{}
	var subdirs []string
	for _, k := range keys {
		st := x.state(k)
		st.mu.Lock()
		loaded := st.loaded
		pkgs, err := snapshot(st)
		st.mu.Unlock()
		if err != nil {
			return fmt.Errorf("channeldata.json: %w", err)
		}
		if !loaded {
			continue
		}
		subdir := filepath.Base(k)
		subdirs = append(subdirs, subdir)
		if err := updateChanneldata(packages, pkgs, subdir); err != nil {
			return fmt.Errorf("channeldata.json: %w", err)
		}
	}
	for _, pd := range packages {
		for k, v := range pd {
			if v == nil || k == "commits" {
				delete(pd, k)
			}
		}
	}
	b, err := marshal(map[string]any{"channeldata_version": 1, "packages": packages, "subdirs": subdirs})
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b)
}

// snapshot lists a subdir's indexed packages with their patched records:
// .conda files first, then the .tar.bz2 files that have no .conda twin,
// each by filename, as conda-index reads them.
func snapshot(st *subdirState) ([]cdPackage, error) {
	var out []cdPackage
	conda := map[string]bool{}
	add := func(l listed) error {
		rec, gone, err := st.plan.Apply(l.name, l.e.Record)
		if err != nil || gone {
			return err
		}
		out = append(out, cdPackage{name: l.name, record: rec, channel: l.e.Channel, runExports: l.e.RunExports})
		return nil
	}
	for _, l := range st.conda {
		if err := add(l); err != nil {
			return nil, err
		}
		conda[strings.TrimSuffix(l.name, ".conda")] = true
	}
	for _, l := range st.tarbz2 {
		if !conda[strings.TrimSuffix(l.name, ".tar.bz2")] {
			if err := add(l); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func decodeObject(b []byte) (map[string]any, error) {
	m := map[string]any{}
	if len(b) == 0 {
		return m, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

// seconds is conda-index's _make_seconds: a timestamp in milliseconds
// becomes seconds.
func seconds(v any) int64 {
	var n int64
	switch v := v.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			n = i
		} else if f, err := v.Float64(); err == nil {
			n = int64(f)
		}
	case int64:
		n = v
	}
	if n > 253402300799 {
		n /= 1000
	}
	return n
}

// truthy is Python's truth of a JSON value.
func truthy(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case bool:
		return v
	case string:
		return v != ""
	case json.Number:
		f, err := v.Float64()
		return err != nil || f != 0
	case int64:
		return v != 0
	case []any:
		return len(v) > 0
	case map[string]any:
		return len(v) > 0
	}
	return true
}

func str(v any, def string) string {
	if s, ok := v.(string); ok {
		return s
	}
	return def
}

// updateChanneldata merges one subdir's packages into packages, as
// conda-index's _update_channeldata does: the newest build of each name
// and version, its descriptive fields kept if it is newer (by conda's
// version order, then timestamp) or the field was empty, the flags true
// if any build has them, the subdirs and run exports by version gathered,
// and the timestamp that of the build read last.
func updateChanneldata(packages map[string]map[string]any, pkgs []cdPackage, subdir string) error {
	type group struct {
		pkg    cdPackage
		record map[string]any
	}
	type nameVer struct{ name, version string }
	var order []nameVer
	groups := map[nameVer]*group{}
	for _, p := range pkgs {
		rec, err := decodeObject(p.record)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		key := nameVer{str(rec["name"], ""), str(rec["version"], "")}
		g, ok := groups[key]
		if !ok {
			order = append(order, key)
			groups[key] = &group{p, rec}
			continue
		}
		if numberLess(g.record["timestamp"], rec["timestamp"]) {
			groups[key] = &group{p, rec}
		}
	}
	for _, key := range order {
		g := groups[key]
		data, err := decodeObject(g.pkg.channel)
		if err != nil {
			return fmt.Errorf("%s: %w", g.pkg.name, err)
		}
		re, err := decodeObject(g.pkg.runExports)
		if err != nil {
			return fmt.Errorf("%s: %w", g.pkg.name, err)
		}
		data["run_exports"] = re
		maps.Copy(data, g.record)
		name := str(data["name"], "")
		existing, found := packages[name]
		pd := existing
		if !found {
			existing, pd = map[string]any{}, map[string]any{}
		}
		dataV, erecV := str(data["version"], "0"), str(existing["version"], "0")
		newer := condaversion.Compare(dataV, erecV) > 0 ||
			(dataV == erecV && seconds(data["timestamp"]) > seconds(existing["timestamp"]))
		for _, k := range channeldataKeep {
			if truthy(data[k]) && (newer || !truthy(existing[k])) {
				pd[k] = data[k]
			} else {
				pd[k] = existing[k]
			}
		}
		for _, k := range channeldataAny {
			pd[k] = truthy(data[k]) || truthy(existing[k])
		}
		subdirs, _ := existing["subdirs"].([]string)
		if !slices.Contains(subdirs, subdir) {
			subdirs = append(slices.Clone(subdirs), subdir)
			slices.Sort(subdirs)
		}
		pd["subdirs"] = subdirs
		runExports, ok := existing["run_exports"].(map[string]any)
		if !ok {
			runExports = map[string]any{}
		}
		if truthy(data["run_exports"]) {
			runExports[dataV] = data["run_exports"]
		}
		pd["run_exports"] = runExports
		// conda-index takes the later of this build's timestamp and one
		// it looks up where there is none: this build's, then.
		pd["timestamp"] = json.Number(strconv.FormatInt(seconds(data["timestamp"]), 10))
		packages[name] = pd
	}
	return nil
}

// numberLess reports whether JSON number a is less than b (a missing one
// is 0).
func numberLess(a, b any) bool {
	f := func(v any) float64 {
		if n, ok := v.(json.Number); ok {
			x, _ := n.Float64()
			return x
		}
		return 0
	}
	return f(a) < f(b)
}
