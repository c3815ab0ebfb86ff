package form

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

const boundary = "b0undary"

type part struct {
	header textproto.MIMEHeader
	data   string
}

// readAll reads every part of body, reading in pieces of the sizes that
// rnd gives, from a source that returns pieces of the sizes it gives too.
func readAll(body []byte, rnd *rand.Rand) ([]part, []byte, error) {
	var src io.Reader = bytes.NewReader(body)
	if rnd != nil {
		src = &choppy{b: body, rnd: rnd}
	}
	r, err := NewReader(src, boundary)
	if err != nil {
		return nil, nil, err
	}
	var parts []part
	for {
		p, err := r.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return parts, nil, err
		}
		var data bytes.Buffer
		for {
			size := 64 << 10
			if rnd != nil {
				size = 1 + rnd.IntN(200)
				if rnd.IntN(4) == 0 {
					size = 1 + rnd.IntN(128<<10)
				}
			}
			buf := make([]byte, size)
			n, err := p.Read(buf)
			data.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				return parts, nil, err
			}
		}
		parts = append(parts, part{p.Header, data.String()})
	}
	epilogue, err := io.ReadAll(r.Epilogue())
	return parts, epilogue, err
}

// choppy returns its bytes in pieces of random sizes.
type choppy struct {
	b   []byte
	rnd *rand.Rand
}

func (c *choppy) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.b), 1+c.rnd.IntN(3000))
	if c.rnd.IntN(8) == 0 {
		n = min(len(p), len(c.b))
	}
	copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}

