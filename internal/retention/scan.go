package retention

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
)

// Scan lists the package files of the folder dir (a label's subdir) that
// its index knows: the name, version and build from the filename, the
// build number from the folder's repodata.json, or, for a yanked file
// (listed in "removed" only), from the build string's last number, as
// conda-build writes it ("py311_2"). A file stored but not indexed yet is
// left for the pass after its index run, so that an upload is never
// removed before its answer says it is indexed. Without times, Stored
// is left zero, and no file is stat'ed.
func Scan(dir string, times bool) ([]File, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	numbers, removed := indexedFiles(filepath.Join(dir, "repodata.json"))
	files := make([]File, 0, len(des))
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		fn, err := condapkg.ParseFilename(de.Name())
		if err != nil {
			continue
		}
		n, ok := numbers[de.Name()]
		if !ok && !removed[de.Name()] {
			continue
		}
		if !ok {
			n = trailingNumber(fn.Build)
		}
		f := File{Filename: de.Name(), Name: fn.Name, Version: fn.Version, Build: fn.Build, Number: n}
		if times {
			fi, err := de.Info()
			if err != nil {
				continue // removed meanwhile
			}
			f.Stored = fi.ModTime()
		}
		files = append(files, f)
	}
	return files, nil
}

// indexedFiles reads the build numbers of the packages a repodata.json
// lists, and the files it lists as removed. A missing or unreadable file
// gives none.
func indexedFiles(path string) (map[string]int, map[string]bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil
	}
	if numbers, removed, ok := scanIndex(b); ok {
		return numbers, removed
	}
	numbers, removed, err := decodeIndex(b)
	if err != nil {
		return nil, nil
	}
	return numbers, removed
}

// decodeIndex reads what indexedFiles needs with encoding/json, for a
// document scanIndex gives up on.
func decodeIndex(b []byte) (map[string]int, map[string]bool, error) {
	type rec struct {
		BuildNumber int `json:"build_number"`
	}
	var rd struct {
		Packages      map[string]rec `json:"packages"`
		PackagesConda map[string]rec `json:"packages.conda"`
		Removed       []string       `json:"removed"`
	}
	if err := json.Unmarshal(b, &rd); err != nil {
		return nil, nil, err
	}
	out := make(map[string]int, len(rd.Packages)+len(rd.PackagesConda))
	for _, m := range []map[string]rec{rd.Packages, rd.PackagesConda} {
		for fn, r := range m {
			out[fn] = r.BuildNumber
		}
	}
	removed := make(map[string]bool, len(rd.Removed))
	for _, fn := range rd.Removed {
		removed[fn] = true
	}
	return out, removed, nil
}

// trailingNumber is the number after a build string's last underscore,
// or 0.
func trailingNumber(build string) int {
	n, err := strconv.Atoi(build[strings.LastIndexByte(build, '_')+1:])
	if err != nil || n < 0 {
		return 0
	}
	return n
}
