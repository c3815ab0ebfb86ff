package condapkg

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/flate"
	"errors"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// maxZstdWindow is the largest zstd window accepted in a .conda.
const maxZstdWindow = 128 << 20

// headLen is how many leading bytes are kept to say what a bad file is.
const headLen = 512

// errScanDone tells the feeding side that the scanner needs no more input.
var errScanDone = errors.New("scan done")

// A Scanner inspects a package while its bytes stream past, so that a
// .tar.bz2 is validated without a second read and an invalid one is
// refused long before its upload ends. Write it the package bytes in order,
// then call Finish with the complete file. Close releases it early.
//
// A Scanner is not safe for concurrent use, but Write may run on another
// goroutine than the one that created it.
type Scanner struct {
	fn   Filename
	lim  Limits
	head []byte

	// .tar.bz2 only: the stream goes through pw to a decoding goroutine.
	pw   *io.PipeWriter
	done chan struct{}
	info *Info
	err  error
	once sync.Once
}

// NewScanner returns a Scanner for a package with the given filename.
func NewScanner(fn Filename, lim Limits) *Scanner {
	s := &Scanner{fn: fn, lim: lim, head: make([]byte, 0, headLen)}
	if fn.Format == TarBz2 {
		pr, pw := io.Pipe()
		s.pw = pw
		s.done = make(chan struct{})
		go func() {
			defer close(s.done)
			s.info, s.err = inspectTarBz2(fn, passReader{pr}, lim)
			// Unblock and stop the writer: the rest is payload.
			pr.CloseWithError(errScanDone)
		}()
	}
	return s
}

// Write feeds package bytes. It fails only once the package is known to be
// invalid, with that reason, so the caller can stop receiving it.
func (s *Scanner) Write(p []byte) (int, error) {
	if n := headLen - len(s.head); n > 0 {
		s.head = append(s.head, p[:min(n, len(p))]...)
	}
	if s.pw == nil {
		return len(p), nil
	}
	select {
	case <-s.done:
		if s.err != nil {
			return 0, s.err
		}
		return len(p), nil
	default:
	}
	if _, err := s.pw.Write(p); err != nil {
		<-s.done
		if s.err != nil {
			return 0, s.err
		}
	}
	return len(p), nil
}

// Finish completes inspection once the whole package, of the given size, is
// readable through r, and returns what it found.
func (s *Scanner) Finish(r io.ReaderAt, size int64) (*Info, error) {
	if size == 0 {
		s.Close()
		return nil, errorf("%s: %s", s.fn, sniff(nil))
	}
	switch s.fn.Format {
	case TarBz2:
		s.pw.Close() // a stream that ends before index.json is truncated
		<-s.done
		return s.info, s.err
	case Conda:
		return inspectConda(s.fn, r, size, s.head, s.lim)
	}
	return nil, errorf("%s: unknown format", s.fn)
}

// Close stops a scan whose input will not be finished.
func (s *Scanner) Close() {
	s.once.Do(func() {
		if s.pw != nil {
			s.pw.CloseWithError(errScanDone)
			<-s.done
		}
	})
}

// Inspect reads and validates a complete package of the given size.
func Inspect(fn Filename, r io.ReaderAt, size int64, lim Limits) (*Info, error) {
	if size == 0 {
		return nil, errorf("%s: %s", fn, sniff(nil))
	}
	switch fn.Format {
	case TarBz2:
		return inspectTarBz2(fn, passReader{io.NewSectionReader(r, 0, size)}, lim)
	case Conda:
		head := make([]byte, min(headLen, size))
		if _, err := r.ReadAt(head, 0); err != nil && err != io.EOF {
			return nil, err
		}
		return inspectConda(fn, r, size, head, lim)
	}
	return nil, errorf("%s: unknown format", fn)
}

