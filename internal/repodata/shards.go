package repodata

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/conda-upload-server/conda-upload-server/internal/patch"
)

// CEP-16 sharded repodata, as conda-index 0.6+ writes it with
// --write-shards: each package name gets one shard, a msgpack map
// {"packages": {...}, "packages.conda": {...}} of that name's records, in
// which md5 and sha256 are raw bytes and run_exports is included. A shard
// is zstd-compressed and stored beside the index as
// <sha256 of its compressed bytes>.msgpack.zst, so its name changes with
// its content and a client may cache it for ever. The shard index,
// repodata_shards.msgpack.zst, maps each name to the raw 32-byte sha256
// of its shard.
const (
	ShardIndexFile = "repodata_shards.msgpack.zst"
	shardSuffix    = ".msgpack.zst"
)

// shardRecord turns a repodata record (JSON) and the package's run
// exports into the map a shard holds.
func shardRecord(record, runExports json.RawMessage) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(record))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode record: %w", err)
	}
	for _, k := range []string{"md5", "sha256"} {
		if s, ok := m[k].(string); ok {
			b, err := hex.DecodeString(s)
			if err != nil {
				return nil, fmt.Errorf("record %s: %w", k, err)
			}
			m[k] = b
		}
	}
	re := map[string]any{}
	if len(runExports) > 0 {
		dec := json.NewDecoder(bytes.NewReader(runExports))
		dec.UseNumber()
		if err := dec.Decode(&re); err != nil {
			return nil, fmt.Errorf("decode run_exports: %w", err)
		}
	}
	m["run_exports"] = re
	return numbers(m).(map[string]any), nil
}

// numbers replaces json.Numbers with the int64, uint64 or float64 that
// Python's json module would have made of them, so that msgpack encodes
// them as integers or floats as conda-index does.
func numbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		s := string(v)
		if !strings.ContainsAny(s, ".eE") {
			if i, err := strconv.ParseInt(s, 10, 64); err == nil {
				return i
			}
			if u, err := strconv.ParseUint(s, 10, 64); err == nil {
				return u
			}
		}
		f, _ := strconv.ParseFloat(s, 64)
		return f
	case map[string]any:
		for k, x := range v {
			v[k] = numbers(x)
		}
	case []any:
		for i, x := range v {
			v[i] = numbers(x)
		}
	}
	return v
}

// packb encodes v as msgpack with map keys sorted, so that equal content
// always gives equal bytes (and so an unchanged shard keeps its name).
func packb(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true)
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// shard is one encoded shard: its compressed bytes and their sha256.
type shard struct {
	data []byte
	sum  [sha256.Size]byte
}

func (s shard) file() string { return hex.EncodeToString(s.sum[:]) + shardSuffix }

// encodeShard builds the shard of one package name from its entries, as
// plan patches them. It returns false if the plan removes them all.
func (x *Writer) encodeShard(names []string, entries map[string]*entry, plan *patch.Plan) (shard, bool, error) {
	doc := map[string]any{"packages": map[string]any{}, "packages.conda": map[string]any{}}
	kept := 0
	for _, fn := range names {
		e := entries[fn]
		record, gone, err := plan.Apply(fn, e.Record)
		if err != nil {
			return shard{}, false, err
		}
		if gone {
			continue
		}
		kept++
		rec, err := shardRecord(record, e.RunExports)
		if err != nil {
			return shard{}, false, fmt.Errorf("%s: %w", fn, err)
		}
		key := "packages"
		if strings.HasSuffix(fn, ".conda") {
			key = "packages.conda"
		}
		doc[key].(map[string]any)[fn] = rec
	}
	if kept == 0 {
		return shard{}, false, nil
	}
	raw, err := packb(doc)
	if err != nil {
		return shard{}, false, err
	}
	data := x.zstd.EncodeAll(raw, nil)
	return shard{data: data, sum: sha256.Sum256(data)}, true, nil
}

// encodeShardIndex builds repodata_shards.msgpack.zst.
func (x *Writer) encodeShardIndex(subdir string, refs map[string][sha256.Size]byte, now time.Time) ([]byte, error) {
	shards := make(map[string]any, len(refs))
	for name, sum := range refs {
		shards[name] = sum[:]
	}
	raw, err := packb(map[string]any{
		"info": map[string]any{
			"base_url":        "",
			"shards_base_url": "",
			"created_at":      now.UTC().Format("2006-01-02T15:04:05Z"),
			"subdir":          subdir,
		},
		"shards":  shards,
		"version": 1,
	})
	if err != nil {
		return nil, err
	}
	return x.zstd.EncodeAll(raw, nil), nil
}
