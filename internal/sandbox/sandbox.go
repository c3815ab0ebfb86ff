// Package sandbox confines the server once it has what it needs from the
// system: it drops root for a service user, sets no_new_privs, and then
// restricts itself and every child it starts with Landlock to the channel,
// the indexer's files and little else.
//
// The order matters. Listeners are bound, the TLS key and token hashes are
// read, and the notify socket is dialled before any of this, because none
// of them is possible afterwards. Privileges are dropped before Landlock so
// that nothing runs as root once input from the network is possible.
//
// Landlock is applied in one Restrict call: a second layer (for example a
// separate network layer) would silently re-deny the cross-directory
// link(2) that publishing needs. The signal scope is left out: on kernels
// before Landlock ABI 8 each thread gets its own domain, and a scoped
// process then often cannot kill its own indexer child (measured on this
// project's 6.18 kernel: 26 of 40 kills failed with EPERM).
//
// All of this is Linux. On another system the package builds, so that the
// module can be vetted there, but NoNewPrivs returns an error that wraps
// errors.ErrUnsupported, which stops the daemon before it serves.
package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// Mode says how strictly Landlock is applied.
type Mode string

const (
	// Enforce refuses to start unless the kernel enforces the policy.
	Enforce Mode = "enforce"
	// BestEffort enforces what the kernel supports, possibly nothing.
	BestEffort Mode = "best-effort"
	// Off applies no Landlock policy.
	Off Mode = "off"
)

// ParseMode checks a mode name from the configuration.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Enforce, BestEffort, Off:
		return m, nil
	}
	return "", fmt.Errorf("landlock mode %q: want enforce, best-effort or off", s)
}

// Creds are the user and group to run as.
type Creds struct {
	Name     string
	UID, GID int
}

