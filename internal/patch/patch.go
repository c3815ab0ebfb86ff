// Package patch reads and applies repodata patch instructions, the
// patch_instructions.json of conda-index, so that a wrong dependency can be
// fixed, or a broken build hidden, without rebuilding or deleting a
// package.
//
// The format and its meaning are conda-index's (_apply_instructions and
// utils.merge_or_update_dict), because channels already keep such files
// and conda-index, when it is the indexer, applies the same file:
//
//   - "packages" maps a filename to fields that replace the record's:
//     lists replace lists, objects merge key by key, and null removes a
//     field. Only filenames already in the index are touched. An
//     instruction for x.tar.bz2 also applies to x.conda;
//   - "packages.conda" does the same for .conda files only, after that;
//   - "revoke" marks records revoked and adds the unsatisfiable
//     dependency package_has_been_revoked;
//   - "remove" takes records out of the index and lists their filenames
//     in "removed"; the files stay downloadable, so lock files that pin
//     them still install.
//
// A revoke or remove of x.tar.bz2 also applies to x.conda.
package patch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/conda-upload-server/conda-upload-server/internal/record"
)

// FileName is the name of the instructions file in a subdir, where
// conda-index looks for it too.
const FileName = "patch_instructions.json"

// Revoked is the dependency a revoked record gets, which no package
// provides.
const Revoked = "package_has_been_revoked"

// Instructions are one subdir's patch instructions.
type Instructions struct {
	Version       int                       `json:"patch_instructions_version"`
	Packages      map[string]map[string]any `json:"packages,omitempty"`
	PackagesConda map[string]map[string]any `json:"packages.conda,omitempty"`
	Revoke        []string                  `json:"revoke,omitempty"`
	Remove        []string                  `json:"remove,omitempty"`
}

// MaxSize bounds instructions sent to the admin API, in bytes. Reading
// and planning them is linear in their size, and the index run of every
// upload to the subdir pays it again (BenchmarkApply: a 24 MiB patch took
// 19 s to apply and slowed uploads from 0.05 s to 1.6 s). 2 MiB holds
// some 20,000 fixes of a few dependencies each, more than a private
// channel's subdir has packages.
const MaxSize = 2 << 20

// ErrTooLarge is the error of instructions over MaxSize.
var ErrTooLarge = fmt.Errorf("patch instructions: larger than %d bytes", MaxSize)

