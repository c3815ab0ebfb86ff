package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/conda-upload-server/conda-upload-server/internal/config"
	"github.com/conda-upload-server/conda-upload-server/internal/daemon"
)

const checkConfigUsage = `usage: conda-upload-server check-config [--config FILE]

Checks a configuration file and everything it names (the token hashes and
tokens file, the certificate and key, conda, the channel) without starting
the server. It prints a report, and one error line for each problem.
`

// checkConfig validates a configuration file and everything it names
// without starting the server, and says what is wrong.
func checkConfig(_ context.Context, args []string, s stdio) int {
	flags := flag.NewFlagSet("check-config", flag.ContinueOnError)
	path := flags.String("config", "/etc/conda-upload-server/config.toml", "configuration `file` to check")
	if code, done := parseFlags(flags, args, "check-config", checkConfigUsage, s.out, s.err); done {
		return code
	}
	if flags.NArg() > 0 {
		return usageError(s.err, "check-config", fmt.Errorf("unexpected argument %q", flags.Arg(0)),
			"name the file with --config: conda-upload-server check-config --config "+flags.Arg(0))
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return errorf(s.err, "%v", err)
	}
	var report strings.Builder
	var problems []error
	for _, check := range []func(*config.Config, io.Writer, io.Writer) error{
		func(c *config.Config, _, _ io.Writer) error { return c.Validate() },
		checkTokens, checkCertificate, checkCondaExe, checkWriteDir, checkAttestations,
	} {
		if err := check(cfg, &report, s.err); err != nil {
			problems = append(problems, err)
		}
	}
	if len(problems) > 0 {
		for _, e := range problems {
			errorf(s.err, "%v", e)
		}
		return exitFailure
	}
	fmt.Fprintf(s.out, "%s%s: ok\n", report.String(), *path)
	return exitOK
}

// checkTokens loads the tokens, reports how many, and warns of expired
// ones.
func checkTokens(cfg *config.Config, report, stderr io.Writer) error {
	toks, err := cfg.AuthTokens("")
	if err != nil {
		return err
	}
	now := time.Now()
	for _, t := range toks {
		if t.Expired(now) {
			warningf(stderr, "token %q expired on %s", t.Name, t.Expires.Format(time.DateOnly))
		}
	}
	fmt.Fprintf(report, "tokens: %d\n", len(toks))
	return nil
}

// checkCertificate loads the certificate and key, if set, and says how
// long they are valid.
func checkCertificate(cfg *config.Config, report, stderr io.Writer) error {
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
	fmt.Fprintf(report, "certificate: %s, valid until %s (%d days)\n", cert.Leaf.Subject.CommonName, cert.Leaf.NotAfter.Format(time.DateOnly), int(left.Hours()/24))
	if left < 30*24*time.Hour {
		warningf(stderr, "certificate expires in less than 30 days")
	}
	return nil
}

func checkCondaExe(cfg *config.Config, _, _ io.Writer) error {
	return checkPath("conda_exe", cfg.CondaExe, "executable", func(fi fs.FileInfo) bool { return fi.Mode()&0o111 != 0 })
}

func checkWriteDir(cfg *config.Config, _, _ io.Writer) error {
	return checkPath("write_dir", cfg.WriteDir, "a directory", fs.FileInfo.IsDir)
}

// checkPath checks that the file that key names, if set, exists and is
// what it must be.
func checkPath(key, path, must string, is func(fs.FileInfo) bool) error {
	if path == "" {
		return nil
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w", key, err)
	case !is(fi):
		return fmt.Errorf("%s %s is not %s", key, path, must)
	}
	return nil
}

// checkAttestations reads the trusted root, as the server does at start,
// and says what it does with attestations.
func checkAttestations(cfg *config.Config, report, _ io.Writer) error {
	a, err := daemon.Attestations(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(report, "attestations: %s\n", a.Mode)
	return nil
}
