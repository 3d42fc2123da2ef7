package host

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ControllerStatus is a controller as ControllerStatuses reads it: which
// subsystem at which address, and its state.
type ControllerStatus struct {
	Name, SubsysNQN string
	State           ControllerState
	TrAddr, TrSvcID string
}

// ControllerStatuses lists /sys/class/nvme reading three attributes per
// controller and nothing else: Controllers also resolves each controller's
// subsystem by scanning every subsystem, which is quadratic in the number
// of controllers and not needed to tell whether a replica is connected (the
// healer asks this on every cycle). Controllers vanishing meanwhile are
// skipped, and a missing class directory (nvme not loaded) is no
// controller. The order is the directory's.
func (s Sysfs) ControllerStatuses() ([]ControllerStatus, error) {
	dir := s.classNVMe()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]ControllerStatus, 0, len(entries))
	for _, e := range entries {
		if !ctrlNameRE.MatchString(e.Name()) {
			continue
		}
		d := filepath.Join(dir, e.Name())
		nqn, err1 := attrs.ReadAttr(filepath.Join(d, "subsysnqn"))
		state, err2 := attrs.ReadAttr(filepath.Join(d, "state"))
		addr, _ := attrs.ReadAttr(filepath.Join(d, "address"))
		if errors.Is(err1, fs.ErrNotExist) || errors.Is(err2, fs.ErrNotExist) {
			continue
		}
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		traddr, trsvcid, _ := ParseAddress(addr)
		out = append(out, ControllerStatus{Name: e.Name(), SubsysNQN: nqn, State: ControllerState(state), TrAddr: traddr, TrSvcID: trsvcid})
	}
	return out, nil
}

// NamespaceIdentities returns the identities a namespace block device
// ("nvme1n1") shows in /sys/block/<device>/{uuid,nguid,wwid}, leaving out
// missing and all-zero ones (the kernel's "none"); nil when the device is
// gone.
func (s Sysfs) NamespaceIdentities(device string) ([]string, error) {
	if strings.ContainsAny(device, "/\x00") || device == "" || device == "." || device == ".." {
		return nil, fmt.Errorf("bad device name %q", device)
	}
	dir := s.block(device)
	var ids []string
	for _, f := range []string{"uuid", "nguid", "wwid"} {
		v, err := attrs.ReadAttr(filepath.Join(dir, f))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if v != "" && strings.Trim(strings.ReplaceAll(v, "-", ""), "0") != "" {
			ids = append(ids, v)
		}
	}
	return ids, nil
}