// Parse reads instructions. With strict, as for instructions sent to the
// admin API, unknown top-level keys, a version other than 1 and a size
// over MaxSize are errors; otherwise, as conda-index does with a file it
// finds, they are ignored. Either way every field a fix writes must be
// one a client can read (record.CheckFix), since it lands in
// repodata.json.
func Parse(b []byte, strict bool) (*Instructions, error) {
	if strict && len(b) > MaxSize {
		return nil, ErrTooLarge
	}
	if !utf8.Valid(b) {
		return nil, errors.New("patch instructions: not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // keep numbers exactly as written
	if strict {
		dec.DisallowUnknownFields()
	}
	var in Instructions
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("patch instructions: %w", err)
	}
	if dec.More() {
		return nil, errors.New("patch instructions: more than one JSON value")
	}
	if strict && in.Version != 1 {
		return nil, fmt.Errorf("patch instructions: patch_instructions_version must be 1, got %d", in.Version)
	}
	for _, fns := range [][]string{in.Revoke, in.Remove, slices.Collect(maps.Keys(in.Packages)), slices.Collect(maps.Keys(in.PackagesConda))} {
		for _, fn := range fns {
			if fn == "" || strings.ContainsAny(fn, "/\\\x00") {
				return nil, fmt.Errorf("patch instructions: %q is not a package filename", fn)
			}
		}
	}
	for fn, fix := range in.PackagesConda {
		if !strings.HasSuffix(fn, ".conda") {
			return nil, fmt.Errorf(`patch instructions: "packages.conda" names %q, which is not a .conda file`, fn)
		}
		if fix == nil {
			return nil, fmt.Errorf("patch instructions: the fix of %q is null", fn)
		}
	}
	for fn, fix := range in.Packages {
		if fix == nil {
			return nil, fmt.Errorf("patch instructions: the fix of %q is null", fn)
		}
	}
	for _, fixes := range []map[string]map[string]any{in.Packages, in.PackagesConda} {
		for _, fn := range slices.Sorted(maps.Keys(fixes)) {
			if err := record.CheckFix(fixes[fn]); err != nil {
				return nil, fmt.Errorf("patch instructions: %s: %w", fn, err)
			}
		}
	}
	return &in, nil
}

// Marshal encodes instructions compactly with sorted keys.
func (in *Instructions) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(in); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Empty reports whether the instructions change nothing.
func (in *Instructions) Empty() bool {
	return in == nil || len(in.Packages)+len(in.PackagesConda)+len(in.Revoke)+len(in.Remove) == 0
}

// fix is what a plan does to one file.
type fix struct {
	merges  []map[string]any
	revoke  bool
	removed bool
}

// Plan is instructions resolved per filename, for applying them to many
// records.
type Plan struct {
	fixes map[string]*fix
}

// twin returns the .conda name of a .tar.bz2 filename, or "".
func twin(fn string) string {
	if stem, ok := strings.CutSuffix(fn, ".tar.bz2"); ok {
		return stem + ".conda"
	}
	return ""
}

// Plan resolves the instructions into what happens to each filename, in
// conda-index's order: the packages fixes (also to the .conda twin), the
// packages.conda fixes, revokes, then removals.
func (in *Instructions) Plan() *Plan {
	p := &Plan{fixes: map[string]*fix{}}
	if in.Empty() {
		return p
	}
	get := func(fn string) *fix {
		f, ok := p.fixes[fn]
		if !ok {
			f = &fix{}
			p.fixes[fn] = f
		}
		return f
	}
	for _, fn := range slices.Sorted(maps.Keys(in.Packages)) {
		if strings.HasSuffix(fn, ".tar.bz2") {
			get(fn).merges = append(get(fn).merges, in.Packages[fn])
		}
		// conda-index applies the .tar.bz2 fixes to packages.conda
		// under the .conda name (a name that is not a .tar.bz2 keeps
		// itself, and so matches a .conda of that very name).
		name := fn
		if t := twin(fn); t != "" {
			name = t
		}
		if strings.HasSuffix(name, ".conda") {
			get(name).merges = append(get(name).merges, in.Packages[fn])
		}
	}
	for _, fn := range slices.Sorted(maps.Keys(in.PackagesConda)) {
		get(fn).merges = append(get(fn).merges, in.PackagesConda[fn])
	}
	for _, fn := range in.Revoke {
		get(fn).revoke = true
		if t := twin(fn); t != "" {
			get(t).revoke = true
		}
	}
	for _, fn := range in.Remove {
		get(fn).removed = true
		if t := twin(fn); t != "" {
			get(t).removed = true
		}
	}
	return p
}

// Len returns the number of filenames the plan touches.
func (p *Plan) Len() int {
	if p == nil {
		return 0
	}
	return len(p.fixes)
}

// Removed reports whether the plan takes filename out of the index.
func (p *Plan) Removed(filename string) bool {
	if p == nil {
		return false
	}
	f, ok := p.fixes[filename]
	return ok && f.removed
}

// Apply returns the record of filename as patched, and whether the plan
// removes it from the index (conda-index lists it in "removed" then).
// A record the plan does not touch is returned as it is.
func (p *Plan) Apply(filename string, record json.RawMessage) (json.RawMessage, bool, error) {
	if p == nil {
		return record, false, nil
	}
	f, ok := p.fixes[filename]
	if !ok {
		return record, false, nil
	}
	if f.removed {
		return nil, true, nil
	}
	if len(f.merges) == 0 && !f.revoke {
		return record, false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(record))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, false, fmt.Errorf("patch %s: decode record: %w", filename, err)
	}
	for _, m := range f.merges {
		merge(doc, m)
	}
	if f.revoke {
		doc["revoked"] = true
		deps, _ := doc["depends"].([]any)
		doc["depends"] = append(slices.Clone(deps), Revoked)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, false, fmt.Errorf("patch %s: %w", filename, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), false, nil
}

// merge is merge_or_update_dict(base, fix, merge=False) below the top
// level: objects merge key by key, lists and scalars replace, and null
// removes a key that is there (and sets one that is not to null, as
// conda-index does, except for a record's field that cannot be null,
// such as depends, where rattler would refuse the whole repodata.json).
func merge(base, fix map[string]any) {
	mergeAt(base, fix, true)
}

func mergeAt(base, fix map[string]any, top bool) {
	for k, v := range fix {
		switch v := v.(type) {
		case map[string]any:
			b, ok := base[k].(map[string]any)
			if !ok {
				b = map[string]any{}
				base[k] = b
			}
			mergeAt(b, v, false)
		case []any:
			base[k] = deepCopy(v)
		case nil:
			if _, ok := base[k]; ok {
				delete(base, k)
			} else if !top || record.Nullable(k) {
				base[k] = nil
			}
		default:
			base[k] = v
		}
	}
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = deepCopy(x)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, x := range v {
			s[i] = deepCopy(x)
		}
		return s
	}
	return v
}
