package trusted

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// signingAlgs are the asymmetric algorithms an issuer may sign with. A
// JWT with any other "alg" (none, HS256 and the other HMACs, which a
// public key must never verify) is refused while it is parsed.
func signingAlgs() []jose.SignatureAlgorithm {
	return []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512, jose.PS256, jose.PS384, jose.PS512, jose.EdDSA}
}

// refreshEvery bounds how often an unknown key id makes the key set be
// fetched again: a stream of forged "kid"s must not become a stream of
// requests to the issuer.
const refreshEvery = 30 * time.Second

// keySet holds an issuer's signing keys: fetched by OIDC discovery
// (issuer/.well-known/openid-configuration, then its jwks_uri) and cached,
// or read from a file. It implements go-oidc's KeySet.
type keySet struct {
	issuer string
	file   string // jwks_file instead of discovery
	client *http.Client
	now    func() time.Time
	// failed is called when keys cannot be had, for the metrics.
	failed func(issuer string)

	mu      sync.Mutex
	keys    []jose.JSONWebKey
	fetched time.Time
	jwksURI string
}

func newKeySet(issuer, jwksFile, caFile string, now func() time.Time, failed func(string)) (*keySet, error) {
	ks := &keySet{issuer: strings.TrimSuffix(issuer, "/"), file: jwksFile, now: now, failed: failed}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate", caFile)
		}
		tlsConf.RootCAs = pool
	}
	ks.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf, Proxy: http.ProxyFromEnvironment}}
	return ks, nil
}

// VerifySignature implements oidc.KeySet: it checks the JWT's signature
// with the key its header names, fetching the keys again (at most every
// refreshEvery) when that key is unknown, as after the issuer rotated.
func (ks *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(jwt, signingAlgs())
	if err != nil {
		return nil, fmt.Errorf("malformed JWT: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("JWT must have exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	for attempt := 0; attempt < 2; attempt++ {
		keys, err := ks.current(ctx, attempt > 0)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if kid != "" && k.KeyID != kid {
				continue
			}
			if payload, err := jws.Verify(k.Key); err == nil {
				return payload, nil
			}
		}
	}
	return nil, fmt.Errorf("no key of issuer %s verifies the signature (kid %q)", ks.issuer, kid)
}

// current returns the keys, fetching them if there are none yet or if
// refresh is asked for and the last fetch is old enough.
func (ks *keySet) current(ctx context.Context, refresh bool) ([]jose.JSONWebKey, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	stale := ks.keys == nil || (refresh && ks.now().Sub(ks.fetched) >= refreshEvery)
	if !stale {
		return ks.keys, nil
	}
	keys, err := ks.fetch(ctx)
	if err != nil {
		if ks.failed != nil {
			ks.failed(ks.issuer)
		}
		if ks.keys != nil && refresh {
			return ks.keys, nil // keep the keys we have; the token fails on them
		}
		return nil, fmt.Errorf("keys of issuer %s cannot be had (failing closed): %w", ks.issuer, err)
	}
	ks.keys, ks.fetched = keys, ks.now()
	return keys, nil
}

// maxDocument bounds a discovery document or key set.
const maxDocument = 1 << 20

func (ks *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	var raw []byte
	var err error
	if ks.file != "" {
		raw, err = os.ReadFile(ks.file)
	} else {
		if ks.jwksURI == "" {
			var doc struct {
				Issuer  string `json:"issuer"`
				JWKSURI string `json:"jwks_uri"`
			}
			if err := ks.getJSON(ctx, ks.issuer+"/.well-known/openid-configuration", &doc); err != nil {
				return nil, fmt.Errorf("discovery: %w", err)
			}
			if strings.TrimSuffix(doc.Issuer, "/") != ks.issuer {
				return nil, fmt.Errorf("discovery: the document names issuer %q", doc.Issuer)
			}
			if !strings.HasPrefix(doc.JWKSURI, "https://") {
				return nil, fmt.Errorf("discovery: jwks_uri %q is not https", doc.JWKSURI)
			}
			ks.jwksURI = doc.JWKSURI
		}
		raw, err = ks.get(ctx, ks.jwksURI)
	}
	if err != nil {
		return nil, err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("key set: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, k := range set.Keys {
		if k.Valid() && k.IsPublic() && (k.Use == "" || k.Use == "sig") {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("key set has no public signing key")
	}
	return keys, nil
}

func (ks *keySet) getJSON(ctx context.Context, url string, v any) error {
	b, err := ks.get(ctx, url)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func (ks *keySet) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := ks.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxDocument {
		return nil, fmt.Errorf("GET %s: over %d bytes", url, maxDocument)
	}
	return b, nil
}
