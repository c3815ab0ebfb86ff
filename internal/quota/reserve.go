package quota

import "time"

// Reservation is an upload's share of the quotas, held from before its
// package is published.
type Reservation struct {
	l          *Ledger
	label, who string
	amount     amount // of the label's quota
	size       int64  // of the uploader's
	date       string
	done       bool
}

// Reserve takes size bytes and one file of label's quota, and size bytes
// of who's (a token's name) bytes for today, or returns a *LabelFull or
// *DailyExceeded error naming the quota and the usage. A nil Ledger
// reserves nothing.
func (l *Ledger) Reserve(label, who string, size int64) (*Reservation, error) {
	if l == nil {
		return nil, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r := &Reservation{l: l, label: label, who: who, date: l.o.Now().UTC().Format(time.DateOnly)}
	u, d, err := l.check(label, who, size, r.date)
	if err != nil {
		return nil, err
	}
	if d != nil {
		d.bytes += size
		r.size = size
	}
	if u != nil {
		r.amount = amount{size, 1}
		u.inflight.add(r.amount)
	}
	return r, nil
}

// Check returns the error Reserve would, and reserves nothing: an upload
// whose size its request says is refused before its body is read.
func (l *Ledger) Check(label, who string, size int64) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _, err := l.check(label, who, size, l.o.Now().UTC().Format(time.DateOnly))
	return err
}

// check checks size bytes and a file against label's and who's quotas on
// date, and returns the usages they count against (nil for no quota).
func (l *Ledger) check(label, who string, size int64, date string) (*usage, *day, error) {
	var u *usage
	if q, ok := l.labelLimit(label); ok {
		u = l.labelUsage(label)
		used := u.total()
		if q.MaxBytes > 0 && used.bytes+size > q.MaxBytes {
			return nil, nil, &LabelFull{Label: label, What: "bytes", Quota: q.MaxBytes, Used: used.bytes, Added: size}
		}
		if q.MaxFiles > 0 && used.files+1 > q.MaxFiles {
			return nil, nil, &LabelFull{Label: label, What: "files", Quota: q.MaxFiles, Used: used.files, Added: 1}
		}
	}
	var d *day
	if q, ok := l.uploaderLimit(who); ok {
		d = l.today(who, date)
		if d.bytes+size > q.BytesPerDay {
			reset, _ := time.Parse(time.DateOnly, date)
			return nil, nil, &DailyExceeded{Name: who, Quota: q.BytesPerDay, Used: d.bytes, Added: size, Reset: reset.Add(24 * time.Hour)}
		}
	}
	return u, d, nil
}

// labelUsage returns label's usage, counting it from the disk if it
// changed since.
func (l *Ledger) labelUsage(label string) *usage {
	u, ok := l.labels[label]
	if !ok {
		u = &usage{}
		l.labels[label] = u
	}
	if !u.counted {
		u.disk, u.stored, u.counted = l.count(label), amount{}, true
	}
	return u
}

// today returns who's count of date, starting a new one on a new day.
func (l *Ledger) today(who, date string) *day {
	d, ok := l.days[who]
	if !ok || d.date != date {
		d = &day{date: date}
		l.days[who] = d
	}
	return d
}

// Stored settles the reservation of an upload whose package was stored:
// the label's share counts as stored until the label is counted again,
// and the day's bytes stay.
func (r *Reservation) Stored() { r.settle(true) }

// Release gives the reservation back: the upload failed, or stored
// nothing new.
func (r *Reservation) Release() { r.settle(false) }

// settle ends the reservation once; a nil Reservation does nothing.
func (r *Reservation) settle(stored bool) {
	if r == nil || r.done {
		return
	}
	r.done = true
	l := r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if u, ok := l.labels[r.label]; ok {
		u.inflight.sub(r.amount)
		if stored {
			u.stored.add(r.amount)
		}
	}
	if d, ok := l.days[r.who]; ok && d.date == r.date && !stored {
		d.bytes -= r.size
	}
}
