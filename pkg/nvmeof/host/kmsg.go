package host

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"golang.org/x/sys/unix"
)

// kmsgCursor reads the kernel log records (/dev/kmsg) written after it was
// opened. Bidirectional authentication needs it: the Linux host skips the
// controller's authentication, without an error, when the target does not
// ask for authentication at all (seen on 6.12: a host connecting with a
// controller secret to a target without any secret for it gets a live,
// unauthenticated controller). The only trace the kernel leaves of a
// successful controller authentication is its log line.
type kmsgCursor struct {
	fd   int
	path string
	// lost is set when records were overwritten before they were read
	// (EPIPE): the reader skipped ahead past some.
	lost bool
}

func openKmsg(path string) (*kmsgCursor, error) {
	// Raw syscalls: a non-blocking os.File would park reads in the poller
	// instead of returning EAGAIN at the end of the log.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	// A pipe (tests) has no end to seek to: it holds only what is written
	// after it was opened.
	if _, err := unix.Seek(fd, 0, io.SeekEnd); err != nil && !errors.Is(err, unix.ESPIPE) {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "seek", Path: path, Err: err}
	}
	return &kmsgCursor{fd: fd, path: path}, nil
}

func (k *kmsgCursor) Close() { unix.Close(k.fd) }

// messages returns the messages of the records logged since the cursor
// was opened (or last read).
func (k *kmsgCursor) messages() ([]string, error) {
	msgs, _, err := k.read()
	return msgs, err
}

// read returns the messages of the records available now; eof is true when
// the log has ended (a read returned nothing rather than EAGAIN: a closed
// pipe or the end of a regular file; /dev/kmsg never ends). /dev/kmsg
// returns one record per read, "<prio>,<seq>,<usec>,<flags>;<message>\n"
// followed by continuation lines (which have no ';' prefix and are
// skipped); a regular file or a pipe (tests) returns several per read.
func (k *kmsgCursor) read() (msgs []string, eof bool, err error) {
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(k.fd, buf)
		switch {
		case errors.Is(err, unix.EPIPE):
			k.lost = true
			continue // records overwritten while reading: go on with the oldest left
		case errors.Is(err, unix.EAGAIN):
			return msgs, false, nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return msgs, false, &fs.PathError{Op: "read", Path: k.path, Err: err}
		case n == 0:
			return msgs, true, nil
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if _, msg, ok := strings.Cut(line, ";"); ok {
				msgs = append(msgs, msg)
			}
		}
	}
}

// find returns the first of texts that a message logged since the last
// read contains, or "".
func (k *kmsgCursor) find(texts ...string) (string, error) {
	msgs, err := k.messages()
	for _, text := range texts {
		for _, m := range msgs {
			if strings.Contains(m, text) {
				return text, err
			}
		}
	}
	return "", err
}

// controllerAuthenticatedLog is what the host logs when the controller
// proved its secret (drivers/nvme/host/auth.c: dev_info "qid %d:
// controller authenticated"), prefixed by the device name.
func controllerAuthenticatedLog(instance int) string {
	return fmt.Sprintf("nvme nvme%d: qid 0: controller authenticated", instance)
}
