// Package pkgtest builds synthetic conda packages for tests and benchmarks:
// real archives in both formats, with whatever index.json, extra members
// or payload a test needs, including deliberately broken ones.
//
// Go has no bzip2 encoder, so .tar.bz2 packages are compressed by the
// bzip2 program (Debian's bzip2 package).
package pkgtest

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"log"
	"math/rand/v2"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
)

// T is the part of testing.TB the builders use, so that programs outside
// tests (the end-to-end and benchmark scripts' package generator) can use
// them too.
type T interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// Exit is a T for programs (the package generator, the load generator):
// a failure is logged and ends the program.
type Exit struct{}

// Helper implements T.
func (Exit) Helper() {}

// Fatal implements T.
func (Exit) Fatal(args ...any) { log.Fatal(args...) }

// Fatalf implements T.
func (Exit) Fatalf(format string, args ...any) { log.Fatalf(format, args...) }

// Member is one tar member.
type Member struct {
	Name     string
	Data     []byte
	Typeflag byte   // tar.TypeReg if zero
	Linkname string // for links
}

// Spec describes a package.
type Spec struct {
	Name, Version, Build, Subdir string
	// Index overrides or adds index.json keys; a nil value deletes one.
	Index map[string]any
	// RawIndex, if set, replaces index.json entirely.
	RawIndex []byte
	// Info are extra info/ members, written after index.json.
	Info []Member
	// Payload are members outside info/.
	Payload []Member
	// OmitIndex leaves info/index.json out.
	OmitIndex bool
}

// Stem returns name-version-build.
func (s Spec) Stem() string { return s.Name + "-" + s.Version + "-" + s.Build }

// Simple returns a Spec for a small valid package.
func Simple(name, version, build, subdir string) Spec {
	return Spec{
		Name: name, Version: version, Build: build, Subdir: subdir,
		Info:    []Member{{Name: "info/paths.json", Data: []byte(`{"paths":[{"_path":"lib/x.txt","path_type":"hardlink"}],"paths_version":1}`)}},
		Payload: []Member{{Name: "lib/x.txt", Data: []byte("hello " + name + "\n")}},
	}
}

