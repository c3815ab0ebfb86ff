// Package record checks the fields of a repodata record, the JSON object
// that repodata.json lists for each package file, so that nothing the
// channel publishes stops a client from reading it.
//
// A record reaches repodata.json by two ways: a package's info/index.json
// (internal/condapkg) and an admin's patch instructions (internal/patch).
// Both must hold to one set of rules, so the rules live here, in a small
// package both import; neither imports the other.
//
// The rules are what the two readers that matter accept:
//
//   - rattler's PackageRecord (conda/rattler,
//     crates/rattler_conda_types/src/repo_data/mod.rs, with the serde
//     helpers of src/utils/serde.rs and src/no_arch_type.rs), used by
//     pixi, rattler-build and mamba 2. It deserialises the whole
//     repodata.json with serde, so one record of a wrong type makes the
//     whole subdir unreadable: "depends" must be a list of strings,
//     "build_number" and "size" a u64, "timestamp" an i64, "noarch" a
//     bool or "python"/"generic", "version" a parsable version, and so on.
//     serde_json also stops at a nesting depth of 128.
//   - conda's PackageRecord (conda/conda, conda/models/records.py), whose
//     fields are typed the same way (StringField, IntegerField,
//     ListField(str), _FeaturesField, NoarchField, TimestampField), and
//     whose SubdirData overwrites "fn", "url", "channel" and "schannel" with
//     what the channel says.
//
// Where the two differ, the stricter is taken. Keys neither knows are let
// through, as both ignore them, but with the same bounds on numbers and
// nesting as every other value.
package record

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/conda-upload-server/conda-upload-server/internal/condaversion"
)

// An Error names the field that is wrong and why, in one line.
type Error struct {
	Field  string
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("%q %s", e.Field, e.Reason) }

