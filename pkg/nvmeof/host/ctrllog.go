package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// ControllerLog follows the kernel log for records about NVMe controllers.
// The kernel changes a controller's state without any notification (no
// sysfs_notify, no uevent for a controller that starts reconnecting), but
// the NVMe core and transports log every such step under the controller's
// name, e.g. (Linux 6.1):
//
//	nvme nvme3: starting error recovery
//	nvme nvme3: Reconnecting in 2 seconds...
//	nvme nvme3: Successfully reconnected (1 attempt)
//	nvme nvme3: Removing controller...
//	nvme nvme3: Removing ctrl: NQN "nqn...."
//	nvme nvme3: queue 0: timeout cid 0x1 type 4 opcode 0x18 (Keep Alive)
//
// so a reader of the log learns at once which controllers to look at. The
// wording is not a kernel ABI; ControllerLog keys only on the device name
// every dev_* message starts with ("nvme nvme<N>: "), whatever follows.
type ControllerLog struct {
	cur *kmsgCursor
	// wake is an eventfd that interrupts a Wait when its context ends.
	wake int
}

// OpenControllerLog opens the kernel log (/dev/kmsg, or a pipe in tests)
// at its end: records logged before are not reported.
func OpenControllerLog(path string) (*ControllerLog, error) {
	cur, err := openKmsg(path)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		cur.Close()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &ControllerLog{cur: cur, wake: wake}, nil
}

// Close releases the log. Not concurrently with Wait.
func (l *ControllerLog) Close() {
	l.cur.Close()
	unix.Close(l.wake)
}

// Wait blocks until the kernel logs records naming NVMe controllers and
// returns their names (each once, in order of first mention), or lost when
// records were overwritten before they could be read (any controller may
// have changed). It returns ctx's error when ctx ends, and io.EOF when the
// log ended (only a pipe or a file does).
func (l *ControllerLog) Wait(ctx context.Context) (names []string, lost bool, err error) {
	stop := context.AfterFunc(ctx, func() { unix.Write(l.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0}) })
	defer stop()
	for {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		msgs, eof, err := l.cur.read()
		for _, m := range msgs {
			if n, ok := ControllerNamed(m); ok && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
		lost, l.cur.lost = l.cur.lost, false
		switch {
		case len(names) > 0 || lost:
			return names, lost, nil
		case err != nil:
			return nil, false, err
		case eof:
			return nil, false, io.EOF
		}
		fds := []unix.PollFd{{Fd: int32(l.cur.fd), Events: unix.POLLIN}, {Fd: int32(l.wake), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil && !errors.Is(err, unix.EINTR) {
			return nil, false, &fs.PathError{Op: "poll", Path: l.cur.path, Err: err}
		}
	}
}

// ControllerNamed returns the controller a kernel log message is about
// ("nvme3" for "nvme nvme3: starting error recovery").
func ControllerNamed(msg string) (string, bool) {
	rest, ok := strings.CutPrefix(msg, "nvme nvme")
	if !ok {
		return "", false
	}
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	if i == 0 || i >= len(rest) || rest[i] != ':' {
		return "", false
	}
	return "nvme" + rest[:i], true
}
