package owners

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"slices"

	"github.com/conda-upload-server/conda-upload-server/internal/audit"
)

// The admin calls on owners, as the audit log's call names them.
const (
	CallAdd      = "owners-add"
	CallRemove   = "owners-remove"
	CallTransfer = "owners-transfer"
	// CallClaim is an upload's claim of a new name (with first-upload),
	// audited before the package is stored.
	CallClaim = "owners-claim"
)

// Event is one change of a name's owners: an admin call, or (replayed
// from the audit log) an upload's claim.
type Event struct {
	Call  string // CallAdd, CallRemove, CallTransfer
	Name  string
	Owner string
}

// next returns the owners after e, from cur.
func (e Event) next(cur []string) []string {
	switch e.Call {
	case CallAdd:
		if slices.Contains(cur, e.Owner) {
			return cur
		}
		return append(slices.Clone(cur), e.Owner)
	case CallRemove:
		return slices.DeleteFunc(slices.Clone(cur), func(o string) bool { return o == e.Owner })
	case CallTransfer:
		return []string{e.Owner}
	case CallClaim:
		if len(cur) > 0 {
			return cur
		}
		return []string{e.Owner}
	}
	return cur
}

func (s *Store) apply(e Event) {
	key := Fold(e.Name)
	if next := e.next(s.m[key]); len(next) > 0 {
		s.m[key] = next
	} else {
		delete(s.m, key)
	}
}

// FromAudit reads the owner changes in the audit log at path, in order:
// every claim and every successful admin call on owners. A claim is
// audited before its package is stored, so a package stored is never
// left without its owner. A missing log (or no path: the log goes to the
// journal) gives none.
func FromAudit(path string) ([]Event, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("owners: rebuild from the audit log: %w", err)
	}
	defer f.Close()
	var out []Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r audit.Record
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue // a line torn by a crash
		}
		if e, ok := eventOf(r); ok {
			out = append(out, e)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("owners: rebuild from the audit log: %w", err)
	}
	return out, nil
}

// eventOf is the owner change an audit record says happened, if any.
func eventOf(r audit.Record) (Event, bool) {
	switch r.Call {
	case CallAdd, CallRemove, CallTransfer, CallClaim:
		ok := r.Status == http.StatusOK && r.Package != "" && r.To != ""
		return Event{Call: r.Call, Name: r.Package, Owner: r.To}, ok
	}
	return Event{}, false
}