func fieldError(field, format string, args ...any) *Error {
	return &Error{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// MaxDepth bounds the nesting of any value in a record. serde_json stops
// at 128 levels, counted from the top of repodata.json, where a record
// sits three levels down; 32 leaves room and no real record comes near.
const MaxDepth = 32

// channelKeys are the keys a record never takes from a package or a
// patch: conda's SubdirData sets them from where it found the record
// (conda/core/subdir_data.py, _process_raw_repodata), and rattler builds
// the URL from the channel and the filename. A package naming another
// file or another channel in them could mislead any other reader. The
// index sets attestations_sha256 from the package's CEP 50 sidecar.
var channelKeys = []string{"fn", "url", "channel", "schannel", "attestations_sha256"}

// kind checks one field's value; null has been dealt with before.
type kind func(field string, v any) error

// fields are the keys both readers give a type, with the check of each
// and whether null is allowed (rattler's Option<...>).
var fields = map[string]struct {
	check    kind
	nullable bool
}{
	"name":                      {nonEmptyString, false},
	"version":                   {version, false},
	"build":                     {nonEmptyString, false},
	"build_number":              {uint64Field, false},
	"subdir":                    {nonEmptyString, false},
	"depends":                   {specList, false},
	"constrains":                {specList, false},
	"track_features":            {stringOrStrings, false},
	"features":                  {plainString, true},
	"arch":                      {plainString, true},
	"platform":                  {plainString, true},
	"license":                   {plainString, true},
	"license_family":            {plainString, true},
	"preferred_env":             {plainString, true},
	"date":                      {plainString, true},
	"package_type":              {plainString, true},
	"python_site_packages_path": {relativePath, true},
	"noarch":                    {noarch, true},
	"timestamp":                 {timestamp, true},
	"size":                      {uint64Field, true},
	"legacy_bz2_size":           {uint64Field, true},
	"md5":                       {hexDigest(32), true},
	"legacy_bz2_md5":            {hexDigest(32), true},
	"sha256":                    {hexDigest(64), true},
	"purls":                     {purls, true},
	"run_exports":               {runExports, true},
	"extra_depends":             {extraDepends, false},
	"flags":                     {stringList, false},
	"revoked":                   {boolean, false},
}

// required are the keys rattler's PackageRecord has no default for.
var required = []string{"name", "version", "build", "build_number"}

// Check checks a whole record, such as a package's index.json, decoded
// with json.Decoder.UseNumber. Keys are checked in order, so the error
// names the same field each time.
func Check(doc map[string]any) error {
	for _, k := range required {
		if _, ok := doc[k]; !ok {
			return fieldError(k, "is missing")
		}
	}
	for _, k := range slices.Sorted(maps.Keys(doc)) {
		if err := Field(k, doc[k]); err != nil {
			return err
		}
	}
	return nil
}

// fromFile are the keys a patch cannot set: they say which file a record
// is and how to check its download, so only the package file sets them.
// A patch that renamed a record, or changed its digest, would publish a
// package no one built, or one no client can verify.
var fromFile = []string{"name", "version", "build", "subdir", "md5", "sha256", "size", "legacy_bz2_md5", "legacy_bz2_size"}

// CheckFix checks the fields one patch instruction writes into a record
// (conda-index's merge_or_update_dict): each value as Field does, except
// that null removes a field, which only a required one refuses.
func CheckFix(fix map[string]any) error {
	for _, k := range slices.Sorted(maps.Keys(fix)) {
		v := fix[k]
		if slices.Contains(channelKeys, k) { // null too: a patch neither sets nor removes them
			return fieldError(k, "is set by the channel, never by a package or a patch")
		}
		if slices.Contains(fromFile, k) {
			return fieldError(k, "comes from the package file; a patch cannot set it")
		}
		if v == nil && slices.Contains(required, k) {
			return fieldError(k, "is required; a patch cannot remove it")
		}
		if v == nil {
			if err := caseTwin(k); err != nil {
				return err
			}
			continue
		}
		if err := Field(k, v); err != nil {
			return err
		}
	}
	return nil
}

// Nullable reports whether a record may hold null in key: false for the
// keys rattler reads as a list or a number with no Option around it.
func Nullable(key string) bool {
	f, ok := fields[key]
	return !ok || f.nullable
}

// CheckRunExports checks a package's info/run_exports.json, which the
// channel publishes in run_exports.json (CEP 12) and rattler reads as
// RunExportsJson.
func CheckRunExports(v any) error { return Field("run_exports", v) }

// Field checks one key and value of a record.
func Field(key string, v any) error {
	if slices.Contains(channelKeys, key) {
		return fieldError(key, "is set by the channel, never by a package or a patch")
	}
	if err := bounded(key, v, 0); err != nil {
		return err
	}
	if err := caseTwin(key); err != nil {
		return err
	}
	f, ok := fields[key]
	switch {
	case !ok:
		return nil
	case v == nil && f.nullable:
		return nil
	case v == nil:
		return fieldError(key, "must not be null")
	}
	return f.check(key, v)
}

// caseTwin refuses a key that is not a field but differs from one only
// in case, whatever its value, null included.
func caseTwin(key string) error {
	if _, ok := fields[key]; ok {
		return nil
	}
	if known, variant := caseVariant(key); variant {
		return fieldError(key, "differs from the field %q only in case; a reader that ignores case (as Go's encoding/json does) would take it for that field", known)
	}
	return nil
}

// bounded refuses a number no reader can hold (1e400 is infinite to a
// float64 and an error to serde_json) and nesting deeper than MaxDepth.
func bounded(field string, v any, depth int) error {
	if depth > MaxDepth {
		return fieldError(field, "is nested deeper than %d levels", MaxDepth)
	}
	switch v := v.(type) {
	case json.Number:
		if f, err := v.Float64(); err != nil || math.IsInf(f, 0) {
			return fieldError(field, "holds the number %.40s, which is out of range", v)
		}
	case map[string]any:
		for _, x := range v {
			if err := bounded(field, x, depth+1); err != nil {
				return err
			}
		}
	case []any:
		for _, x := range v {
			if err := bounded(field, x, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// typeName names a decoded JSON value's type for error messages.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// plainString is a string without control characters (NUL, newline):
// conda's StringField, rattler's String. Both would take control
// characters, but a record line with one is never what a build meant,
// and C readers (libsolv) end a string at NUL.
func plainString(field string, v any) error {
	s, ok := v.(string)
	if !ok {
		return fieldError(field, "must be a string, not %s", typeName(v))
	}
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return fieldError(field, "contains the control character %q", r)
	}
	return nil
}

func nonEmptyString(field string, v any) error {
	if err := plainString(field, v); err != nil {
		return err
	}
	if strings.TrimSpace(v.(string)) == "" {
		return fieldError(field, "must not be empty")
	}
	return nil
}

// version is a string that conda's VersionOrder parses; rattler's
// VersionWithSource parses it while reading repodata.json.
func version(field string, v any) error {
	if err := nonEmptyString(field, v); err != nil {
		return err
	}
	if _, err := condaversion.Parse(v.(string)); err != nil {
		return fieldError(field, "is not a conda version: %v", err)
	}
	return nil
}

func boolean(field string, v any) error {
	if _, ok := v.(bool); !ok {
		return fieldError(field, "must be true or false, not %s", typeName(v))
	}
	return nil
}

// integer parses a JSON number written as an integer: serde_json reads
// 1.0 and 1e3 as floats, which a u64 or i64 field refuses.
func integer(field string, v any, max uint64) (uint64, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, fieldError(field, "must be an integer, not %s", typeName(v))
	}
	if strings.HasPrefix(string(n), "-") {
		return 0, fieldError(field, "must not be negative")
	}
	u, err := strconv.ParseUint(string(n), 10, 64)
	if err != nil || u > max {
		return 0, fieldError(field, "must be an integer from 0 to %d, not %.40s", max, n)
	}
	return u, nil
}

// uint64Field is rattler's u64 (BuildNumber, size); conda's IntegerField.
func uint64Field(field string, v any) error {
	_, err := integer(field, v, math.MaxUint64)
	return err
}

// maxTimestamp is the last millisecond rattler's TimestampMs accepts: it
// reads an i64, as milliseconds above 253402300799 and as seconds below,
// into a jiff::Timestamp, whose range ends at 9999-12-30T22:00:00.999Z.
const maxTimestamp = 253402207200999

// timestamp is rattler's TimestampMs and conda's TimestampField (which
// takes a float, where rattler does not). A negative time is refused:
// no build ran before 1970.
func timestamp(field string, v any) error {
	_, err := integer(field, v, maxTimestamp)
	return err
}

// noarch is rattler's NoArchType: a bool (the legacy form) or "python" or
// "generic". Conda's NoarchType.coerce takes the same. The empty string,
// which recent rattler reads as false, older rattler refuses.
func noarch(field string, v any) error {
	switch v {
	case true, false, "python", "generic":
		return nil
	}
	return fieldError(field, `must be "python", "generic", true or false, not %s`, describe(v))
}

// describe quotes a short value for an error message.
func describe(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%.40q", s)
	}
	return typeName(v)
}

// hexDigest is rattler's SerializableHash: n hex digits.
func hexDigest(n int) kind {
	return func(field string, v any) error {
		s, ok := v.(string)
		if !ok || len(s) != n || strings.Trim(s, "0123456789abcdefABCDEF") != "" {
			return fieldError(field, "must be %d hex digits, not %s", n, describe(v))
		}
		return nil
	}
}

// stringList is a list of strings: rattler's Vec<String>, which refuses
// null, and conda's ListField(str).
func stringList(field string, v any) error {
	list, ok := v.([]any)
	if !ok {
		return fieldError(field, "must be a list of strings, not %s", typeName(v))
	}
	for i, x := range list {
		if err := plainString(fmt.Sprintf("%s[%d]", field, i), x); err != nil {
			return err
		}
	}
	return nil
}

// stringOrStrings is rattler's Features helper for track_features: a
// string of names split at commas and spaces, or a list of strings.
func stringOrStrings(field string, v any) error {
	if _, ok := v.(string); ok {
		return plainString(field, v)
	}
	if _, ok := v.([]any); ok {
		return stringList(field, v)
	}
	return fieldError(field, "must be a string or a list of strings, not %s", typeName(v))
}

// specList is depends or constrains: a list of match specs. rattler keeps
// them as strings and parses each (MatchSpec::from_str, lenient) only when
// it solves, where one it cannot parse fails the solve. The check here is
// the part every spec has: a package name first ("python >=3.9",
// "conda-forge::zlib", "__glibc >=2.17", "pkg[version='>=1']"), and no
// control characters.
func specList(field string, v any) error {
	if err := stringList(field, v); err != nil {
		return err
	}
	for i, x := range v.([]any) {
		if err := matchSpec(x.(string)); err != nil {
			return fieldError(fmt.Sprintf("%s[%d]", field, i), "%v", err)
		}
	}
	return nil
}

// matchSpec checks that s starts with a package name, after an optional
// channel and subdir ("conda-forge/linux-64::").
func matchSpec(s string) error {
	if strings.TrimSpace(s) != s || s == "" {
		return fmt.Errorf("%.40q is empty or has leading or trailing space", s)
	}
	rest := s
	if _, after, ok := strings.Cut(s, "::"); ok {
		rest = after
	}
	end := strings.IndexAny(rest, " =<>!~[")
	if end < 0 {
		end = len(rest)
	}
	name := rest[:end]
	if name == "" || strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-*") != "" {
		return fmt.Errorf("%.40q does not start with a package name", s)
	}
	return nil
}

// relativePath is python_site_packages_path (CEP 17): a path inside the
// environment, where conda and rattler put the python packages it
// installs, so it must stay inside: relative, with no "..".
func relativePath(field string, v any) error {
	if err := nonEmptyString(field, v); err != nil {
		return err
	}
	p := v.(string)
	if strings.HasPrefix(p, "/") || strings.Contains(p, "\\") || strings.Contains(p, ":") {
		return fieldError(field, "must be a relative path with forward slashes, not %.40q", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return fieldError(field, "must stay inside the environment, not %.40q", p)
		}
	}
	return nil
}

// purls is rattler's Option<BTreeSet<PackageUrl>> (CEP 63): a list of
// package URLs, each "pkg:type/name...".
func purls(field string, v any) error {
	if err := stringList(field, v); err != nil {
		return err
	}
	for i, x := range v.([]any) {
		s := x.(string)
		typ, _, ok := strings.Cut(strings.TrimPrefix(s, "pkg:"), "/")
		if !strings.HasPrefix(s, "pkg:") || !ok || typ == "" {
			return fieldError(fmt.Sprintf("%s[%d]", field, i), "must be a package URL (pkg:type/name), not %.40q", s)
		}
	}
	return nil
}

// runExportsKeys are rattler's RunExportsJson fields, each a list of
// match specs (conda-build's run_exports.json).
var runExportsKeys = []string{"weak", "strong", "noarch", "weak_constrains", "strong_constrains"}

func runExports(field string, v any) error {
	m, ok := v.(map[string]any)
	if !ok {
		return fieldError(field, "must be an object, not %s", typeName(v))
	}
	for _, k := range runExportsKeys {
		if x, ok := m[k]; ok {
			if err := specList(field+"."+k, x); err != nil {
				return err
			}
		}
	}
	return nil
}

// extraDepends is rattler's BTreeMap<String, Vec<String>> (conda's
// MapField): named groups of match specs.
func extraDepends(field string, v any) error {
	m, ok := v.(map[string]any)
	if !ok {
		return fieldError(field, "must be an object of lists, not %s", typeName(v))
	}
	for k, x := range m {
		if err := specList(field+"."+k, x); err != nil {
			return err
		}
	}
	return nil
}

// caseVariant reports the known field (or channel key) that key equals
// but for case. Such a key is refused rather than passed on as unknown:
// conda and rattler read keys exactly, but a reader that folds case
// would take "Depends" for "depends" and read a value that was never
// checked.
func caseVariant(key string) (string, bool) {
	for k := range fields {
		if strings.EqualFold(k, key) {
			return k, true
		}
	}
	for _, k := range channelKeys {
		if strings.EqualFold(k, key) {
			return k, true
		}
	}
	return "", false
}