// IndexJSON returns the package's info/index.json.
func (s Spec) IndexJSON() []byte {
	if s.RawIndex != nil {
		return s.RawIndex
	}
	doc := map[string]any{
		"name": s.Name, "version": s.Version, "build": s.Build, "subdir": s.Subdir,
		"build_number": 0, "depends": []string{}, "license": "BSD-3-Clause", "timestamp": 1700000000000,
	}
	for k, v := range s.Index {
		if v == nil {
			delete(doc, k)
		} else {
			doc[k] = v
		}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	return b
}

func (s Spec) infoMembers() []Member {
	var ms []Member
	if !s.OmitIndex {
		ms = append(ms, Member{Name: "info/index.json", Data: s.IndexJSON()})
	}
	return append(ms, s.Info...)
}

// Tar returns an uncompressed tar of the members.
func Tar(t T, members ...Member) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		h := &tar.Header{Name: m.Name, Mode: 0o644, Size: int64(len(m.Data)), Typeflag: m.Typeflag, Linkname: m.Linkname, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(m.Data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Bzip2 compresses data with the bzip2 program.
func Bzip2(t T, data []byte) []byte {
	t.Helper()
	cmd := exec.Command("bzip2", "-c", "-1")
	cmd.Stdin = bytes.NewReader(data)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bzip2: %v: %s", err, stderr.Bytes())
	}
	return out.Bytes()
}

// Zstd compresses data.
func Zstd(t T, data []byte) []byte {
	t.Helper()
	// One goroutine and a small window: test packages are small, and a
	// default encoder costs milliseconds to set up, which dominated the
	// time to build the 100,000 packages of the scale benchmarks.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20), zstd.WithLowerEncoderMem(true))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(data, nil)
}

// TarBz2 builds a .tar.bz2 package: info/ first, then the payload.
func TarBz2(t T, s Spec) []byte {
	t.Helper()
	return Bzip2(t, Tar(t, append(s.infoMembers(), s.Payload...)...))
}

// ZipEntry is one member of a .conda zip.
type ZipEntry struct {
	Name string
	Data []byte
	// Deflate compresses the member; conda stores them.
	Deflate bool
}

// CondaEntries returns the standard zip entries of a .conda package:
// metadata.json, pkg-<stem>.tar.zst, info-<stem>.tar.zst (conda-package-
// handling's order).
func CondaEntries(t T, s Spec) []ZipEntry {
	t.Helper()
	return []ZipEntry{
		{Name: "metadata.json", Data: []byte(`{"conda_pkg_format_version": 2}`)},
		{Name: "pkg-" + s.Stem() + ".tar.zst", Data: Zstd(t, Tar(t, s.Payload...))},
		{Name: "info-" + s.Stem() + ".tar.zst", Data: Zstd(t, Tar(t, s.infoMembers()...))},
	}
}

// Zip writes the entries, stored uncompressed unless marked Deflate.
func Zip(t T, entries ...ZipEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		method := zip.Store
		if e.Deflate {
			method = zip.Deflate
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.Name, Method: method})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Conda builds a .conda package.
func Conda(t T, s Spec) []byte {
	t.Helper()
	return Zip(t, CondaEntries(t, s)...)
}

// Build builds the package in the format its extension names.
func Build(t T, s Spec, ext string) []byte {
	t.Helper()
	switch ext {
	case ".conda":
		return Conda(t, s)
	case ".tar.bz2":
		return TarBz2(t, s)
	}
	panic(fmt.Sprintf("pkgtest: unknown extension %q", ext))
}

// A Builder builds many .conda packages with one zstd encoder. Setting up
// an encoder costs far more than compressing a small package, so this is
// what makes the 100,000 packages of the scale benchmarks quick to build.
// It is not safe for concurrent use.
type Builder struct{ enc *zstd.Encoder }

// NewBuilder returns a Builder.
func NewBuilder(t T) *Builder {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	return &Builder{enc: enc}
}

// Conda builds a .conda package, as Conda does.
func (b *Builder) Conda(t T, s Spec) []byte {
	t.Helper()
	return Zip(t,
		ZipEntry{Name: "metadata.json", Data: []byte(`{"conda_pkg_format_version": 2}`)},
		ZipEntry{Name: "pkg-" + s.Stem() + ".tar.zst", Data: b.enc.EncodeAll(Tar(t, s.Payload...), nil)},
		ZipEntry{Name: "info-" + s.Stem() + ".tar.zst", Data: b.enc.EncodeAll(Tar(t, s.infoMembers()...), nil)},
	)
}

// Close releases the encoder.
func (b *Builder) Close() { b.enc.Close() }

// Progress collects a child process's output and tells when its first
// line arrived, so that a crash test kills the child only once it has
// done some work, however slow the machine (or the race detector) is.
type Progress struct {
	mu    sync.Mutex
	b     bytes.Buffer
	first chan struct{}
	once  sync.Once
}

// NewProgress returns an empty Progress.
func NewProgress() *Progress { return &Progress{first: make(chan struct{})} }

// Write implements io.Writer.
func (p *Progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.b.Write(b)
	if bytes.IndexByte(b, '\n') >= 0 {
		p.once.Do(func() { close(p.first) })
	}
	return len(b), nil
}

// First is closed when the first line has arrived.
func (p *Progress) First() <-chan struct{} { return p.first }

// String returns what was written.
func (p *Progress) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.b.String()
}

// KillAfterProgress runs cmd, a child that prints a line each time it
// has done some work, and kills it with SIGKILL at a moment drawn from
// [0, maxDelay) after its first line: the shape every crash test here
// shares. It returns what the child printed on standard output, or an
// error (with the child's standard error) if it printed nothing within
// two minutes or ended before the kill.
func KillAfterProgress(cmd *exec.Cmd, rng *rand.Rand, maxDelay time.Duration) (string, error) {
	var stderr bytes.Buffer
	stdout := NewProgress()
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	if err := cmd.Start(); err != nil {
		return "", err
	}
	select {
	case <-stdout.First():
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		cmd.Wait()
		return "", fmt.Errorf("the child did no work in 2 minutes\n%s", stderr.String())
	}
	time.Sleep(time.Duration(rng.Int64N(int64(maxDelay))))
	cmd.Process.Signal(syscall.SIGKILL)
	err := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		return "", fmt.Errorf("the child ended by itself: %v\n%s", err, stderr.String())
	}
	return stdout.String(), nil
}
