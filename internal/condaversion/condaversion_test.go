package condaversion_test

import (
	"testing"

	"github.com/conda-upload-server/conda-upload-server/internal/condaversion"
)

// TestOrder checks the order conda's own documentation gives
// (conda/models/version.py, VersionOrder's docstring): each version is
// less than the next, or equal where marked.
func TestOrder(t *testing.T) {
	order := []struct {
		v     string
		equal bool // equal to the one before
	}{
		{"0.4", false}, {"0.4.0", true}, {"0.4.1.rc", false}, {"0.4.1.RC", true}, {"0.4.1", false},
		{"0.5a1", false}, {"0.5b3", false}, {"0.5C1", false}, {"0.5", false}, {"0.9.6", false},
		{"0.960923", false}, {"1.0", false}, {"1.1dev1", false}, {"1.1_", false}, {"1.1a1", false},
		{"1.1.0dev1", false}, {"1.1.dev1", true}, {"1.1.a1", false}, {"1.1.0rc1", false}, {"1.1.0", false},
		{"1.1", true}, {"1.1.0post1", false}, {"1.1.post1", true}, {"1.1post1", false}, {"1996.07.12", false},
		{"1!0.4.1", false}, {"1!3.1.1.6", false}, {"2!0.4.1", false},
	}
	for i := 1; i < len(order); i++ {
		a, b := order[i-1].v, order[i].v
		want := -1
		if order[i].equal {
			want = 0
		}
		if got := condaversion.Compare(a, b); got != want {
			t.Errorf("Compare(%q, %q) = %d, want %d", a, b, got, want)
		}
		if got := condaversion.Compare(b, a); got != -want {
			t.Errorf("Compare(%q, %q) = %d, want %d", b, a, got, -want)
		}
	}
	more := []struct {
		a, b string
		want int
	}{
		{"1.0+local.2", "1.0+local.10", -1},
		{"1.0", "1.0+1", -1},
		{"2.0.0", "10.0", -1},
		{"1.2-3", "1.2.3", 0}, // a dash without underscores reads as one
		{"3.4.5", "3.4.5*", 1},
	}
	for _, m := range more {
		if got := condaversion.Compare(m.a, m.b); got != m.want {
			t.Errorf("Compare(%q, %q) = %d, want %d", m.a, m.b, got, m.want)
		}
	}
	for _, bad := range []string{"", "1!2!3", "a!1", "1+2+3", "+1", "1.0 beta", "1..0"} {
		if _, err := condaversion.Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted it", bad)
		}
	}
}

// TestSpecMatch checks dependency specs as packages write them against
// conda's MatchSpec semantics.
func TestSpecMatch(t *testing.T) {
	tests := []struct {
		spec, name, version, build string
		want                       bool
	}{
		{"python", "python", "3.9.1", "h1_0", true},
		{"python", "pythonx", "3.9.1", "h1_0", false},
		{"python >=3.7,<3.8.0a0", "python", "3.7.12", "0", true},
		{"python >=3.7,<3.8.0a0", "python", "3.8.0", "0", false},
		{"python >=3.7,<3.8.0a0", "python", "3.8.0rc1", "0", false},
		{"zlib 1.2.*", "zlib", "1.2.11", "0", true},
		{"zlib 1.2.*", "zlib", "1.3", "0", false},
		{"zlib 1.2*", "zlib", "1.2.11", "0", true},
		{"zlib =1.2", "zlib", "1.2.11", "0", true},
		{"zlib=1.2", "zlib", "1.20", "0", false},
		{"zlib ==1.2", "zlib", "1.2.0", "0", true},
		{"zlib 1.2", "zlib", "1.2.1", "0", false},
		{"zlib !=1.2.11", "zlib", "1.2.11", "0", false},
		{"zlib 1.2.11|1.2.13", "zlib", "1.2.13", "0", true},
		{"zlib >=1,<2|>=3", "zlib", "2.5", "0", false},
		{"zlib >=1,<2|>=3", "zlib", "3.1", "0", true},
		{"pkg 1.0 py37_0", "pkg", "1.0", "py37_0", true},
		{"pkg 1.0 py37_0", "pkg", "1.0", "py38_0", false},
		{"python_abi 3.9.* *_cp39", "python_abi", "3.9", "2_cp39", true},
		{"python_abi 3.9.* *_cp39", "python_abi", "3.9", "2_cp310", false},
		{"pkg=1.0=py37_0", "pkg", "1.0", "py37_0", true},
		{"conda-forge::numpy >=1.20", "numpy", "1.26.4", "0", true},
		{"foo ~=1.4.5", "foo", "1.4.9", "0", true},
		{"foo ~=1.4.5", "foo", "1.5.0", "0", false},
		{"foo 1.*.3", "foo", "1.7.3", "0", true},
	}
	for _, tt := range tests {
		t.Run(tt.spec+" "+tt.version+" "+tt.build, func(t *testing.T) {
			sp, err := condaversion.ParseSpec(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			if got := sp.Match(tt.name, tt.version, tt.build); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}
