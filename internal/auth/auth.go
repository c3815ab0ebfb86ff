// Package auth checks the tokens clients present against salted SHA-256
// hashes, and says what a token may do: its scopes (upload, read,
// overwrite and the admin calls), the subdirs and labels it is limited to,
// and when it expires.
//
// The scheme is the original server's, so existing hashes keep working: a
// token's hash is the lowercase hex SHA-256 of salt+token. Only hashes are
// configured, never tokens. A presented token is hashed once and compared
// with every configured hash in constant time, without stopping at a
// match, so the time taken says nothing about which token, if any, was
// close.
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// DefaultSalt is the original server's fixed salt.
const DefaultSalt = "42679ad04d44c96ed27470c02bfb28c3"

// MaxTokenLen bounds a presented token; real tokens are far shorter.
const MaxTokenLen = 1024

// Scopes name what a token may do. A token has only the scopes its
// configuration grants.
const (
	// ScopeUpload uploads packages; every token has it unless told
	// otherwise, as in the original server.
	ScopeUpload = "upload"
	// ScopeRead downloads from a channel whose access is "token".
	ScopeRead = "read"
	// ScopeOverwrite lets an upload with force=true replace a different
	// package of the same name (the old bytes are kept in .trash/).
	ScopeOverwrite = "overwrite"
	// The admin API's scopes, one per kind of change: list a label's
	// files (read), copy or move between labels (promote), yank and
	// unyank, delete, and set a label's repodata patch.
	ScopePromote = "promote"
	ScopeYank    = "yank"
	ScopeDelete  = "delete"
	ScopePatch   = "patch"
	// ScopeOwners lists and changes the owners of package names.
	ScopeOwners = "owners"
)

// KnownScopes returns every scope name, in a new slice.
func KnownScopes() []string {
	return []string{ScopeUpload, ScopeRead, ScopeOverwrite, ScopePromote, ScopeYank, ScopeDelete, ScopePatch, ScopeOwners}
}

// Token is a named token hash with its scopes, optionally limited to some
// subdirs and to a time before Expires.
type Token struct {
	Name string
	Hash [sha256.Size]byte
	// Scopes are what the token may do; nil means upload only.
	Scopes []string
	// Subdirs, if not empty, are the only subdirs the token may upload
	// to, read, or change.
	Subdirs []string
	// Labels, if not empty, are the only labels the token may upload to,
	// read, or change ("main" is the channel root).
	Labels []string
	// Packages, if not nil, are the only package names (exact names or
	// path.Match globs) the token may upload or change.
	Packages []string
	// Expires, if not zero, is when the token stops being accepted.
	Expires time.Time
}

// Expired reports whether the token has expired at now.
func (t Token) Expired(now time.Time) bool { return !t.Expires.IsZero() && !now.Before(t.Expires) }

// Can reports whether the token has scope.
func (t Token) Can(scope string) bool {
	if t.Scopes == nil {
		return scope == ScopeUpload
	}
	return slices.Contains(t.Scopes, scope)
}

// Allows reports whether the token may use subdir. The empty subdir
// stands for all of them (what spans subdirs, such as channeldata.json),
// which only a token without a subdir limit may use.
func (t Token) Allows(subdir string) bool {
	return len(t.Subdirs) == 0 || slices.Contains(t.Subdirs, subdir)
}

// AllowsLabel reports whether the token may use label. The empty label
// stands for all of them (the list of labels), which only a token without
// a label limit may use.
func (t Token) AllowsLabel(label string) bool {
	return len(t.Labels) == 0 || slices.Contains(t.Labels, label)
}

// Hash returns the hex hash of token under salt.
func Hash(salt, token string) string {
	sum := sha256.Sum256([]byte(salt + token))
	return hex.EncodeToString(sum[:])
}

// ParseHash decodes a hex token hash as written by Hash or the original's
// instructions (upper case is accepted).
func ParseHash(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	s = strings.TrimSpace(s)
	if len(s) != hex.EncodedLen(sha256.Size) {
		return h, fmt.Errorf("token hash must be %d hex digits, got %d characters", hex.EncodedLen(sha256.Size), len(s))
	}
	if _, err := hex.Decode(h[:], []byte(strings.ToLower(s))); err != nil {
		return h, fmt.Errorf("token hash is not hex: %w", err)
	}
	return h, nil
}

// Authenticator checks tokens.
type Authenticator struct {
	salt   string
	tokens []Token
}

// New returns an Authenticator for the given tokens. It may have none (a
// server whose uploads all come from trusted publishers); the
// configuration says whether that is allowed.
func New(salt string, tokens []Token) (*Authenticator, error) {
	seen := make(map[string]bool)
	for _, t := range tokens {
		if t.Name == "" {
			return nil, errors.New("token without a name")
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("token name %q used twice", t.Name)
		}
		seen[t.Name] = true
	}
	return &Authenticator{salt: salt, tokens: tokens}, nil
}

// Check returns the token that matches, or false. It does not look at
// expiry or scope: the caller says why a known token is refused.
func (a *Authenticator) Check(token string) (Token, bool) {
	if token == "" || len(token) > MaxTokenLen {
		return Token{}, false
	}
	sum := sha256.Sum256([]byte(a.salt + token))
	match := -1
	for i, t := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.Hash[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return Token{}, false
	}
	return a.tokens[match], true
}

// Len returns the number of tokens.
func (a *Authenticator) Len() int { return len(a.tokens) }
