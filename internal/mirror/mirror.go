// Package mirror copies the channel to an S3-compatible bucket, so that
// downloads can be served from object storage (behind a CDN) while this
// host stays the only writer and local disk the source of truth.
//
// After each index run of a label's subdir the folder is synced in an
// order that keeps every moment a client can see consistent, as on disk:
//
//  1. new packages, new shards and new attestation revisions
//     (<file>.sigs.<sha256>), then each <file>.sigs (CEP 50's order);
//  2. run_exports.json, current_repodata.json, patch_instructions.json;
//  3. the shard index;
//  4. repodata.json.zst;
//  5. repodata.json, last; then the channel's channeldata.json.
//
// Packages and shards are written with If-None-Match: *, so the bucket
// never replaces one; a different object already under a package's key is
// a conflict: the sync of that subdir stops before its index, the error is
// logged and counted, and the mirror reports itself unhealthy. Objects no
// local file backs any more are deleted only after the retention period
// of shards, so a client holding an older index still finds its files.
//
// What the bucket holds is kept in WRITE_DIR/.mirror/state.json (key, size
// and MD5, the ETag of a single-part upload), so that a sync uploads only
// what changed; at start, and on a timer, the state is rebuilt from a
// listing of the bucket.
package mirror

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/conda-upload-server/conda-upload-server/internal/atomicfile"
	"github.com/conda-upload-server/conda-upload-server/internal/channel"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/sidecar"
)

// StateDir is the hidden folder of the mirror's state in the channel.
const StateDir = ".mirror"

// Config says where the mirror is.
type Config struct {
	Endpoint  string // https://host[:port]
	Region    string
	Bucket    string
	Prefix    string // key prefix, "" or ending in "/"
	PathStyle bool
	// CAPEM, if set, are the CA certificates to trust for the endpoint.
	CAPEM     []byte
	AccessKey string
	SecretKey string
	// Retention is how long an object no local file backs is kept.
	Retention time.Duration
}

// ErrConflict means the bucket holds a different object under a
// package's or shard's key.
var ErrConflict = errors.New("the bucket holds a different object under this key")

// object is what the mirror knows the bucket holds under a key.
type object struct {
	Size int64  `json:"size"`
	MD5  string `json:"md5"`
	// Gone is when no local file backed the object any more.
	Gone *time.Time `json:"gone,omitempty"`
}

// Mirror syncs a channel to a bucket.
type Mirror struct {
	c         *s3.Client
	bucket    string
	prefix    string
	root      string
	retention time.Duration
	log       *slog.Logger
	now       func() time.Time

	mu   sync.Mutex // one sync at a time; guards sums
	sums map[fileID]sums
	// omu guards objects, held only briefly, so that an upload's answer
	// (Has) never waits for a sync's network calls.
	omu     sync.Mutex
	objects map[string]*object

	// conflicting are the keys found to hold another object than the
	// package or shard of that name; conflicts counts them.
	conflicting map[string]bool
	conflicts   atomic.Int64

	qmu     sync.Mutex // guards dirty, lastErr and synced
	dirty   map[string]*pending
	lastErr string
	wake    chan struct{}
	// synced is closed (and replaced) after every sync of a subdir.
	synced chan struct{}
}

type fileID struct {
	ino, size, mtime int64
}

type sums struct{ md5, sha256 []byte }

// New returns a Mirror of the channel at root, and loads its state.
func New(cfg Config, root string, log *slog.Logger) (*Mirror, error) {
	if cfg.Bucket == "" || cfg.Endpoint == "" {
		return nil, errors.New("mirror: endpoint and bucket are required")
	}
	hc := &http.Client{Timeout: 15 * time.Minute}
	if cfg.CAPEM != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.CAPEM) {
			return nil, errors.New("mirror ca_file: no PEM certificate")
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	region := cfg.Region
	if region == "" {
		region = "us-east-1"
	}
	c := s3.New(s3.Options{
		Region:       region,
		BaseEndpoint: aws.String(cfg.Endpoint),
		UsePathStyle: cfg.PathStyle,
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, ""),
		HTTPClient:   hc,
		// A checksum only where the operation requires one: each
		// upload carries its own sha256 header instead.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
	m := &Mirror{c: c, bucket: cfg.Bucket, prefix: cfg.Prefix, root: root, retention: cfg.Retention, log: log,
		now: time.Now, objects: map[string]*object{}, sums: map[fileID]sums{}, conflicting: map[string]bool{},
		dirty: map[string]*pending{}, wake: make(chan struct{}, 1), synced: make(chan struct{})}
	if err := os.MkdirAll(filepath.Join(root, StateDir), 0o700); err != nil {
		return nil, fmt.Errorf("mirror state: %w", err)
	}
	b, err := os.ReadFile(m.statePath())
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &m.objects); err != nil {
			log.Warn("mirror state is unusable; the next reconcile rebuilds it", "err", err)
			m.objects = map[string]*object{}
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("mirror state: %w", err)
	}
	return m, nil
}

