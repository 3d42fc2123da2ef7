package provisioner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/inflight"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// SnapshotRequest is a CreateSnapshot call.
type SnapshotRequest struct {
	Name           string
	SourceVolumeID string
	Parameters     map[string]string
}

// CreateSnapshot takes a crash-consistent snapshot of a volume (see cut),
// kept as identical copies on as many storage nodes as the volume has
// replicas, or returns the existing one of that name (a retry). A name taken
// by a snapshot of another volume is ErrAlreadyExists.
func (s *Service) CreateSnapshot(ctx context.Context, req SnapshotRequest) (*store.Snapshot, error) {
	if err := s.requireLeader(); err != nil {
		return nil, err
	}
	if err := storageclass.ValidateVolumeName(req.Name); err != nil {
		return nil, fmt.Errorf("snapshot name: %w", err)
	}
	if req.SourceVolumeID == "" {
		return nil, fmt.Errorf("%w: source_volume_id is required", ErrInvalidArgument)
	}
	if snap, err := s.o.Store.GetSnapshotByName(ctx, req.Name); err == nil {
		if snap.SourceVolumeID != req.SourceVolumeID {
			return nil, fmt.Errorf("snapshot %s exists of volume %s, not %s: %w", req.Name, snap.SourceVolumeID, req.SourceVolumeID, ErrAlreadyExists)
		}
		return s.existingSnapshot(ctx, snap)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	v, err := s.o.Store.GetVolume(ctx, req.SourceVolumeID)
	if err != nil {
		return nil, fmt.Errorf("source volume %s: %w", req.SourceVolumeID, err)
	}
	snap := newSnapshotRecord(s.newSnapshotID(), req.Name, v, req.Parameters)
	if err := s.o.Store.CreateSnapshot(ctx, snap); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			if other, gerr := s.o.Store.GetSnapshotByName(ctx, req.Name); gerr == nil && other.SourceVolumeID == req.SourceVolumeID {
				return s.existingSnapshot(ctx, other)
			}
		}
		return nil, err
	}
	klog.InfoS("Taking snapshot", "snapshot", snap.ID, "name", snap.Name, "volume", v.ID)
	return s.takeSnapshot(ctx, snap)
}

