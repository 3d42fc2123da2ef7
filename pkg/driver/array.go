package driver

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// member is one reachable replica's device, classified by what it holds.
type member struct {
	replica volume.Replica
	device  host.Device
}

// ensureArray returns the md device of the volume, started. See stage's
// comment for the decision; the invariant is that nothing destructive
// (mdadm --create) runs unless every replica is present and verified blank:
// no md superblock (mdadm --examine) and nothing blkid recognises.
func (d *Driver) ensureArray(ctx context.Context, vol *volume.Volume, mdUUID string, replicas []volume.Replica, devices map[string]host.Device, u *undo) (string, error) {
	d.mdMu.Lock()
	defer d.mdMu.Unlock()

	if a, err := d.node.Raid.FindByUUID(mdUUID); err == nil {
		// Already running: a previous stage, or udev assembled it.
		klog.InfoS("md array already running", "volumeID", vol.ID, "device", a.Device, "uuid", mdUUID)
		return d.adoptRunning(ctx, vol, a, replicas, devices)
	} else if !errors.Is(err, mdraid.ErrNotFound) {
		return "", err
	}

	ours, blank, foreign, err := d.classify(ctx, mdUUID, replicas, devices)
	if err != nil {
		return "", err
	}
	for _, f := range foreign {
		klog.ErrorS(nil, "Replica device holds data of another array; leaving it alone", "volumeID", vol.ID, "problem", f)
	}

	if len(ours) > 0 {
		return d.assemble(ctx, vol, mdUUID, len(replicas), ours, devices, u)
	}

	// No reachable replica carries the array: first use, if it is provably
	// one. A replica that is away might hold the only copy of the data.
	if len(foreign) > 0 {
		return "", volume.Errorf(volume.ErrFailedPrecondition, "volume %s: refusing to create its md array: %s", vol.ID, strings.Join(foreign, "; "))
	}
	if len(blank) != len(replicas) {
		return "", volume.Errorf(volume.ErrUnavailable, "volume %s: creating its md array needs every replica, %d of %d reachable", vol.ID, len(blank), len(replicas))
	}
	if len(blank) < 2 {
		return "", volume.Errorf(volume.ErrFailedPrecondition, "volume %s wants %d replicas but has %d active: an md RAID1 needs two", vol.ID, numReplicas(vol), len(blank))
	}
	return d.createArray(ctx, vol, mdUUID, blank, u)
}

// classify sorts the reached replicas' devices by what they hold: the
// volume's md superblock (ours), nothing at all (blank), or anything else
// (foreign, described for the error; never touched).
func (d *Driver) classify(ctx context.Context, mdUUID string, replicas []volume.Replica, devices map[string]host.Device) (ours, blank []member, foreign []string, err error) {
	for _, r := range replicas {
		dev, ok := devices[r.ID]
		if !ok {
			continue
		}
		m := member{replica: r, device: dev}
		sb, err := d.node.Raid.Examine(ctx, dev.Path)
		switch {
		case errors.Is(err, mdraid.ErrNoSuperblock):
			format, ferr := d.node.Mounter.GetDiskFormat(dev.Path)
			if ferr != nil {
				return nil, nil, nil, fmt.Errorf("probing replica %s device %s: %w", r.ID, dev.Path, ferr)
			}
			if format != "" {
				foreign = append(foreign, fmt.Sprintf("replica %s (%s) holds %q without an md superblock", r.ID, dev.Path, format))
				continue
			}
			blank = append(blank, m)
		case err != nil:
			return nil, nil, nil, fmt.Errorf("examining replica %s device %s: %w", r.ID, dev.Path, err)
		case sb.UUID == mdUUID:
			if err := d.stopInactiveHolder(ctx, dev.Path, mdUUID); err != nil {
				return nil, nil, nil, err
			}
			ours = append(ours, m)
		default:
			// Never touched: not ours. The name is untrusted input; only
			// the UUID is reported.
			foreign = append(foreign, fmt.Sprintf("replica %s (%s) carries md array %s", r.ID, dev.Path, sb.UUID))
		}
	}
	return ours, blank, foreign, nil
}

// assemble starts the array from the reached members carrying its
// superblock: only with one recorded in sync (volume.CheckStartable), and it
// records, before returning, the replicas the array runs without.
func (d *Driver) assemble(ctx context.Context, vol *volume.Volume, mdUUID string, nReplicas int, ours []member, devices map[string]host.Device, u *undo) (string, error) {
	// Never from stale replicas alone: they would serve the volume as
	// it was when they dropped out.
	reached := make([]string, 0, len(ours))
	for _, m := range ours {
		reached = append(reached, m.replica.ID)
	}
	if err := vol.CheckStartable(reached); err != nil {
		return "", err
	}
	paths := memberPaths(ours)
	dev, err := d.node.Raid.NextFreeDevice()
	if err != nil {
		return "", err
	}
	err = d.node.Raid.Assemble(ctx, dev, mdUUID, paths)
	if errors.Is(err, mdraid.ErrAssembledElsewhere) {
		// udev got there first, from whichever members it saw.
		a, ferr := d.node.Raid.FindByUUID(mdUUID)
		if ferr != nil {
			return "", errors.Join(err, ferr)
		}
		return d.adoptRunning(ctx, vol, a, vol.ActiveReplicas(), devices)
	}
	if err != nil {
		return "", fmt.Errorf("assemble md %s of volume %s from %v: %w", mdUUID, vol.ID, paths, err)
	}
	u.arrays = append(u.arrays, dev)
	arr, err := d.verifyArray(dev, mdUUID)
	if err != nil {
		return "", err
	}
	if err := d.recordMissingReplicas(ctx, vol, arr, devices); err != nil {
		return "", err
	}
	if len(ours) < nReplicas {
		klog.InfoS("Assembled md array degraded; the healer will bring back the other replicas", "volumeID", vol.ID, "device", dev, "members", len(ours), "replicas", nReplicas)
	} else {
		klog.InfoS("Assembled md array", "volumeID", vol.ID, "device", dev, "members", len(ours))
	}
	return dev, nil
}

