package provisioner

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/provisioner/placement"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// clonePrefix names the internal snapshot a clone is made from: the prefix
// and the clone's volume name, so a retry of the clone finds it.
const clonePrefix = "nvmirror-clone-of-"

// A restored or cloned volume's replicas all start as the same bytes: the
// snapshot's data region, copied into each replica's data region (reflinked
// from the copy on the replica's own storage node where there is one, else
// streamed from another storage node's copy), with the md area in front
// left blank. Its first NodeStage finds every replica without an md
// superblock and creates the array with --assume-clean, which is exact: the
// legs are identical, so md has nothing to resync. A clone is a restore from
// an internal snapshot of the source volume taken for it (deleted once the
// clone exists).

// sameSource refuses a retry of CreateVolume whose content source differs
// from the existing volume's.
func sameSource(v *store.Volume, req CreateRequest) error {
	var have store.ContentSource
	if v.Source != nil {
		have = *v.Source
	}
	if have.SnapshotID != req.SourceSnapshotID || have.VolumeID != req.SourceVolumeID {
		return fmt.Errorf("volume %s exists with another content source (snapshot %q, volume %q): %w", v.Name, have.SnapshotID, have.VolumeID, ErrAlreadyExists)
	}
	return nil
}

// contentSource checks a new volume's source and returns the snapshot it is
// restored from: the named one, or for a clone an internal snapshot of the
// source volume (taken now, or by an earlier attempt of the same create).
func (s *Service) contentSource(ctx context.Context, req CreateRequest, size int64) (*store.Snapshot, error) {
	if req.SourceSnapshotID != "" {
		snap, err := s.o.Store.GetSnapshot(ctx, req.SourceSnapshotID)
		if err != nil {
			return nil, fmt.Errorf("source snapshot %s: %w", req.SourceSnapshotID, err)
		}
		if err := restorable(snap, size); err != nil {
			return nil, err
		}
		return snap, nil
	}
	src, err := s.o.Store.GetVolume(ctx, req.SourceVolumeID)
	if err != nil {
		return nil, fmt.Errorf("source volume %s: %w", req.SourceVolumeID, err)
	}
	if size < src.SizeBytes {
		return nil, fmt.Errorf("%w: capacity_range: %d bytes is smaller than the source volume %s (%d bytes)", ErrOutOfRange, size, src.ID, src.SizeBytes)
	}
	name := clonePrefix + req.Name
	snap, err := s.o.Store.GetSnapshotByName(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		snap = newSnapshotRecord(s.newSnapshotID(), name, src, nil)
		snap.Internal = true
		if err := s.o.Store.CreateSnapshot(ctx, snap); err != nil {
			return nil, err
		}
		klog.InfoS("Taking the snapshot a clone is made from", "snapshot", snap.ID, "volume", src.ID, "clone", req.Name)
		return s.takeSnapshot(ctx, snap)
	case err != nil:
		return nil, err
	case snap.SourceVolumeID != src.ID:
		return nil, fmt.Errorf("clone %s: internal snapshot %s is of volume %s, not %s: %w", req.Name, snap.ID, snap.SourceVolumeID, src.ID, ErrAlreadyExists)
	}
	return s.existingSnapshot(ctx, snap)
}

// restorable refuses a snapshot a volume of size bytes cannot be restored
// from now.
func restorable(snap *store.Snapshot, size int64) error {
	switch {
	case snap.State == store.SnapshotCreating:
		return fmt.Errorf("snapshot %s is still being taken; retry: %w", snap.ID, ErrUnavailable)
	case snap.State != store.SnapshotReady:
		return fmt.Errorf("snapshot %s is being deleted: %w", snap.ID, ErrNotFound)
	case size < snap.SizeBytes:
		return fmt.Errorf("%w: capacity_range: %d bytes is smaller than snapshot %s (%d bytes)", ErrOutOfRange, size, snap.ID, snap.SizeBytes)
	case len(readyCopies(snap)) == 0:
		return fmt.Errorf("snapshot %s has no complete copy left (its storage nodes %s are gone): %w", snap.ID, strings.Join(nodesOf(snap), ", "), ErrFailedPrecondition)
	}
	return nil
}

func nodesOf(snap *store.Snapshot) []string {
	out := make([]string, 0, len(snap.Copies))
	for _, c := range snap.Copies {
		out = append(out, c.StorageNode)
	}
	return out
}

