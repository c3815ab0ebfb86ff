package index

import (
	"os/exec"
	"syscall"
)

// ownGroup starts cmd in a process group of its own, which is killed as a
// whole when cmd's context ends, and has the kernel kill the child if the
// server dies first.
func ownGroup(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	return nil
}
