// Package config reads the server's TOML configuration and checks it up
// front, so that a mistake is a startup error that names the key, not a
// failed upload hours later.
//
// Keys mirror the original server's long flags (write_dir, port, conda_exe,
// certfile, keyfile, token_hash); command-line flags override the file.
// Unknown keys are errors: a misspelt limit must not silently fall back to
// its default.
//
// It also reads the secrets the configuration points to (token hashes, the
// tokens file, the mirror's keys), from systemd credentials when they are
// passed, and turns tokens and trusted publishers into what auth and
// trusted take.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
	"github.com/conda-upload-server/conda-upload-server/internal/owners"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
	"github.com/conda-upload-server/conda-upload-server/internal/trusted"
)

// Config is the server configuration.
type Config struct {
	WriteDir string `toml:"write_dir"`
	// Listen is the address to bind when the service manager passes no
	// socket: a host ("127.0.0.1", "::1"), a host and port
	// ("127.0.0.1:8443"), or empty for every address. A port here
	// overrides Port.
	Listen        string        `toml:"listen"`
	Port          int           `toml:"port"`
	CondaExe      string        `toml:"conda_exe"`
	CertFile      string        `toml:"certfile"`
	KeyFile       string        `toml:"keyfile"`
	TokenHash     string        `toml:"token_hash"`
	TokenHashFile string        `toml:"token_hash_file"`
	TokensFile    string        `toml:"tokens_file"`
	Salt          string        `toml:"salt"`
	Tokens        []TokenConfig `toml:"tokens"`

	User      string `toml:"user"`
	Group     string `toml:"group"`
	AllowRoot bool   `toml:"allow_root"`

	MaxUploadSize        ByteSize `toml:"max_upload_size"`
	MaxConcurrentUploads int      `toml:"max_concurrent_uploads"`
	ReadHeaderTimeout    Duration `toml:"read_header_timeout"`
	IdleTimeout          Duration `toml:"idle_timeout"`
	ShutdownGrace        Duration `toml:"shutdown_grace"`
	MaxConnections       int      `toml:"max_connections"`
	MinUploadRate        ByteSize `toml:"min_upload_rate"`
	UploadRateWindow     Duration `toml:"upload_rate_window"`
	AuthFailureLimit     int      `toml:"auth_failure_limit"`
	AuthFailureWindow    Duration `toml:"auth_failure_window"`
	// AuthFailureIPv6Prefix is the prefix length by which IPv6 clients
	// are counted for auth_failure_limit: a host holds a whole /64, and
	// counted by address it could rotate through it without limit.
	AuthFailureIPv6Prefix int      `toml:"auth_failure_ipv6_prefix"`
	AllowedSubdirs        []string `toml:"allowed_subdirs"`
	// MemoryLimit is a soft limit for the Go heap (runtime/debug
	// SetMemoryLimit): near it the garbage collector works harder rather
	// than let the heap double. Zero leaves the runtime's default.
	MemoryLimit ByteSize `toml:"memory_limit"`

	// MaxStreamsPerConnection is how many HTTP/2 streams one connection
	// may have open at once; with max_connections, it bounds the
	// requests in flight.
	MaxStreamsPerConnection int `toml:"max_streams_per_connection"`

	// ChannelName is the {channel} of the quetz, prefix.dev and
	// Artifactory upload paths that means this channel.
	ChannelName string `toml:"channel_name"`
	// ListenDownload, if set, is a separate address (as Listen) that
	// serves the channel, and then the main listener serves uploads only.
	ListenDownload string `toml:"listen_download"`

	Download          DownloadConfig           `toml:"download"`
	UI                UIConfig                 `toml:"ui"`
	TrustedPublishers []TrustedPublisherConfig `toml:"trusted_publishers"`
	OIDC              OIDCConfig               `toml:"oidc"`
	Index             IndexConfig              `toml:"index"`
	Sandbox           SandboxConfig            `toml:"sandbox"`
	Metrics           MetricsConfig            `toml:"metrics"`
	Audit             AuditConfig              `toml:"audit"`
	Mirror            MirrorConfig             `toml:"mirror"`
	Attestations      AttestationsConfig       `toml:"attestations"`
	Upstreams         []UpstreamConfig         `toml:"upstreams"`
	Policy            PolicyConfig             `toml:"policy"`

	// Retention, TrashRetention and the quotas bound what the channel
	// keeps (retention.go).
	Retention      []RetentionConfig   `toml:"retention"`
	TrashRetention Duration            `toml:"trash_retention"`
	LabelQuotas    []LabelQuotaConfig  `toml:"label_quotas"`
	UploadQuotas   []UploadQuotaConfig `toml:"upload_quotas"`
}

