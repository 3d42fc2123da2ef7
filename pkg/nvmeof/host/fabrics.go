package host

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

// Fabrics is the kernel's /dev/nvme-fabrics character device, reduced to the
// one thing the initiator does with it, so tests can replace it.
//
// Write opens the device, writes options in a single write(2) (the kernel
// accepts exactly one write per open file and parses the whole buffer) and
// returns what a read of the same file then yields: "instance=N,cntlid=M".
// On failure the returned error must wrap the kernel's errno (a
// syscall.Errno) so Connect can tell invalid options (EINVAL) from a refused
// or unreachable target (EIO, ECONNREFUSED, ...).
type Fabrics interface {
	Write(options string) (string, error)
}

// FabricsOptionReader is optionally implemented by a Fabrics: reading the
// device without writing lists the option tokens the kernel supports. When
// the Fabrics does not implement it, Initiator.SupportedOptions reads
// root/dev/nvme-fabrics directly.
type FabricsOptionReader interface {
	ReadOptions() (string, error)
}

// devFabrics is the real /dev/nvme-fabrics.
type devFabrics struct {
	path string
}

var _ FabricsOptionReader = devFabrics{}

func (d devFabrics) open(flag int) (*os.File, error) {
	f, err := os.OpenFile(d.path, flag, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENXIO) {
			return nil, fmt.Errorf("%w: %s is missing: kernel modules nvme-fabrics and nvme-tcp are not loaded: %w",
				nvmeof.ErrNotFound, d.path, err)
		}
		return nil, fmt.Errorf("opening %s: %w", d.path, err)
	}
	return f, nil
}

func (d devFabrics) Write(options string) (string, error) {
	f, err := d.open(os.O_RDWR)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// One write call: a second write on the same open file is refused with
	// EINVAL once the first created a controller. os.File.Write only loops
	// on short writes, and the kernel always consumes the whole buffer.
	if _, err := f.Write([]byte(options)); err != nil {
		// The options can hold DH-HMAC-CHAP secrets: quote them redacted.
		return "", fmt.Errorf("writing %q to %s: %w", redactOptions(options), d.path, err)
	}
	// The kernel's write does not move the file offset; the seq_file read
	// from offset 0 now shows this controller's instance.
	buf := make([]byte, 256)
	n, err := f.Read(buf)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the result of the connect from %s: %w", d.path, err)
	}
	return string(buf[:n]), nil
}

func (d devFabrics) ReadOptions() (string, error) {
	f, err := d.open(os.O_RDONLY)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", d.path, err)
	}
	return string(b), nil
}

// parseConnectResult parses "instance=N,cntlid=M\n" as read back from
// /dev/nvme-fabrics after a successful write.
func parseConnectResult(s string) (instance, cntlid int, err error) {
	instance, cntlid = -1, -1
	for _, kv := range strings.Split(strings.TrimSpace(s), ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		n, perr := strconv.Atoi(v)
		if perr != nil {
			continue
		}
		switch k {
		case "instance":
			instance = n
		case "cntlid":
			cntlid = n
		}
	}
	if instance < 0 {
		return -1, -1, fmt.Errorf("unexpected answer %q from nvme-fabrics: no instance", s)
	}
	return instance, cntlid, nil
}

// parseOptionNames turns the device's option table
// ("instance=-1,cntlid=-1,transport=%s,...,duplicate_connect,...") into the
// option names. instance and cntlid are placeholders, not options, and are
// left out.
func parseOptionNames(s string) []string {
	var names []string
	seen := map[string]bool{}
	for _, tok := range strings.Split(strings.TrimSpace(s), ",") {
		name, _, _ := strings.Cut(strings.TrimSpace(tok), "=")
		if name == "" || name == "instance" || name == "cntlid" || seen[name] {
			continue
		}
		seen[name] = true
		names = append(names, name)
	}
	return names
}

// connectionErrnos are the errnos that mean "the target did not let us in"
// rather than "our request was malformed". With the kernels seen so far
// (6.1, 6.12) a target that refuses the host (not in allowed_hosts) or does
// not export the NQN on that port answers the Connect command with an NVMe
// status that nvme-tcp turns into EIO; newer kernels may report EPERM,
// EACCES or ECONNREFUSED instead. A closed port gives ECONNREFUSED, an
// unreachable one ETIMEDOUT/EHOSTUNREACH/ENETUNREACH.
var connectionErrnos = []syscall.Errno{
	syscall.EIO, syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED,
	syscall.EPERM, syscall.EACCES, syscall.ETIMEDOUT, syscall.EHOSTUNREACH,
	syscall.EHOSTDOWN, syscall.ENETUNREACH, syscall.ENETDOWN, syscall.EADDRNOTAVAIL,
	syscall.EKEYREJECTED, syscall.ENOKEY,
}

func isConnectionErrno(err error) bool {
	for _, e := range connectionErrnos {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
