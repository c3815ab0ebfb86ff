package store

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"testing/iotest"
)

// TestReceive checks sizes around the chunk and sync boundaries, with
// sources that return data in odd pieces.
func TestReceive(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{0, 1, chunkSize - 1, chunkSize, chunkSize + 1, numChunks*chunkSize + 7, syncStep + writebackStep + 3} {
		data := make([]byte, size)
		rand.NewChaCha8([32]byte{byte(size)}).Read(data)
		for name, src := range map[string]func() io.Reader{
			"whole": func() io.Reader { return bytes.NewReader(data) },
			"bytes": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(data)) },
			"half":  func() io.Reader { return iotest.HalfReader(bytes.NewReader(data)) },
		} {
			if name == "bytes" && size > 1<<20 {
				continue // slow, and says nothing "half" does not
			}
			t.Run(fmt.Sprintf("%s/%d", name, size), func(t *testing.T) {
				u, err := s.Create()
				if err != nil {
					t.Fatal(err)
				}
				defer u.Abort()
				var scanned bytes.Buffer
				sums, err := u.Receive(src(), int64(size), &scanned)
				if err != nil {
					t.Fatal(err)
				}
				md, sh := md5.Sum(data), sha256.Sum256(data)
				if sums.Size != int64(size) || sums.MD5 != hex.EncodeToString(md[:]) || sums.SHA256 != hex.EncodeToString(sh[:]) {
					t.Errorf("sums = %+v", sums)
				}
				got, err := os.ReadFile(u.File().Name())
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data) || !bytes.Equal(scanned.Bytes(), data) {
					t.Errorf("file or scanner got other bytes than were sent")
				}
			})
		}
	}
}

func TestReceiveErrors(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3*chunkSize)
	broken := errors.New("connection reset")
	scanErr := errors.New("not a package")
	tests := []struct {
		name string
		src  io.Reader
		max  int64
		scan io.Writer
		want error
	}{
		{"too large", bytes.NewReader(data), int64(len(data)) - 1, nil, ErrTooLarge},
		{"read error", io.MultiReader(bytes.NewReader(data[:chunkSize+5]), iotest.ErrReader(broken)), 1 << 30, nil, broken},
		{"scanner refuses", bytes.NewReader(data), 1 << 30, failWriter{scanErr}, scanErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := s.Create()
			if err != nil {
				t.Fatal(err)
			}
			defer u.Abort()
			if _, err := u.Receive(tt.src, tt.max, tt.scan); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

// BenchmarkReceive measures taking 100 MiB from memory to a durable temp
// file with both digests: the ceiling that hashing and this disk put on an
// upload, without the network. Compare with crypto/md5's own benchmark.
func BenchmarkReceive(b *testing.B) {
	data := make([]byte, 100<<20)
	rand.NewChaCha8([32]byte{1}).Read(data)
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		u, err := s.Create()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := u.Receive(bytes.NewReader(data), 1<<40, nil); err != nil {
			b.Fatal(err)
		}
		if err := u.File().Sync(); err != nil {
			b.Fatal(err)
		}
		u.Abort()
	}
}

// BenchmarkDigest measures each digest alone on one core, over the
// chunks Receive hands it: md5 cannot go faster than this, so neither can
// an upload.
func BenchmarkDigest(b *testing.B) {
	buf := make([]byte, chunkSize)
	for _, h := range []struct {
		name string
		new  func() hash.Hash
	}{{"md5", md5.New}, {"sha256", sha256.New}} {
		b.Run(h.name, func(b *testing.B) {
			d := h.new()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				d.Write(buf)
			}
		})
	}
}