// MirrorConfig is [mirror]: a copy of the channel in S3-compatible object
// storage, synced after every index run, for downloads at a scale one host
// cannot serve.
type MirrorConfig struct {
	// ReconcileInterval is how often the bucket is listed again to
	// correct what the mirror believes it holds.
	ReconcileInterval Duration `toml:"reconcile_interval"`
	// Wait makes an upload's answer wait, up to WaitTimeout, until the
	// bucket holds the package ("mirrored": true), for a CI job that
	// fetches from the bucket next.
	Wait        bool     `toml:"wait"`
	WaitTimeout Duration `toml:"wait_timeout"`
	// S3, if set, is the bucket.
	S3 *MirrorS3Config `toml:"s3"`
}

// MirrorS3Config is [mirror.s3]. The keys come from access_key_file and
// secret_key_file, or else from the systemd credentials s3-access-key
// and s3-secret-key; never from the command line.
type MirrorS3Config struct {
	Endpoint      string `toml:"endpoint"`
	Region        string `toml:"region"`
	Bucket        string `toml:"bucket"`
	Prefix        string `toml:"prefix"`
	PathStyle     bool   `toml:"path_style"`
	CAFile        string `toml:"ca_file"`
	AccessKeyFile string `toml:"access_key_file"`
	SecretKeyFile string `toml:"secret_key_file"`
}

