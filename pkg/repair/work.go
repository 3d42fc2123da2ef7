package repair

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/connector"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// work is one run of a repair: what it connected and assembled, so that
// cleanup undoes exactly that.
type work struct {
	r *Runner
	j *job

	connected []string // subsystem NQNs this repair connected
	array     string   // md device it assembled ("" before)
}

// attached is a member with its block device.
type attached struct {
	Member
	dev host.Device
	// written is the device's write counter before the repair touched it.
	written uint64
}

// repair connects, assembles from the in-sync members, joins the others
// and waits for md to bring them in sync.
func (w *work) repair(ctx context.Context) ([]string, error) {
	req := w.j.req
	var inSync, stale []attached
	for _, m := range req.Members {
		a, err := w.attach(ctx, m)
		if err != nil {
			return nil, err
		}
		if m.InSync {
			inSync = append(inSync, a)
		} else {
			stale = append(stale, a)
		}
	}
	newest, unused, err := w.checkStale(ctx, inSync, stale)
	if err != nil {
		return nil, err
	}
	if unused {
		// No replica carries the volume's md array: no host ever staged
		// it, so every replica still reads as the zeros it was created
		// with, and the first stage creates md over all of them as
		// identical legs. There is nothing to copy.
		klog.InfoS("Offline repair: no replica carries the md array (the volume was never staged); the new replicas are in sync as created", "repair", req.ID, "volume", req.VolumeID)
		return memberIDs(stale), nil
	}
	if err := w.clearLeftover(ctx, append(inSync, stale...)); err != nil {
		return nil, err
	}
	arr, err := w.assemble(ctx, inSync)
	if err != nil {
		return nil, err
	}
	if req.MaxRebuildKiBps > 0 {
		if err := w.r.raid.SetSyncSpeedMax(arr.Name, req.MaxRebuildKiBps); err != nil {
			return nil, err
		}
	}
	w.r.update(w.j, func(s *Status) { s.Message = "joining out-of-sync members" })
	for _, a := range stale {
		reAdded, err := w.join(ctx, arr, a, newest)
		if err != nil {
			return nil, err
		}
		w.r.update(w.j, func(s *Status) { s.BitmapReAdd[a.ID] = reAdded })
	}
	w.r.update(w.j, func(s *Status) { s.Message = "recovering" })
	if err := w.waitInSync(ctx, arr.Name, stale); err != nil {
		return nil, err
	}
	return memberIDs(stale), nil
}

func memberIDs(as []attached) []string {
	ids := make([]string, 0, len(as))
	for _, a := range as {
		ids = append(ids, a.ID)
	}
	return ids
}

