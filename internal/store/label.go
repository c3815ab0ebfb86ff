package store

import (
	"path"
	"regexp"
	"strings"
)

// Labels are sub-channels: "main" is the channel root, and any other
// label L lives in WRITE_DIR/label/L/<subdir>/, which is also its URL
// path (/label/L/...), the form anaconda.org users already type.
const (
	MainLabel = "main"
	// LabelDir is the folder of the labels other than main.
	LabelDir = "label"
)

var labelName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidLabel reports whether name is a label name.
func ValidLabel(name string) bool { return labelName.MatchString(name) }

// Dir returns the folder, relative to the channel root, of label's
// subdir: the subdir itself for main, label/L/<subdir> otherwise. It is
// also the key of that folder's index runs.
func Dir(label, subdir string) string {
	if label == MainLabel || label == "" {
		return subdir
	}
	return LabelDir + "/" + label + "/" + subdir
}

// SplitDir is the inverse of Dir.
func SplitDir(dir string) (label, subdir string) {
	if rest, ok := strings.CutPrefix(dir, LabelDir+"/"); ok {
		if l, sd, ok := strings.Cut(rest, "/"); ok {
			return l, sd
		}
		return rest, ""
	}
	return MainLabel, path.Clean(dir)
}
