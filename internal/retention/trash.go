package retention

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// Emptied is what a pass over the trash removed.
type Emptied struct {
	Days  int   // date folders removed
	Files int   // files in them
	Bytes int64 // their size (bytes another link still holds included)
}

// EmptyTrash removes the date folders of WRITE_DIR/.trash whose whole day
// (UTC) ended more than keep before now. Deletes and forced uploads keep
// the old bytes there so that a mistake can be undone; after keep they
// are gone for good. A crash in the middle leaves a folder partly
// removed, which the next pass finishes. Folders that are not dates are
// left alone.
func EmptyTrash(root string, keep time.Duration, now time.Time) (Emptied, error) {
	var e Emptied
	trash := filepath.Join(root, store.TrashDir)
	des, err := os.ReadDir(trash)
	if errors.Is(err, fs.ErrNotExist) {
		return e, nil
	}
	if err != nil {
		return e, err
	}
	for _, de := range des {
		day, err := time.Parse("2006-01-02", de.Name())
		if err != nil || !de.IsDir() || !day.Add(24*time.Hour+keep).Before(now) {
			continue
		}
		dir := filepath.Join(trash, de.Name())
		var got Emptied
		filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					got.Files++
					got.Bytes += fi.Size()
				}
			}
			return nil
		})
		if err := os.RemoveAll(dir); err != nil {
			return e, err
		}
		e.Days, e.Files, e.Bytes = e.Days+1, e.Files+got.Files, e.Bytes+got.Bytes
	}
	return e, nil
}