// MirrorKeys reads the mirror's access and secret keys.
func (c *Config) MirrorKeys(credDir string) (access, secret string, err error) {
	m := c.Mirror.S3
	read := func(file, cred string) (string, error) {
		if file == "" && credDir != "" {
			file = filepath.Join(credDir, cred)
		}
		if file == "" {
			return "", fmt.Errorf("mirror.s3: no %s: set %s_file or pass the systemd credential %s", cred, strings.ReplaceAll(strings.TrimPrefix(cred, "s3-"), "-", "_"), cred)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("mirror.s3: %w", err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("mirror.s3: %s is empty", file)
		}
		return v, nil
	}
	if access, err = read(m.AccessKeyFile, "s3-access-key"); err != nil {
		return "", "", err
	}
	secret, err = read(m.SecretKeyFile, "s3-secret-key")
	return access, secret, err
}

// MetricsConfig configures GET /metrics.
type MetricsConfig struct {
	// Enabled serves /metrics at all.
	Enabled bool `toml:"enabled"`
	// Allow lists the client networks that may read /metrics on the
	// upload listener.
	Allow []string `toml:"allow"`
	// Listen, if set, also serves /metrics over plain HTTP on this
	// address (bound before the sandbox), to every client.
	Listen string `toml:"listen"`
	// TokenNames labels upload counters with the token name.
	TokenNames bool `toml:"token_names"`
}

// DownloadConfig configures serving the channel (GET and HEAD).
type DownloadConfig struct {
	// Enabled serves the channel; off unless chosen (on in --dev).
	Enabled bool `toml:"enabled"`
	// Access is "public", or "token": a token with the read scope, sent
	// as Authorization: Bearer, as the password of HTTP Basic, or in a
	// /t/<token>/ path prefix.
	Access string `toml:"access"`
	// RateWhileUploading, in bytes per second, is what all downloads
	// together may send while an upload is in flight, so that uploads
	// keep their speed on a small host; 0 does not pace downloads.
	RateWhileUploading ByteSize `toml:"rate_while_uploading"`
	// MaxConcurrent bounds the downloads in flight (each holds one open
	// file at most), and MaxPerConnection those of one connection; past
	// either, a download gets 503 with Retry-After.
	MaxConcurrent    int `toml:"max_concurrent"`
	MaxPerConnection int `toml:"max_per_connection"`
	// SendTimeout is how long a client may take to accept each 32 KiB of
	// a download (or a shorter answer); past it the download is cut and
	// its file closed.
	SendTimeout Duration `toml:"send_timeout"`
}

// UIConfig configures the channel's pages for browsers.
type UIConfig struct {
	// Enabled serves the pages wherever the channel is served: a person
	// who opens the channel's URL sees its packages rather than a bare
	// listing. Off, browsers get the plain listings curl gets.
	Enabled bool `toml:"enabled"`
}

// TrustedPublisherConfig is one [[trusted_publishers]] block: which CI
// jobs, by their OIDC identity, may upload without a stored token.
type TrustedPublisherConfig struct {
	Name      string            `toml:"name"`
	Issuer    string            `toml:"issuer"`
	Audiences []string          `toml:"audiences"`
	Claims    map[string]string `toml:"claims"`
	Subdirs   []string          `toml:"subdirs"`
	Labels    []string          `toml:"labels"`
	Packages  []string          `toml:"packages"`
	Scopes    []string          `toml:"scopes"`
	JWKSFile  string            `toml:"jwks_file"`
	CAFile    string            `toml:"ca_file"`
	// RequireAttestation refuses the publisher's uploads without a valid
	// attestation signed by its workflow ([attestations]).
	RequireAttestation bool `toml:"require_attestation"`
}

// OIDCConfig configures trusted publishing as a whole.
type OIDCConfig struct {
	// TokenTTL is how long a minted token lives: at most 15 minutes.
	TokenTTL Duration `toml:"token_ttl"`
}

// check validates one publisher. A rule must pin a repository and its
// workflow (GitHub) or a project and its CI configuration (GitLab):
// anything less would let other repositories' jobs upload.
func (p TrustedPublisherConfig) check() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if p.Name == "" {
		add("no name")
	}
	if u, err := url.Parse(p.Issuer); err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		add("issuer %q must be an https URL", p.Issuer)
	}
	if len(p.Audiences) == 0 {
		add("audiences is empty")
	}
	known := trusted.KnownClaims()
	for name := range p.Claims {
		if !slices.Contains(known, name) {
			add("claims: %q is not a claim rule (known: %s)", name, strings.Join(known, ", "))
		}
	}
	_, repo := p.Claims["repository"]
	_, wf := p.Claims["workflow"]
	_, proj := p.Claims["project_path"]
	_, ci := p.Claims["ci_config_ref_uri"]
	if !(repo && wf) && !(proj && ci) {
		add("claims must name repository and workflow (GitHub) or project_path and ci_config_ref_uri (GitLab)")
	}
	for _, s := range p.Scopes {
		if !slices.Contains(auth.KnownScopes(), s) {
			add("scopes: %q is not a scope", s)
		}
	}
	for _, s := range p.Subdirs {
		if !condapkg.IsKnownSubdir(s) {
			add("subdirs: %q is not a conda platform subdir", s)
		}
	}
	for _, l := range p.Labels {
		if !store.ValidLabel(l) {
			add("labels: %q is not a label name ([a-z0-9][a-z0-9._-]{0,63})", l)
		}
	}
	if err := checkPackages(p.Packages); err != nil {
		add("%v", err)
	}
	for _, f := range []string{p.JWKSFile, p.CAFile} {
		if f != "" && !filepath.IsAbs(f) {
			add("%q must be an absolute path", f)
		}
	}
	return errors.Join(errs...)
}

// Publishers returns the trusted publishers for the trusted package.
func (c *Config) Publishers() []trusted.Publisher {
	var out []trusted.Publisher
	for _, p := range c.TrustedPublishers {
		out = append(out, trusted.Publisher{Name: p.Name, Issuer: p.Issuer, Audiences: p.Audiences, Claims: p.Claims,
			Subdirs: p.Subdirs, Labels: p.Labels, Packages: p.Packages, Scopes: p.Scopes, JWKSFile: p.JWKSFile, CAFile: p.CAFile})
	}
	return out
}

// AuditConfig configures the audit log.
type AuditConfig struct {
	// File is the append-only JSON-lines audit log; empty sends audit
	// records to the service log (the journal under systemd).
	File string `toml:"file"`
}