// LookupUser resolves a user name (or number) and an optional group; with
// no group the user's primary group is used. It must run before Landlock,
// which hides /etc/passwd.
func LookupUser(name, group string) (Creds, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			u, err = user.LookupId(name)
		}
		if err != nil {
			return Creds{}, fmt.Errorf("user %q: %w", name, err)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return Creds{}, fmt.Errorf("group %q: %w", group, err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	return Creds{Name: u.Username, UID: uid, GID: gid}, nil
}

// Drop switches every thread of the process to c: supplementary groups
// cleared, then the group, then the user (after setuid there would be no
// right left to change groups). Since Go 1.16 these calls apply to all
// threads. It then checks that root cannot be regained.
func Drop(c Creds) error {
	if err := syscall.Setgroups([]int{}); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(c.GID); err != nil {
		return fmt.Errorf("setgid %d: %w", c.GID, err)
	}
	if err := syscall.Setuid(c.UID); err != nil {
		return fmt.Errorf("setuid %d: %w", c.UID, err)
	}
	if c.UID != 0 && syscall.Setuid(0) == nil {
		return errors.New("privilege drop failed: setuid(0) still succeeds")
	}
	return nil
}

// Policy lists what the confined process may touch.
type Policy struct {
	// WriteDirs may be read, written, and linked across (the channel,
	// where uploads move from .incoming to their subdir).
	WriteDirs []string
	// TempDirs may be read and written (the indexer's TMPDIR, /dev/shm).
	TempDirs []string
	// WriteFiles may be read and written (the audit log).
	WriteFiles []string
	// ExecDirs may be read and executed (the conda prefix, /usr, /lib…).
	ExecDirs []string
	// ReadDirs and ReadFiles may be read (certificates, credentials).
	ReadDirs  []string
	ReadFiles []string
	// ConnectTCP are the only TCP ports the process may connect to (the
	// OIDC issuers' HTTPS ports, for key discovery); none if empty.
	ConnectTCP []uint16
}

// SystemExecDirs returns, in a new slice, what a dynamically linked child
// needs to start.
func SystemExecDirs() []string { return []string{"/usr", "/lib", "/lib64", "/bin", "/sbin"} }

// SystemReadFiles returns, in a new slice, the small files libc and Python
// read at start.
func SystemReadFiles() []string {
	return []string{
		"/etc/ld.so.cache", "/etc/localtime", "/etc/nsswitch.conf",
		"/etc/passwd", "/etc/group", "/etc/hosts", "/etc/resolv.conf",
	}
}

// Report says what Restrict did.
type Report struct {
	ABI      int
	Enforced bool
	Summary  string
}

// Restrict applies the policy to the calling process and every child it
// starts later. It cannot be undone.
func Restrict(mode Mode, p Policy) (Report, error) {
	abi, err := llsys.LandlockGetABIVersion()
	if err != nil {
		abi = 0
	}
	r := Report{ABI: abi}
	if mode == Off {
		r.Summary = "landlock off by configuration"
		return r, nil
	}
	// Publishing links a file from .incoming into its subdir, which
	// Landlock calls "refer" and supports from ABI 2.
	if abi < 2 {
		if mode == Enforce {
			return r, fmt.Errorf("landlock mode is enforce, but this kernel's Landlock ABI is %d (need 2 or later; Linux 5.19+ with landlock in lsm=); set [sandbox] landlock = \"best-effort\" to run unconfined", abi)
		}
		r.Summary = fmt.Sprintf("landlock ABI %d: not enforced (need ABI 2 or later)", abi)
		return r, nil
	}
	rules := []landlock.Rule{
		landlock.RWDirs(p.WriteDirs...).WithRefer(),
		landlock.RWFiles("/dev/null"),
	}
	if len(p.TempDirs) > 0 {
		rules = append(rules, landlock.RWDirs(p.TempDirs...).IgnoreIfMissing())
	}
	if len(p.WriteFiles) > 0 {
		rules = append(rules, landlock.RWFiles(p.WriteFiles...))
	}
	if len(p.ExecDirs) > 0 {
		rules = append(rules, landlock.RODirs(p.ExecDirs...).IgnoreIfMissing())
	}
	if len(p.ReadDirs) > 0 {
		rules = append(rules, landlock.RODirs(p.ReadDirs...).IgnoreIfMissing())
	}
	if len(p.ReadFiles) > 0 {
		rules = append(rules, landlock.ROFiles(p.ReadFiles...).IgnoreIfMissing())
	}
	for _, port := range p.ConnectTCP {
		rules = append(rules, landlock.ConnectTCP(port))
	}
	cfg := landlock.V11.BestEffort()
	cfg.Scoped &^= landlock.ScopedSet(llsys.ScopeSignal)
	// With TCP handled (ABI 4+), every new TCP bind and connect is
	// denied but for the ConnectTCP ports; the listening sockets are
	// already bound.
	if err := cfg.Restrict(rules...); err != nil {
		return r, fmt.Errorf("landlock: %w", err)
	}
	r.Enforced = true
	var parts []string
	parts = append(parts, "files: rw "+strings.Join(p.WriteDirs, ",")+" (with link), rw /dev/null")
	if len(p.TempDirs) > 0 {
		parts = append(parts, "rw "+strings.Join(p.TempDirs, ","))
	}
	if len(p.WriteFiles) > 0 {
		parts = append(parts, "rw "+strings.Join(p.WriteFiles, ","))
	}
	parts = append(parts, "rx "+strings.Join(existing(p.ExecDirs), ","))
	if ro := existing(append(append([]string{}, p.ReadDirs...), p.ReadFiles...)); len(ro) > 0 {
		parts = append(parts, "ro "+strings.Join(ro, ","))
	}
	if abi >= 4 {
		if len(p.ConnectTCP) > 0 {
			parts = append(parts, fmt.Sprintf("new TCP bind denied, connect only to ports %v", p.ConnectTCP))
		} else {
			parts = append(parts, "new TCP bind/connect denied")
		}
	}
	if abi >= 6 {
		parts = append(parts, "abstract unix sockets scoped")
	}
	r.Summary = fmt.Sprintf("landlock ABI %d enforced: %s", abi, strings.Join(parts, "; "))
	return r, nil
}

func existing(paths []string) []string {
	var out []string
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// CondaPrefix returns the environment prefix of a conda executable
// (/opt/conda for /opt/conda/bin/conda), resolving symlinks: Landlock
// rules apply to the inodes paths lead to.
func CondaPrefix(condaExe string) (string, error) {
	exe, err := filepath.EvalSymlinks(condaExe)
	if err != nil {
		return "", fmt.Errorf("conda_exe: %w", err)
	}
	return filepath.Dir(filepath.Dir(exe)), nil
}