func (m *Mirror) statePath() string { return filepath.Join(m.root, StateDir, "state.json") }

func (m *Mirror) save() error {
	m.omu.Lock()
	b, err := json.Marshal(m.objects)
	m.omu.Unlock()
	if err != nil {
		return err
	}
	return atomicfile.Write(m.statePath(), b)
}

// Conflicts returns the number of keys that hold another object than the
// package or shard of that name, as the last attempt at each found.
func (m *Mirror) Conflicts() int64 { return m.conflicts.Load() }

// Has reports whether the bucket is known to hold dir/filename as it is
// on disk.
func (m *Mirror) Has(dir, filename string) bool {
	m.omu.Lock()
	defer m.omu.Unlock()
	o, ok := m.objects[m.key(dir, filename)]
	return ok && o.Gone == nil
}

func (m *Mirror) key(dir, name string) string {
	if dir == "" || dir == "." {
		return m.prefix + name
	}
	return m.prefix + dir + "/" + name
}

// Reconcile rebuilds what the mirror knows from a listing of the bucket.
func (m *Mirror) Reconcile(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	found := map[string]*object{}
	m.omu.Lock()
	old := m.objects
	m.omu.Unlock()
	p := s3.NewListObjectsV2Paginator(m.c, &s3.ListObjectsV2Input{Bucket: aws.String(m.bucket), Prefix: aws.String(m.prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list bucket %s: %w", m.bucket, err)
		}
		for _, o := range page.Contents {
			etag := strings.Trim(aws.ToString(o.ETag), `"`)
			if strings.Contains(etag, "-") {
				etag = "" // a multipart upload's ETag is no MD5
			}
			obj := &object{Size: aws.ToInt64(o.Size), MD5: etag}
			m.omu.Lock()
			if prev, ok := old[aws.ToString(o.Key)]; ok {
				obj.Gone = prev.Gone
			}
			m.omu.Unlock()
			found[aws.ToString(o.Key)] = obj
		}
	}
	m.omu.Lock()
	m.objects = found
	m.omu.Unlock()
	return m.save()
}

var shardName = regexp.MustCompile(`^[0-9a-f]{64}\.msgpack\.zst$`)

// phases lists the index files of a subdir in the order they are synced,
// after the packages and shards.
var phases = [][]string{
	{"run_exports.json.zst", "run_exports.json", "current_repodata.json.zst", "current_repodata.json", "patch_instructions.json"},
	{"repodata_shards.msgpack.zst"},
	{"repodata.json.zst"},
	{"repodata.json"},
}

// Sync brings the bucket's copy of dir (a label's subdir, as
// store.Dir names it) up to date with the disk, in the order the package
// comment gives.
//
// The index files are opened first, and the folder listed after: an index
// names only packages that existed when it was written, so every package
// the opened index files name is in the listing and uploaded before them,
// even if index runs replace those files during the sync (replacement is
// by rename, so an open file keeps its content).
func (m *Mirror) Sync(ctx context.Context, dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	idx, err := m.openIndex(dir)
	if err != nil {
		return err
	}
	defer idx.close()
	l, err := m.list(dir, idx)
	if err != nil {
		return err
	}
	if err := m.upload(ctx, dir, l, idx); err != nil {
		return err
	}
	if err := m.expire(ctx, dir, l.local); err != nil {
		return err
	}
	return m.save()
}

// openedIndex is a subdir's index files, and its channel's
// channeldata.json, opened before the subdir is listed.
type openedIndex struct {
	files       map[string]*os.File // by name; the missing ones are left out
	channeldata *os.File            // nil if there is none
}

// openIndex opens the index files of dir that exist, and channeldata.json
// beside dir.
func (m *Mirror) openIndex(dir string) (*openedIndex, error) {
	idx := &openedIndex{files: map[string]*os.File{}}
	for _, phase := range phases {
		for _, name := range phase {
			f, err := os.Open(filepath.Join(m.root, dir, name))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				idx.close()
				return nil, err
			}
			idx.files[name] = f
		}
	}
	f, err := os.Open(filepath.Join(m.root, path.Dir(dir), "channeldata.json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		idx.close()
		return nil, err
	}
	if err == nil {
		idx.channeldata = f
	}
	return idx, nil
}

func (idx *openedIndex) close() {
	for _, f := range idx.files {
		f.Close()
	}
	if idx.channeldata != nil {
		idx.channeldata.Close()
	}
}

// listing is what a subdir holds for the bucket.
type listing struct {
	immutable []string        // packages, shards, and sidecar revisions (.sigs.<sha256>)
	sigs      []string        // packages' current sidecars (.sigs)
	local     map[string]bool // every name that backs an object
}

// list lists dir after its index files are opened: the packages and
// shards, the signatures, and every file that backs an object.
func (m *Mirror) list(dir string, idx *openedIndex) (listing, error) {
	des, err := os.ReadDir(filepath.Join(m.root, dir))
	if err != nil {
		return listing{}, fmt.Errorf("list %s: %w", dir, err)
	}
	l := listing{local: map[string]bool{}}
	for _, de := range des {
		name := de.Name()
		if !de.Type().IsRegular() || strings.HasPrefix(name, ".") {
			continue
		}
		_, pkgErr := condapkg.ParseFilename(name)
		base, revision, isSigs := sidecar.IsName(name)
		_, sigErr := condapkg.ParseFilename(base)
		switch {
		case pkgErr == nil || shardName.MatchString(name) || isSigs && revision && sigErr == nil:
			l.immutable = append(l.immutable, name)
			l.local[name] = true
		case isSigs && sigErr == nil:
			l.sigs = append(l.sigs, name)
			l.local[name] = true
		}
	}
	// An index file opened but replaced since backs its object too.
	for name := range idx.files {
		l.local[name] = true
	}
	return l, nil
}

// upload puts the packages and shards (never replacing an object), then
// the signatures, then the index files phase by phase, then
// channeldata.json.
func (m *Mirror) upload(ctx context.Context, dir string, l listing, idx *openedIndex) error {
	for _, name := range l.immutable {
		if err := m.put(ctx, dir, name, nil, true); err != nil {
			return err
		}
	}
	for _, name := range l.sigs {
		if err := m.putSidecar(ctx, dir, name); err != nil {
			return err
		}
	}
	for _, phase := range phases {
		for _, name := range phase {
			if f := idx.files[name]; f != nil {
				if err := m.put(ctx, dir, name, f, false); err != nil {
					return err
				}
			}
		}
	}
	if idx.channeldata != nil {
		return m.put(ctx, path.Dir(dir), "channeldata.json", idx.channeldata, false)
	}
	return nil
}

// open opens dir/name; nil and no error if it is gone since the listing
// (the next sync sees that).
func (m *Mirror) open(dir, name string) (*os.File, error) {
	f, err := os.Open(filepath.Join(m.root, dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return f, err
}

// putSidecar uploads a package's <file>.sigs after the revision its bytes
// are named by, which may be newer than the listing: CEP 50's order holds
// in the bucket too.
func (m *Mirror) putSidecar(ctx context.Context, dir, name string) error {
	f, err := m.open(dir, name)
	if f == nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	s, err := m.hash(f, fi)
	if err != nil {
		return err
	}
	if err := m.put(ctx, dir, name+"."+hex.EncodeToString(s.sha256), nil, true); err != nil {
		return err
	}
	return m.put(ctx, dir, name, f, false)
}

// expire marks the objects of dir that no local file backs, and deletes
// those marked longer ago than the retention period.
func (m *Mirror) expire(ctx context.Context, dir string, local map[string]bool) error {
	prefix := m.key(dir, "")
	now := m.now()
	var doomed []string
	m.omu.Lock()
	for key, o := range m.objects {
		name, ok := strings.CutPrefix(key, prefix)
		if !ok || strings.Contains(name, "/") {
			continue
		}
		switch {
		case local[name]:
			o.Gone = nil
		case o.Gone == nil:
			o.Gone = &now
		case now.Sub(*o.Gone) >= m.retention:
			doomed = append(doomed, key)
		}
	}
	m.omu.Unlock()
	for _, key := range doomed {
		if _, err := m.c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(m.bucket), Key: aws.String(key)}); err != nil {
			return fmt.Errorf("delete %s: %w", key, err)
		}
		m.omu.Lock()
		delete(m.objects, key)
		m.omu.Unlock()
	}
	return nil
}

// hash returns a file's MD5 and SHA-256, once per content: files are
// replaced by rename, never rewritten, so inode, size and mtime name one.
func (m *Mirror) hash(f *os.File, fi fs.FileInfo) (sums, error) {
	st, _ := fi.Sys().(*syscall.Stat_t)
	var id fileID
	if st != nil {
		id = fileID{ino: int64(st.Ino), size: fi.Size(), mtime: fi.ModTime().UnixNano()}
		if s, ok := m.sums[id]; ok {
			return s, nil
		}
	}
	h5, h256 := md5.New(), sha256.New()
	if _, err := io.Copy(io.MultiWriter(h5, h256), f); err != nil {
		return sums{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return sums{}, err
	}
	s := sums{md5: h5.Sum(nil), sha256: h256.Sum(nil)}
	if st != nil {
		m.sums[id] = s
	}
	return s, nil
}

// put uploads dir/name, from f if it is already open, unless the bucket
// already holds its bytes. An immutable file (a package, a shard) is
// never written over.
func (m *Mirror) put(ctx context.Context, dir, name string, f *os.File, immutable bool) error {
	key := m.key(dir, name)
	if f == nil {
		var err error
		if f, err = m.open(dir, name); f == nil {
			return err
		}
		defer f.Close()
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	s, err := m.hash(f, fi)
	if err != nil {
		return fmt.Errorf("hash %s: %w", key, err)
	}
	md5hex := hex.EncodeToString(s.md5)
	m.omu.Lock()
	o, ok := m.objects[key]
	held := ok && o.MD5 == md5hex && o.Size == fi.Size()
	if held {
		o.Gone = nil
	}
	m.omu.Unlock()
	if held {
		return nil
	}
	ctype, cacheControl := channel.Headers(name)
	in := &s3.PutObjectInput{
		Bucket: aws.String(m.bucket), Key: aws.String(key), Body: f, ContentLength: aws.Int64(fi.Size()),
		ContentType: aws.String(ctype), CacheControl: aws.String(cacheControl),
		ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(s.sha256)),
		Metadata:       map[string]string{"sha256": hex.EncodeToString(s.sha256)},
	}
	if immutable {
		in.IfNoneMatch = aws.String("*")
	}
	_, err = m.c.PutObject(ctx, in)
	var ae smithy.APIError
	if immutable && errors.As(err, &ae) && (ae.ErrorCode() == "PreconditionFailed" || ae.ErrorCode() == "ConditionalRequestConflict") {
		same, herr := m.same(ctx, key, s)
		if herr != nil {
			return herr
		}
		if !same {
			m.conflicting[key] = true
			m.conflicts.Store(int64(len(m.conflicting)))
			return fmt.Errorf("%s: %w; not overwritten, and %s is not synced until it is resolved", key, ErrConflict, dir)
		}
		err = nil
	}
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	m.omu.Lock()
	m.objects[key] = &object{Size: fi.Size(), MD5: md5hex}
	m.omu.Unlock()
	if m.conflicting[key] {
		delete(m.conflicting, key) // resolved by hand
		m.conflicts.Store(int64(len(m.conflicting)))
	}
	return nil
}

// same reports whether the object under key holds the bytes of s.
func (m *Mirror) same(ctx context.Context, key string, s sums) (bool, error) {
	out, err := m.c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(m.bucket), Key: aws.String(key)})
	if err != nil {
		return false, fmt.Errorf("head %s: %w", key, err)
	}
	if v, ok := out.Metadata["sha256"]; ok {
		return v == hex.EncodeToString(s.sha256), nil
	}
	etag := strings.Trim(aws.ToString(out.ETag), `"`)
	return !strings.Contains(etag, "-") && bytes.Equal([]byte(etag), []byte(hex.EncodeToString(s.md5))), nil
}