func TestReader(t *testing.T) {
	cd := func(name string) string { return "Content-Disposition: form-data; name=\"" + name + "\"\r\n" }
	tests := []struct {
		name     string
		body     string
		parts    []string // name=data
		epilogue string
		err      string // part of the error; "" for none
	}{
		{name: "two parts", body: "--b0undary\r\n" + cd("token") + "\r\nsecret\r\n--b0undary\r\n" + cd("artifact") + "\r\nDATA\r\n--b0undary--\r\n", parts: []string{"token=secret", "artifact=DATA"}},
		{name: "preamble", body: "ignored\r\n--b0undary\r\n" + cd("a") + "\r\n1\r\n--b0undary--", err: "must start with the boundary"},
		{name: "epilogue", body: "--b0undary\r\n" + cd("a") + "\r\n1\r\n--b0undary-- \r\nafter\r\n", parts: []string{"a=1"}, epilogue: "after\r\n"},
		{name: "junk after the last boundary", body: "--b0undary\r\n" + cd("a") + "\r\n1\r\n--b0undary--after", err: "must end in CRLF"},
		{name: "padding at the end", body: "--b0undary\r\n" + cd("a") + "\r\n1\r\n--b0undary-- ", parts: []string{"a=1"}},
		{name: "no parts", body: "--b0undary--", epilogue: ""},
		{name: "padding after boundary", body: "--b0undary \t\r\n" + cd("a") + "\r\nx\r\n--b0undary--", parts: []string{"a=x"}},
		{name: "no headers", body: "--b0undary\r\n\r\nbare\r\n--b0undary--", parts: []string{"=bare"}},
		{name: "empty data", body: "--b0undary\r\n" + cd("a") + "\r\n\r\n--b0undary--", parts: []string{"a="}},
		{name: "boundary-like data", body: "--b0undary\r\n" + cd("a") + "\r\n\r\n--b0undaryX\r\n-\r\n--b0undar\r\r\n\r\n--b0undary--", parts: []string{"a=\r\n--b0undaryX\r\n-\r\n--b0undar\r\r\n"}},
		{name: "data ends in CR", body: "--b0undary\r\n" + cd("a") + "\r\nx\r\r\n--b0undary--", parts: []string{"a=x\r"}},
		{name: "cut in data", body: "--b0undary\r\n" + cd("a") + "\r\nabc", err: "unexpected EOF"},
		{name: "cut in delimiter", body: "--b0undary\r\n" + cd("a") + "\r\nabc\r\n--b0un", err: "unexpected EOF"},
		{name: "cut after delimiter", body: "--b0undary\r\n" + cd("a") + "\r\nabc\r\n--b0undary", err: "unexpected EOF"},
		{name: "cut in header", body: "--b0undary\r\nContent-Disp", err: "unexpected EOF"},
		{name: "no boundary at all", body: "just text", err: "unexpected EOF"},
		{name: "empty body", body: "", err: "unexpected EOF"},
		{name: "junk after boundary", body: "--b0undary junk\r\n\r\nx\r\n--b0undary--", err: "must end in CRLF"},
		{name: "LF line ends", body: "--b0undary\n" + cd("a") + "\nx\n--b0undary--", err: "must end in CRLF"},
		{name: "bad header line", body: "--b0undary\r\nno colon here\r\n\r\nx\r\n--b0undary--", err: "bad part header"},
		{name: "huge header", body: "--b0undary\r\nX: " + strings.Repeat("a", MaxHeaderBytes) + "\r\n\r\nx\r\n--b0undary--", err: "header is longer"},
		{name: "quoted-printable", body: "--b0undary\r\n" + cd("a") + "Content-Transfer-Encoding: quoted-printable\r\n\r\n=41\r\n--b0undary--", err: "Content-Transfer-Encoding"},
		{name: "binary encoding", body: "--b0undary\r\n" + cd("a") + "Content-Transfer-Encoding: binary\r\n\r\n=41\r\n--b0undary--", parts: []string{"a==41"}},
	}
	for _, tt := range tests {
		for seed := range 20 {
			t.Run(fmt.Sprintf("%s/%d", tt.name, seed), func(t *testing.T) {
				var rnd *rand.Rand
				if seed > 0 {
					rnd = rand.New(rand.NewPCG(uint64(seed), 1))
				}
				parts, epilogue, err := readAll([]byte(tt.body), rnd)
				if tt.err != "" {
					if err == nil || !strings.Contains(err.Error(), tt.err) {
						t.Fatalf("err = %v, want %q", err, tt.err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, p := range parts {
					name := ""
					if cd := p.header.Get("Content-Disposition"); cd != "" {
						name = strings.TrimSuffix(strings.TrimPrefix(cd, `form-data; name="`), `"`)
					}
					got = append(got, name+"="+p.data)
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.parts) {
					t.Errorf("parts = %q, want %q", got, tt.parts)
				}
				if string(epilogue) != tt.epilogue {
					t.Errorf("epilogue = %q, want %q", epilogue, tt.epilogue)
				}
			})
		}
	}
}

func TestBoundaryLength(t *testing.T) {
	for _, b := range []string{"", strings.Repeat("x", MaxBoundaryLen+1)} {
		if _, err := NewReader(strings.NewReader(""), b); !IsMalformed(err) {
			t.Errorf("NewReader(%d-byte boundary) err = %v", len(b), err)
		}
	}
}

// TestSourceErrors checks that the source's errors come through as they
// are, whether they come with the last bytes or after them.
func TestSourceErrors(t *testing.T) {
	broken := errors.New("connection reset")
	body := "--b0undary\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n" + strings.Repeat("x", 100<<10)
	for _, src := range []io.Reader{
		io.MultiReader(strings.NewReader(body), iotest.ErrReader(broken)),
		iotest.DataErrReader(io.MultiReader(strings.NewReader(body), iotest.ErrReader(broken))),
	} {
		r, _ := NewReader(src, boundary)
		p, err := r.NextPart()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(p); !errors.Is(err, broken) {
			t.Errorf("err = %v, want %v", err, broken)
		}
	}
}

// TestNoProgress: a source that returns nothing, for ever, is given up on.
func TestNoProgress(t *testing.T) {
	r, _ := NewReader(io.MultiReader(strings.NewReader("--b0undary\r\n\r\nx"), emptyReader{}), boundary)
	p, err := r.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(p); err != io.ErrNoProgress {
		t.Errorf("err = %v, want %v", err, io.ErrNoProgress)
	}
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

// TestLikeStdlib reads forms made by mime/multipart's Writer, with parts
// of every size around the buffer sizes, in random pieces.
func TestLikeStdlib(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 7))
	for i := range 300 {
		var body bytes.Buffer
		w := multipart.NewWriter(&body)
		w.SetBoundary(boundary)
		var want []string
		for j := range 1 + rnd.IntN(3) {
			data := make([]byte, []int{0, 1, 35, 4095, 4096, 16 << 10, 64<<10 + 3, rnd.IntN(300 << 10)}[rnd.IntN(8)])
			for k := range data {
				data[k] = "\r\n-b0undary"[rnd.IntN(11)] // dense with near-boundaries
			}
			fw, _ := w.CreateFormFile(fmt.Sprint("f", j), "x.conda")
			fw.Write(data)
			want = append(want, string(data))
		}
		w.Close()
		parts, _, err := readAll(body.Bytes(), rand.New(rand.NewPCG(uint64(i), 3)))
		if err != nil {
			t.Fatalf("form %d: %v", i, err)
		}
		if len(parts) != len(want) {
			t.Fatalf("form %d: %d parts, want %d", i, len(parts), len(want))
		}
		for j := range want {
			if parts[j].data != want[j] {
				t.Fatalf("form %d part %d: other bytes than were written", i, j)
			}
		}
	}
}

// FuzzReader checks against mime/multipart: whatever this reader accepts,
// mime/multipart accepts too, with the same parts.
func FuzzReader(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.form")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint64(1))
	}
	f.Fuzz(func(t *testing.T, body []byte, seed uint64) {
		parts, _, err := readAll(body, rand.New(rand.NewPCG(seed, 0)))
		if err != nil {
			return
		}
		mr := multipart.NewReader(bytes.NewReader(body), boundary)
		for i := 0; ; i++ {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				if i != len(parts) {
					t.Fatalf("mime/multipart found %d parts, this reader %d", i, len(parts))
				}
				return
			}
			if err != nil {
				t.Fatalf("mime/multipart refuses what this reader took: %v", err)
			}
			data, err := io.ReadAll(p)
			if err != nil {
				t.Fatalf("mime/multipart refuses what this reader took: %v", err)
			}
			if i >= len(parts) || string(data) != parts[i].data || fmt.Sprint(p.Header) != fmt.Sprint(parts[i].header) {
				t.Fatalf("part %d differs from mime/multipart's", i)
			}
		}
	})
}
