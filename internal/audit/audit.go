// Package audit keeps one record per upload attempt or admin change,
// accepted or refused: who (address, and the token's name or the CI job's
// OIDC identity, never the token), what (filename, label, subdir, size,
// sha256, the upload protocol, where replaced bytes were kept, and an
// admin call with its target and reason) and the outcome.
//
// To a file, each record is one JSON line, appended and fsynced before the
// response is sent, so that the log survives a crash of the server or the
// host: a record is never lost for an upload the client saw succeed. The
// file is opened with O_APPEND, so logrotate's copytruncate works; SIGHUP
// reopens it for rotation schemes that rename it. Without a file, records
// go to the service log (the journal under systemd) as "audit" lines.
package audit

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Record is one upload attempt or admin change.
type Record struct {
	Time     time.Time `json:"time"`
	Remote   string    `json:"remote"`
	Token    string    `json:"token,omitempty"`
	Filename string    `json:"filename,omitempty"`
	// Label is the label uploaded to or changed ("main" is the root).
	Label  string `json:"label,omitempty"`
	Subdir string `json:"subdir,omitempty"`
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Status int    `json:"status"`
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
	// Protocol is how the package came: form (POST /), quetz, prefix or
	// artifactory.
	Protocol string `json:"protocol,omitempty"`
	// Replaced is where the bytes of a package replaced by a forced
	// upload were kept, below the channel root.
	Replaced string `json:"replaced,omitempty"`
	// OIDC is the CI job that uploaded with its OIDC identity.
	OIDC *OIDC `json:"oidc,omitempty"`
	// Call is the admin API call (copy, move, yank, unyank, delete,
	// patch-put, patch-delete); To is a copy's or move's target label,
	// and Reason a yank's.
	Call   string `json:"call,omitempty"`
	To     string `json:"to,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Package is the package name of an admin call on its owners, whose
	// owner is To.
	Package string `json:"package,omitempty"`
}

// OIDC is a trusted publisher's identity in an audit record.
type OIDC struct {
	Publisher  string `json:"publisher"`
	Repository string `json:"repository,omitempty"`
	Ref        string `json:"ref,omitempty"`
	SHA        string `json:"sha,omitempty"`
}

// Log writes records.
type Log struct {
	path string
	log  *slog.Logger

	mu sync.Mutex
	f  *os.File
}

// Open opens (creating it if needed) the audit file at path, or, with an
// empty path, returns a Log that writes to log.
func Open(path string, log *slog.Logger) (*Log, error) {
	l := &Log{path: path, log: log}
	if path == "" {
		return l, nil
	}
	if err := l.Reopen(); err != nil {
		return nil, err
	}
	return l, nil
}

// Reopen reopens the file, for log rotation.
func (l *Log) Reopen() error {
	if l.path == "" {
		return nil
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Record writes one record durably.
func (l *Log) Record(r Record) error {
	if l == nil {
		return nil
	}
	if l.path == "" {
		l.log.Info("audit", "remote", r.Remote, "token", r.Token, "filename", r.Filename, "subdir", r.Subdir,
			"size", r.Size, "sha256", r.SHA256, "status", r.Status, "result", r.Result, "error", r.Error)
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.Write(b); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	return nil
}

// Close closes the file.
func (l *Log) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	return l.f.Close()
}
