package web

import (
	"cmp"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/condaversion"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
)

// Source is what the indexer holds: the pages are built from it and
// never read a package. *repodata.Writer implements it.
type Source interface {
	Dirs() []string
	Generation(dir string) uint64
	Each(dir string, fn func(repodata.Indexed))
	Lookup(dir, filename string) (repodata.Indexed, bool)
}

// dirInfo is one indexed directory: a label's subdir.
type dirInfo struct {
	label, subdir string
}

// path is the directory below the channel root.
func (d dirInfo) path() string {
	if d.label == mainLabel {
		return d.subdir
	}
	return "label/" + d.label + "/" + d.subdir
}

const mainLabel = "main"

// file is one package file in one directory, kept small: at 100,000
// packages the model must stay within a few tens of MiB. Name, version
// and build are slices of fn.
type file struct {
	fn      string
	mtime   int64 // Unix seconds
	size    int64
	dir     uint16
	v, b    uint16 // offsets of the version and build in fn
	removed bool
}

func (f *file) name() string    { return f.fn[:f.v-1] }
func (f *file) version() string { return f.fn[f.v : f.b-1] }

// pkgName is one package name: its files are model.files[lo:hi].
// Its summary is its newest version's; a token limited to labels or
// subdirs sees the summary of the newest version it may read, from
// newest, since another label's or subdir's build may say otherwise.
type pkgName struct {
	name    string
	summary string
	newest  []newest // the newest file of each directory, by directory
	lo, hi  int32
}

// newest is the newest version of a package name in one directory.
type newest struct {
	file    int32
	summary string
}

// model is the catalogue at one set of index generations. It is never
// changed once built; a new one replaces it after a run.
type model struct {
	gens   map[string]uint64
	dirs   []dirInfo
	files  []file // by name, then directory, then filename
	names  []pkgName
	recent []int32 // indices of files, newest first
	built  time.Time
}

// catalog keeps the current model, rebuilding it when a run has changed
// a directory. Summaries are kept by file between builds, so that a
// rebuild after one upload decodes one about.json, not every one.
type catalog struct {
	src Source

	mu        sync.Mutex
	cur       *model
	summaries map[string]string // "<dir>/<filename>" → summary
}

// get returns the current model, rebuilding it if the index changed.
func (c *catalog) get() *model {
	c.mu.Lock()
	defer c.mu.Unlock()
	dirs := c.src.Dirs()
	if c.cur != nil && len(dirs) == len(c.cur.gens) {
		same := true
		for _, d := range dirs {
			if g, ok := c.cur.gens[d]; !ok || g != c.src.Generation(d) {
				same = false
				break
			}
		}
		if same {
			return c.cur
		}
	}
	c.cur = c.build(dirs)
	return c.cur
}

// build reads every directory's packages from the source.
func (c *catalog) build(dirs []string) *model {
	m := &model{gens: map[string]uint64{}, built: time.Now()}
	for _, d := range dirs {
		di, ok := parseDir(d)
		if !ok {
			continue
		}
		m.gens[d] = c.src.Generation(d)
		idx := uint16(len(m.dirs))
		m.dirs = append(m.dirs, di)
		c.src.Each(d, func(p repodata.Indexed) {
			fn, err := condapkg.ParseFilename(p.Filename)
			if err != nil {
				return
			}
			v := len(fn.Name) + 1
			m.files = append(m.files, file{fn: p.Filename, mtime: p.Mtime.Unix(), size: p.Size, dir: idx,
				v: uint16(v), b: uint16(v + len(fn.Version) + 1), removed: p.Removed})
		})
	}
	slices.SortFunc(m.files, func(a, b file) int {
		return cmp.Or(strings.Compare(a.name(), b.name()), cmp.Compare(a.dir, b.dir), strings.Compare(a.fn, b.fn))
	})
	m.recent = make([]int32, len(m.files))
	for i := range m.recent {
		m.recent[i] = int32(i)
	}
	slices.SortStableFunc(m.recent, func(a, b int32) int { return cmp.Compare(m.files[b].mtime, m.files[a].mtime) })
	c.names(m)
	return m
}

// names groups the files by package name and finds each one's summary,
// from its newest version's about.json.
func (c *catalog) names(m *model) {
	keep := map[string]string{}
	// Each distinct version string is parsed once a build: a channel has
	// far fewer of them than files.
	parsed := map[string]condaversion.Version{}
	version := func(s string) condaversion.Version {
		v, ok := parsed[s]
		if !ok {
			v, _ = condaversion.Parse(s)
			parsed[s] = v
		}
		return v
	}
	summary := func(f *file) string {
		key := m.dirs[f.dir].path() + "/" + f.fn
		s, ok := c.summaries[key]
		if !ok {
			s = c.summary(m.dirs[f.dir].path(), f.fn)
		}
		keep[key] = s
		return s
	}
	for lo := 0; lo < len(m.files); {
		p := pkgName{name: m.files[lo].name(), lo: int32(lo)}
		var bestV condaversion.Version
		hi := lo
		// Files are by name, then directory: each run of one directory
		// gives that directory's newest.
		for hi < len(m.files) && m.files[hi].name() == p.name {
			dlo, dirBest, dirV := hi, hi, version(m.files[hi].version())
			for hi < len(m.files) && m.files[hi].name() == p.name && m.files[hi].dir == m.files[dlo].dir {
				if v := version(m.files[hi].version()); v.Compare(dirV) > 0 {
					dirBest, dirV = hi, v
				}
				hi++
			}
			s := summary(&m.files[dirBest])
			p.newest = append(p.newest, newest{file: int32(dirBest), summary: s})
			if dlo == lo || dirV.Compare(bestV) > 0 {
				p.summary, bestV = s, dirV
			}
		}
		p.hi = int32(hi)
		m.names = append(m.names, p)
		lo = hi
	}
	c.summaries = keep
}

func (c *catalog) summary(dir, fn string) string {
	p, ok := c.src.Lookup(dir, fn)
	if !ok {
		return ""
	}
	var a struct {
		Summary string `json:"summary"`
	}
	json.Unmarshal(p.Channel, &a)
	return clip(a.Summary, maxSummary)
}

// parseDir splits "linux-64" or "label/dev/linux-64".
func parseDir(d string) (dirInfo, bool) {
	if rest, ok := strings.CutPrefix(d, "label/"); ok {
		label, subdir, ok := strings.Cut(rest, "/")
		return dirInfo{label, subdir}, ok && condapkg.IsKnownSubdir(subdir)
	}
	return dirInfo{mainLabel, d}, condapkg.IsKnownSubdir(d)
}

// lookup returns the files of name.
func (m *model) lookup(name string) []file {
	i, ok := slices.BinarySearchFunc(m.names, name, func(p pkgName, n string) int { return strings.Compare(p.name, n) })
	if !ok {
		return nil
	}
	return m.files[m.names[i].lo:m.names[i].hi]
}
