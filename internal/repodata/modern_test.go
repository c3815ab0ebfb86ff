package repodata_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/corpus"
	"github.com/conda-upload-server/conda-upload-server/internal/repodata"
)

func unzstd(t testing.TB, b []byte) []byte {
	t.Helper()
	d, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	out, err := d.DecodeAll(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// jsonish turns a decoded msgpack value into what decode.py wrote for the
// reference: numbers as float64, byte strings as {"$bytes_hex": "..."}.
func jsonish(v any) any {
	switch v := v.(type) {
	case []byte:
		return map[string]any{"$bytes_hex": hex.EncodeToString(v)}
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = jsonish(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = jsonish(x)
		}
		return out
	case int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64:
		var f float64
		fmt.Sscan(fmt.Sprint(v), &f)
		return f
	}
	return v
}

// readShardFile checks that a shard file's name is the sha256 of its bytes
// and returns it decoded.
func readShardFile(t *testing.T, dir string, sum []byte) any {
	t.Helper()
	name := hex.EncodeToString(sum) + ".msgpack.zst"
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatalf("the shard index names %s: %v", name, err)
	}
	if got := sha256.Sum256(b); !bytes.Equal(got[:], sum) {
		t.Errorf("%s: its bytes hash to %x", name, got)
	}
	var v any
	if err := msgpack.Unmarshal(unzstd(t, b), &v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return jsonish(v)
}

// decodeShardIndex reads repodata_shards.msgpack.zst.
func decodeShardIndex(t testing.TB, dir string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, repodata.ShardIndexFile))
	if err != nil {
		t.Fatal(err)
	}
	var idx map[string]any
	if err := msgpack.Unmarshal(unzstd(t, b), &idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

var createdAt = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)

// TestModernMatchesCondaIndex indexes the whole corpus and compares, for
// every subdir, what conda-index --zst --write-shards --run-exports wrote:
// repodata.json.zst decompresses to repodata.json's bytes, run_exports.json
// (and its .zst) equal the reference, and the shard index and each shard,
// decoded, equal the reference apart from info.created_at (and the shard
// hashes, which depend on the zstd encoder: each shard's name must be the
// sha256 of its own bytes instead).
func TestModernMatchesCondaIndex(t *testing.T) {
	root, subdirs := channel(t)
	x := repodata.New(root, condapkg.DefaultLimits(), quiet())
	for sd := range subdirs {
		if err := x.Run(context.Background(), sd); err != nil {
			t.Fatal(err)
		}
	}
	ref := filepath.Join(corpus.Dir(), "expected", "generated__conda-index-13bd599__corpus-all-modern")
	des, _ := os.ReadDir(filepath.Join(ref, "decoded"))
	if len(des) != len(subdirs) {
		t.Fatalf("reference has %d subdirs, corpus %d", len(des), len(subdirs))
	}
	for _, de := range des {
		sd := de.Name()
		t.Run(sd, func(t *testing.T) {
			dir := filepath.Join(root, sd)
			rd := mustRead(t, filepath.Join(dir, "repodata.json"))
			if got := unzstd(t, mustRead(t, filepath.Join(dir, "repodata.json.zst"))); !bytes.Equal(got, rd) {
				t.Error("repodata.json.zst does not decompress to repodata.json")
			}
			re := mustRead(t, filepath.Join(dir, "run_exports.json"))
			if want := mustRead(t, filepath.Join(ref, "raw", sd, "run_exports.json")); !bytes.Equal(re, want) {
				t.Errorf("run_exports.json differs from conda-index's\ngot:  %s\nwant: %s", re, want)
			}
			if got := unzstd(t, mustRead(t, filepath.Join(dir, "run_exports.json.zst"))); !bytes.Equal(got, re) {
				t.Error("run_exports.json.zst does not decompress to run_exports.json")
			}

			idx := decodeShardIndex(t, dir)
			info := idx["info"].(map[string]any)
			if !createdAt.MatchString(fmt.Sprint(info["created_at"])) {
				t.Errorf("created_at %q", info["created_at"])
			}
			var wantIdx map[string]any
			json.Unmarshal(mustRead(t, filepath.Join(ref, "decoded", sd, "repodata_shards.json")), &wantIdx)
			var wantShards map[string]any
			json.Unmarshal(mustRead(t, filepath.Join(ref, "decoded", sd, "shards_by_name.json")), &wantShards)
			gotShards := map[string]any{}
			for name, sum := range idx["shards"].(map[string]any) {
				gotShards[name] = readShardFile(t, dir, sum.([]byte))
			}
			// Compare everything but created_at and the hashes.
			g, w := jsonish(idx).(map[string]any), wantIdx
			delete(g["info"].(map[string]any), "created_at")
			delete(w["info"].(map[string]any), "created_at")
			if gn, wn := slices.Sorted(maps.Keys(g["shards"].(map[string]any))), slices.Sorted(maps.Keys(w["shards"].(map[string]any))); !slices.Equal(gn, wn) {
				t.Errorf("shard names %v, want %v", gn, wn)
			}
			g["shards"], w["shards"] = nil, nil
			if !reflect.DeepEqual(g, w) {
				t.Errorf("shard index %v, want %v", g, w)
			}
			for name, want := range wantShards {
				if got := gotShards[name]; !reflect.DeepEqual(got, want) {
					gb, _ := json.Marshal(got)
					wb, _ := json.Marshal(want)
					t.Errorf("shard %s\ngot:  %s\nwant: %s", name, gb, wb)
				}
			}
		})
	}
}
