package store

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"sync"
	"sync/atomic"

	"github.com/conda-upload-server/conda-upload-server/internal/atomicfile"
)

// ErrTooLarge is returned by Receive when the upload exceeds its limit.
var ErrTooLarge = errors.New("upload exceeds the size limit")

// WriteError is a failure to write the temp file, as opposed to a failure
// to read the upload.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return "write upload: " + e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// Sums are the size and digests of a received upload.
type Sums struct {
	Size   int64
	SHA256 string
	MD5    string
}

const (
	// A ring of small chunks lets the hashes start on the first bytes of
	// an upload instead of waiting for a large buffer to fill: md5, the
	// slowest stage, then finishes soon after the last byte arrives.
	// The ring (512 KiB) is all the memory an upload holds.
	chunkSize = 64 << 10
	numChunks = 8
	// writebackStep is how much is written before writeback of it is
	// started, so that the data travels to the disk while the rest of
	// the upload travels over the network.
	writebackStep = 256 << 10
	// syncStep is how much is written before a background fdatasync.
	// On a disk with a volatile cache the final flush costs in
	// proportion to what it has to flush (about 130 ms for 100 MiB on
	// the development machine); syncing as the upload arrives keeps the
	// fsync before the 201 short whatever the upload's size. Smaller
	// steps cost concurrent uploads throughput (BENCHMARKS.md).
	syncStep = 16 << 20
)

type chunk struct {
	b    []byte
	n    int
	refs atomic.Int32
}

// Receive copies src into the upload's temp file, at most max bytes,
// computing its sha256 and md5 on the way. Each chunk read is also written
// to scan, if not nil, which may fail to stop the upload early.
//
// The file write and the two hashes run on their own goroutines over a
// small ring of buffers, so a multi-core host hashes in parallel with the
// socket read (md5 alone is slower than a fast network), and memory stays
// at a ring of buffers whatever the size of the upload. A further
// goroutine makes what has been written durable as it arrives.
func (u *Upload) Receive(src io.Reader, max int64, scan io.Writer) (Sums, error) {
	p := &pipeline{u: u, free: make(chan *chunk, numChunks)}
	for range numChunks {
		p.free <- u.s.chunks.Get().(*chunk)
	}
	defer func() {
		// Every chunk is back once the goroutines are done.
		for range numChunks {
			u.s.chunks.Put(<-p.free)
		}
	}()
	md5h, shah := md5.New(), sha256.New()
	var wg sync.WaitGroup
	var ins []chan *chunk
	for _, h := range []hash.Hash{md5h, shah} {
		in := make(chan *chunk, numChunks)
		ins = append(ins, in)
		wg.Go(func() { p.hash(h, in) })
	}
	syncs := make(chan int64, 1)
	wg.Go(func() { p.sync(syncs) })
	win := make(chan *chunk, numChunks)
	ins = append(ins, win)
	wg.Go(func() { p.write(win, syncs, scan) })

	size := p.read(src, max, ins)
	for _, in := range ins {
		close(in)
	}
	wg.Wait()
	if p.failed.Load() {
		return Sums{}, p.firstErr
	}
	return Sums{
		Size:   size,
		SHA256: hex.EncodeToString(shah.Sum(nil)),
		MD5:    hex.EncodeToString(md5h.Sum(nil)),
	}, nil
}

// pipeline is one Receive: a reader that fills chunks from a ring, and
// consumers (two hashes, the file writer) that each return a chunk to the
// ring when the last of them is done with it.
type pipeline struct {
	u    *Upload
	free chan *chunk

	errMu    sync.Mutex
	firstErr error
	failed   atomic.Bool
}

// fail records the first error; every stage stops at the next chunk.
func (p *pipeline) fail(err error) {
	p.errMu.Lock()
	if p.firstErr == nil {
		p.firstErr = err
	}
	p.errMu.Unlock()
	p.failed.Store(true)
}

func (p *pipeline) release(c *chunk) {
	if c.refs.Add(-1) == 0 {
		p.free <- c
	}
}

// read fills chunks from src and hands each to every consumer, until src
// ends, fails, exceeds max, or a consumer fails. It returns the bytes read.
func (p *pipeline) read(src io.Reader, max int64, ins []chan *chunk) int64 {
	var size int64
	for !p.failed.Load() {
		c := <-p.free
		n, err := fill(src, c.b)
		if n > 0 {
			size += int64(n)
			if size > max {
				p.fail(ErrTooLarge)
				p.free <- c
				break
			}
			c.n = n
			c.refs.Store(int32(len(ins)))
			for _, in := range ins {
				in <- c
			}
		} else {
			p.free <- c
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			p.fail(err)
			break
		}
	}
	return size
}

func (p *pipeline) hash(h hash.Hash, in <-chan *chunk) {
	for c := range in {
		h.Write(c.b[:c.n])
		p.release(c)
	}
}

// sync makes what has been written durable, on request, in the
// background.
func (p *pipeline) sync(syncs <-chan int64) {
	for range syncs {
		if err := atomicfile.Datasync(p.u.f); err != nil {
			// Not to be retried: after a failed fsync, Linux may have
			// dropped the pages, and a later fsync succeeds.
			p.fail(&WriteError{err})
		}
	}
}

// write writes chunks to the file and to scan, starts writeback every
// writebackStep and asks for an fdatasync every syncStep.
func (p *pipeline) write(in <-chan *chunk, syncs chan<- int64, scan io.Writer) {
	defer close(syncs)
	var written, started, synced int64
	for c := range in {
		if !p.failed.Load() {
			if _, err := p.u.f.Write(c.b[:c.n]); err != nil {
				p.fail(&WriteError{err})
			} else {
				written += int64(c.n)
				if written-started >= writebackStep {
					atomicfile.StartWriteback(p.u.f, started, written-started)
					started = written
				}
				if written-synced >= syncStep {
					select {
					case syncs <- written:
						synced = written
					default: // one is going; try again later
					}
				}
			}
			if scan != nil && !p.failed.Load() {
				if _, err := scan.Write(c.b[:c.n]); err != nil {
					p.fail(err)
				}
			}
		}
		p.release(c)
	}
	if written > started && !p.failed.Load() {
		atomicfile.StartWriteback(p.u.f, started, written-started)
	}
}

// fill reads into b until it is full or src fails. Unlike io.ReadFull it
// returns src's error as is, so that a stream cut short (which a multipart
// reader reports as io.ErrUnexpectedEOF) is never mistaken for its end.
func fill(src io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := src.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
