// Package repodata is the built-in channel indexer: it writes each
// subdir's index files as conda-index does, with no conda installed and no
// child process, so that an upload is indexed in milliseconds.
//
// A record is a package's info/index.json minus the keys conda-index
// drops, plus the md5, sha256 and size of the whole file, with keys sorted;
// the subdir's patch_instructions.json is applied to the records as
// conda-index applies it. Records are cached per subdir in a hidden folder
// (.index-cache), keyed by filename, size and modification time, so adding
// one package to a subdir of ten thousand reads one package, not ten
// thousand. Each update reconciles the cache with the directory, so
// packages added or removed by hand are picked up, and a cache that cannot
// be read is rebuilt, never trusted.
//
// Besides repodata.json it writes what Files turns on: repodata.json.zst,
// CEP-16 shards and their index, run_exports.json, current_repodata.json,
// and the channel's channeldata.json. Each file is replaced atomically, in
// an order that keeps what a client sees consistent even across a crash
// (new shards before the index that names them, repodata.json last); a
// compressed copy is written on every run and a file whose kind is turned
// off is removed, so nothing stale stays beside repodata.json.
package repodata

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// droppedKeys are the index.json keys conda-index leaves out of a record
// (conda_index/index/cache.py, extract_to_cache_unconditional).
var droppedKeys = []string{
	"arch", "has_prefix", "mtime", "platform", "ucs", "requires_features",
	"binstar", "target-triplet", "machine", "operatingsystem",
}

// Record returns the repodata record of a package from its index.json and
// the size and hex digests of the whole package file.
func Record(indexJSON []byte, size int64, md5, sha256 string) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(indexJSON))
	dec.UseNumber() // keep numbers exactly as written
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("decode index.json: %w", err)
	}
	for _, k := range droppedKeys {
		delete(doc, k)
	}
	delete(doc, AttestationsKey) // the channel's to say, not the package's
	doc["md5"] = md5
	doc["sha256"] = sha256
	doc["size"] = size
	return marshal(doc)
}

// marshal encodes v as compact JSON with sorted keys and without HTML
// escaping, like Python's json.dumps(sort_keys=True, separators=(",", ":")).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
