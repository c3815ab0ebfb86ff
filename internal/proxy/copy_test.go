package proxy

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"
)

// failAfter accepts max bytes, then fails.
type failAfter struct {
	bytes.Buffer
	max int
}

var errWrite = errors.New("write failed")

func (f *failAfter) Write(b []byte) (int, error) {
	if f.Len()+len(b) > f.max {
		return 0, errWrite
	}
	return f.Buffer.Write(b)
}

func TestCopyAhead(t *testing.T) {
	data := make([]byte, 3*aheadSize+12345)
	rand.NewChaCha8([32]byte{1}).Read(data)
	errRead := errors.New("read failed")
	for _, tc := range []struct {
		name      string
		src       io.Reader
		dstMax    int
		noClient  bool
		wantN     int
		wantErr   error
		wantBytes int // what dst and the client both hold
	}{
		{name: "all, to a client", src: bytes.NewReader(data), wantN: len(data), wantBytes: len(data)},
		{name: "all, no client", src: bytes.NewReader(data), noClient: true, wantN: len(data), wantBytes: len(data)},
		{name: "one buffer exactly", src: bytes.NewReader(data[:aheadSize]), wantN: aheadSize, wantBytes: aheadSize},
		{name: "empty", src: bytes.NewReader(nil)},
		{name: "the source fails", src: io.MultiReader(bytes.NewReader(data[:aheadSize+100]), iotest.ErrReader(errRead)),
			wantN: aheadSize + 100, wantErr: errRead, wantBytes: aheadSize + 100},
		{name: "dst fails", src: bytes.NewReader(data), dstMax: aheadSize + 1,
			wantN: aheadSize, wantErr: errWrite, wantBytes: aheadSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := &failAfter{max: len(data)}
			if tc.dstMax > 0 {
				dst.max = tc.dstMax
			}
			var client *bytes.Buffer
			var w io.Writer
			if !tc.noClient {
				client = new(bytes.Buffer)
				w = client
			}
			n, err := ahead{dst: dst, client: w}.copy(tc.src)
			if n != int64(tc.wantN) || !errors.Is(err, tc.wantErr) {
				t.Fatalf("copy = %d, %v; want %d, %v", n, err, tc.wantN, tc.wantErr)
			}
			// An error of dst, the cache's, is the proxy's own.
			if local := errors.As(err, new(localError)); local != (tc.wantErr == errWrite) {
				t.Errorf("copy's error %v is local: %v", err, local)
			}
			if !bytes.Equal(dst.Bytes(), data[:tc.wantBytes]) {
				t.Errorf("dst holds %d bytes, want the first %d of the source", dst.Len(), tc.wantBytes)
			}
			// Read with no lock: the race detector says if the client
			// were still being written to after copyAhead returned.
			if client != nil && !bytes.Equal(client.Bytes(), data[:tc.wantBytes]) {
				t.Errorf("the client holds %d bytes, want the first %d of the source, in order", client.Len(), tc.wantBytes)
			}
		})
	}
}

// stuck is a client that takes nothing until it is cut.
type stuck struct {
	once sync.Once
	cutC chan struct{}
}

func (s *stuck) Write(b []byte) (int, error) {
	<-s.cutC
	return 0, errWrite
}

func (s *stuck) cut() { s.once.Do(func() { close(s.cutC) }) }

// TestCopyAheadCutsAStuckClient: a client that takes nothing holds the
// reader for lag, no more; it is cut, and the copy goes on to the end,
// with the reader's wait reported as idle (no upstream stall).
func TestCopyAheadCutsAStuckClient(t *testing.T) {
	data := make([]byte, 3*aheadDepth*aheadSize)
	rand.NewChaCha8([32]byte{2}).Read(data)
	var dst bytes.Buffer
	c := &stuck{cutC: make(chan struct{})}
	var idle, resumed atomic.Int32
	a := ahead{dst: &dst, client: c, cut: c.cut, lag: 50 * time.Millisecond, idle: func(w bool) {
		if w {
			idle.Add(1)
		} else {
			resumed.Add(1)
		}
	}}
	n, err := a.copy(bytes.NewReader(data))
	if err != nil || n != int64(len(data)) || !bytes.Equal(dst.Bytes(), data) {
		t.Fatalf("copy = %d, %v (dst %d bytes); want all %d", n, err, dst.Len(), len(data))
	}
	select {
	case <-c.cutC:
	default:
		t.Error("the stuck client was not cut")
	}
	if idle.Load() == 0 || idle.Load() != resumed.Load() {
		t.Errorf("idle reported %d times, resumed %d; want at least once, and as many", idle.Load(), resumed.Load())
	}
}

// TestContentErrOfTheCache: an index that cannot be written to the cache
// is the server's failure (a full disk, 507), not the upstream's.
func TestContentErrOfTheCache(t *testing.T) {
	obs := &recorder{errors: map[string]int{}, hits: map[string]int{}}
	f := &fetch{p: &Proxy{obs: obs}}
	var o outputs
	o.g = &indexGroup{base: "repodata"}
	dir := t.TempDir()
	file, err := os.Create(filepath.Join(dir, "x"))
	if err != nil {
		t.Fatal(err)
	}
	file.Close() // writes to it fail
	o.files = map[string]*os.File{"repodata.json": file}
	_, werr := o.writer().Write([]byte("{}"))
	err = f.contentErr(werr)
	var e *Error
	if !errors.Is(err, os.ErrClosed) || errors.As(err, &e) || obs.errorsOf("invalid") != 0 {
		t.Errorf("contentErr(%v) = %v; want the write's own error, not the upstream's", werr, err)
	}
	if err := f.contentErr(errors.New("bad JSON")); !errors.As(err, &e) || e.Status != 502 {
		t.Errorf("contentErr of bad content = %v, want a 502", err)
	}
}
