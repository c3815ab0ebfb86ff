package pkgtest

import (
	"fmt"
	"os"
	"path/filepath"
)

// VersionsPerName is how many packages share a name in a ScaleChannel,
// as versions and builds of one package do in a real channel.
const VersionsPerName = 20

// ScaleChannel returns the root of a channel whose linux-64 holds n small
// valid .conda packages: n/20 names of 20 versions each, every one with
// three dependencies and a run export, so that repodata.json, its
// records and the shards have realistic shapes. It is built once per
// machine, under the system's temp dir, and reused by every later
// benchmark run (building 100,000 packages takes about half a minute);
// benchmarks that add packages must remove them again.
func ScaleChannel(t T, n int) string {
	t.Helper()
	root := filepath.Join(os.TempDir(), "conda-upload-server-bench", fmt.Sprintf("n%d-v1", n))
	done := filepath.Join(root, ".built")
	if _, err := os.Stat(done); err == nil {
		return root
	}
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "linux-64")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := NewBuilder(t)
	defer b.Close()
	for i := range n {
		s := ScaleSpec(i)
		if err := os.WriteFile(filepath.Join(dir, s.Stem()+".conda"), b.Conda(t, s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// ScaleSpec is the i-th package of a ScaleChannel; indexes past the
// channel's size give packages it does not hold yet.
func ScaleSpec(i int) Spec {
	name := fmt.Sprintf("pkg%05d", i/VersionsPerName)
	s := Simple(name, fmt.Sprintf("1.%d", i%VersionsPerName), fmt.Sprintf("h%08x_0", i), "linux-64")
	s.Index = map[string]any{"depends": []string{"python >=3.10", "numpy >=1.26", "libgcc-ng >=12"}, "license": "BSD-3-Clause"}
	s.Info = append(s.Info, Member{Name: "info/run_exports.json", Data: []byte(fmt.Sprintf(`{"weak": ["%s >=1.%d"]}`, name, i%VersionsPerName))})
	return s
}
