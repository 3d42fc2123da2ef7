package nvmet

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

// Namespace is one namespace of a subsystem.
type Namespace struct {
	NSID       int
	DevicePath string // block device or regular file
	UUID       string // device_uuid; "" = keep the kernel's (random) one
	NGUID      string // device_nguid, 32 hex digits (dashes allowed); "" = none
	// BufferedIO must be true for regular files on filesystems without
	// O_DIRECT (tmpfs), or enabling fails.
	BufferedIO bool
	// Enabled is reported by GetSubsystem; EnsureNamespace always enables
	// and ignores it.
	Enabled bool
}

func (t *Target) readNamespace(nqn string, nsid int) (Namespace, error) {
	dir := t.nsDir(nqn, nsid)
	ns := Namespace{NSID: nsid}
	var buffered, enabled string
	for _, a := range []struct {
		file     string
		dst      *string
		optional bool
	}{
		{"device_path", &ns.DevicePath, false},
		{"device_uuid", &ns.UUID, true},
		{"device_nguid", &ns.NGUID, true},
		{"buffered_io", &buffered, true},
		{"enable", &enabled, false},
	} {
		var v string
		var err error
		if a.optional {
			v, err = t.readOptional(filepath.Join(dir, a.file))
		} else {
			v, err = t.read(filepath.Join(dir, a.file))
		}
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return Namespace{}, fmt.Errorf("%w: namespace %d of %s: %w", nvmeof.ErrNotFound, nsid, nqn, err)
			}
			return Namespace{}, err
		}
		*a.dst = v
	}
	// The kernel prints an unset device_path as "(null)".
	if ns.DevicePath == "(null)" {
		ns.DevicePath = ""
	}
	// An all-zero NGUID is the kernel's "none".
	if strings.Trim(nvmeof.NormalizeID(ns.NGUID), "0") == "" {
		ns.NGUID = ""
	}
	ns.BufferedIO = parseBool(buffered)
	ns.Enabled = parseBool(enabled)
	return ns, nil
}

func validateNamespace(ns Namespace) error {
	if ns.NSID < 1 || ns.NSID > 0xfffffffe {
		return fmt.Errorf("%w: NSID %d is outside 1-4294967294", nvmeof.ErrInvalidArgument, ns.NSID)
	}
	if !filepath.IsAbs(ns.DevicePath) || strings.ContainsAny(ns.DevicePath, "\n\r\x00") {
		return fmt.Errorf("%w: namespace %d: device path %q must be an absolute path without newlines",
			nvmeof.ErrInvalidArgument, ns.NSID, ns.DevicePath)
	}
	if ns.UUID != "" && !nvmeof.IsUUID(ns.UUID) {
		return fmt.Errorf("%w: namespace %d: UUID %q is not a UUID", nvmeof.ErrInvalidArgument, ns.NSID, ns.UUID)
	}
	if ns.NGUID != "" && !nvmeof.ValidNGUID(ns.NGUID) {
		return fmt.Errorf("%w: namespace %d: NGUID %q is not 32 hex digits", nvmeof.ErrInvalidArgument, ns.NSID, ns.NGUID)
	}
	return nil
}