// createArray creates the array of a new volume on its blank replicas.
func (d *Driver) createArray(ctx context.Context, vol *volume.Volume, mdUUID string, blank []member, u *undo) (string, error) {
	dev, err := d.node.Raid.NextFreeDevice()
	if err != nil {
		return "", err
	}
	paths := memberPaths(blank)
	err = d.node.Raid.Create(ctx, mdraid.CreateOptions{
		Device:      dev,
		Name:        mdName(vol),
		UUID:        mdUUID,
		Devices:     paths,
		BitmapChunk: d.opts.BitmapChunkBytes,
		// The provisioner sized each replica as the volume plus this.
		DataOffset: layout.MetadataReserve,
		// The legs are identical already: every replica of a new volume is
		// a file the agent has just created (sparse or fallocated, both
		// read as zeros), and each was verified to carry no superblock or
		// filesystem. An initial resync would rewrite zeros over zeros for
		// the whole size, and md refuses to grow the array until it ends.
		// An md check (mismatch_cnt) would show any divergence; replicas
		// added later (re-add, replacement) are synced by md as usual.
		AssumeClean: true,
	})
	if err != nil {
		return "", fmt.Errorf("create md array of volume %s on %v: %w", vol.ID, paths, err)
	}
	u.arrays = append(u.arrays, dev)
	if _, err := d.verifyArray(dev, mdUUID); err != nil {
		return "", err
	}
	klog.InfoS("Created md array", "volumeID", vol.ID, "device", dev, "uuid", mdUUID, "members", paths)
	return dev, nil
}

func memberPaths(ms []member) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.device.Path)
	}
	return out
}

// stopInactiveHolder stops an array that udev's incremental assembly left
// holding one of our members without starting it. A running holder would
// have been found by UUID; one with another UUID is not ours to stop.
func (d *Driver) stopInactiveHolder(ctx context.Context, devPath, mdUUID string) error {
	a, err := d.node.Raid.ArrayHolding(devPath)
	if errors.Is(err, mdraid.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if a.UUID != "" && a.UUID != mdUUID {
		return volume.Errorf(volume.ErrFailedPrecondition, "%s is held by md array %s (%s)", devPath, a.Device, a.UUID)
	}
	if a.ArrayState != "inactive" && a.ArrayState != "clear" && a.ArrayState != "" {
		return volume.Errorf(volume.ErrFailedPrecondition, "%s is held by running md array %s", devPath, a.Device)
	}
	klog.InfoS("Stopping an inactive md array holding our replica", "device", a.Device, "member", devPath)
	return d.node.Raid.Stop(ctx, a.Device)
}

// verifyArray checks that the array at dev is the volume's and returns it
// as read.
func (d *Driver) verifyArray(dev, mdUUID string) (mdraid.Array, error) {
	a, err := d.node.Raid.ReadArray(filepath.Base(dev))
	if err != nil {
		return mdraid.Array{}, fmt.Errorf("reading %s after start: %w", dev, err)
	}
	if a.UUID != mdUUID {
		return mdraid.Array{}, volume.Errorf(volume.ErrFailedPrecondition, "%s runs md array %q, expected %q", dev, a.UUID, mdUUID)
	}
	return a, nil
}

// mdName is stored in the superblock: the provisioner's name, or one derived
// from the volume ID (md keeps 31 bytes of [A-Za-z0-9._-]).
func mdName(v *volume.Volume) string {
	if v.MDName != "" {
		return v.MDName
	}
	var b strings.Builder
	for _, c := range v.ID {
		if c < 0x80 && (c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			b.WriteRune(c)
		}
	}
	name := strings.TrimLeft(b.String(), ".-")
	if len(name) > 27 {
		name = name[:27]
	}
	if name == "" {
		name = "volume"
	}
	return name
}

// singleReplicaDevice returns the namespace device of a one-replica volume,
// which is used without md. It must not carry an md superblock: that would
// mean the replica belonged to a mirror and someone mixed up identities.
func (d *Driver) singleReplicaDevice(ctx context.Context, r volume.Replica, devices map[string]host.Device) (string, error) {
	dev, ok := devices[r.ID]
	if !ok {
		return "", volume.Errorf(volume.ErrUnavailable, "replica %s not reachable", r.ID)
	}
	sb, err := d.node.Raid.Examine(ctx, dev.Path)
	switch {
	case errors.Is(err, mdraid.ErrNoSuperblock):
	case err != nil:
		return "", fmt.Errorf("examining %s: %w", dev.Path, err)
	default:
		return "", volume.Errorf(volume.ErrFailedPrecondition, "single-replica volume's device %s carries md array %s", dev.Path, sb.UUID)
	}
	if a, err := d.node.Raid.ArrayHolding(dev.Path); err == nil {
		return "", volume.Errorf(volume.ErrFailedPrecondition, "%s is held by md array %s", dev.Path, a.Device)
	}
	return dev.Path, nil
}

// stopArray stops the volume's array wherever it runs, identified by UUID
// (the recorded device number may have been reused by another array after a
// reboot).
func (d *Driver) stopArray(ctx context.Context, st *stagestate.State) error {
	a, err := d.node.Raid.FindByUUID(st.MDUUID)
	if errors.Is(err, mdraid.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := d.node.Raid.Stop(ctx, a.Device); err != nil {
		return fmt.Errorf("stop md array %s of volume %s: %w", a.Device, st.VolumeID, err)
	}
	return nil
}
