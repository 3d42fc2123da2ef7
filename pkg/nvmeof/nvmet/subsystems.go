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

// Subsystem is an nvmet subsystem.
type Subsystem struct {
	NQN          string
	Serial       string
	Model        string
	AllowAnyHost bool
	AllowedHosts []string
	Namespaces   []Namespace
	Ports        []int
}

// EnsureSubsystem creates subsystem nqn if missing and always writes
// attr_allow_any_host=0: with 1 (the default on some kernels) any host
// could connect, which would defeat the fencing md relies on. serial (up
// to 20 hex digits, unique per replica; "" keeps the kernel's) is written
// when it differs. The kernel fixes the serial once a host has identified
// the subsystem, and a serial change under a connected host is refused
// here too (any namespace enabled): both give nvmeof.ErrBusy.
func (t *Target) EnsureSubsystem(nqn, serial string) error {
	if err := validateSubsysNQN(nqn); err != nil {
		return err
	}
	if err := nvmeof.ValidateSerial(serial); err != nil {
		return err
	}
	serial = strings.ToLower(serial)
	t.mu.Lock()
	defer t.mu.Unlock()

	dir := t.subsysDir(nqn)
	ok, err := t.exists(dir)
	if err != nil {
		return fmt.Errorf("checking subsystem %s: %w", nqn, err)
	}
	created := false
	if !ok {
		if err := t.fs.Mkdir(dir); err != nil {
			if !errors.Is(err, fs.ErrExist) {
				return t.mkdirError("subsystem "+nqn, dir, err)
			}
		} else {
			created = true
		}
	}
	fail := func(err error) error {
		if created {
			if rerr := t.fs.Rmdir(dir); rerr != nil {
				klog.ErrorS(rerr, "Cannot remove half-configured nvmet subsystem", "nqn", nqn)
			}
		}
		return err
	}
	if err := t.write(filepath.Join(dir, "attr_allow_any_host"), "0"); err != nil {
		return fail(fmt.Errorf("restricting subsystem %s to allowed hosts: %w", nqn, err))
	}
	if serial != "" {
		cur, err := t.read(filepath.Join(dir, "attr_serial"))
		if err != nil {
			return fail(err)
		}
		if !strings.EqualFold(cur, serial) {
			enabled, err := t.enabledNamespaces(nqn)
			if err != nil {
				return fail(err)
			}
			if len(enabled) > 0 {
				return fail(fmt.Errorf("%w: subsystem %s has serial %q, wanted %q, but namespaces %v are enabled (hosts may have identified it)",
					nvmeof.ErrBusy, nqn, cur, serial, enabled))
			}
			if err := t.write(filepath.Join(dir, "attr_serial"), serial); err != nil {
				return fail(fmt.Errorf("%w: subsystem %s has serial %q and the kernel refuses %q (fixed once a host identified it): %w",
					nvmeof.ErrBusy, nqn, cur, serial, err))
			}
		}
	}
	if created {
		klog.InfoS("Created nvmet subsystem", "nqn", nqn, "serial", serial)
	} else {
		klog.V(4).InfoS("nvmet subsystem already present", "nqn", nqn)
	}
	return nil
}

func (t *Target) enabledNamespaces(nqn string) ([]int, error) {
	ids, err := t.numericNames(filepath.Join(t.subsysDir(nqn), "namespaces"))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, id := range ids {
		v, err := t.read(filepath.Join(t.nsDir(nqn, id), "enable"))
		if err != nil {
			return nil, err
		}
		if parseBool(v) {
			out = append(out, id)
		}
	}
	return out, nil
}

// RemoveSubsystem unexports nqn from every port (dropping its connections),
// disables and removes its namespaces, removes its allowed-host links (and
// host entries no other subsystem references) and the subsystem itself.
// A missing subsystem is not an error.
func (t *Target) RemoveSubsystem(nqn string) error {
	if err := validateSubsysNQN(nqn); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.removeSubsystemLocked(nqn)
}

func (t *Target) removeSubsystemLocked(nqn string) error {
	dir := t.subsysDir(nqn)
	ok, err := t.exists(dir)
	if err != nil || !ok {
		return err
	}
	ports, err := t.portsOf(nqn)
	if err != nil {
		return err
	}
	for _, id := range ports {
		if err := t.unlinkLocked(id, nqn); err != nil {
			return err
		}
	}
	nsids, err := t.numericNames(filepath.Join(dir, "namespaces"))
	if err != nil {
		return err
	}
	for _, id := range nsids {
		nd := t.nsDir(nqn, id)
		// rmdir disables too, but an explicit disable first surfaces a
		// kernel error with a clearer message.
		if err := t.write(filepath.Join(nd, "enable"), "0"); err != nil {
			klog.ErrorS(err, "Cannot disable namespace before removing it", "nqn", nqn, "nsid", id)
		}
		if err := t.fs.Rmdir(nd); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing namespace %d of %s: %w", id, nqn, err)
		}
	}
	hosts, err := t.names(filepath.Join(dir, "allowed_hosts"))
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if err := t.fs.Remove(filepath.Join(dir, "allowed_hosts", h)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing allowed host %s of %s: %w", h, nqn, err)
		}
	}
	if err := t.fs.Rmdir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing subsystem %s: %w", nqn, err)
	}
	klog.InfoS("Removed nvmet subsystem", "nqn", nqn, "ports", ports, "namespaces", nsids)
	for _, h := range hosts {
		if err := t.removeHostIfOrphan(h); err != nil {
			return err
		}
	}
	return nil
}

// ListSubsystems returns every subsystem, ordered by NQN.
func (t *Target) ListSubsystems() ([]Subsystem, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	names, err := t.names(t.subsystemsDir())
	if err != nil {
		return nil, err
	}
	return nvmeof.ReadExisting(names, t.getSubsystemLocked)
}

// GetSubsystem returns subsystem nqn, or nvmeof.ErrNotFound.
func (t *Target) GetSubsystem(nqn string) (Subsystem, error) {
	if err := nvmeof.ValidateNQN(nqn); err != nil {
		return Subsystem{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.getSubsystemLocked(nqn)
}

func (t *Target) getSubsystemLocked(nqn string) (Subsystem, error) {
	if err := t.requireSubsystem(nqn); err != nil {
		return Subsystem{}, err
	}
	dir := t.subsysDir(nqn)
	s := Subsystem{NQN: nqn}
	anyHost, err := t.read(filepath.Join(dir, "attr_allow_any_host"))
	if err != nil {
		return Subsystem{}, err
	}
	s.AllowAnyHost = parseBool(anyHost)
	if s.Serial, err = t.readOptional(filepath.Join(dir, "attr_serial")); err != nil {
		return Subsystem{}, err
	}
	if s.Model, err = t.readOptional(filepath.Join(dir, "attr_model")); err != nil {
		return Subsystem{}, err
	}
	if s.AllowedHosts, err = t.names(filepath.Join(dir, "allowed_hosts")); err != nil {
		return Subsystem{}, err
	}
	nsids, err := t.numericNames(filepath.Join(dir, "namespaces"))
	if err != nil {
		return Subsystem{}, err
	}
	for _, id := range nsids {
		ns, err := t.readNamespace(nqn, id)
		if err != nil {
			return Subsystem{}, err
		}
		s.Namespaces = append(s.Namespaces, ns)
	}
	if s.Ports, err = t.portsOf(nqn); err != nil {
		return Subsystem{}, err
	}
	return s, nil
}
