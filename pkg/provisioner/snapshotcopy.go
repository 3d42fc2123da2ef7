package provisioner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/provisioner/placement"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// relay copies the allocated data of [offset, offset+length) of src on one
// storage node to dst on another, shifted by shift bytes, through this
// provisioner (storage nodes never talk to each other). Only allocated
// ranges travel, so the cost follows the data written, not the size.
func (s *Service) relay(ctx context.Context, from AgentClient, src DataRef, offset, length int64, to AgentClient, dst DataRef, shift int64) (HeldSnapshot, error) {
	return to.WriteData(ctx, dst, func(send func(int64, []byte) error) error {
		return from.ReadData(ctx, src, offset, length, func(off int64, data []byte) error {
			return send(off+shift, data)
		})
	})
}

// topUpCopies makes the copies a snapshot lacks (its volume was degraded at
// the cut, or a copy's storage node went for good) on storage nodes that
// hold none, placed like replicas by the source's StorageClass rules,
// copied from a complete copy. Returns the record.
func (s *Service) topUpCopies(ctx context.Context, id string) (*store.Snapshot, error) {
	snap, err := s.o.Store.GetSnapshot(ctx, id)
	if err != nil {
		return nil, err
	}
	have := readyCopies(snap)
	missing := snap.WantCopies - len(have)
	if missing <= 0 || len(have) == 0 {
		return snap, nil
	}
	surveyed, nodes, err := s.survey(ctx)
	if err != nil {
		return nil, err
	}
	var held []HeldSnapshot
	source := have[0]
	if sn := surveyed[source]; sn == nil || sn.agent == nil {
		return nil, fmt.Errorf("snapshot %s: storage node %s holding its copy is unreachable: %w", id, source, ErrUnavailable)
	}
	srcCopy, err := surveyed[source].agent.GetSnapshot(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s on storage node %s: %w", id, source, err)
	}
	var existing []placement.Location
	var exclude []string
	for _, c := range snap.Copies {
		exclude = append(exclude, c.StorageNode)
	}
	chosen, err := placement.Choose(nodes, placement.Request{SizeBytes: srcCopy.AllocatedBytes, Count: missing, Params: snap.SourceParameters,
		Existing: existing, Exclude: exclude, ThinOvercommit: s.o.ThinOvercommit})
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: no storage node for %d more copies: %w", id, missing, err)
	}
	var errs []error
	for _, n := range chosen {
		snap, err = s.o.Store.UpdateSnapshot(ctx, id, func(cur *store.Snapshot) error {
			if cur.State == store.SnapshotDeleting {
				return fmt.Errorf("snapshot %s is being deleted: %w", cur.Name, ErrAborted)
			}
			if cur.Copy(n.ID) == nil {
				cur.Copies = append(cur.Copies, store.SnapshotCopy{StorageNode: n.ID, State: store.CopyCutting})
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		dst := surveyed[n.ID].agent
		h, err := s.relay(ctx, surveyed[source].agent, DataRef{SnapshotID: id}, 0, 0, dst,
			DataRef{SnapshotID: id, SizeBytes: srcCopy.SizeBytes, VolumeID: snap.SourceVolumeID}, 0)
		if err != nil {
			errs = append(errs, fmt.Errorf("copy of snapshot %s to storage node %s: %w", id, n.ID, err))
			continue
		}
		held = append(held, h)
		snap, err = s.o.Store.UpdateSnapshot(ctx, id, func(cur *store.Snapshot) error {
			if c := cur.Copy(n.ID); c != nil && c.State == store.CopyCutting {
				c.State, c.AllocatedBytes, c.Reflinked = store.CopyReady, h.AllocatedBytes, false
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		klog.InfoS("Added a snapshot copy", "snapshot", id, "storageNode", n.ID, "from", source, "bytes", h.AllocatedBytes)
	}
	return snap, errors.Join(errs...)
}

// sweepSnapshots finishes what a snapshot's owner could not: copies of
// deleting snapshots on storage nodes that were away, half-made copies,
// missing copies of ready snapshots, creates interrupted for longer than
// CreatingTimeout (rolled back: a retry takes the snapshot anew), and the
// internal snapshots of clones that are done. Returns how many still have
// work.
func (s *Service) sweepSnapshots(ctx context.Context) int {
	snaps, err := s.o.Store.ListSnapshots(ctx)
	if err != nil {
		klog.ErrorS(err, "Listing snapshots for the sweeper")
		return 1
	}
	remaining := 0
	now := s.o.Now()
	for _, snap := range snaps {
		var err error
		switch {
		case snap.State == store.SnapshotDeleting:
			err = s.sweepDeletingSnapshot(ctx, snap)
		case snap.State == store.SnapshotCreating && now.Sub(snap.CreatedAt) > s.o.CreatingTimeout:
			err = s.rollBackSnapshot(ctx, snap)
		case snap.State == store.SnapshotReady && snap.Internal && s.cloneDone(ctx, snap):
			err = s.DeleteSnapshot(ctx, snap.ID)
		case snap.State == store.SnapshotReady && slices.ContainsFunc(snap.Copies, func(c store.SnapshotCopy) bool { return c.State != store.CopyReady }):
			_, err = s.deleteDroppedCopies(ctx, dropHalfMade(snap))
		case snap.State == store.SnapshotReady && underCopied(snap):
			_, err = s.topUpCopies(ctx, snap.ID)
		}
		if err != nil {
			remaining++
			klog.V(3).InfoS("Snapshot sweep incomplete", "snapshot", snap.ID, "err", err)
		}
	}
	return remaining
}

// dropHalfMade marks a ready snapshot's cutting copies (a top-up a
// provisioner did not finish) for deletion.
func dropHalfMade(snap *store.Snapshot) *store.Snapshot {
	out := snap.Clone()
	for i := range out.Copies {
		if out.Copies[i].State == store.CopyCutting {
			out.Copies[i].State = store.CopyDeleting
		}
	}
	return out
}

func (s *Service) sweepDeletingSnapshot(ctx context.Context, snap *store.Snapshot) error {
	if !s.snapshotting.Insert(snap.SourceVolumeID) {
		return fmt.Errorf("volume %s busy: %w", snap.SourceVolumeID, ErrAborted)
	}
	defer s.snapshotting.Delete(snap.SourceVolumeID)
	if err := s.deleteCopies(ctx, snap); err != nil {
		return err
	}
	return s.finishSnapshotDelete(ctx, snap)
}

// rollBackSnapshot deletes a snapshot whose create was interrupted long
// ago (no create of it runs here), copies first.
func (s *Service) rollBackSnapshot(ctx context.Context, snap *store.Snapshot) error {
	if !s.snapshotting.Insert(snap.SourceVolumeID) {
		return nil // a create or delete of it runs now
	}
	defer s.snapshotting.Delete(snap.SourceVolumeID)
	klog.InfoS("Rolling back a snapshot left half taken", "snapshot", snap.ID, "name", snap.Name, "age", s.o.Now().Sub(snap.CreatedAt))
	snap, err := s.o.Store.UpdateSnapshot(ctx, snap.ID, func(cur *store.Snapshot) error {
		if cur.State != store.SnapshotCreating {
			return fmt.Errorf("snapshot %s is %s: %w", cur.Name, cur.State, ErrAborted)
		}
		cur.State = store.SnapshotDeleting
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.deleteCopies(ctx, snap); err != nil {
		return err
	}
	return s.finishSnapshotDelete(ctx, snap)
}

// copySources returns the storage nodes holding a complete copy, sorted so
// the ones with reflinked copies come first.
func copySources(snap *store.Snapshot) []string {
	nodes := readyCopies(snap)
	sort.SliceStable(nodes, func(i, j int) bool { return snap.Copy(nodes[i]).Reflinked && !snap.Copy(nodes[j]).Reflinked })
	return nodes
}
