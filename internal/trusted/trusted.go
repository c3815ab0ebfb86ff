// Package trusted lets CI jobs upload with their own OIDC identity
// instead of a stored secret ("trusted publishing", as PyPI and prefix.dev
// do): the job presents the ID token its CI system signs for it (GitHub
// Actions, GitLab CI), bound to a repository, a workflow and a ref, and a
// configured publisher says which such identities may upload where.
//
// Signatures and the standard claims are checked with
// github.com/coreos/go-oidc over keys fetched by OIDC discovery (or read
// from a file), through github.com/go-jose/go-jose; no JOSE is parsed by
// hand. On top of them: only asymmetric algorithms, bounded clock leeway
// for exp, nbf and iat, each jti accepted once, and the publisher's claim
// rules, with the case handling PyPI applies.
//
// A verified identity can upload directly (the JWT as Bearer) or be
// exchanged for a short-lived token (Mint), which is what rattler-build
// and pixi do; minted tokens live in memory only.
package trusted

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
)

// Leeway is the clock skew allowed on exp, nbf and iat.
const Leeway = time.Minute

// MaxTokenTTL is the longest a minted token may live.
const MaxTokenTTL = 15 * time.Minute

// Publisher is one trusted publisher rule.
type Publisher struct {
	Name      string
	Issuer    string
	Audiences []string
	// Claims must match. GitHub: repository, repository_owner_id,
	// workflow (the file name in job_workflow_ref), ref, environment.
	// GitLab: project_path, ci_config_ref_uri, environment.
	Claims  map[string]string
	Subdirs []string
	// Labels, if set, are the only labels the publisher may upload to.
	Labels []string
	// Packages, if set, are the only package names (exact or globs) the
	// publisher may upload.
	Packages []string
	Scopes   []string // upload only if empty
	// JWKSFile, if set, holds the issuer's keys instead of discovery;
	// CAFile, a CA bundle for a self-hosted issuer.
	JWKSFile, CAFile string
}

// KnownClaims returns the claim names a publisher may require.
func KnownClaims() []string {
	return []string{"repository", "repository_owner_id", "workflow", "ref", "environment", "project_path", "ci_config_ref_uri", "sub"}
}

// Error is a refused token: the reason is for the log and the client.
type Error struct{ Reason string }

func (e *Error) Error() string { return "OIDC token refused: " + e.Reason }

func refuse(format string, args ...any) error { return &Error{Reason: fmt.Sprintf(format, args...)} }

// IsRefused reports whether err is a refused token (a 401), as opposed to
// keys that cannot be had.
func IsRefused(err error) bool { var e *Error; return errors.As(err, &e) }

// Identity is a verified CI job.
type Identity struct {
	Publisher            string
	Repository, Ref, SHA string
	Subject              string
	Token                auth.Token // what the job may do, named oidc:<publisher>
	Expires              time.Time  // the ID token's exp
}

type publisher struct {
	Publisher
	keys     *keySet
	verifier *oidc.IDTokenVerifier
}

// KeysError says an issuer's keys cannot be had: the server fails
// closed, and the client is told so (503), not that its token is bad.
type KeysError struct {
	Issuer string
	Err    error
}

func (e *KeysError) Error() string {
	return fmt.Sprintf("keys of issuer %s cannot be had, so no OIDC token can be verified: %v", e.Issuer, e.Err)
}

func (e *KeysError) Unwrap() error { return e.Err }

type minted struct {
	id      Identity
	expires time.Time
}

// Verifier checks ID tokens against the publishers and keeps minted
// tokens and used jtis in memory.
type Verifier struct {
	pubs     []*publisher
	ttl      time.Duration
	now      func() time.Time
	failures func(issuer string)

	mu     sync.Mutex
	jtis   map[string]time.Time // issuer+jti → expiry
	tokens map[[sha256.Size]byte]minted
}

// An Option configures a Verifier.
type Option func(*Verifier)

// WithClock sets the clock, for tests of expiry.
func WithClock(now func() time.Time) Option { return func(v *Verifier) { v.now = now } }

// WithTokenTTL sets how long minted tokens live (at most MaxTokenTTL).
func WithTokenTTL(d time.Duration) Option { return func(v *Verifier) { v.ttl = min(d, MaxTokenTTL) } }

// WithKeyFailures sets a function called when an issuer's keys cannot be
// fetched, for metrics.
func WithKeyFailures(f func(issuer string)) Option { return func(v *Verifier) { v.failures = f } }