func inspectTarBz2(fn Filename, r io.Reader, lim Limits) (*Info, error) {
	br := bufio.NewReaderSize(r, headLen)
	head, err := br.Peek(headLen)
	if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
		var pe *passError
		if errors.As(err, &pe) {
			return nil, pe.err
		}
		return nil, err
	}
	// "BZh" then the level, then a block or end-of-stream magic.
	if len(head) < 4 || !bytes.HasPrefix(head, []byte("BZh")) || head[3] < '1' || head[3] > '9' {
		return nil, errorf("%s: not bzip2-compressed: %s", fn, sniff(head))
	}
	index, err := readInfo(bzip2.NewReader(br), fn.String(), lim)
	if err != nil {
		return nil, err
	}
	return validate(fn, index, lim)
}

func inspectConda(fn Filename, r io.ReaderAt, size int64, head []byte, lim Limits) (*Info, error) {
	if !bytes.HasPrefix(head, []byte("PK\x03\x04")) {
		return nil, errorf("%s: not a zip archive: %s", fn, sniff(head))
	}
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, errorf("%s: corrupt zip archive: %v", fn, err)
	}
	stem := fn.Stem()
	// metadata.json is optional: rattler writes none, and some real
	// packages have an empty one. Nothing reads it.
	want := map[string]bool{"metadata.json": false, "info-" + stem + ".tar.zst": true, "pkg-" + stem + ".tar.zst": true}
	var info *zip.File
	seen := make(map[string]bool, len(zr.File))
	for _, f := range zr.File {
		if seen[f.Name] {
			return nil, errorf("%s: duplicate zip entry %q", fn, f.Name)
		}
		seen[f.Name] = true
		if _, ok := want[f.Name]; !ok {
			return nil, errorf("%s: unexpected zip entry %q; a .conda holds metadata.json, info-%s.tar.zst and pkg-%s.tar.zst", fn, f.Name, stem, stem)
		}
		// Nothing here reads metadata.json, but clients do: refuse one
		// that would decompress to more than a JSON document can need.
		if f.Name == "metadata.json" && f.UncompressedSize64 > uint64(lim.MaxIndexJSON) {
			return nil, errorf("%s: metadata.json is %d bytes uncompressed, over the limit of %d", fn, f.UncompressedSize64, lim.MaxIndexJSON)
		}
		if f.Name == "info-"+stem+".tar.zst" {
			info = f
		}
	}
	for name, required := range want {
		if required && !seen[name] {
			return nil, errorf("%s: no zip entry %q", fn, name)
		}
	}
	if info.Method != zip.Store && info.Method != zip.Deflate {
		return nil, errorf("%s: zip entry %q uses unsupported compression method %d", fn, info.Name, info.Method)
	}
	rc, err := info.Open()
	if err != nil {
		return nil, errorf("%s: cannot open %q: %v", fn, info.Name, err)
	}
	defer rc.Close()
	dec, err := zstd.NewReader(zipEntryReader{rc, fn.String() + ": " + info.Name},
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(maxZstdWindow),
		// conda-package-handling writes frames that declare a 128 MiB
		// window; the decoder only touches as much of it as it decodes,
		// and that is bounded by MaxScanBytes in readInfo.
		zstd.WithDecoderMaxWindow(maxZstdWindow))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	index, err := readInfo(dec, fn.String()+": "+info.Name, lim)
	if err != nil {
		return nil, err
	}
	return validate(fn, index, lim)
}

// zipEntryReader reads a zip entry of a package that is whole on disk.
// An entry that ends early, fails its CRC or does not inflate is a
// corrupt package (400), not a failure of the server; any other error
// from the file below passes unchanged.
type zipEntryReader struct {
	r    io.Reader
	what string
}

func (z zipEntryReader) Read(b []byte) (int, error) {
	n, err := z.r.Read(b)
	var ce flate.CorruptInputError
	switch {
	case err == nil || err == io.EOF:
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, zip.ErrChecksum) || errors.Is(err, zip.ErrFormat) || errors.As(err, &ce):
		err = errorf("%s: corrupt zip entry: %v", z.what, err)
	default:
		err = &passError{err}
	}
	return n, err
}