// SandboxConfig configures Landlock.
type SandboxConfig struct {
	// Landlock is "enforce", "best-effort" or "off".
	Landlock string `toml:"landlock"`
	// ReadPaths and WritePaths are extra paths for conda installations
	// that need them.
	ReadPaths  []string `toml:"read_paths"`
	WritePaths []string `toml:"write_paths"`
}

// TokenConfig is one named token hash, with an optional scope and expiry.
type TokenConfig struct {
	Name string `toml:"name"`
	Hash string `toml:"hash"`
	// Scopes are what the token may do: "upload" (the default),
	// "read" (downloads from a token-access channel, and listing a
	// label), "overwrite", and the admin API's "promote", "yank",
	// "delete" and "patch".
	Scopes  []string `toml:"scopes"`
	Subdirs []string `toml:"subdirs"`
	// Labels, if set, are the only labels the token may upload to or
	// change; "main" is the channel root.
	Labels []string `toml:"labels"`
	// Packages, if set, are the only package names the token may
	// upload or change: exact names and globs ("mypkg", "mypkg-*").
	Packages []string  `toml:"packages"`
	Expires  time.Time `toml:"expires"`
	// AttestationIdentities are who may sign the attestations of the
	// token's uploads; without any, its attestations are refused where
	// they are verified.
	AttestationIdentities []SignerConfig `toml:"attestation_identities"`
}

// TokensFile is the document of a tokens_file: [[tokens]] only.
type TokensFile struct {
	Tokens []TokenConfig `toml:"tokens"`
}

// LoadTokensFile reads and checks a tokens_file.
func LoadTokensFile(path string) ([]TokenConfig, error) {
	var doc TokensFile
	md, err := toml.DecodeFile(path, &doc)
	if err != nil {
		return nil, fmt.Errorf("tokens_file %s: %w", path, err)
	}
	if un := md.Undecoded(); len(un) > 0 {
		return nil, fmt.Errorf("tokens_file %s: unknown key %s", path, un[0].String())
	}
	var errs []error
	for i, t := range doc.Tokens {
		if err := t.check(); err != nil {
			errs = append(errs, fmt.Errorf("tokens_file %s: tokens[%d] (%s): %w", path, i, t.Name, err))
		}
	}
	return doc.Tokens, errors.Join(errs...)
}

func (t TokenConfig) check() error {
	if t.Name == "" {
		return errors.New("no name")
	}
	if _, err := auth.ParseHash(t.Hash); err != nil {
		return err
	}
	for _, s := range t.Scopes {
		if !slices.Contains(auth.KnownScopes(), s) {
			return fmt.Errorf("scopes: %q is not a scope (known: %s)", s, strings.Join(auth.KnownScopes(), ", "))
		}
	}
	if t.Scopes != nil && len(t.Scopes) == 0 {
		return errors.New("scopes is empty: the token could do nothing")
	}
	for _, s := range t.Subdirs {
		if !condapkg.IsKnownSubdir(s) {
			return fmt.Errorf("subdirs: %q is not a conda platform subdir", s)
		}
	}
	for _, l := range t.Labels {
		if !store.ValidLabel(l) {
			return fmt.Errorf("labels: %q is not a label name ([a-z0-9][a-z0-9._-]{0,63})", l)
		}
	}
	if err := checkPackages(t.Packages); err != nil {
		return err
	}
	return checkSigners(t.AttestationIdentities)
}

func (t TokenConfig) token() (auth.Token, error) {
	h, err := auth.ParseHash(t.Hash)
	if err != nil {
		return auth.Token{}, fmt.Errorf("token %s: %w", t.Name, err)
	}
	return auth.Token{Name: t.Name, Hash: h, Scopes: t.Scopes, Subdirs: t.Subdirs, Labels: t.Labels, Packages: t.Packages, Expires: t.Expires, Signers: signers(t.AttestationIdentities)}, nil
}

