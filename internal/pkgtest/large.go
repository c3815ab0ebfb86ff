package pkgtest

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"io"
	"math/rand/v2"
)

// randomChunk returns n bytes that do not compress.
func randomChunk(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	r.Read(b)
	return b
}

// LargeTarBz2 writes a valid .tar.bz2 with a payload member of about size
// bytes of random data to w, without compressing size bytes: bzip2 streams
// may be concatenated, so the payload is one compressed random chunk
// repeated. info/ comes first, as conda writes it.
func LargeTarBz2(t T, s Spec, size int64, w io.Writer) {
	t.Helper()
	const chunk = 4 << 20
	n := max(size/chunk, 1)
	var head bytes.Buffer
	tw := tar.NewWriter(&head)
	for _, m := range s.infoMembers() {
		tw.WriteHeader(&tar.Header{Name: m.Name, Mode: 0o644, Size: int64(len(m.Data)), Typeflag: tar.TypeReg})
		tw.Write(m.Data)
	}
	tw.WriteHeader(&tar.Header{Name: "lib/payload.bin", Mode: 0o644, Size: n * chunk, Typeflag: tar.TypeReg})
	tw.Flush()
	// Header bytes only: the writer would insist on the payload otherwise.
	if _, err := w.Write(Bzip2(t, head.Bytes())); err != nil {
		t.Fatal(err)
	}
	body := Bzip2(t, randomChunk(chunk, 1))
	for range n {
		if _, err := w.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	// Two zero blocks end the archive (chunk is a multiple of 512).
	if _, err := w.Write(Bzip2(t, make([]byte, 1024))); err != nil {
		t.Fatal(err)
	}
}

// LargeConda writes a valid .conda whose pkg- member holds about size
// bytes of random (stored, not compressed) data, in conda-package-
// handling's member order: the info- member comes after the payload.
func LargeConda(t T, s Spec, size int64, w io.Writer) {
	t.Helper()
	zw := zip.NewWriter(w)
	entries := CondaEntries(t, s)
	write := func(name string, data func(io.Writer)) {
		fw, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		data(fw)
	}
	write(entries[0].Name, func(w io.Writer) { w.Write(entries[0].Data) })
	chunk := randomChunk(4<<20, 2)
	write(entries[1].Name, func(w io.Writer) {
		for left := size; left > 0; left -= int64(len(chunk)) {
			w.Write(chunk[:min(int64(len(chunk)), left)])
		}
	})
	write(entries[2].Name, func(w io.Writer) { w.Write(entries[2].Data) })
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}
