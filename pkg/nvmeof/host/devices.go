package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

// FindDevice returns the namespace block device of subsystem nqn. The device
// is resolved through /sys/class/nvme-subsystem (the subsystem whose
// subsysnqn is nqn, then its nvme<S>n<N> multipath heads, or the
// controllers' own nvme<C>n<N> disks without native multipath), never from
// the controller name.
//
// With nsUUID set, the namespace's uuid, nguid or wwid must match it; a
// namespace found with another identity yields nvmeof.ErrDeviceNotFound and
// nvmeof.ErrIdentityMismatch naming what was found, so the caller never touches a
// wrong device. With nsUUID empty the subsystem must hold exactly one
// namespace.
func (i *Initiator) FindDevice(nqn, nsUUID string) (Device, error) {
	if err := nvmeof.ValidateNQN(nqn); err != nil {
		return Device{}, err
	}
	if nsUUID != "" && !nvmeof.IsUUID(nsUUID) && !nvmeof.ValidNGUID(nsUUID) {
		return Device{}, fmt.Errorf("%w: namespace identity %q is neither a UUID nor an NGUID", nvmeof.ErrInvalidArgument, nsUUID)
	}
	subs, cands, err := i.sys.namespaceCandidates(nqn)
	if err != nil {
		return Device{}, err
	}
	if len(subs) == 0 && len(cands) == 0 {
		return Device{}, fmt.Errorf("%w: no NVMe subsystem with NQN %s on this host (not connected?)", nvmeof.ErrDeviceNotFound, nqn)
	}
	if len(cands) == 0 {
		return Device{}, fmt.Errorf("%w: subsystem %s (NQN %s) has no namespace block device yet",
			nvmeof.ErrDeviceNotFound, strings.Join(subs, ","), nqn)
	}
	devs := make([]Device, 0, len(cands))
	for _, c := range cands {
		d, err := i.sys.device(c, nqn)
		if err != nil {
			return Device{}, err
		}
		devs = append(devs, d)
	}
	if nsUUID == "" {
		if len(devs) > 1 {
			names := make([]string, len(devs))
			for k, d := range devs {
				names[k] = d.Name
			}
			return Device{}, fmt.Errorf("%w: NQN %s has %d namespaces (%s); a namespace UUID is needed to choose",
				nvmeof.ErrInvalidArgument, nqn, len(devs), strings.Join(names, ", "))
		}
		return devs[0], nil
	}
	var seen []string
	for _, d := range devs {
		if d.matchesIdentity(nsUUID) {
			return d, nil
		}
		seen = append(seen, fmt.Sprintf("%s has uuid %q nguid %q", d.Name, d.UUID, d.NGUID))
	}
	return Device{}, fmt.Errorf("%w: %w: NQN %s has no namespace with identity %s: %s",
		nvmeof.ErrDeviceNotFound, nvmeof.ErrIdentityMismatch, nqn, nsUUID, strings.Join(seen, "; "))
}

// WaitForDevice polls FindDevice every 100ms until the device exists in
// sysfs and its /dev node exists, or ctx ends (DefaultWaitTimeout without a
// deadline). The error names the NQN and what was last seen. Invalid
// arguments fail at once.
func (i *Initiator) WaitForDevice(ctx context.Context, nqn, nsUUID string) (Device, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	var (
		dev  Device
		last error
	)
	err := poll(ctx, i.poll, func() (bool, error) {
		d, err := i.FindDevice(nqn, nsUUID)
		if errors.Is(err, nvmeof.ErrInvalidArgument) && !errors.Is(err, nvmeof.ErrDeviceNotFound) {
			return false, err
		}
		if err != nil {
			last = err
			return false, nil
		}
		// sysfs can list the disk a moment before devtmpfs has the node.
		if _, serr := os.Stat(d.Path); serr != nil {
			last = fmt.Errorf("%w: %s is in sysfs but %s is not there yet: %w", nvmeof.ErrDeviceNotFound, d.Name, d.Path, serr)
			return false, nil
		}
		dev = d
		return true, nil
	})
	if err != nil {
		if errors.Is(err, nvmeof.ErrInvalidArgument) {
			return Device{}, err
		}
		if last != nil {
			return Device{}, fmt.Errorf("waiting for the device of NQN %s (namespace %q): %w; last seen: %w", nqn, nsUUID, err, last)
		}
		return Device{}, fmt.Errorf("waiting for the device of NQN %s (namespace %q): %w", nqn, nsUUID, err)
	}
	klog.V(4).InfoS("Found NVMe namespace device", "nqn", nqn, "device", dev.Path, "nsid", dev.NSID, "uuid", dev.UUID)
	return dev, nil
}
