package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/conda-upload-server/conda-upload-server/internal/config"
	"github.com/conda-upload-server/conda-upload-server/internal/sandbox"
)

// confine drops privileges, then applies the Landlock policy.
func (d *daemon) confine() error {
	if err := d.dropPrivileges(); err != nil {
		return err
	}
	if err := sandbox.NoNewPrivs(); err != nil {
		return err
	}
	if err := os.MkdirAll(d.writeDir, 0o755); err != nil {
		return fmt.Errorf("create write_dir: %w (the server runs as uid %d)", err, os.Getuid())
	}
	policy, err := d.policy()
	if err != nil {
		return err
	}
	report, err := sandbox.Restrict(d.mode, policy)
	if err != nil {
		return err
	}
	level := d.log.Info
	if !report.Enforced {
		level = d.log.Warn
	}
	level("sandbox", "landlock_abi", report.ABI, "enforced", report.Enforced, "policy", report.Summary)
	return nil
}

// dropPrivileges switches to the configured user when started as root.
func (d *daemon) dropPrivileges() error {
	cfg := d.cfg
	if os.Geteuid() != 0 {
		if cfg.User != "" {
			d.log.Info("not started as root; user setting not needed", "uid", os.Getuid())
		}
		return nil
	}
	if cfg.User == "" {
		switch {
		case cfg.AllowRoot:
			d.log.Warn("running as root (allow_root = true): a compromise of the server is a compromise of the host")
			return nil
		case d.o.Dev:
			d.log.Warn("DEV MODE RUNNING AS ROOT: fine on a throwaway machine, never in production (pass --user NAME to drop privileges)")
			return nil
		}
		return errors.New("refusing to run as root: pass --user NAME (or set user, and optionally group, in the config file) to drop privileges after binding, or set allow_root = true to accept the risk")
	}
	c, err := sandbox.LookupUser(cfg.User, cfg.Group)
	if err != nil {
		return err
	}
	if err := sandbox.Drop(c); err != nil {
		return err
	}
	d.log.Info("dropped privileges", "user", c.Name, "uid", c.UID, "gid", c.GID)
	return nil
}

// policy is what the confined process may touch: the channel (where the
// indexer's temp dir lives too), what it must read again on reload, and
// what a conda child needs to run.
func (d *daemon) policy() (sandbox.Policy, error) {
	cfg := d.cfg
	p := sandbox.Policy{
		WriteDirs: append([]string{d.writeDir}, cfg.Sandbox.WritePaths...),
		ExecDirs:  sandbox.SystemExecDirs(),
		ReadDirs:  slices.Clone(cfg.Sandbox.ReadPaths),
		ReadFiles: sandbox.SystemReadFiles(),
	}
	if d.certFile != "" {
		// Directories, not files: a renewed certificate is a new inode
		// (renamed into place, or a symlink to a new file), and Landlock
		// rules follow inodes.
		p.ReadDirs = append(p.ReadDirs, certDirs(d.certFile, d.keyFile)...)
	}
	if d.credDir != "" {
		p.ReadDirs = append(p.ReadDirs, d.credDir)
	}
	if cfg.TokenHashFile != "" {
		p.ReadFiles = append(p.ReadFiles, cfg.TokenHashFile)
	}
	if f := cfg.TokensFilePath(d.credDir); f != "" {
		// The directory, so that a tokens file replaced by rename (the
		// usual way to edit it) can still be re-read on SIGHUP.
		p.ReadDirs = append(p.ReadDirs, filepath.Dir(f))
	}
	if cfg.Audit.File != "" {
		p.WriteFiles = append(p.WriteFiles, cfg.Audit.File)
	}
	if f := cfg.Attestations.TrustedRootFile; f != "" {
		p.ReadFiles = append(p.ReadFiles, f) // read once, at start
	}
	for _, tp := range cfg.TrustedPublishers {
		for _, f := range []string{tp.JWKSFile, tp.CAFile} {
			if f != "" {
				// The directory: keys rotated by the operator are a
				// new file.
				p.ReadDirs = append(p.ReadDirs, filepath.Dir(f))
			}
		}
		if tp.JWKSFile == "" {
			// Discovery: HTTPS to the issuer's port, with the system's
			// CA certificates.
			p.ConnectTCP = append(p.ConnectTCP, issuerPort(tp.Issuer))
			p.ReadDirs = append(p.ReadDirs, "/etc/ssl", "/etc/pki", "/etc/ca-certificates")
		}
	}
	if m := cfg.Mirror.S3; m != nil {
		// The mirror's endpoint, and for https the system's CAs.
		p.ConnectTCP = append(p.ConnectTCP, endpointPort(m.Endpoint))
		p.ReadDirs = append(p.ReadDirs, "/etc/ssl", "/etc/pki", "/etc/ca-certificates")
	}
	if len(cfg.Upstreams) > 0 {
		// For https, the system's CAs.
		p.ConnectTCP = append(p.ConnectTCP, upstreamPorts(cfg.Upstreams)...)
		p.ReadDirs = append(p.ReadDirs, "/etc/ssl", "/etc/pki", "/etc/ca-certificates")
	}
	slices.Sort(p.ConnectTCP)
	p.ConnectTCP = slices.Compact(p.ConnectTCP)
	if cfg.CondaExe != "" {
		prefix, err := sandbox.CondaPrefix(cfg.CondaExe)
		if err != nil {
			return p, err
		}
		p.ExecDirs = append(p.ExecDirs, prefix)
		// /proc as a whole: a rule for /proc/self would name this
		// process's /proc/<pid> (rules follow inodes), and the child's
		// own /proc/self (status, mounts, which psutil and conda read)
		// would be denied. What /proc shows of other processes is still
		// bounded by their owners and, under systemd, by ProtectProc=.
		p.ReadDirs = append(p.ReadDirs, "/etc/conda", "/proc", "/sys/devices/system/cpu")
		// /dev/shm: Python's multiprocessing (conda-index's worker pool).
		p.TempDirs = []string{"/dev/shm"}
	}
	return p, nil
}

// upstreamPorts are the ports the proxies connect to: each upstream's,
// and exactly those of the hosts it may redirect to (a CDN).
func upstreamPorts(ups []config.UpstreamConfig) []uint16 {
	var ports []uint16
	for _, u := range ups {
		ports = append(ports, endpointPort(u.URL))
		for _, hp := range u.RedirectEndpoints() {
			_, port, _ := net.SplitHostPort(hp)
			n, _ := strconv.ParseUint(port, 10, 16)
			ports = append(ports, uint16(n))
		}
	}
	return ports
}

// endpointPort is the TCP port of an http or https URL.
func endpointPort(endpoint string) uint16 {
	if u, err := url.Parse(endpoint); err == nil && u.Scheme == "http" && u.Port() == "" {
		return 80
	}
	return issuerPort(endpoint)
}

// issuerPort is the TCP port of an issuer's https URL.
func issuerPort(issuer string) uint16 {
	u, err := url.Parse(issuer)
	if err != nil || u.Port() == "" {
		return 443
	}
	n, err := strconv.ParseUint(u.Port(), 10, 16)
	if err != nil {
		return 443
	}
	return uint16(n)
}

// certDirs returns the directories of the certificate and key files and
// of the files their symlinks lead to.
func certDirs(files ...string) []string {
	var dirs []string
	for _, f := range files {
		dirs = append(dirs, filepath.Dir(f))
		if real, err := filepath.EvalSymlinks(f); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
	}
	slices.Sort(dirs)
	return slices.Compact(dirs)
}
