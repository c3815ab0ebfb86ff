package daemon

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/audit"
	"github.com/conda-upload-server/conda-upload-server/internal/lifecycle"
	"github.com/conda-upload-server/conda-upload-server/internal/quota"
	"github.com/conda-upload-server/conda-upload-server/internal/retention"
)

// trashInterval is how often the trash is checked for days past
// trash_retention.
const trashInterval = time.Hour

// housekeeping is the retention pass and the trash emptying: one
// goroutine, woken by the index runs of labels a rule covers.
type housekeeping struct {
	pruner *retention.Pruner
	quota  *quota.Ledger

	mu   sync.Mutex
	dirs map[string]bool // folders to prune, nil for every one
	all  bool
	wake chan struct{}

	trashFiles, trashBytes atomic.Int64
}

// newHousekeeping sets up retention and the quotas before the scheduler,
// whose runs they follow. Removals are the admin API's crash-safe delete,
// audited.
func (d *daemon) newHousekeeping() {
	d.house = &housekeeping{dirs: map[string]bool{}, all: true, wake: make(chan struct{}, 1)}
	d.house.pruner = retention.New(retention.Options{
		Root: d.writeDir, Rules: d.cfg.RetentionRules(), Subdirs: d.cfg.AllowedSubdirs,
		Delete:  d.retentionDelete,
		Reindex: func(dir string) { d.sched.Request(dir) },
		Again:   func(dir string) { d.house.queue(dir) },
	})
	d.house.quota = quota.New(quota.Options{Root: d.writeDir, Subdirs: d.cfg.AllowedSubdirs,
		Labels: d.cfg.LabelLimits(), Uploaders: d.cfg.UploaderLimits()})
	d.metrics.Quotas(d.house.quota)
	d.metrics.Housekeeping(
		func() float64 { return float64(d.house.pruner.Removed()) },
		func() float64 { return float64(d.house.trashFiles.Load()) },
		func() float64 { return float64(d.house.trashBytes.Load()) })
}

// afterIndex has the label of dir counted again for its quota, and
// queues a retention pass of dir, after its index run.
func (h *housekeeping) afterIndex(dir string, err error) {
	h.quota.Changed(dir)
	if err != nil || h.pruner == nil || !h.pruner.Covers(dir) {
		return
	}
	h.queue(dir)
}

// queue asks for a retention pass of dir.
func (h *housekeeping) queue(dir string) {
	h.mu.Lock()
	h.dirs[dir] = true
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// startHousekeeping runs a pass over every label at start, then one after
// each index run of a covered label, and empties the trash hourly, until
// the daemon closes.
func (d *daemon) startHousekeeping(ctx context.Context) {
	ctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { d.house.run(ctx, d); close(done) }()
	d.onClose(func() { stop(); <-done })
}

func (h *housekeeping) run(ctx context.Context, d *daemon) {
	tick := time.NewTicker(trashInterval)
	defer tick.Stop()
	h.emptyTrash(d)
	for {
		h.prune(d)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			h.emptyTrash(d)
		case <-h.wake:
		}
	}
}

// prune runs the passes queued.
func (h *housekeeping) prune(d *daemon) {
	if h.pruner == nil {
		return
	}
	h.mu.Lock()
	var dirs []string
	if !h.all {
		for dir := range h.dirs {
			dirs = append(dirs, dir)
		}
		if len(dirs) == 0 {
			h.mu.Unlock()
			return
		}
	}
	h.all, h.dirs = false, map[string]bool{}
	h.mu.Unlock()
	removed, err := h.pruner.Prune(dirs...)
	if err != nil {
		d.log.Error("retention pass failed; the rest is tried again after the next index run", "err", err)
	}
	if len(removed) > 0 {
		d.log.Info("retention pass", "removed", len(removed))
	}
}

func (h *housekeeping) emptyTrash(d *daemon) {
	e, err := retention.EmptyTrash(d.writeDir, d.cfg.TrashRetention.D(), time.Now())
	h.trashFiles.Add(int64(e.Files))
	h.trashBytes.Add(e.Bytes)
	if err != nil {
		d.log.Error("cannot empty the trash", "err", err)
	}
	if e.Days > 0 {
		d.log.Info("trash emptied", "days", e.Days, "files", e.Files, "bytes", e.Bytes, "trash_retention", d.cfg.TrashRetention.D())
	}
}

// retentionDelete removes one file as the admin API's delete does, and
// audits it as the call "retention". A file gone meanwhile is no error.
func (d *daemon) retentionDelete(r retention.Removal) error {
	start := time.Now()
	del, err := d.lifecycle.Delete(r.Label, r.Subdir, r.Filename)
	if errors.Is(err, lifecycle.ErrNoPackage) {
		return nil
	}
	rec := audit.Record{Time: start.UTC(), Remote: "retention", Token: "retention", Filename: r.Filename, Label: r.Label, Subdir: r.Subdir,
		SHA256: del.SHA256, Status: 200, Result: "deleted", Replaced: del.Trash, Call: "retention", Reason: r.Reason}
	if err != nil {
		rec.Status, rec.Result, rec.Error = 500, "internal_error", err.Error()
	}
	if aerr := d.auditLog.Record(rec); aerr != nil {
		d.log.Error("audit record not written", "err", aerr)
	}
	if err == nil {
		d.log.Warn("package removed by retention", "label", r.Label, "subdir", r.Subdir, "filename", r.Filename, "reason", r.Reason, "trash", del.Trash)
	}
	return err
}
