package server

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/patch"
)

// BenchmarkPatchBody compares the strict key check of a large patch
// (13 MiB, 100,000 records) with patch.Parse, which the body goes through
// after it.
func BenchmarkPatchBody(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"patch_instructions_version":1,"packages":{`)
	for i := range 100_000 {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `"pkg%d-1.0-0.tar.bz2":{"depends":["python >=3.8","numpy >=1.21,<2","libgcc-ng >=12"],"license":"MIT","run_exports":{"weak":["pkg%d"]}}`, i, i)
	}
	sb.WriteString(`}}`)
	body := []byte(sb.String())
	b.SetBytes(int64(len(body)))
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			if _, err := patch.Parse(body, true); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("check", func(b *testing.B) {
		for b.Loop() {
			if err := checkJSON(body, reflect.TypeFor[patch.Instructions]()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
