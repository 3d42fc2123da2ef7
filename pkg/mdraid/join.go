package mdraid

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"
)

// Errors of Join, for errors.Is.
var (
	// ErrForeignMember: the device carries another array's superblock;
	// adding it would destroy what it holds.
	ErrForeignMember = errors.New("device carries another md array's superblock")
	// ErrNewerMember: the device's superblock has a higher event count than
	// the array it would join: it went on taking writes the array never saw
	// (the array was started from other members, as after nvmirrorctl
	// promote), and a resync onto it would erase them.
	ErrNewerMember = errors.New("replica holds newer data than the running array; not adding it")
)

// Joiner is the part of md Join uses; *Manager satisfies it.
type Joiner interface {
	Examine(ctx context.Context, member string) (Superblock, error)
	Add(ctx context.Context, device, member string) error
	ReAdd(ctx context.Context, device, member string) error
	SetRaidDevices(ctx context.Context, device string, n int) error
}

var _ Joiner = (*Manager)(nil)

// Join brings member into the running array arr, the one rule for every
// way a replica (re)joins a mirror (the node's healer, a storage node's
// offline repair):
//
//   - no md superblock: added, md copies the whole member (whoever calls
//     must know the device is blank: a new replica);
//   - another array's superblock: ErrForeignMember, nothing done;
//   - the array's superblock with more events than arrayEvents reports
//     for the array (asked only then; ok false: unknown, not checked):
//     ErrNewerMember, nothing done;
//   - otherwise a bitmap re-add (md copies only what changed), and when md
//     refuses it (the bitmap no longer covers the gap), a full add.
//
// slots is how many replicas the volume has in its configuration: an array
// with fewer slots is grown to that many once the member is in (never
// shrunk here). A member added to an array whose every slot is taken is a
// spare md never fills until a slot is made for it; a live move or a
// higher replica count has one replica more than the array had slots for.
// The member goes in first because mdadm refuses to grow a RAID1 without a
// spare to fill the new slot (it would be degraded).
//
// It reports whether md took the re-add.
func Join(ctx context.Context, md Joiner, arr Array, member string, slots int, arrayEvents func() (events uint64, ok bool)) (reAdded bool, err error) {
	sb, err := md.Examine(ctx, member)
	switch {
	case errors.Is(err, ErrNoSuperblock):
		if err := md.Add(ctx, arr.Device, member); err != nil {
			return false, err
		}
		return false, GrowSlots(ctx, md, arr, slots)
	case err != nil:
		return false, err
	case sb.UUID != arr.UUID:
		return false, fmt.Errorf("%w: %s carries array %s, not %s", ErrForeignMember, member, sb.UUID, arr.UUID)
	}
	if running, ok := arrayEvents(); ok && sb.Events > running {
		return false, fmt.Errorf("%w: %s holds md events %d, newer than the running array's %d", ErrNewerMember, member, sb.Events, running)
	}
	err = md.ReAdd(ctx, arr.Device, member)
	if errors.Is(err, ErrReAddRefused) {
		klog.InfoS("md refused the bitmap re-add; adding for a full resync", "array", arr.Device, "device", member, "err", err)
		if err := md.Add(ctx, arr.Device, member); err != nil {
			return false, err
		}
		return false, GrowSlots(ctx, md, arr, slots)
	}
	if err != nil {
		return false, err
	}
	return true, GrowSlots(ctx, md, arr, slots)
}

// GrowSlots raises the array's slot count to slots when it has fewer (a
// spare must be there to fill the new slot: mdadm refuses otherwise).
func GrowSlots(ctx context.Context, md Joiner, arr Array, slots int) error {
	if slots <= arr.RaidDisks || slots > maxMembers {
		return nil
	}
	if err := md.SetRaidDevices(ctx, arr.Device, slots); err != nil {
		return fmt.Errorf("grow %s from %d to %d slots: %w", arr.Device, arr.RaidDisks, slots, err)
	}
	return nil
}