// EnsureNamespace creates namespace ns.NSID of nqn backed by ns.DevicePath
// and enables it. device_path, device_uuid, device_nguid and buffered_io
// are written before enable, which is the only order the kernel accepts
// (they cannot change while enabled). The result of writing enable is
// checked and read back: the kernel refuses it when the backing device
// cannot be opened (missing, or a file on a filesystem without O_DIRECT
// and BufferedIO unset).
//
// An already enabled namespace with the same device path and identity is
// left alone; with another device path or identity it is nvmeof.ErrBusy.
func (t *Target) EnsureNamespace(nqn string, ns Namespace) error {
	if err := validateSubsysNQN(nqn); err != nil {
		return err
	}
	if err := validateNamespace(ns); err != nil {
		return fmt.Errorf("subsystem %s: %w", nqn, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.requireSubsystem(nqn); err != nil {
		return err
	}
	dir := t.nsDir(nqn, ns.NSID)
	ok, err := t.exists(dir)
	if err != nil {
		return err
	}
	if !ok {
		if err := t.fs.Mkdir(dir); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("creating namespace %d of %s (mkdir %s): %w", ns.NSID, nqn, dir, err)
		}
	}
	cur, err := t.readNamespace(nqn, ns.NSID)
	if err != nil {
		return err
	}
	if cur.Enabled {
		var diffs []string
		if cur.DevicePath != ns.DevicePath {
			diffs = append(diffs, fmt.Sprintf("device_path %q (wanted %q)", cur.DevicePath, ns.DevicePath))
		}
		if ns.UUID != "" && nvmeof.NormalizeID(cur.UUID) != nvmeof.NormalizeID(ns.UUID) {
			diffs = append(diffs, fmt.Sprintf("uuid %q (wanted %q)", cur.UUID, ns.UUID))
		}
		if ns.NGUID != "" && nvmeof.NormalizeID(cur.NGUID) != nvmeof.NormalizeID(ns.NGUID) {
			diffs = append(diffs, fmt.Sprintf("nguid %q (wanted %q)", cur.NGUID, ns.NGUID))
		}
		if len(diffs) > 0 {
			return fmt.Errorf("%w: namespace %d of %s is enabled with %s", nvmeof.ErrBusy, ns.NSID, nqn, strings.Join(diffs, ", "))
		}
		if cur.BufferedIO != ns.BufferedIO {
			// Not an identity problem, and fixing it needs a disable that
			// would interrupt I/O: report, do not act.
			klog.InfoS("Enabled nvmet namespace has another buffered_io setting; left as is",
				"nqn", nqn, "nsid", ns.NSID, "bufferedIO", cur.BufferedIO, "wanted", ns.BufferedIO)
		}
		klog.V(4).InfoS("nvmet namespace already enabled", "nqn", nqn, "nsid", ns.NSID, "device", ns.DevicePath)
		return nil
	}
	writes := [][2]string{{"device_path", ns.DevicePath}}
	if ns.UUID != "" {
		writes = append(writes, [2]string{"device_uuid", strings.ToLower(ns.UUID)})
	}
	if ns.NGUID != "" {
		writes = append(writes, [2]string{"device_nguid", nvmeof.NormalizeID(ns.NGUID)})
	}
	writes = append(writes, [2]string{"buffered_io", boolAttr(ns.BufferedIO)})
	for _, w := range writes {
		if err := t.write(filepath.Join(dir, w[0]), w[1]); err != nil {
			return fmt.Errorf("configuring namespace %d of %s: %w", ns.NSID, nqn, err)
		}
	}
	if err := t.write(filepath.Join(dir, "enable"), "1"); err != nil {
		hint := ""
		if !ns.BufferedIO {
			hint = " (a regular file on a filesystem without O_DIRECT needs BufferedIO)"
		}
		return fmt.Errorf("enabling namespace %d of %s with device %s: the kernel cannot open the backing device%s: %w",
			ns.NSID, nqn, ns.DevicePath, hint, err)
	}
	v, err := t.read(filepath.Join(dir, "enable"))
	if err != nil {
		return err
	}
	if !parseBool(v) {
		return fmt.Errorf("enabling namespace %d of %s with device %s: enable reads %q after writing 1",
			ns.NSID, nqn, ns.DevicePath, v)
	}
	klog.InfoS("Enabled nvmet namespace", "nqn", nqn, "nsid", ns.NSID, "device", ns.DevicePath, "uuid", ns.UUID, "bufferedIO", ns.BufferedIO)
	return nil
}

func (t *Target) requireNamespace(nqn string, nsid int) (string, error) {
	if err := validateSubsysNQN(nqn); err != nil {
		return "", err
	}
	if nsid < 1 || nsid > 0xfffffffe {
		return "", fmt.Errorf("%w: NSID %d is outside 1-4294967294", nvmeof.ErrInvalidArgument, nsid)
	}
	dir := t.nsDir(nqn, nsid)
	ok, err := t.exists(dir)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%w: namespace %d of subsystem %s (%s)", nvmeof.ErrNotFound, nsid, nqn, dir)
	}
	return dir, nil
}

// SetNamespaceEnabled enables or disables a namespace. Disabling makes the
// namespace vanish from connected hosts (their I/O to it fails).
func (t *Target) SetNamespaceEnabled(nqn string, nsid int, on bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	dir, err := t.requireNamespace(nqn, nsid)
	if err != nil {
		return err
	}
	if err := t.write(filepath.Join(dir, "enable"), boolAttr(on)); err != nil {
		return fmt.Errorf("setting namespace %d of %s enabled=%v: %w", nsid, nqn, on, err)
	}
	v, err := t.read(filepath.Join(dir, "enable"))
	if err != nil {
		return err
	}
	if parseBool(v) != on {
		return fmt.Errorf("namespace %d of %s: enable reads %q after writing %s", nsid, nqn, v, boolAttr(on))
	}
	klog.InfoS("Set nvmet namespace state", "nqn", nqn, "nsid", nsid, "enabled", on)
	return nil
}

// RevalidateNamespace tells the target that the backing device of an
// enabled namespace has grown, so hosts see the new size.
func (t *Target) RevalidateNamespace(nqn string, nsid int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	dir, err := t.requireNamespace(nqn, nsid)
	if err != nil {
		return err
	}
	if err := t.write(filepath.Join(dir, "revalidate_size"), "1"); err != nil {
		return fmt.Errorf("revalidating the size of namespace %d of %s (it must be enabled): %w", nsid, nqn, err)
	}
	klog.InfoS("Revalidated nvmet namespace size", "nqn", nqn, "nsid", nsid)
	return nil
}
