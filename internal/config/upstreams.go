package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/condapkg"
)

// UpstreamConfig is one [[upstreams]] block: a channel of another server
// (conda-forge, a private Artifactory) served read-only at
// /proxy/<name>/, fetched on demand and cached.
//
// Its credentials come from token_file, or username and password_file,
// or else from the systemd credentials proxy-<name>-token and
// proxy-<name>-password; never from the command line.
type UpstreamConfig struct {
	Name    string   `toml:"name"`
	URL     string   `toml:"url"`
	Subdirs []string `toml:"subdirs"`
	// Include and Exclude are package-name globs (path.Match): a name
	// is served if it matches an include (or there are none) and no
	// exclude.
	Include []string `toml:"include"`
	Exclude []string `toml:"exclude"`
	// IndexTTL is how long an index file is fresh; DefaultIndexTTL if
	// zero.
	IndexTTL Duration `toml:"index_ttl"`
	// Mode is "proxy", fetch on demand, or "mirror": also fetch every
	// package the upstream lists (after include and exclude) every
	// SyncInterval (DefaultSyncInterval if zero), for air-gapped sites.
	Mode         string   `toml:"mode"`
	SyncInterval Duration `toml:"sync_interval"`
	// RedirectHosts are the hosts the upstream may redirect to (a CDN),
	// each "host" or "host:port" ("[v6addr]:port"): a bare host is port
	// 443, and also 80 for an http upstream (see RedirectEndpoints).
	RedirectHosts []string `toml:"redirect_hosts"`
	CAFile        string   `toml:"ca_file"`
	TokenFile     string   `toml:"token_file"`
	Username      string   `toml:"username"`
	PasswordFile  string   `toml:"password_file"`
	// CacheSize bounds the cached packages; the least recently used go
	// first. Zero is no bound.
	CacheSize ByteSize `toml:"cache_size"`
	// FetchTimeout bounds each request to the upstream, body included;
	// DefaultFetchTimeout if zero.
	FetchTimeout Duration `toml:"fetch_timeout"`
	// MaxIndexSize bounds an index file as read (decompressed);
	// DefaultMaxIndexSize if zero.
	MaxIndexSize ByteSize `toml:"max_index_size"`
}

// The defaults of an upstream's zero values.
const (
	DefaultIndexTTL     = 10 * time.Minute
	DefaultFetchTimeout = 30 * time.Minute
	DefaultMaxIndexSize = 2 << 30
	DefaultSyncInterval = time.Hour
)

// Upstream credentials: a token sent as a bearer token, or a user name
// and password for HTTP Basic.
type UpstreamCredentials struct {
	Token, Username, Password string
}

