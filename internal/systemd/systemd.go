// Package systemd connects the server to the service manager: sockets
// passed by socket activation, and sd_notify messages (READY, STATUS,
// STOPPING, WATCHDOG).
//
// go-systemd's daemon.SdNotify dials NOTIFY_SOCKET for every message. Once
// Landlock is in force, connecting to an abstract socket (and, from ABI 9,
// to a path socket created outside the sandbox) is denied, so the
// Notifier dials once at start, before the sandbox, and reuses the
// connection; the kernel lets a connected datagram socket keep sending.
// Without NOTIFY_SOCKET every method is a no-op, so callers need no checks.
package systemd

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// FDName is the FileDescriptorName= the shipped socket unit gives its
// listening socket.
const FDName = "https"

// MetricsFDName is the FileDescriptorName= of an optional second socket
// that serves only GET /metrics, over plain HTTP.
const MetricsFDName = "metrics"

// DownloadFDName is the FileDescriptorName= of an optional socket that
// serves only the channel (GET and HEAD), for operators who firewall
// downloads apart from uploads.
const DownloadFDName = "download"

// Sockets are the listening sockets systemd passed, by role.
type Sockets struct {
	// Main are named FDName or, without that name, every socket not
	// named otherwise.
	Main []net.Listener
	// Metrics are named MetricsFDName, Download DownloadFDName.
	Metrics, Download []net.Listener
}

// Listeners returns the sockets passed by systemd socket activation, all
// nil without activation. It unsets LISTEN_* so that children do not see
// them.
func Listeners() (Sockets, error) {
	named, err := activation.ListenersWithNames()
	if err != nil {
		return Sockets{}, fmt.Errorf("socket activation: %w", err)
	}
	s := Sockets{Metrics: clean(named[MetricsFDName]), Download: clean(named[DownloadFDName])}
	if ls := clean(named[FDName]); len(ls) > 0 {
		s.Main = ls
		return s, nil
	}
	for name, ls := range named {
		if name != MetricsFDName && name != DownloadFDName {
			s.Main = append(s.Main, clean(ls)...)
		}
	}
	return s, nil
}

// clean drops entries for passed fds that are not listening sockets.
func clean(ls []net.Listener) []net.Listener {
	var out []net.Listener
	for _, l := range ls {
		if l != nil {
			out = append(out, l)
		}
	}
	return out
}

// Notifier sends sd_notify messages over one pre-dialled socket.
type Notifier struct {
	mu   sync.Mutex
	conn *net.UnixConn
}

// NewNotifier dials $NOTIFY_SOCKET. With no NOTIFY_SOCKET it returns a
// Notifier that sends nothing. The variable is left set: systemd also
// reads it from our environment for nothing else, and child processes get
// an explicit environment anyway.
func NewNotifier() (*Notifier, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return &Notifier{}, nil
	}
	// Go maps a leading "@" to the abstract namespace.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("dial NOTIFY_SOCKET %s: %w", path, err)
	}
	return &Notifier{conn: conn}, nil
}

// Enabled reports whether messages go anywhere.
func (n *Notifier) Enabled() bool { return n != nil && n.conn != nil }

// Send sends one message of newline-separated assignments.
func (n *Notifier) Send(state string) error {
	if !n.Enabled() {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	_, err := n.conn.Write([]byte(state))
	return err
}

// Ready says start-up is complete.
func (n *Notifier) Ready(status string) error {
	return n.Send(daemon.SdNotifyReady + "\nSTATUS=" + oneLine(status))
}

// Status sets the free-form status line shown by systemctl status.
func (n *Notifier) Status(status string) error { return n.Send("STATUS=" + oneLine(status)) }

// Stopping says shutdown has begun.
func (n *Notifier) Stopping(status string) error {
	return n.Send(daemon.SdNotifyStopping + "\nSTATUS=" + oneLine(status))
}

// Watchdog pings the service manager's watchdog.
func (n *Notifier) Watchdog() error { return n.Send(daemon.SdNotifyWatchdog) }

// Close closes the socket.
func (n *Notifier) Close() error {
	if !n.Enabled() {
		return nil
	}
	return n.conn.Close()
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// WatchdogInterval returns how often to ping the watchdog: half of
// WATCHDOG_USEC, as sd_watchdog_enabled(3) advises, or 0 when the watchdog
// is off or meant for another process.
func WatchdogInterval() (time.Duration, error) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0, fmt.Errorf("watchdog: %w", err)
	}
	return d / 2, nil
}

// Watchdog pings n every interval while health reports no error, until
// ctx is done. A wedged or broken server must stop pinging, so that the
// service manager restarts it: the ping is never sent on a timer alone.
// onChange, if not nil, is called when health changes.
func Watchdog(ctx context.Context, n *Notifier, interval time.Duration, health func() error, onChange func(err error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	first := true
	for {
		err := health()
		if first || (err == nil) != (last == nil) {
			if onChange != nil {
				onChange(err)
			}
			first = false
		}
		last = err
		if err == nil {
			n.Watchdog()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