// IndexConfig configures how a subdir is re-indexed after an upload.
type IndexConfig struct {
	// Command is the argv run after conda_exe when conda_exe is set.
	// {channel} and {subdir} are replaced.
	Command []string `toml:"command"`
	// Timeout bounds one index run.
	Timeout Duration `toml:"timeout"`
	// Wait makes the response wait for an index run that includes the
	// package.
	Wait bool `toml:"wait"`
	// Zst, Shards and RunExports choose the files the built-in indexer
	// writes besides repodata.json; CurrentRepodata and Channeldata are
	// conda-index's optional files. With conda_exe they do nothing: pass
	// conda-index's own flags in Command.
	Zst             bool `toml:"zst"`
	Shards          bool `toml:"shards"`
	RunExports      bool `toml:"run_exports"`
	CurrentRepodata bool `toml:"current_repodata"`
	Channeldata     bool `toml:"channeldata"`
	// ShardRetention is how long a shard that no index names any more is
	// kept for clients holding an older shard index: at least an hour.
	ShardRetention Duration `toml:"shard_retention"`
}

// DefaultIndexCommand returns, in a new slice, the [index] command that
// suits conda-index ≥ 0.3 (the `conda index` plugin).
func DefaultIndexCommand() []string { return []string{"index", "--subdir", "{subdir}", "{channel}"} }

// Default returns the configuration used where the file and flags are
// silent.
func Default() *Config {
	return &Config{
		Port:                  8443,
		Salt:                  auth.DefaultSalt,
		MaxUploadSize:         4 << 30,
		MaxConcurrentUploads:  16,
		ReadHeaderTimeout:     Duration(10 * time.Second),
		IdleTimeout:           Duration(2 * time.Minute),
		ShutdownGrace:         Duration(30 * time.Second),
		MaxConnections:        512,
		MinUploadRate:         10 << 10,
		UploadRateWindow:      Duration(30 * time.Second),
		AuthFailureLimit:      10,
		AuthFailureWindow:     Duration(time.Minute),
		AuthFailureIPv6Prefix: 64,
		AllowedSubdirs:        condapkg.KnownSubdirs(),
		MemoryLimit:           224 << 20,
		TrashRetention:        Duration(30 * 24 * time.Hour),
		Index: IndexConfig{
			Command:        DefaultIndexCommand(),
			Timeout:        Duration(10 * time.Minute),
			Wait:           true,
			Zst:            true,
			Shards:         true,
			RunExports:     true,
			ShardRetention: Duration(6 * time.Hour),
		},
		MaxStreamsPerConnection: 100,
		// Enforce where the kernel can; the shipped config says enforce.
		Sandbox:     SandboxConfig{Landlock: "best-effort"},
		Metrics:     MetricsConfig{Enabled: true, Allow: []string{"127.0.0.0/8", "::1/128"}},
		UI:          UIConfig{Enabled: true},
		Download:    DownloadConfig{Access: "public", RateWhileUploading: 32 << 20, MaxConcurrent: 256, MaxPerConnection: 64, SendTimeout: Duration(30 * time.Second)},
		ChannelName: "main",
		OIDC:        OIDCConfig{TokenTTL: Duration(trusted.MaxTokenTTL)},
		Policy:      PolicyConfig{Owners: owners.ModeConfig},
		Mirror:      MirrorConfig{ReconcileInterval: Duration(time.Hour), WaitTimeout: Duration(30 * time.Second)},
	}
}

// Load reads a TOML file over the defaults.
func Load(path string) (*Config, error) {
	c := Default()
	md, err := toml.DecodeFile(path, c)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if un := md.Undecoded(); len(un) > 0 {
		keys := make([]string, len(un))
		for i, k := range un {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("config %s: unknown key %s", path, strings.Join(keys, ", "))
	}
	return c, nil
}

// Validate checks the configuration as a whole, and reports every error
// at once, each naming its key. It does not touch the file system beyond
// what it must read.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	c.validateListen(add)
	c.validateServing(add)
	c.validateCredentials(add)
	c.validateLimits(add)
	c.validateIndex(add)
	c.validateSandbox(add)
	c.validateMirror(add)
	c.validateDownloadLimits(add)
	c.validateUpstreams(add)
	c.validatePolicy(add)
	c.validateRetention(add)
	c.validateAttestations(add)
	return errors.Join(errs...)
}