func (s *Service) takeSnapshot(ctx context.Context, snap *store.Snapshot) (*store.Snapshot, error) {
	out, err := s.takeSnapshots(ctx, []*store.Snapshot{snap})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// claimAll inserts every key into set, or none: busy is the first key
// another call holds. release (idempotent) deletes what was inserted.
func claimAll(set *inflight.Set, keys []string) (release func(), busy string) {
	var held []string
	release = func() {
		for _, k := range held {
			set.Delete(k)
		}
		held = nil
	}
	for _, k := range keys {
		if !set.Insert(k) {
			release()
			return func() {}, k
		}
		held = append(held, k)
	}
	return release, ""
}

// newSnapshotRecord is the record of a snapshot of v about to be cut.
func newSnapshotRecord(id, name string, v *store.Volume, params map[string]string) *store.Snapshot {
	snap := &store.Snapshot{ID: id, Name: name, SourceVolumeID: v.ID, SizeBytes: v.SizeBytes,
		WantCopies: v.Parameters.NumReplicas, State: store.SnapshotCreating, Parameters: maps.Clone(params),
		SourceParameters: v.Parameters, SourceBlock: v.Block, DataOffset: dataOffset(v)}
	return snap
}

// existingSnapshot answers a retry: a ready snapshot as it is, one still
// being created is taken again (an interrupted cut is never resumed: its
// copies may predate the retry's point in time).
func (s *Service) existingSnapshot(ctx context.Context, snap *store.Snapshot) (*store.Snapshot, error) {
	switch snap.State {
	case store.SnapshotReady:
		if underCopied(snap) {
			// Best effort: the sweeper tops copies up too.
			if out, err := s.topUpCopies(ctx, snap.ID); err == nil {
				return out, nil
			}
		}
		return snap, nil
	case store.SnapshotCreating:
		if snap.GroupID != "" {
			return nil, fmt.Errorf("snapshot %s is part of group snapshot %s, still being taken: %w", snap.Name, snap.GroupID, ErrUnavailable)
		}
		return s.takeSnapshot(ctx, snap)
	default:
		return nil, fmt.Errorf("snapshot %s is being deleted; retry later: %w", snap.Name, ErrUnavailable)
	}
}

// takeSnapshots cuts the snapshots (one, or a group's) at one point, tops
// their copies up and marks them ready. On failure every copy is deleted
// again and the records stay "creating" for a retry (or the sweeper's
// rollback).
func (s *Service) takeSnapshots(ctx context.Context, snaps []*store.Snapshot) ([]*store.Snapshot, error) {
	targets := make([]*cutTarget, 0, len(snaps))
	volumes := make([]string, 0, len(snaps))
	for _, snap := range snaps {
		targets = append(targets, &cutTarget{snap: snap})
		volumes = append(volumes, snap.SourceVolumeID)
	}
	release, busy := claimAll(&s.snapshotting, volumes)
	if busy != "" {
		return nil, fmt.Errorf("volume %s: another snapshot of it is being taken: %w", busy, ErrAborted)
	}
	defer release()
	// The fence: no publish, unpublish or offline repair of the volumes
	// while their copies are cut.
	unfence, busy := claimAll(&s.fencing, volumes)
	if busy != "" {
		return nil, fmt.Errorf("volume %s is being published, unpublished or repaired; retry: %w", busy, ErrAborted)
	}
	defer unfence()

	if err := s.prepareCut(ctx, targets); err != nil {
		return nil, s.snapshotFailed(ctx, targets, err)
	}
	cutAt, err := s.cut(ctx, targets)
	unfence()
	if err != nil {
		return nil, s.snapshotFailed(ctx, targets, err)
	}
	out := make([]*store.Snapshot, 0, len(targets))
	for _, t := range targets {
		snap, err := s.recordCut(ctx, t, cutAt)
		if err != nil {
			return nil, s.snapshotFailed(ctx, targets, err)
		}
		out = append(out, snap)
	}
	for i, snap := range out {
		if underCopied(snap) {
			if topped, err := s.topUpCopies(ctx, snap.ID); err != nil {
				klog.ErrorS(err, "Snapshot has fewer copies than its volume had replicas; the sweeper adds them", "snapshot", snap.ID, "copies", len(readyCopies(snap)), "want", snap.WantCopies)
			} else {
				out[i] = topped
			}
		}
	}
	for i, snap := range out {
		ready, err := s.o.Store.UpdateSnapshot(ctx, snap.ID, func(cur *store.Snapshot) error {
			if cur.State != store.SnapshotCreating {
				return fmt.Errorf("snapshot %s changed to %s while it was taken: %w", cur.Name, cur.State, ErrAborted)
			}
			cur.State = store.SnapshotReady
			return nil
		})
		if err != nil {
			return nil, err
		}
		out[i] = ready
		s.recordOffline(ctx, events.Event{Type: events.SnapshotTaken, Volume: ready.SourceVolumeID,
			Message: events.Truncate(fmt.Sprintf("snapshot %s (%s) of volume %s taken at %s, %d bytes, copies on %s",
				ready.ID, ready.Name, ready.SourceVolumeID, ready.CutAt.Format(time.RFC3339Nano), ready.SizeBytes, strings.Join(readyCopies(ready), ", ")), events.MaxMessageLength)})
		klog.InfoS("Took snapshot", "snapshot", ready.ID, "name", ready.Name, "volume", ready.SourceVolumeID, "copies", readyCopies(ready))
	}
	return out, nil
}

// prepareCut loads each target's volume and records, before any agent is
// asked, a cutting copy on every storage node holding an active replica:
// wherever a crash leaves a copy, the record lists it and a rollback
// deletes it. Copies a failed attempt left are deleted first.
func (s *Service) prepareCut(ctx context.Context, targets []*cutTarget) error {
	for _, t := range targets {
		v, err := s.o.Store.GetVolume(ctx, t.snap.SourceVolumeID)
		if err != nil {
			return fmt.Errorf("source volume %s: %w", t.snap.SourceVolumeID, err)
		}
		if v.State != store.VolumeReady {
			return fmt.Errorf("volume %s is %s: %w", v.ID, v.State, ErrUnavailable)
		}
		t.vol = v
		if err := s.deleteCopies(ctx, t.snap); err != nil {
			return err
		}
		snap, err := s.o.Store.UpdateSnapshot(ctx, t.snap.ID, func(cur *store.Snapshot) error {
			if cur.State != store.SnapshotCreating {
				return fmt.Errorf("snapshot %s is %s: %w", cur.Name, cur.State, ErrAborted)
			}
			cur.Copies = nil
			cur.SizeBytes = v.SizeBytes
			for _, r := range v.Replicas {
				if r.State == store.ReplicaActive && cur.Copy(r.StorageNode) == nil {
					cur.Copies = append(cur.Copies, store.SnapshotCopy{StorageNode: r.StorageNode, State: store.CopyCutting})
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		t.snap = snap
	}
	return nil
}

// recordCut keeps the copies that hold identical data (identicalCopies)
// and deletes the rest.
func (s *Service) recordCut(ctx context.Context, t *cutTarget, cutAt time.Time) (*store.Snapshot, error) {
	keep := identicalCopies(t)
	kept := map[string]bool{}
	for _, n := range keep {
		kept[n] = true
	}
	snap, err := s.o.Store.UpdateSnapshot(ctx, t.snap.ID, func(cur *store.Snapshot) error {
		if cur.State != store.SnapshotCreating {
			return fmt.Errorf("snapshot %s changed to %s while it was taken: %w", cur.Name, cur.State, ErrAborted)
		}
		cur.CutAt = cutAt
		for i := range cur.Copies {
			c := &cur.Copies[i]
			if held, ok := t.copies[c.StorageNode]; ok && kept[c.StorageNode] {
				c.State, c.AllocatedBytes, c.Reflinked = store.CopyReady, held.AllocatedBytes, held.Reflinked
			} else {
				c.State = store.CopyDeleting
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.deleteDroppedCopies(ctx, snap)
}

// snapshotFailed deletes every copy of the targets (best effort; the
// sweeper finishes), records the failure and returns err.
func (s *Service) snapshotFailed(ctx context.Context, targets []*cutTarget, err error) error {
	for _, t := range targets {
		if derr := s.deleteCopies(ctx, t.snap); derr != nil {
			klog.ErrorS(derr, "Deleting the copies of a failed snapshot; the sweeper retries", "snapshot", t.snap.ID)
		}
		s.recordOffline(ctx, events.Event{Type: events.SnapshotFailed, Volume: t.snap.SourceVolumeID,
			Message: events.Truncate(fmt.Sprintf("snapshot %s (%s) of volume %s could not be taken: %v", t.snap.ID, t.snap.Name, t.snap.SourceVolumeID, err), events.MaxMessageLength)})
	}
	klog.ErrorS(err, "Snapshot failed; its copies are deleted", "snapshots", len(targets))
	return err
}

// deleteCopies deletes every copy the record lists from its storage node and
// forgets those that are gone; ErrUnavailable when a node is away (the
// copy stays listed, deleting).
func (s *Service) deleteCopies(ctx context.Context, snap *store.Snapshot) error {
	snap, err := s.o.Store.UpdateSnapshot(ctx, snap.ID, func(cur *store.Snapshot) error {
		for i := range cur.Copies {
			cur.Copies[i].State = store.CopyDeleting
		}
		return nil
	})
	if err != nil {
		return err
	}
	_, err = s.deleteDroppedCopies(ctx, snap)
	return err
}

// deleteDroppedCopies deletes the copies recorded deleting from their
// storage nodes (in parallel) and forgets the ones that are gone.
func (s *Service) deleteDroppedCopies(ctx context.Context, snap *store.Snapshot) (*store.Snapshot, error) {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		gone = map[string]bool{}
		errs []error
	)
	for _, c := range snap.Copies {
		if c.State != store.CopyDeleting {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, s.o.AgentTimeout)
			defer cancel()
			a, err := s.agentFor(cctx, c.StorageNode)
			if err == nil {
				err = a.DeleteSnapshot(cctx, snap.ID)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("copy of snapshot %s on storage node %s: %w", snap.ID, c.StorageNode, err))
				return
			}
			gone[c.StorageNode] = true
		}()
	}
	wg.Wait()
	if len(gone) > 0 {
		var err error
		snap, err = s.o.Store.UpdateSnapshot(ctx, snap.ID, func(cur *store.Snapshot) error {
			cur.Copies = slices.DeleteFunc(cur.Copies, func(c store.SnapshotCopy) bool { return c.State == store.CopyDeleting && gone[c.StorageNode] })
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return snap, errors.Join(errs...)
}

// readyCopies returns the storage nodes holding a complete copy.
func readyCopies(snap *store.Snapshot) []string {
	var out []string
	for _, c := range snap.Copies {
		if c.State == store.CopyReady {
			out = append(out, c.StorageNode)
		}
	}
	sort.Strings(out)
	return out
}

// underCopied reports whether the snapshot has fewer complete copies than
// its volume had replicas.
func underCopied(snap *store.Snapshot) bool {
	return len(readyCopies(snap)) < snap.WantCopies
}

// GetSnapshot returns a snapshot record (CSI-visible or not).
func (s *Service) GetSnapshot(ctx context.Context, id string) (*store.Snapshot, error) {
	snap, err := s.o.Store.GetSnapshot(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id, err)
	}
	return snap, nil
}

// SnapshotFilter selects snapshots (empty fields select all).
type SnapshotFilter struct {
	SnapshotID, SourceVolumeID string
}

// ListSnapshots returns up to max (0, or more than MaxListVolumesPage:
// MaxListVolumesPage) of the snapshots taken for users (not the internal
// ones of clones) that f selects, in ID order after the one startToken
// names, and the token of the next page ("" after the last): tokens as
// ListVolumes issues them.
func (s *Service) ListSnapshots(ctx context.Context, f SnapshotFilter, startToken string, max int) ([]*store.Snapshot, string, error) {
	if max < 0 {
		return nil, "", fmt.Errorf("%w: max entries %d must not be negative", ErrInvalidArgument, max)
	}
	if max == 0 || max > MaxListVolumesPage {
		max = MaxListVolumesPage
	}
	after, err := pageAfter(startToken)
	if err != nil {
		return nil, "", err
	}
	all, err := s.o.Store.ListSnapshots(ctx)
	if err != nil {
		return nil, "", err
	}
	page := slices.DeleteFunc(all, func(snap *store.Snapshot) bool {
		return snap.Internal || snap.ID <= after ||
			f.SnapshotID != "" && snap.ID != f.SnapshotID || f.SourceVolumeID != "" && snap.SourceVolumeID != f.SourceVolumeID
	})
	if len(page) > max {
		page = page[:max]
		return page, pageToken(page[len(page)-1].ID), nil
	}
	return page, "", nil
}

// DeleteSnapshot deletes every copy of a snapshot and then its record;
// copies on storage nodes that are away are deleted by the sweeper when
// they return (the record stays, deleting, until then). Unknown: success.
// Volumes restored from it are independent copies and are not touched.
func (s *Service) DeleteSnapshot(ctx context.Context, id string) error {
	if err := s.requireLeader(); err != nil {
		return err
	}
	if id == "" {
		return fmt.Errorf("%w: snapshot_id is required", ErrInvalidArgument)
	}
	snap, err := s.o.Store.GetSnapshot(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	// Never under a cut of the same volume: it could add a copy after the
	// deletion has looked.
	if !s.snapshotting.Insert(snap.SourceVolumeID) {
		return fmt.Errorf("volume %s: a snapshot of it is being taken; retry: %w", snap.SourceVolumeID, ErrAborted)
	}
	defer s.snapshotting.Delete(snap.SourceVolumeID)
	snap, err = s.o.Store.UpdateSnapshot(ctx, id, func(cur *store.Snapshot) error {
		cur.State = store.SnapshotDeleting
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.finishSnapshotDelete(ctx, snap)
}

// finishSnapshotDelete deletes the copies of a deleting snapshot and, once
// none is left, its record. A group member stays in its group's
// SnapshotIDs: they are the group as it was taken (paired with its
// VolumeIDs), which a retried group deletion names in full.
func (s *Service) finishSnapshotDelete(ctx context.Context, snap *store.Snapshot) error {
	if err := s.deleteCopies(ctx, snap); err != nil {
		klog.V(2).InfoS("Snapshot copies left for the sweeper", "snapshot", snap.ID, "err", err)
		return nil // accepted: the sweeper deletes the rest
	}
	if err := s.o.Store.DeleteSnapshot(ctx, snap.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if !snap.Internal {
		s.recordOffline(ctx, events.Event{Type: events.SnapshotDeleted, Volume: snap.SourceVolumeID,
			Message: events.Truncate(fmt.Sprintf("snapshot %s (%s) of volume %s deleted", snap.ID, snap.Name, snap.SourceVolumeID), events.MaxMessageLength)})
	}
	klog.InfoS("Deleted snapshot", "snapshot", snap.ID, "name", snap.Name)
	return nil
}
