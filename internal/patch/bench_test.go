package patch_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/patch"
)

// manyFixes returns instructions of about size bytes that fix the
// depends of one file after another, as a channel-wide fix would.
func manyFixes(size int) []byte {
	var b strings.Builder
	b.WriteString(`{"patch_instructions_version":1,"packages":{`)
	for i := 0; b.Len() < size-64; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"p-%d-0.tar.bz2":{"depends":["python >=3.9","zlib >=1.2"],"license":"MIT"}`, i)
	}
	b.WriteString(`}}`)
	return []byte(b.String())
}

// oneBigFix returns instructions of about size bytes that give one file
// a huge depends list, which then sits in every repodata.json written.
func oneBigFix(size int) []byte {
	var b strings.Builder
	b.WriteString(`{"patch_instructions_version":1,"packages":{"p-0-0.tar.bz2":{"depends":[`)
	for i := 0; b.Len() < size-64; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"dep%d >=1"`, i)
	}
	b.WriteString(`]}}}`)
	return []byte(b.String())
}

// BenchmarkApply measures what an index run pays for a subdir's patch
// once it changes (or in a fresh indexer process): read the
// instructions, plan them, and apply them to 1000 records. The 24 MiB
// cases are the probe's patch, which the admin API took before it was
// bounded; the MaxSize cases are the largest it takes now.
func BenchmarkApply(b *testing.B) {
	const records = 1000
	rec := json.RawMessage(`{"build":"0","build_number":0,"depends":["a"],"name":"p","subdir":"linux-64","timestamp":1652966521286,"version":"1"}`)
	for _, c := range []struct {
		name string
		gen  func(int) []byte
		size int
	}{
		{"many-fixes-24MiB", manyFixes, 24 << 20},
		{"many-fixes-MaxSize", manyFixes, patch.MaxSize},
		{"one-fix-24MiB", oneBigFix, 24 << 20},
		{"one-fix-MaxSize", oneBigFix, patch.MaxSize},
	} {
		raw := c.gen(c.size)
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				in, err := patch.Parse(raw, false)
				if err != nil {
					b.Fatal(err)
				}
				plan := in.Plan()
				for i := range records {
					if _, _, err := plan.Apply(fmt.Sprintf("p-%d-0.tar.bz2", i), rec); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
