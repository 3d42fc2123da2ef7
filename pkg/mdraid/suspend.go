package mdraid

import (
	"fmt"
	"path/filepath"
	"strconv"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/sysfs"
)

// Holding an array's writes (a crash-consistent snapshot of its members).
//
// md keeps a range of array sectors, [md/suspend_lo, md/suspend_hi), in
// which it holds new writes: md_handle_request parks a write bio whose
// range overlaps it (is_suspended) before the bio counts as active I/O, and
// lets it go when the range changes. Reads are never held. An empty range
// (lo >= hi; the kernel's 0/0) holds nothing.
//
// What SuspendWrites relies on: a store to suspend_hi (and to suspend_lo)
// runs mddev_suspend, sets the value, then mddev_resume; mddev_suspend
// returns only once every write md already accepted has completed on every
// member, so when the store returns, each write whose completion any
// caller has seen is on every member, and every write not yet completed is
// held (or, having been issued meanwhile, will be) without reaching any
// member. How mddev_suspend drains differs by kernel:
//
//   - up to 6.6 (Debian 12's 6.1, the VM's default kernel): it waits for
//     mddev->active_io to reach zero (no bio inside the personality's
//     make_request), then calls pers->quiesce(mddev, 1); raid1_quiesce is
//     freeze_array(conf, 0), which waits until every r1bio (the per-request
//     structure that completes only when the write ended on every member)
//     has completed, nr_pending == nr_queued.
//   - from 6.7 (md: "use new apis to suspend array for suspend_lo/hi_store",
//     e.g. the 6.12 backports kernel): active_io is a percpu_ref killed and
//     waited to zero, and raid1 takes a reference per write request through
//     md_account_bio (raid1_write_request) that it drops only when the
//     cloned master bio completes, i.e. once the write ended on every member.
//
// The one exception both share: a write that failed on a member and waits
// in raid1d's retry list (nr_queued) is not waited for; md then fails that
// member (it is no longer in_sync), which is why FrozenVolume reports the
// in-sync members read after the suspend, not the configuration.
//
// Resync and repair write to in-sync members regardless of the range;
// callers check md/sync_action (Array.SyncAction) before trusting the copies.

// SuspendWrites holds new writes to the whole of array name (e.g. "md127")
// once every write in flight has reached every member; see above for the
// kernel's guarantee. The range is [0, array size), the size read from
// /sys/block/<name>/size (512-byte sectors). It is idempotent: suspending a
// suspended array drains again and keeps the range. The store blocks for as
// long as the drain takes (a member whose I/O hangs holds it up to the
// NVMe timeouts); callers run it where they can give up waiting.
func (m *Manager) SuspendWrites(name string) error {
	if !arrayNamePattern.MatchString(name) {
		return fmt.Errorf("%w: md array name %q is not mdN", ErrInvalidArgument, name)
	}
	sectors, err := attrs.ReadUint(m.sysPath("block", name, "size"))
	if err != nil {
		return arrayReadError(name, err)
	}
	if sectors == 0 {
		return fmt.Errorf("%w: md array %s has size 0 (not running)", ErrInvalidArgument, name)
	}
	md := m.sysPath("block", name, "md")
	// lo first: from whatever range was set, lowering lo and then raising
	// hi only ever widens it, so no write held before is let through.
	if err := m.writeSuspend(md, "suspend_lo", 0); err != nil {
		return err
	}
	if err := m.writeSuspend(md, "suspend_hi", sectors); err != nil {
		return err
	}
	klog.V(2).InfoS("Holding md writes", "array", name, "suspendHi", sectors)
	return nil
}

// ResumeWrites releases the writes SuspendWrites holds: it sets the range
// empty (suspend_hi 0, then suspend_lo 0). Held writes then go to the
// members in the order md takes them. Idempotent: an array with nothing
// held stays so.
func (m *Manager) ResumeWrites(name string) error {
	if !arrayNamePattern.MatchString(name) {
		return fmt.Errorf("%w: md array name %q is not mdN", ErrInvalidArgument, name)
	}
	md := m.sysPath("block", name, "md")
	if err := m.writeSuspend(md, "suspend_hi", 0); err != nil {
		return err
	}
	if err := m.writeSuspend(md, "suspend_lo", 0); err != nil {
		return err
	}
	klog.V(2).InfoS("Released md writes", "array", name)
	return nil
}

// WritesSuspended reports whether array name holds writes in some range
// (md/suspend_lo < md/suspend_hi).
func (m *Manager) WritesSuspended(name string) (bool, error) {
	if !arrayNamePattern.MatchString(name) {
		return false, fmt.Errorf("%w: md array name %q is not mdN", ErrInvalidArgument, name)
	}
	md := m.sysPath("block", name, "md")
	lo, err := attrs.ReadUint(filepath.Join(md, "suspend_lo"))
	if err != nil {
		return false, arrayReadError(name, err)
	}
	hi, err := attrs.ReadUint(filepath.Join(md, "suspend_hi"))
	if err != nil {
		return false, arrayReadError(name, err)
	}
	return lo < hi, nil
}

func (m *Manager) writeSuspend(mdDir, attr string, sectors uint64) error {
	if err := sysfs.WriteAttr(filepath.Join(mdDir, attr), strconv.FormatUint(sectors, 10)); err != nil {
		return arrayReadError(filepath.Base(filepath.Dir(mdDir)), fmt.Errorf("write md/%s %d: %w", attr, sectors, err))
	}
	return nil
}