// attach connects a member and checks that its device is the namespace the
// registry names.
func (w *work) attach(ctx context.Context, m Member) (attached, error) {
	auth := storageclass.AuthNone
	switch {
	case m.CtrlSecret != "":
		auth = storageclass.AuthBidirectional
	case m.Secret != "":
		auth = storageclass.AuthHost
	}
	creds := []volume.Credentials{{StorageNode: m.StorageNode, Secret: m.Secret, CtrlSecret: m.CtrlSecret}}
	c := connector.Connector{Fabric: w.r.fabric, Template: w.r.cfg.Template}
	w.connected = append(w.connected, m.NQN) // cleanup disconnects a half-made connection too
	if err := c.Connect(ctx, m.Replica, creds, auth); err != nil {
		return attached{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, w.r.cfg.DeviceWait)
	defer cancel()
	ns := m.NamespaceID()
	dev, err := w.r.fabric.WaitForDevice(wctx, m.NQN, ns)
	if err != nil {
		return attached{}, fmt.Errorf("device of replica %s: %w", m.ID, err)
	}
	if !sameNamespace(dev, ns) {
		return attached{}, fmt.Errorf("%w: %s of %s has uuid %q nguid %q, want %s", ErrIdentity, dev.Name, m.NQN, dev.UUID, dev.NGUID, ns)
	}
	written, err := w.r.disk.WrittenBytes(dev.Name)
	if err != nil {
		return attached{}, err
	}
	return attached{Member: m, dev: dev, written: written}, nil
}

func sameNamespace(dev host.Device, ns string) bool {
	want := nvmeof.NormalizeID(ns)
	for _, id := range []string{dev.UUID, dev.NGUID, dev.WWID} {
		if id != "" && nvmeof.NormalizeID(id) == want {
			return true
		}
	}
	return false
}

// checkStale verifies every device before anything is written: in-sync
// members carry the volume's array; an out-of-sync one carries it too (a
// former member) or is blank (a new replacement), and never holds writes
// the in-sync ones lack. When every in-sync member is blank (unused: no
// host ever staged the volume, so md was never created on it), every
// out-of-sync one must be blank too.
func (w *work) checkStale(ctx context.Context, inSync, stale []attached) (newest uint64, unused bool, err error) {
	blankInSync := 0
	for _, a := range inSync {
		sb, err := w.examine(ctx, a.dev.Path)
		switch {
		case errors.Is(err, mdraid.ErrNoSuperblock):
			if err := w.requireBlank(a, "it is not a leg of the volume's array"); err != nil {
				return 0, false, err
			}
			blankInSync++
			continue
		case err != nil:
			return 0, false, fmt.Errorf("in-sync replica %s (%s): %w", a.ID, a.dev.Path, err)
		case sb.UUID != w.j.req.MDUUID:
			return 0, false, fmt.Errorf("%w: in-sync replica %s (%s) carries md array %q, not the volume's %s", ErrIdentity, a.ID, a.dev.Path, sb.UUID, w.j.req.MDUUID)
		}
		newest = max(newest, sb.Events)
	}
	// md creates its array on every leg at once: in-sync replicas some of
	// which carry it and some of which are blank are not one volume's.
	if blankInSync > 0 && blankInSync < len(inSync) {
		return 0, false, fmt.Errorf("%w: of the in-sync replicas, %d carry the volume's md array and %d are blank", ErrIdentity, len(inSync)-blankInSync, blankInSync)
	}
	unused = len(inSync) > 0 && blankInSync == len(inSync)
	for _, a := range stale {
		sb, err := w.examine(ctx, a.dev.Path)
		switch {
		case errors.Is(err, mdraid.ErrNoSuperblock):
			if err := w.requireBlank(a, "not overwriting it"); err != nil {
				return 0, false, err
			}
		case err != nil:
			return 0, false, fmt.Errorf("replica %s (%s): %w", a.ID, a.dev.Path, err)
		case sb.UUID != w.j.req.MDUUID:
			return 0, false, fmt.Errorf("%w: replica %s (%s) carries md array %s, not the volume's %s", ErrIdentity, a.ID, a.dev.Path, sb.UUID, w.j.req.MDUUID)
		case unused:
			return 0, false, fmt.Errorf("%w: replica %s carries the volume's md array (events %d) and the in-sync replicas none", ErrNewerData, a.ID, sb.Events)
		case sb.Events > newest:
			return 0, false, fmt.Errorf("%w: replica %s has md events %d, the in-sync replicas at most %d", ErrNewerData, a.ID, sb.Events, newest)
		}
	}
	return newest, unused, nil
}

// requireBlank fails with ErrIdentity, saying why it matters, when a
// device without an md superblock holds anything.
func (w *work) requireBlank(a attached, why string) error {
	blank, err := w.r.disk.Blank(a.dev.Path, a.dev.SizeBytes)
	if err != nil {
		return err
	}
	if !blank {
		return fmt.Errorf("%w: replica %s (%s) has no md superblock but holds data; %s", ErrIdentity, a.ID, a.dev.Path, why)
	}
	return nil
}

func (w *work) examine(ctx context.Context, path string) (mdraid.Superblock, error) {
	cctx, cancel := context.WithTimeout(ctx, w.r.cfg.CommandTimeout)
	defer cancel()
	return w.r.raid.Examine(cctx, path)
}

// clearLeftover stops an array of the volume that runs here already: udev
// may assemble it as the members appear (mdadm's incremental rules), or an
// earlier repair of this agent was cut short. It is stopped only when every
// working member it holds is one of this repair's devices: then nothing but
// this machine's md can be using it.
func (w *work) clearLeftover(ctx context.Context, all []attached) error {
	arr, err := w.r.raid.FindByUUID(w.j.req.MDUUID)
	if errors.Is(err, mdraid.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	ours := map[string]bool{}
	for _, a := range all {
		ours[a.dev.Name] = true
	}
	for _, m := range arr.Members {
		// A failed member does no I/O for anyone.
		if !ours[m.Device] && !m.State.Faulty {
			return fmt.Errorf("md array %s of the volume already runs here as %s with member %s, which is not one of the repair's devices; not touching it", w.j.req.MDUUID, arr.Device, m.Device)
		}
	}
	klog.InfoS("Stopping an array of the volume assembled before the repair", "repair", w.j.req.ID, "device", arr.Device)
	cctx, cancel := context.WithTimeout(ctx, w.r.cfg.CommandTimeout)
	defer cancel()
	return w.r.raid.Stop(cctx, arr.Device)
}

// assemble starts the array from the in-sync members only, degraded.
func (w *work) assemble(ctx context.Context, inSync []attached) (mdraid.Array, error) {
	dev, err := w.r.raid.NextFreeDevice()
	if err != nil {
		return mdraid.Array{}, err
	}
	paths := make([]string, 0, len(inSync))
	for _, a := range inSync {
		paths = append(paths, a.dev.Path)
	}
	cctx, cancel := context.WithTimeout(ctx, w.r.cfg.CommandTimeout)
	defer cancel()
	w.array = dev
	if err := w.r.raid.Assemble(cctx, dev, w.j.req.MDUUID, paths); err != nil {
		return mdraid.Array{}, fmt.Errorf("assemble md %s from %v: %w", w.j.req.MDUUID, paths, err)
	}
	arr, err := w.r.raid.FindByUUID(w.j.req.MDUUID)
	if err != nil {
		return mdraid.Array{}, fmt.Errorf("md %s after assembling: %w", w.j.req.MDUUID, err)
	}
	if arr.Device != dev {
		return mdraid.Array{}, fmt.Errorf("md %s runs as %s, not %s as assembled", w.j.req.MDUUID, arr.Device, dev)
	}
	klog.InfoS("Offline repair assembled the array from the in-sync replicas", "repair", w.j.req.ID, "device", dev, "members", paths)
	return arr, nil
}

// join adds an out-of-sync member by md's rule (mdraid.Join: a re-add
// from the bitmap for a former member, else a full recovery), never over
// newer data than the in-sync members': checkStale verified the devices,
// and newest is what it found.
func (w *work) join(ctx context.Context, arr mdraid.Array, a attached, newest uint64) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, w.r.cfg.CommandTimeout)
	defer cancel()
	// Every replica of the volume is a member of the request (a repair
	// starts only when all are reachable): that many slots.
	return mdraid.Join(cctx, w.r.raid, arr, a.dev.Path, len(w.j.req.Members), func() (uint64, bool) { return newest, true })
}