// New returns a Verifier for the publishers. Keys are fetched when first
// needed, so that an issuer that is down does not stop the server.
func New(pubs []Publisher, opts ...Option) (*Verifier, error) {
	v := &Verifier{ttl: MaxTokenTTL, now: time.Now, jtis: map[string]time.Time{}, tokens: map[[sha256.Size]byte]minted{}}
	for _, o := range opts {
		o(v)
	}
	sets := map[string]*keySet{}
	for _, p := range pubs {
		key := p.Issuer + "\x00" + p.JWKSFile + "\x00" + p.CAFile
		ks := sets[key]
		if ks == nil {
			var err error
			if ks, err = newKeySet(p.Issuer, p.JWKSFile, p.CAFile, v.now, v.failures); err != nil {
				return nil, fmt.Errorf("trusted publisher %s: %w", p.Name, err)
			}
			sets[key] = ks
		}
		algs := make([]string, 0, 10)
		for _, a := range signingAlgs() {
			algs = append(algs, string(a))
		}
		ver := oidc.NewVerifier(p.Issuer, ks, &oidc.Config{
			SkipClientIDCheck:    true, // several audiences: checked below
			SkipExpiryCheck:      true, // checked below, with bounded leeway
			SupportedSigningAlgs: algs,
			Now:                  v.now,
		})
		v.pubs = append(v.pubs, &publisher{Publisher: p, keys: ks, verifier: ver})
	}
	return v, nil
}

// claims are the ID token's claims this package reads.
type claims struct {
	Issuer   string   `json:"iss"`
	Subject  string   `json:"sub"`
	Audience audience `json:"aud"`
	Expiry   *int64   `json:"exp"`
	NotBefor *int64   `json:"nbf"`
	IssuedAt *int64   `json:"iat"`
	JTI      string   `json:"jti"`
	// GitHub and GitLab claims.
	Repository        string `json:"repository"`
	RepositoryOwnerID string `json:"repository_owner_id"`
	JobWorkflowRef    string `json:"job_workflow_ref"`
	Ref               string `json:"ref"`
	SHA               string `json:"sha"`
	Environment       string `json:"environment"`
	ProjectPath       string `json:"project_path"`
	CIConfigRefURI    string `json:"ci_config_ref_uri"`
}

// audience is "aud" as a string or a list of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*a = audience{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return errors.New(`"aud" is neither a string nor a list of strings`)
	}
	*a = l
	return nil
}

// maxJWT bounds a presented ID token (GitHub's are about 1.5 KiB).
const maxJWT = 16 << 10

// LooksLikeJWT reports whether a presented token is shaped as a JWT, so
// that it is verified as one rather than looked up as a static token.
func LooksLikeJWT(s string) bool { return strings.Count(s, ".") == 2 && strings.HasPrefix(s, "ey") }

// Verify checks an ID token against every publisher of its issuer and
// returns the identity of the first whose rules it meets. Its jti is
// then spent.
func (v *Verifier) Verify(ctx context.Context, raw string) (Identity, error) {
	if len(raw) > maxJWT {
		return Identity{}, refuse("token is over %d bytes", maxJWT)
	}
	jws, err := jose.ParseSignedCompact(raw, signingAlgs())
	if err != nil {
		return Identity{}, refuse("malformed or wrongly signed JWT (only %v): %v", signingAlgs(), err)
	}
	var c claims
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &c); err != nil {
		return Identity{}, refuse("payload is not a JSON object of claims: %v", err)
	}
	var reasons []string
	for _, p := range v.pubs {
		if strings.TrimSuffix(p.Issuer, "/") != strings.TrimSuffix(c.Issuer, "/") {
			continue
		}
		if _, err := p.keys.current(ctx, false); err != nil {
			return Identity{}, &KeysError{Issuer: p.Issuer, Err: err}
		}
		if _, err := p.verifier.Verify(ctx, raw); err != nil {
			return Identity{}, refuse("publisher %s: %v", p.Name, err)
		}
		if err := v.checkTimes(c); err != nil {
			return Identity{}, err
		}
		if err := p.check(c); err != nil {
			reasons = append(reasons, p.Name+": "+err.Error())
			continue
		}
		if err := v.spend(c); err != nil {
			return Identity{}, err
		}
		return p.identity(c), nil
	}
	if reasons == nil {
		return Identity{}, refuse("no trusted publisher for issuer %q", c.Issuer)
	}
	return Identity{}, refuse("%s", strings.Join(reasons, "; "))
}

func (v *Verifier) checkTimes(c claims) error {
	now := v.now()
	switch {
	case c.Expiry == nil:
		return refuse(`no "exp"`)
	case now.After(time.Unix(*c.Expiry, 0).Add(Leeway)):
		return refuse("expired at %s", time.Unix(*c.Expiry, 0).UTC().Format(time.RFC3339))
	case c.NotBefor != nil && now.Add(Leeway).Before(time.Unix(*c.NotBefor, 0)):
		return refuse("not valid before %s", time.Unix(*c.NotBefor, 0).UTC().Format(time.RFC3339))
	case c.IssuedAt == nil:
		return refuse(`no "iat"`)
	case now.Add(Leeway).Before(time.Unix(*c.IssuedAt, 0)):
		return refuse("issued in the future (%s)", time.Unix(*c.IssuedAt, 0).UTC().Format(time.RFC3339))
	case time.Unix(*c.Expiry, 0).Sub(time.Unix(*c.IssuedAt, 0)) > 24*time.Hour:
		return refuse("valid for more than a day")
	}
	return nil
}