// validateListen checks the channel root and where the server listens.
func (c *Config) validateListen(add func(format string, args ...any)) {
	if c.WriteDir == "" {
		add("write_dir is not set")
	} else if condapkg.IsKnownSubdir(filepath.Base(filepath.Clean(c.WriteDir))) {
		add("write_dir %s is named after a platform subdir; it must be the channel root (packages go to write_dir/<subdir>/ by their own index.json)", c.WriteDir)
	}
	if c.Port < 0 || c.Port > 65535 {
		add("port %d is out of range", c.Port)
	}
	if _, err := c.ListenAddr(); err != nil {
		add("%v", err)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		add("certfile and keyfile must be set together")
	}
}

// validateCredentials checks who may call: the upload tokens and the
// networks that may read the metrics.
func (c *Config) validateCredentials(add func(format string, args ...any)) {
	if c.TokenHash != "" && c.TokenHashFile != "" {
		add("set only one of token_hash and token_hash_file")
	}
	if c.TokenHash != "" {
		if _, err := auth.ParseHash(c.TokenHash); err != nil {
			add("token_hash: %v", err)
		}
	}
	for i, t := range c.Tokens {
		if err := t.check(); err != nil {
			add("tokens[%d] (%s): %v", i, t.Name, err)
		}
	}
	if c.TokensFile != "" && !filepath.IsAbs(c.TokensFile) {
		add("tokens_file %q must be an absolute path", c.TokensFile)
	}
	for _, a := range c.Metrics.Allow {
		if _, err := netip.ParsePrefix(a); err != nil {
			add("metrics.allow: %v", err)
		}
	}
}

// validateLimits checks the bounds on memory, uploads, connections, time
// and failed authentications.
func (c *Config) validateLimits(add func(format string, args ...any)) {
	if c.MemoryLimit < 0 || (c.MemoryLimit > 0 && c.MemoryLimit < 64<<20) {
		add("memory_limit must be 0 (none) or at least 64MiB")
	}
	if c.MaxUploadSize <= 0 {
		add("max_upload_size must be positive")
	}
	if c.MaxConcurrentUploads <= 0 {
		add("max_concurrent_uploads must be positive")
	}
	if c.ReadHeaderTimeout <= 0 || c.IdleTimeout <= 0 || c.ShutdownGrace < 0 || c.Index.Timeout <= 0 {
		add("timeouts must be positive")
	}
	if c.MaxConnections < c.MaxConcurrentUploads {
		add("max_connections (%d) must be at least max_concurrent_uploads (%d)", c.MaxConnections, c.MaxConcurrentUploads)
	}
	if c.MinUploadRate < 0 || c.UploadRateWindow <= 0 {
		add("min_upload_rate must not be negative and upload_rate_window must be positive")
	}
	c.validateAuthFailures(add)
}

// validateIndex checks what is indexed and how: the subdirs, the conda
// executable and [index].
func (c *Config) validateIndex(add func(format string, args ...any)) {
	if c.CondaExe != "" && !filepath.IsAbs(c.CondaExe) {
		add("conda_exe %q must be an absolute path", c.CondaExe)
	}
	for _, s := range c.AllowedSubdirs {
		if !condapkg.IsKnownSubdir(s) {
			add("allowed_subdirs: %q is not a conda platform subdir (known: %s)", s, strings.Join(condapkg.KnownSubdirs(), ", "))
		}
	}
	if len(c.AllowedSubdirs) == 0 {
		add("allowed_subdirs is empty")
	}
	if len(c.Index.Command) == 0 {
		add("index.command is empty")
	}
	if c.Index.ShardRetention < Duration(time.Hour) {
		add("index.shard_retention %s is under an hour; clients holding an older shard index would miss its shards", time.Duration(c.Index.ShardRetention))
	}
}

// validateSandbox checks what confines the process: [sandbox], the
// service user, and the audit log (a file the policy lets it write).
func (c *Config) validateSandbox(add func(format string, args ...any)) {
	switch c.Sandbox.Landlock {
	case "enforce", "best-effort", "off":
	default:
		add("sandbox.landlock %q: want enforce, best-effort or off", c.Sandbox.Landlock)
	}
	for _, p := range append(slices.Clone(c.Sandbox.ReadPaths), c.Sandbox.WritePaths...) {
		if !filepath.IsAbs(p) {
			add("sandbox paths must be absolute, got %q", p)
		}
	}
	if c.Group != "" && c.User == "" {
		add("group is set but user is not")
	}
	if c.Audit.File != "" && !filepath.IsAbs(c.Audit.File) {
		add("audit.file %q must be an absolute path", c.Audit.File)
	}
}

