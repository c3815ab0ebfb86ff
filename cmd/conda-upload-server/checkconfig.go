package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/config"
)

// checkConfig validates a configuration file and everything it names (the
// token hashes and tokens file, the certificate and key, conda, the
// channel) without starting the server, and says what is wrong.
func checkConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/conda-upload-server/config.toml", "configuration `file` to check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var problems []error
	fail := func(err error) { problems = append(problems, err) }
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "conda-upload-server: error: %v\n", err)
		return 1
	}
	if err := cfg.Validate(); err != nil {
		fail(err)
	}
	if err := checkTokens(cfg, stdout); err != nil {
		fail(err)
	}
	if err := checkCertificate(cfg, stdout); err != nil {
		fail(err)
	}
	if cfg.CondaExe != "" {
		if fi, err := os.Stat(cfg.CondaExe); err != nil {
			fail(fmt.Errorf("conda_exe: %w", err))
		} else if fi.Mode()&0o111 == 0 {
			fail(fmt.Errorf("conda_exe %s is not executable", cfg.CondaExe))
		}
	}
	if cfg.WriteDir != "" {
		if fi, err := os.Stat(cfg.WriteDir); err != nil {
			fail(fmt.Errorf("write_dir: %w", err))
		} else if !fi.IsDir() {
			fail(fmt.Errorf("write_dir %s is not a directory", cfg.WriteDir))
		}
	}
	if len(problems) > 0 {
		for _, e := range problems {
			for _, line := range splitJoined(e) {
				fmt.Fprintf(stderr, "conda-upload-server: error: %s\n", line)
			}
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return 0
}

// checkTokens loads the tokens and warns of expired ones.
func checkTokens(cfg *config.Config, stdout io.Writer) error {
	toks, err := cfg.AuthTokens("")
	if err != nil {
		return err
	}
	now := time.Now()
	for _, t := range toks {
		if t.Expired(now) {
			fmt.Fprintf(stdout, "warning: token %q expired on %s\n", t.Name, t.Expires.Format(time.DateOnly))
		}
	}
	fmt.Fprintf(stdout, "tokens: %d\n", len(toks))
	return nil
}

// checkCertificate loads the certificate and key, if set, and says how
// long they are valid.
func checkCertificate(cfg *config.Config, stdout io.Writer) error {
	if cfg.CertFile == "" {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	switch {
	case err != nil:
		return fmt.Errorf("certificate: %w", err)
	case time.Now().After(cert.Leaf.NotAfter):
		return fmt.Errorf("certificate %s expired on %s", cfg.CertFile, cert.Leaf.NotAfter.Format(time.RFC3339))
	case time.Now().Before(cert.Leaf.NotBefore):
		return fmt.Errorf("certificate %s is not valid before %s", cfg.CertFile, cert.Leaf.NotBefore.Format(time.RFC3339))
	}
	left := time.Until(cert.Leaf.NotAfter)
	fmt.Fprintf(stdout, "certificate: %s, valid until %s (%d days)\n", cert.Leaf.Subject.CommonName, cert.Leaf.NotAfter.Format(time.DateOnly), int(left.Hours()/24))
	if left < 30*24*time.Hour {
		fmt.Fprintf(stdout, "warning: certificate expires in less than 30 days\n")
	}
	return nil
}

// splitJoined lists the errors inside an errors.Join.
func splitJoined(err error) []string {
	var j interface{ Unwrap() []error }
	if errors.As(err, &j) {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, splitJoined(e)...)
		}
		return out
	}
	return []string{err.Error()}
}
