package auth_test

import (
	"strings"
	"testing"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
)

func TestHashMatchesOriginal(t *testing.T) {
	// python3 -c "import hashlib; print(hashlib.sha256(b'42679ad04d44c96ed27470c02bfb28c3'+b'mysecuretoken').hexdigest())"
	const want = "f4e7b109e7aaef9a56f019d83fba027513ee8f63faf73fbb3c993071089eeb81"
	if got := auth.Hash(auth.DefaultSalt, "mysecuretoken"); got != want {
		t.Fatalf("Hash = %q, want %q", got, want)
	}
}

func TestCheck(t *testing.T) {
	mk := func(name, salt, token string) auth.Token {
		h, err := auth.ParseHash(auth.Hash(salt, token))
		if err != nil {
			t.Fatal(err)
		}
		return auth.Token{Name: name, Hash: h}
	}
	a, err := auth.New(auth.DefaultSalt, []auth.Token{
		mk("ci-linux", auth.DefaultSalt, "linux-secret"),
		mk("ci-osx", auth.DefaultSalt, "osx-secret"),
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		token, name string
		ok          bool
	}{
		{"linux-secret", "ci-linux", true},
		{"osx-secret", "ci-osx", true},
		{"osx-secre", "", false},
		{"", "", false},
		{strings.Repeat("x", auth.MaxTokenLen+1), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.token[:min(len(tt.token), 12)], func(t *testing.T) {
			tok, ok := a.Check(tt.token)
			if tok.Name != tt.name || ok != tt.ok {
				t.Errorf("Check = %q, %v; want %q, %v", tok.Name, ok, tt.name, tt.ok)
			}
		})
	}
}

func TestParseHash(t *testing.T) {
	for _, s := range []string{"", "abc", strings.Repeat("g", 64), strings.Repeat("a", 63)} {
		if _, err := auth.ParseHash(s); err == nil {
			t.Errorf("ParseHash(%q) succeeded", s)
		}
	}
	if _, err := auth.ParseHash(strings.Repeat("AB", 32) + "\n"); err != nil {
		t.Errorf("upper case with newline: %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	// No tokens is allowed here (uploads may all come from trusted
	// publishers; config decides), and authenticates nothing.
	a, err := auth.New(auth.DefaultSalt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Check(""); ok {
		t.Error("an empty authenticator accepted the empty token")
	}
	dup := []auth.Token{{Name: "a"}, {Name: "a"}}
	if _, err := auth.New(auth.DefaultSalt, dup); err == nil {
		t.Error("duplicate names accepted")
	}
}

func TestExpiryAndScope(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tok := auth.Token{Name: "ci", Subdirs: []string{"linux-64", "noarch"}, Expires: now.Add(time.Hour)}
	if tok.Expired(now) || !tok.Expired(now.Add(time.Hour)) {
		t.Error("expiry")
	}
	if !tok.Allows("noarch") || tok.Allows("osx-64") {
		t.Error("scope")
	}
	if (auth.Token{}).Expired(now) || !(auth.Token{}).Allows("win-64") {
		t.Error("no limits means none")
	}
}
