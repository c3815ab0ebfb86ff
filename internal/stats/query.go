package stats

// Total returns the number of downloads counted, of every file.
func (c *Counter) Total() uint64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// File returns the downloads of file ("<subdir>/<filename>").
func (c *Counter) File(file string) uint64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fileTot[file]
}

// Package returns the downloads of every file of package name.
func (c *Counter) Package(name string) uint64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pkgTot[name]
}

// Daily returns the downloads per day from from to to (both included):
// of package name, or of the whole channel if name is "".
func (c *Counter) Daily(name string, from, to Day) []uint64 {
	if c == nil || to < from {
		return nil
	}
	out := make([]uint64, to-from+1)
	c.mu.Lock()
	defer c.mu.Unlock()
	for d := from; d <= to; d++ {
		if name == "" {
			out[d-from] = c.dayTot[d]
		} else {
			out[d-from] = c.pkgDay[pkgDay{name, d}]
		}
	}
	return out
}

// Failures returns how many flushes have failed since the start.
func (c *Counter) Failures() uint64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failures
}

// Sum returns the downloads of files, in total and per day from from to
// to: the counts of what a token restricted to some labels or subdirs
// may see.
func (c *Counter) Sum(files []string, from, to Day) (total uint64, days []uint64) {
	if c == nil || to < from {
		return 0, nil
	}
	days = make([]uint64, to-from+1)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range files {
		total += c.fileTot[f]
		for d := from; d <= to; d++ {
			days[d-from] += c.fileDay[key{f, d}]
		}
	}
	return total, days
}
