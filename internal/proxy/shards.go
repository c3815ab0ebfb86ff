package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
)

// CEP-16 makes filtering cheap: the shard index maps each package name to
// the sha256 of its shard, so a filtered index is the upstream's without
// the names the proxy does not serve, and the shards, named by their
// content, are checked by hashing them and cached for good.

// shardIndex is a filtered shard index.
type shardIndex struct {
	// data is the index as served: zstd-compressed msgpack.
	data []byte
	// names maps each shard the index names to its package name.
	names map[[32]byte]string
	// base is the upstream's shards_base_url, resolved by the caller.
	base string
}

// decodeZstd decompresses data of at most max bytes, with the decoder's
// memory bounded by the same.
func decodeZstd(r io.Reader, max int64) ([]byte, error) {
	dec, err := zstd.NewReader(r, zstd.WithDecoderMaxMemory(uint64(max)), zstd.WithDecoderMaxWindow(64<<20), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	b, err := io.ReadAll(io.LimitReader(dec, max+1))
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("decompresses to more than %d bytes", max)
	}
	return b, nil
}

// filterShardIndex decodes an upstream's repodata_shards.msgpack.zst, of
// at most max bytes decompressed, and keeps the names keep accepts.
func filterShardIndex(compressed []byte, max int64, keep func(string) bool) (shardIndex, error) {
	raw, err := decodeZstd(bytes.NewReader(compressed), max)
	if err != nil {
		return shardIndex{}, err
	}
	var doc map[string]any
	if err := msgpack.Unmarshal(raw, &doc); err != nil {
		return shardIndex{}, fmt.Errorf("shard index: %w", err)
	}
	shards, ok := doc["shards"].(map[string]any)
	info, ok2 := doc["info"].(map[string]any)
	if !ok || !ok2 {
		return shardIndex{}, errors.New("shard index has no shards or info map")
	}
	ix := shardIndex{names: map[[32]byte]string{}}
	ix.base, _ = info["shards_base_url"].(string)
	info["base_url"], info["shards_base_url"] = "", ""
	for name, v := range shards {
		sum, ok := v.([]byte)
		if !ok || len(sum) != 32 || !validName(name) || !keep(name) {
			delete(shards, name)
			continue
		}
		ix.names[[32]byte(sum)] = name
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true)
	enc.UseCompactInts(true)
	if err := enc.Encode(doc); err != nil {
		return shardIndex{}, err
	}
	zw, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	ix.data = zw.EncodeAll(buf.Bytes(), nil)
	return ix, nil
}

// validName reports whether name could be a conda package's name.
func validName(name string) bool {
	f, err := condapkg.ParseFilename(name + "-0-0.conda")
	return err == nil && f.Name == name
}

// shardDoc is what the proxy reads of a shard: its records' filenames,
// sha256 (raw bytes, or hex from a writer that differs) and size.
type shardDoc struct {
	Packages      map[string]shardRecord `msgpack:"packages"`
	PackagesConda map[string]shardRecord `msgpack:"packages.conda"`
}

type shardRecord struct {
	Sha256 any   `msgpack:"sha256"`
	Size   int64 `msgpack:"size"`
}

// sha256Hex is the record's sha256 in lowercase hex, or "".
func (r shardRecord) sha256Hex() string {
	switch v := r.Sha256.(type) {
	case []byte:
		if len(v) == 32 {
			return hex.EncodeToString(v)
		}
	case string:
		if b, err := hex.DecodeString(v); err == nil && len(b) == 32 {
			return strings.ToLower(v)
		}
	}
	return ""
}

// decodeShard decompresses and decodes a shard.
func decodeShard(data []byte, max int64) (shardDoc, error) {
	var doc shardDoc
	raw, err := decodeZstd(bytes.NewReader(data), max)
	if err != nil {
		return doc, err
	}
	if err := msgpack.Unmarshal(raw, &doc); err != nil {
		return doc, fmt.Errorf("shard: %w", err)
	}
	return doc, nil
}

// checkShard verifies a shard's bytes: their sha256 is the one the index
// named, and the records it holds are all of package name with valid
// filenames, each under the key of its format.
func checkShard(data []byte, sum [32]byte, name string, max int64) error {
	if sha256.Sum256(data) != sum {
		return errDigest
	}
	doc, err := decodeShard(data, max)
	if err != nil {
		return err
	}
	for key, recs := range map[string]map[string]shardRecord{"packages": doc.Packages, "packages.conda": doc.PackagesConda} {
		for fn := range recs {
			f, err := condapkg.ParseFilename(fn)
			if err != nil || f.Name != name || (key == "packages.conda") != (f.Format == condapkg.Conda) {
				return fmt.Errorf("shard of %s lists %q under %s", name, fn, key)
			}
		}
	}
	return nil
}