// Credentials reads an upstream's credentials, from its files or
// else from the systemd credentials in credDir; none is no error.
func (u UpstreamConfig) Credentials(credDir string) (UpstreamCredentials, error) {
	read := func(file, cred string) (string, error) {
		if file == "" && credDir != "" {
			if f := filepath.Join(credDir, cred); fileExists(f) {
				file = f
			}
		}
		if file == "" {
			return "", nil
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("upstreams %s: %w", u.Name, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("upstreams %s: %s is empty", u.Name, file)
		}
		return v, nil
	}
	c := UpstreamCredentials{Username: u.Username}
	var err error
	if c.Token, err = read(u.TokenFile, "proxy-"+u.Name+"-token"); err != nil {
		return c, err
	}
	if u.Username != "" {
		if c.Password, err = read(u.PasswordFile, "proxy-"+u.Name+"-password"); err != nil {
			return c, err
		}
		if c.Password == "" {
			return c, fmt.Errorf("upstreams %s: username is set but there is no password_file or credential proxy-%s-password", u.Name, u.Name)
		}
	}
	return c, nil
}

// validateUpstreams checks every [[upstreams]] block.
func (c *Config) validateUpstreams(add func(format string, args ...any)) {
	seen := map[string]bool{}
	for i, u := range c.Upstreams {
		at := fmt.Sprintf("upstreams[%d]", i)
		if !channelName.MatchString(u.Name) || seen[u.Name] {
			add("%s.name %q: want a unique name of a-z, 0-9, '.', '_' or '-'", at, u.Name)
		}
		seen[u.Name] = true
		if p, err := url.Parse(u.URL); err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" || p.User != nil || p.RawQuery != "" || p.Fragment != "" {
			add("%s.url %q: want https://host[:port]/path of a channel", at, u.URL)
		}
		if len(u.Subdirs) == 0 {
			add("%s.subdirs is empty", at)
		}
		for _, s := range u.Subdirs {
			if !condapkg.IsKnownSubdir(s) {
				add("%s.subdirs: %q is not a conda platform subdir", at, s)
			}
		}
		for _, g := range slices.Concat(u.Include, u.Exclude) {
			if _, err := path.Match(g, ""); err != nil || g == "" {
				add("%s: include/exclude glob %q is malformed", at, g)
			}
		}
		if u.Mode != "" && u.Mode != "proxy" && u.Mode != "mirror" {
			add("%s.mode %q: want \"proxy\" (fetch on demand) or \"mirror\" (fetch everything ahead)", at, u.Mode)
		}
		if u.SyncInterval != 0 && (u.SyncInterval.D() < time.Minute || u.Mode != "mirror") {
			add("%s.sync_interval: at least 1m, and only with mode = \"mirror\"", at)
		}
		for _, h := range u.RedirectHosts {
			if _, _, err := parseRedirectHost(h); err != nil {
				add("%s.redirect_hosts: %q: %v", at, h, err)
			}
		}
		for _, f := range []string{u.CAFile, u.TokenFile, u.PasswordFile} {
			if f != "" && !filepath.IsAbs(f) {
				add("%s: %q must be an absolute path", at, f)
			}
		}
		if u.PasswordFile != "" && u.Username == "" {
			add("%s.password_file is set but username is not", at)
		}
		if u.TokenFile != "" && u.Username != "" {
			add("%s: token_file and username are both set; the upstream takes one kind of credentials", at)
		}
		if u.IndexTTL < 0 || u.FetchTimeout < 0 || u.CacheSize < 0 || u.MaxIndexSize < 0 {
			add("%s: index_ttl, fetch_timeout, cache_size and max_index_size must not be negative", at)
		}
	}
}

// RedirectEndpoints returns the host:port (as net.JoinHostPort writes
// it, the host in lower case) of each endpoint redirect_hosts lets the
// upstream redirect to: an entry's own port, or for a bare host 443, and
// also 80 if the upstream is http (a redirect from https to http is
// never followed). The proxy follows a redirect only to these, and the
// sandbox lets the server connect only to their ports. An invalid entry
// is skipped: Validate reports it.
func (u UpstreamConfig) RedirectEndpoints() []string {
	var out []string
	for _, h := range u.RedirectHosts {
		host, port, err := parseRedirectHost(h)
		switch {
		case err != nil:
			continue
		case port != "":
			out = append(out, net.JoinHostPort(host, port))
			continue
		}
		out = append(out, net.JoinHostPort(host, "443"))
		if strings.HasPrefix(u.URL, "http://") {
			out = append(out, net.JoinHostPort(host, "80"))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// parseRedirectHost splits a redirect_hosts entry, "host",
// "host:port", "[v6addr]" or "[v6addr]:port", into its host and its
// port, "" if it names none.
func parseRedirectHost(entry string) (host, port string, err error) {
	errShape := errors.New("want a host or host:port, without a scheme or a path (an IPv6 address in brackets)")
	host = entry
	switch {
	case strings.ContainsAny(entry, "/@?#\\ "):
		return "", "", errShape
	case strings.HasPrefix(entry, "[") && strings.HasSuffix(entry, "]"):
		host = entry[1 : len(entry)-1]
	case strings.Contains(entry, ":"):
		if host, port, err = net.SplitHostPort(entry); err != nil {
			return "", "", errShape
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 || strconv.FormatUint(n, 10) != port {
			return "", "", fmt.Errorf("port %q is not a number from 1 to 65535", port)
		}
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Zone() == "" {
		return ip.String(), port, nil
	}
	if strings.HasPrefix(entry, "[") || host == "" || strings.IndexFunc(host, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_')
	}) >= 0 {
		return "", "", errShape
	}
	return strings.ToLower(host), port, nil
}