// validateDownloadLimits checks the bounds on what clients that do not
// read their answers can hold: HTTP/2 streams, downloads in flight, and
// how long an answer may wait for its client.
func (c *Config) validateDownloadLimits(add func(format string, args ...any)) {
	if c.MaxStreamsPerConnection < 1 || c.MaxStreamsPerConnection > 1000 {
		add("max_streams_per_connection %d: want 1 to 1000", c.MaxStreamsPerConnection)
	}
	d := c.Download
	if d.MaxConcurrent < 1 {
		add("download.max_concurrent must be at least 1")
	}
	if d.MaxPerConnection < 1 || d.MaxPerConnection > d.MaxConcurrent {
		add("download.max_per_connection %d: want 1 to download.max_concurrent (%d)", d.MaxPerConnection, d.MaxConcurrent)
	}
	if d.SendTimeout.D() < time.Second || d.SendTimeout.D() > 10*time.Minute {
		add("download.send_timeout %s: want 1s to 10m", d.SendTimeout.D())
	}
}

// validateAuthFailures checks the failed-authentication limiter's keys.
func (c *Config) validateAuthFailures(add func(format string, args ...any)) {
	if c.AuthFailureLimit < 0 || c.AuthFailureWindow <= 0 {
		add("auth_failure_limit must not be negative and auth_failure_window must be positive")
	}
	// Shorter than a /16 would count unrelated networks as one client;
	// 128 counts each IPv6 address on its own.
	if p := c.AuthFailureIPv6Prefix; p < 16 || p > 128 {
		add("auth_failure_ipv6_prefix %d: want a prefix length from 16 to 128 (64, a host's usual share, by default)", p)
	}
}

// validateMirror checks [mirror] and [mirror.s3].
func (c *Config) validateMirror(add func(format string, args ...any)) {
	if m := c.Mirror.S3; m != nil {
		if u, err := url.Parse(m.Endpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			add("mirror.s3.endpoint %q: want https://host[:port]", m.Endpoint)
		}
		if m.Bucket == "" {
			add("mirror.s3.bucket is empty")
		}
		if m.Prefix != "" && (strings.HasPrefix(m.Prefix, "/") || !strings.HasSuffix(m.Prefix, "/")) {
			add("mirror.s3.prefix %q must not start with / and must end with /", m.Prefix)
		}
		for _, f := range []string{m.CAFile, m.AccessKeyFile, m.SecretKeyFile} {
			if f != "" && !filepath.IsAbs(f) {
				add("mirror.s3: %q must be an absolute path", f)
			}
		}
		if (m.AccessKeyFile == "") != (m.SecretKeyFile == "") {
			add("mirror.s3: set both access_key_file and secret_key_file, or neither (systemd credentials)")
		}
	}
	if c.Mirror.Wait && c.Mirror.S3 == nil {
		add("mirror.wait is set but there is no [mirror.s3]")
	}
	if c.Mirror.WaitTimeout.D() <= 0 || c.Mirror.WaitTimeout.D() > 10*time.Minute {
		add("mirror.wait_timeout must be between 0 and 10m")
	}
	if c.Mirror.ReconcileInterval.D() < time.Minute {
		add("mirror.reconcile_interval must be at least 1m")
	}
}

