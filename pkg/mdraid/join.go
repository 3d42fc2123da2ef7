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
// It reports whether md took the re-add.
func Join(ctx context.Context, md Joiner, arr Array, member string, arrayEvents func() (events uint64, ok bool)) (reAdded bool, err error) {
	sb, err := md.Examine(ctx, member)
	switch {
	case errors.Is(err, ErrNoSuperblock):
		return false, md.Add(ctx, arr.Device, member)
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
		return false, md.Add(ctx, arr.Device, member)
	}
	return err == nil, err
}
