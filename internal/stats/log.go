package stats

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/conda-upload-server/conda-upload-server/internal/atomicfile"
)

// The log is a sequence of frames. A frame is an 8-byte header, the
// payload's length and its CRC-32C (both little-endian uint32), and the
// payload: records of uvarint day, uvarint length and bytes of the file,
// uvarint count. A frame is written with one write(2) on an O_APPEND
// descriptor, so the log only ever grows by whole frames, except for a
// crash in the middle of one, which the next open cuts off.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maxFrame bounds a frame's length, so that a corrupt header cannot make
// the reader allocate without limit.
const maxFrame = 1 << 30

type logFile struct {
	path      string
	f         *os.File
	size      int64 // bytes of whole frames
	compacted int64 // size after the last rewrite (or at open)
	cut       int64 // bytes of a torn tail cut off at open
}

// openLog replays path's frames into apply and opens it for appending,
// truncating a torn or corrupt tail.
func openLog(path string, apply func(key, uint64)) (*logFile, error) {
	if err := atomicfile.RemoveStale(filepath.Dir(path)); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	l := &logFile{path: path, f: f}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	good := replay(data, apply)
	if good < int64(len(data)) {
		if err := f.Truncate(good); err != nil {
			f.Close()
			return nil, fmt.Errorf("cut off the torn end of %s: %w", path, err)
		}
		l.cut = int64(len(data)) - good
	}
	l.size, l.compacted = good, good
	return l, nil
}

// replay applies data's whole, intact frames and returns where they end.
func replay(data []byte, apply func(key, uint64)) int64 {
	var off int64
	for len(data) >= 8 {
		n := binary.LittleEndian.Uint32(data)
		sum := binary.LittleEndian.Uint32(data[4:])
		if n > maxFrame || int64(n) > int64(len(data)-8) {
			break
		}
		payload := data[8 : 8+n]
		if crc32.Checksum(payload, castagnoli) != sum {
			break
		}
		recs, err := decode(payload)
		if err != nil {
			break
		}
		for _, r := range recs {
			apply(r.k, r.n)
		}
		off += 8 + int64(n)
		data = data[8+n:]
	}
	return off
}

type record struct {
	k key
	n uint64
}

var errBadRecord = errors.New("malformed record")

func decode(p []byte) ([]record, error) {
	var out []record
	for len(p) > 0 {
		day, n1 := binary.Uvarint(p)
		if n1 <= 0 || day > 1<<32-1 {
			return nil, errBadRecord
		}
		p = p[n1:]
		l, n2 := binary.Uvarint(p)
		if n2 <= 0 || l > uint64(len(p)-n2) {
			return nil, errBadRecord
		}
		file := string(p[n2 : n2+int(l)])
		p = p[n2+int(l):]
		cnt, n3 := binary.Uvarint(p)
		if n3 <= 0 {
			return nil, errBadRecord
		}
		p = p[n3:]
		out = append(out, record{key{file, Day(day)}, cnt})
	}
	return out, nil
}

// frame encodes counts as one frame.
func frame(counts map[key]uint64) []byte {
	b := make([]byte, 8, 8+len(counts)*48)
	for k, n := range counts {
		b = binary.AppendUvarint(b, uint64(k.day))
		b = binary.AppendUvarint(b, uint64(len(k.file)))
		b = append(b, k.file...)
		b = binary.AppendUvarint(b, n)
	}
	binary.LittleEndian.PutUint32(b, uint32(len(b)-8))
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:], castagnoli))
	return b
}

// append writes counts as one frame and syncs its data: once per flush,
// never per download. written says whether the frame is in the log
// (a failed sync leaves it there, in the page cache).
func (l *logFile) append(counts map[key]uint64) (written bool, err error) {
	b := frame(counts)
	n, err := l.f.Write(b)
	if err != nil {
		// A short write leaves a torn frame: cut it off now, so that
		// the next frame does not follow garbage.
		if n > 0 {
			l.f.Truncate(l.size)
		}
		return false, fmt.Errorf("append to %s: %w", l.path, err)
	}
	l.size += int64(n)
	if err := l.f.Sync(); err != nil {
		return true, fmt.Errorf("sync %s: %w", l.path, err)
	}
	return true, nil
}

// rewrite replaces the log with one frame of counts.
func (l *logFile) rewrite(counts map[key]uint64) error {
	b := frame(counts)
	if err := atomicfile.Write(l.path, b); err != nil {
		return fmt.Errorf("compact %s: %w", l.path, err)
	}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("reopen %s: %w", l.path, err)
	}
	os.Chmod(l.path, 0o640)
	l.f.Close()
	l.f, l.size, l.compacted = f, int64(len(b)), int64(len(b))
	return nil
}

func (l *logFile) close() error { return l.f.Close() }