// spend accepts a jti once until the token's expiry.
func (v *Verifier) spend(c claims) error {
	if c.JTI == "" {
		return refuse(`no "jti"`)
	}
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, exp := range v.jtis {
		if now.After(exp) {
			delete(v.jtis, k)
		}
	}
	key := c.Issuer + "\x00" + c.JTI
	if _, seen := v.jtis[key]; seen {
		return refuse("jti %q was already used", c.JTI)
	}
	v.jtis[key] = time.Unix(*c.Expiry, 0).Add(Leeway)
	return nil
}

// check applies the publisher's audience and claim rules.
func (p *publisher) check(c claims) error {
	if !slices.ContainsFunc(c.Audience, func(a string) bool { return slices.Contains(p.Audiences, a) }) {
		return fmt.Errorf("audience %v is not one of %v", []string(c.Audience), p.Audiences)
	}
	// In a fixed order, so that a token that breaks several rules is
	// always refused for the same one.
	for _, name := range KnownClaims() {
		if want, ok := p.Claims[name]; ok {
			if err := checkClaim(name, want, c); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkClaim applies one rule. GitHub owner and repository names, and
// environment names, are case-insensitive (as PyPI compares them); ids,
// refs and workflow file names are exact.
func checkClaim(name, want string, c claims) error {
	got, fold := "", false
	switch name {
	case "repository":
		got, fold = c.Repository, true
		if !strings.HasPrefix(strings.ToLower(c.Subject), "repo:"+strings.ToLower(want)+":") {
			return fmt.Errorf("sub %q is not of repository %s", c.Subject, want)
		}
	case "repository_owner_id":
		got = c.RepositoryOwnerID
	case "workflow":
		// job_workflow_ref is OWNER/REPO/.github/workflows/FILE@REF, with
		// REF the token's ref (or sha).
		path, ref, ok := strings.Cut(c.JobWorkflowRef, "@")
		if !ok || (ref != c.Ref && ref != c.SHA) {
			return fmt.Errorf("job_workflow_ref %q does not end in the token's ref", c.JobWorkflowRef)
		}
		repo, file, ok := strings.Cut(path, "/.github/workflows/")
		if !ok || !strings.EqualFold(repo, c.Repository) || file != want {
			return fmt.Errorf("job_workflow_ref %q is not workflow %s of repository %s", c.JobWorkflowRef, want, c.Repository)
		}
		return nil
	case "ref":
		got = c.Ref
	case "environment":
		got, fold = c.Environment, true
	case "project_path":
		got, fold = c.ProjectPath, true
		if !strings.HasPrefix(strings.ToLower(c.Subject), "project_path:"+strings.ToLower(want)+":") {
			return fmt.Errorf("sub %q is not of project %s", c.Subject, want)
		}
	case "ci_config_ref_uri":
		got = c.CIConfigRefURI
	case "sub":
		got = c.Subject
	default:
		return fmt.Errorf("unknown claim rule %q", name)
	}
	if got == want || (fold && strings.EqualFold(got, want)) {
		return nil
	}
	return fmt.Errorf("%s is %q, not %q", name, got, want)
}

func (p *publisher) identity(c claims) Identity {
	scopes := p.Scopes
	if len(scopes) == 0 {
		scopes = []string{auth.ScopeUpload}
	}
	repo := c.Repository
	if repo == "" {
		repo = c.ProjectPath
	}
	return Identity{
		Publisher: p.Name, Repository: repo, Ref: c.Ref, SHA: c.SHA, Subject: c.Subject,
		Token:   auth.Token{Name: "oidc:" + p.Name, Scopes: scopes, Subdirs: p.Subdirs, Labels: p.Labels, Packages: p.Packages, Expires: time.Unix(*c.Expiry, 0)},
		Expires: time.Unix(*c.Expiry, 0),
	}
}

// Mint returns a new short-lived token for an identity, and its expiry.
func (v *Verifier) Mint(id Identity) (string, time.Time) {
	tok := "cus_oidc_" + rand.Text()
	exp := v.now().Add(v.ttl)
	id.Token.Expires = exp
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	for k, m := range v.tokens {
		if now.After(m.expires) {
			delete(v.tokens, k)
		}
	}
	v.tokens[sha256.Sum256([]byte(tok))] = minted{id: id, expires: exp}
	return tok, exp
}

// Lookup returns the identity of a minted token that has not expired.
func (v *Verifier) Lookup(tok string) (Identity, bool) {
	if !strings.HasPrefix(tok, "cus_oidc_") {
		return Identity{}, false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	m, ok := v.tokens[sha256.Sum256([]byte(tok))]
	if !ok || !v.now().Before(m.expires) {
		return Identity{}, false
	}
	return m.id, true
}

// Audience is the audience a job should ask its CI system for: the first
// publisher's first.
func (v *Verifier) Audience() string {
	for _, p := range v.pubs {
		if len(p.Audiences) > 0 {
			return p.Audiences[0]
		}
	}
	return ""
}

// TTL is how long minted tokens live.
func (v *Verifier) TTL() time.Duration { return v.ttl }