// waitInSync polls md until every slot has an in-sync member and no sync
// runs, renewing nothing: the lease is the provisioner's to renew.
func (w *work) waitInSync(ctx context.Context, name string, stale []attached) error {
	t := w.r.clock.NewTicker(w.r.cfg.PollInterval)
	defer t.Stop()
	for {
		arr, err := w.r.raid.ReadArray(name)
		if err != nil {
			return err
		}
		w.progress(arr, stale)
		if arr.Degraded == 0 && arr.SyncAction == "idle" && allInSync(arr) {
			return nil
		}
		if arr.ArrayState == "broken" || arr.ArrayState == "clear" || arr.ArrayState == "inactive" {
			return fmt.Errorf("md array %s is %s", name, arr.ArrayState)
		}
		if w.r.leaseExpired(w.j) {
			return errLeaseExpired
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C():
		}
	}
}

func allInSync(arr mdraid.Array) bool {
	for _, m := range arr.Members {
		if !m.State.InSync {
			return false
		}
	}
	return len(arr.Members) > 0
}

// progress records md's recovery progress and what was written to the
// out-of-sync members so far.
func (w *work) progress(arr mdraid.Array, stale []attached) {
	var written uint64
	for _, a := range stale {
		n, err := w.r.disk.WrittenBytes(a.dev.Name)
		if err == nil && n >= a.written {
			written += n - a.written
		}
	}
	w.r.update(w.j, func(s *Status) {
		if arr.SyncCompleted.Total > 0 {
			s.SyncDoneBytes, s.SyncTotalBytes = arr.SyncCompleted.Done*512, arr.SyncCompleted.Total*512
		}
		s.BytesWritten = written
	})
}

// cleanup stops the array this repair assembled and closes its
// connections. md records how far a recovery got in the members'
// superblocks, so a host that assembles them next continues from there.
func (w *work) cleanup(ctx context.Context) error {
	var errs []error
	if w.array != "" {
		if err := w.r.raid.Stop(ctx, w.array); err != nil && !errors.Is(err, mdraid.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	for _, nqn := range w.connected {
		ctrls, err := w.r.fabric.ControllersFor(nqn)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, c := range ctrls {
			// Only this repair's connections: in a machine that is also a
			// compute node, the same subsystem may be connected as another
			// host.
			if c.HostNQN != w.r.cfg.Template.HostNQN {
				continue
			}
			if err := w.r.fabric.Disconnect(ctx, c.Name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