// sourceSnapshot returns the snapshot a volume being created is filled
// from.
func (s *Service) sourceSnapshot(ctx context.Context, v *store.Volume) (*store.Snapshot, error) {
	id := v.Source.SnapshotID
	if id == "" {
		snap, err := s.o.Store.GetSnapshotByName(ctx, clonePrefix+v.Name)
		if err != nil {
			return nil, fmt.Errorf("clone %s: its source snapshot: %w", v.Name, err)
		}
		id = snap.ID
	}
	snap, err := s.o.Store.GetSnapshot(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("source snapshot %s: %w", id, err)
	}
	if err := restorable(snap, v.SizeBytes); err != nil {
		return nil, err
	}
	return snap, nil
}

// dataOffset is where a volume's data starts in its replicas.
func dataOffset(v *store.Volume) int64 {
	if mirrored(v) {
		return layout.MetadataReserve
	}
	return 0
}

// localSource is the snapshot range a replica on storageNode starts with
// when that node holds a complete copy; nil otherwise.
func localSource(snap *store.Snapshot, v *store.Volume, storageNode string) *SnapshotSource {
	if c := snap.Copy(storageNode); c == nil || c.State != store.CopyReady {
		return nil
	}
	return &SnapshotSource{SnapshotID: snap.ID, SourceOffset: snap.DataOffset, Length: snap.SizeBytes, TargetOffset: dataOffset(v)}
}

// fillFromSnapshot streams the snapshot's data region from a storage node
// holding a copy into replica r (created blank, no host allowed yet).
func (s *Service) fillFromSnapshot(ctx context.Context, snap *store.Snapshot, v *store.Volume, r store.Replica, to AgentClient) error {
	var errs []error
	for _, node := range copySources(snap) {
		from, err := s.agentFor(ctx, node)
		if err == nil {
			_, err = s.relay(ctx, from, DataRef{SnapshotID: snap.ID}, snap.DataOffset, snap.SizeBytes, to, DataRef{ReplicaID: r.ID}, dataOffset(v)-snap.DataOffset)
		}
		if err == nil {
			klog.InfoS("Filled a replica from a snapshot on another storage node", "volume", v.ID, "replica", r.ID, "snapshot", snap.ID, "from", node)
			return nil
		}
		errs = append(errs, fmt.Errorf("from storage node %s: %w", node, err))
	}
	return fmt.Errorf("fill replica %s from snapshot %s: %w", r.ID, snap.ID, errors.Join(errs...))
}

// placeNear places a new volume's replicas, preferring storage nodes that
// hold a complete copy of its source snapshot (a local reflink instead of a
// copy over the network): as many as the rules allow there, the rest
// anywhere.
func placeNear(nodes []placement.Node, req placement.Request, src *store.Snapshot) ([]placement.Node, error) {
	if src == nil {
		return placement.Choose(nodes, req)
	}
	holders := map[string]bool{}
	for _, n := range readyCopies(src) {
		holders[n] = true
	}
	var others []string
	for _, n := range nodes {
		if !holders[n.ID] {
			others = append(others, n.ID)
		}
	}
	for near := min(req.Count, len(holders)); near > 0; near-- {
		first := req
		first.Count, first.Exclude = near, append(append([]string(nil), req.Exclude...), others...)
		a, err := placement.Choose(nodes, first)
		if err != nil {
			continue
		}
		if near == req.Count {
			return a, nil
		}
		rest := req
		rest.Count = req.Count - near
		for _, n := range a {
			rest.Existing = append(rest.Existing, placement.Location{NodeID: n.ID, Zone: n.Zone, Rack: n.Rack})
		}
		b, err := placement.Choose(nodes, rest)
		if err != nil {
			continue
		}
		return append(a, b...), nil
	}
	return placement.Choose(nodes, req)
}

// cloneDone reports whether the clone an internal snapshot was taken for
// no longer needs it: the clone is ready, or gone and not being created.
func (s *Service) cloneDone(ctx context.Context, snap *store.Snapshot) bool {
	name, ok := strings.CutPrefix(snap.Name, clonePrefix)
	if !ok {
		return false
	}
	v, err := s.o.Store.GetVolumeByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return s.o.Now().Sub(snap.UpdatedAt) > s.o.CreatingTimeout
	}
	return err == nil && v.State == store.VolumeReady
}
