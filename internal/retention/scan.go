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

// Scan lists the package files of the folder dir (a label's subdir): the
// name, version and build from the filename, the build number from the
// folder's repodata.json where it lists the file, else from the build
// string's last number, as conda-build writes it ("py311_2").
func Scan(dir string) ([]File, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	numbers := buildNumbers(filepath.Join(dir, "repodata.json"))
	files := make([]File, 0, len(des))
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		fn, err := condapkg.ParseFilename(de.Name())
		if err != nil {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		n, ok := numbers[de.Name()]
		if !ok {
			n = trailingNumber(fn.Build)
		}
		files = append(files, File{Filename: de.Name(), Name: fn.Name, Version: fn.Version, Build: fn.Build, Number: n, Stored: fi.ModTime()})
	}
	return files, nil
}

// buildNumbers reads the build numbers of the packages a repodata.json
// lists. A missing or unreadable file gives none: the build strings then
// stand in.
func buildNumbers(path string) map[string]int {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	type rec struct {
		BuildNumber int `json:"build_number"`
	}
	var rd struct {
		Packages      map[string]rec `json:"packages"`
		PackagesConda map[string]rec `json:"packages.conda"`
	}
	if json.Unmarshal(b, &rd) != nil {
		return nil
	}
	out := make(map[string]int, len(rd.Packages)+len(rd.PackagesConda))
	for _, m := range []map[string]rec{rd.Packages, rd.PackagesConda} {
		for fn, r := range m {
			out[fn] = r.BuildNumber
		}
	}
	return out
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
