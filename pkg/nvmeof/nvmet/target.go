package nvmet

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/sysfs"
)

// DefaultRoot is where nvmet's configfs tree lives when configfs is
// mounted at its usual place.
const DefaultRoot = "/sys/kernel/config/nvmet"

// Target drives the kernel NVMe-oF target (nvmet) through configfs.
//
// configfs is not persistent: after a reboot or module reload everything
// configured here is gone and must be restored by the caller.
//
// Methods are serialized by a mutex so that check-then-act sequences within
// one process do not interleave; other processes editing the same tree are
// not coordinated with.
type Target struct {
	root string
	fs   configFS
	mu   sync.Mutex
	// sleep waits between retries (time.Sleep; tests record it).
	sleep func(time.Duration)
}

// NewTarget returns a Target for the nvmet configfs directory root
// ("" means DefaultRoot).
func NewTarget(root string) *Target {
	if root == "" {
		root = DefaultRoot
	}
	return newTargetWithFS(root, realConfigFS{})
}

func newTargetWithFS(root string, cfs configFS) *Target {
	return &Target{root: filepath.Clean(root), fs: cfs, sleep: time.Sleep}
}

func (t *Target) subsystemsDir() string       { return filepath.Join(t.root, "subsystems") }
func (t *Target) portsDir() string            { return filepath.Join(t.root, "ports") }
func (t *Target) hostsDir() string            { return filepath.Join(t.root, "hosts") }
func (t *Target) subsysDir(nqn string) string { return filepath.Join(t.subsystemsDir(), nqn) }
func (t *Target) hostDir(host string) string  { return filepath.Join(t.hostsDir(), host) }
func (t *Target) portDir(id int) string       { return filepath.Join(t.portsDir(), strconv.Itoa(id)) }
func (t *Target) nsDir(nqn string, nsid int) string {
	return filepath.Join(t.subsysDir(nqn), "namespaces", strconv.Itoa(nsid))
}

// Available checks that nvmet's configfs tree is there: configfs mounted
// and the nvmet module loaded. It cannot see whether nvmet-tcp is loaded;
// that shows when a subsystem is linked to a tcp port.
func (t *Target) Available() error {
	if _, err := t.fs.Lstat(t.root); err != nil {
		parent := filepath.Dir(t.root)
		if _, perr := t.fs.Lstat(parent); perr != nil {
			return fmt.Errorf("%w: configfs is not mounted at %s (mount -t configfs none %s), so %s is missing: %w",
				nvmeof.ErrNotFound, parent, parent, t.root, err)
		}
		return fmt.Errorf("%w: %s is missing: kernel module nvmet is not loaded (modprobe nvmet nvmet-tcp): %w",
			nvmeof.ErrNotFound, t.root, err)
	}
	for _, d := range []string{t.subsystemsDir(), t.portsDir(), t.hostsDir()} {
		if _, err := t.fs.Lstat(d); err != nil {
			return fmt.Errorf("%w: %s is missing: %s is not an nvmet configfs tree: %w", nvmeof.ErrNotFound, d, t.root, err)
		}
	}
	return nil
}

func (t *Target) exists(path string) (bool, error) {
	_, err := t.fs.Lstat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}

// attrs reads configfs attributes through the filesystem seam, so tests
// run on the fake tree; errors pass through as configfs gives them.
func (t *Target) attrs() sysfs.Reader { return sysfs.Reader{ReadFile: t.fs.ReadFile} }

func (t *Target) read(path string) (string, error) {
	v, err := t.attrs().ReadAttr(path)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return v, nil
}

// readOptional returns "" for attributes older kernels lack (attr_model).
func (t *Target) readOptional(path string) (string, error) {
	v, err := t.attrs().ReadOptionalAttr(path)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return v, nil
}

func (t *Target) write(path, value string) error {
	if err := t.fs.WriteFile(path, []byte(value)); err != nil {
		return fmt.Errorf("writing %q to %s: %w", value, path, err)
	}
	return nil
}

func parseBool(s string) bool {
	switch strings.TrimSpace(s) {
	case "1", "Y", "y", "true":
		return true
	}
	return false
}

func boolAttr(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// names lists the entries of dir; a missing dir is empty.
func (t *Target) names(dir string) ([]string, error) {
	entries, err := t.fs.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out, nil
}

// numericNames lists the numeric entries of dir (port IDs, NSIDs), sorted.
func (t *Target) numericNames(dir string) ([]int, error) {
	names, err := t.names(dir)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, n := range names {
		if v, err := strconv.Atoi(n); err == nil && strconv.Itoa(v) == n {
			out = append(out, v)
		}
	}
	sort.Ints(out)
	return out, nil
}

func validateSubsysNQN(nqn string) error {
	if err := nvmeof.ValidateNQN(nqn); err != nil {
		return err
	}
	if nqn == nvmeof.DiscoveryNQN {
		return fmt.Errorf("%w: %s is the discovery NQN, not a storage subsystem", nvmeof.ErrInvalidArgument, nqn)
	}
	return nil
}

func (t *Target) requireSubsystem(nqn string) error {
	ok, err := t.exists(t.subsysDir(nqn))
	if err != nil {
		return fmt.Errorf("checking subsystem %s: %w", nqn, err)
	}
	if !ok {
		return fmt.Errorf("%w: subsystem %s (%s)", nvmeof.ErrNotFound, nqn, t.subsysDir(nqn))
	}
	return nil
}