var channelName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// validateServing checks the settings of serving the channel, of the
// upload protocols and of trusted publishing.
func (c *Config) validateServing(add func(format string, args ...any)) {
	if c.ListenDownload != "" {
		if _, err := (&Config{Listen: c.ListenDownload, Port: c.Port}).ListenAddr(); err != nil {
			add("listen_download: %v", err)
		}
	}
	if !channelName.MatchString(c.ChannelName) {
		add("channel_name %q: want 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit", c.ChannelName)
	}
	names := map[string]bool{}
	for i, p := range c.TrustedPublishers {
		if err := p.check(); err != nil {
			add("trusted_publishers[%d] (%s): %v", i, p.Name, err)
		}
		if names[p.Name] {
			add("trusted_publishers: the name %q is used twice", p.Name)
		}
		names[p.Name] = true
	}
	if c.OIDC.TokenTTL <= 0 || c.OIDC.TokenTTL > Duration(trusted.MaxTokenTTL) {
		add("oidc.token_ttl must be between 0 and %s", trusted.MaxTokenTTL)
	}
	if c.Download.RateWhileUploading < 0 {
		add("download.rate_while_uploading must not be negative")
	}
	switch c.Download.Access {
	case "public", "token":
	default:
		add("download.access %q: want public or token", c.Download.Access)
	}
}

// ListenAddr returns the host:port to bind when the service manager
// passes no socket.
func (c *Config) ListenAddr() (string, error) {
	host := c.Listen
	port := strconv.Itoa(c.Port)
	if h, p, err := net.SplitHostPort(c.Listen); err == nil {
		host, port = h, p
	}
	if host != "" && host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			return "", fmt.Errorf("listen %q: want an IP address, optionally with a port (such as 127.0.0.1:8443)", c.Listen)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("listen %q: bad port", c.Listen)
	}
	return net.JoinHostPort(host, port), nil
}

// DefaultTokenName names the token given by token_hash or token_hash_file.
const DefaultTokenName = "default"

// TokensFilePath returns the tokens file in use: the "tokens" credential
// if systemd passes one, else tokens_file.
func (c *Config) TokensFilePath(credDir string) string {
	if credDir != "" {
		if p := filepath.Join(credDir, "tokens"); fileExists(p) {
			return p
		}
	}
	return c.TokensFile
}

// AuthTokens gathers the token hashes from token_hash, token_hash_file,
// [[tokens]] and the tokens file. credDir, if not empty, is systemd's
// $CREDENTIALS_DIRECTORY, whose token-hash and tokens credentials stand in
// for token_hash_file and tokens_file.
func (c *Config) AuthTokens(credDir string) ([]auth.Token, error) {
	var out []auth.Token
	single := c.TokenHash
	source := "token_hash"
	file := c.TokenHashFile
	if credDir != "" && single == "" {
		if p := filepath.Join(credDir, "token-hash"); fileExists(p) {
			file, source = p, "credential token-hash"
		}
	}
	if single == "" && file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("token_hash_file: %w", err)
		}
		single, source = string(b), file
	}
	if single != "" {
		h, err := auth.ParseHash(single)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		out = append(out, auth.Token{Name: DefaultTokenName, Hash: h})
	}
	all := c.Tokens
	if p := c.TokensFilePath(credDir); p != "" {
		more, err := LoadTokensFile(p)
		if err != nil {
			return nil, err
		}
		all = append(slices.Clone(all), more...)
	}
	for _, t := range all {
		tok, err := t.token()
		if err != nil {
			return nil, err
		}
		out = append(out, tok)
	}
	if len(out) == 0 && len(c.TrustedPublishers) == 0 {
		return nil, errors.New("no token configured: set token_hash_file, token_hash (-t), tokens_file, [[tokens]] or [[trusted_publishers]]")
	}
	return out, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// ByteSize is a size in bytes, written in TOML as an integer or as a
// string with a unit: "4GiB", "512MiB", "100MB".
type ByteSize int64

// UnmarshalTOML implements toml.Unmarshaler.
func (b *ByteSize) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		*b = ByteSize(v)
		return nil
	case string:
		n, err := ParseByteSize(v)
		*b = n
		return err
	}
	return fmt.Errorf("size must be an integer or a string such as \"4GiB\", got %T", v)
}

// ParseByteSize parses "4GiB", "100MB", "1024".
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
	}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q: want a number with an optional unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s)
	}
	if n > (1<<63-1)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return ByteSize(n * mult), nil
}

// Duration is a time.Duration written in TOML as a string: "10s", "5m",
// or whole days, "30d".
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	if n, ok := strings.CutSuffix(string(b), "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days >= 0 && days < 100000 {
			*d = Duration(time.Duration(days) * 24 * time.Hour)
			return nil
		}
	}
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("bad duration %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
