package provisioner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// MaxGroupVolumes bounds a group snapshot: every volume's writes are held
// while all of their copies are cut.
const MaxGroupVolumes = 64

// GroupRequest is a CreateSnapshotGroup call.
type GroupRequest struct {
	Name       string
	VolumeIDs  []string
	Parameters map[string]string
}

// CreateSnapshotGroup snapshots several volumes at one crash-consistent
// point (every volume's writes held until every copy is cut: see cut), or
// returns the existing group of that name (a retry). The same name with
// other volumes is ErrAlreadyExists.
func (s *Service) CreateSnapshotGroup(ctx context.Context, req GroupRequest) (*store.SnapshotGroup, []*store.Snapshot, error) {
	if err := s.requireLeader(); err != nil {
		return nil, nil, err
	}
	if err := storageclass.ValidateVolumeName(req.Name); err != nil {
		return nil, nil, fmt.Errorf("group snapshot name: %w", err)
	}
	vols := slices.Clone(req.VolumeIDs)
	sort.Strings(vols)
	switch {
	case len(vols) == 0:
		return nil, nil, fmt.Errorf("%w: source_volume_ids: at least one volume", ErrInvalidArgument)
	case len(vols) > MaxGroupVolumes:
		return nil, nil, fmt.Errorf("%w: source_volume_ids: %d volumes, at most %d", ErrInvalidArgument, len(vols), MaxGroupVolumes)
	case slices.Contains(vols, ""):
		return nil, nil, fmt.Errorf("%w: source_volume_ids: an empty volume ID", ErrInvalidArgument)
	}
	if len(slices.Compact(slices.Clone(vols))) != len(vols) {
		return nil, nil, fmt.Errorf("%w: source_volume_ids: a volume named twice", ErrInvalidArgument)
	}
	if g, err := s.o.Store.GetSnapshotGroupByName(ctx, req.Name); err == nil {
		if !slices.Equal(g.VolumeIDs, vols) {
			return nil, nil, fmt.Errorf("group snapshot %s exists of volumes %s: %w", req.Name, strings.Join(g.VolumeIDs, ", "), ErrAlreadyExists)
		}
		return s.finishGroup(ctx, g)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, nil, err
	}
	for _, id := range vols {
		if _, err := s.o.Store.GetVolume(ctx, id); err != nil {
			return nil, nil, fmt.Errorf("source volume %s: %w", id, err)
		}
	}
	g := &store.SnapshotGroup{ID: s.newGroupID(), Name: req.Name, VolumeIDs: vols, State: store.SnapshotCreating, Parameters: req.Parameters}
	for range vols {
		g.SnapshotIDs = append(g.SnapshotIDs, s.newSnapshotID())
	}
	if err := s.o.Store.CreateSnapshotGroup(ctx, g); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			if other, gerr := s.o.Store.GetSnapshotGroupByName(ctx, req.Name); gerr == nil && slices.Equal(other.VolumeIDs, vols) {
				return s.finishGroup(ctx, other)
			}
		}
		return nil, nil, err
	}
	klog.InfoS("Taking group snapshot", "group", g.ID, "name", g.Name, "volumes", vols)
	return s.finishGroup(ctx, g)
}

// groupMemberName is the name of the snapshot of volumeID in group g.
func groupMemberName(g *store.SnapshotGroup, volumeID string) string {
	return g.Name + "-" + volumeID
}

// finishGroup takes the group's snapshots (all at once, again from scratch
// for a retry of an interrupted one) and marks the group ready.
func (s *Service) finishGroup(ctx context.Context, g *store.SnapshotGroup) (*store.SnapshotGroup, []*store.Snapshot, error) {
	switch g.State {
	case store.SnapshotReady:
		snaps, err := s.groupSnapshots(ctx, g)
		return g, snaps, err
	case store.SnapshotDeleting:
		return nil, nil, fmt.Errorf("group snapshot %s is being deleted; retry later: %w", g.Name, ErrUnavailable)
	}
	snaps := make([]*store.Snapshot, 0, len(g.VolumeIDs))
	for i, volID := range g.VolumeIDs {
		snap, err := s.o.Store.GetSnapshot(ctx, g.SnapshotIDs[i])
		if errors.Is(err, store.ErrNotFound) {
			v, verr := s.o.Store.GetVolume(ctx, volID)
			if verr != nil {
				return nil, nil, fmt.Errorf("source volume %s: %w", volID, verr)
			}
			snap = newSnapshotRecord(g.SnapshotIDs[i], groupMemberName(g, volID), v, g.Parameters)
			snap.GroupID = g.ID
			if err = s.o.Store.CreateSnapshot(ctx, snap); err != nil {
				return nil, nil, err
			}
		} else if err != nil {
			return nil, nil, err
		}
		snaps = append(snaps, snap)
	}
	var err error
	if !allReady(snaps) {
		// One point for all: members a crash left ready are cut again
		// with the others.
		for i, snap := range snaps {
			if snap.State == store.SnapshotReady {
				if snaps[i], err = s.o.Store.UpdateSnapshot(ctx, snap.ID, func(cur *store.Snapshot) error {
					cur.State = store.SnapshotCreating
					return nil
				}); err != nil {
					return nil, nil, err
				}
			}
		}
		if snaps, err = s.takeSnapshots(ctx, snaps); err != nil {
			return nil, nil, err
		}
	}
	cutAt := snaps[0].CutAt
	g, err = s.o.Store.UpdateSnapshotGroup(ctx, g.ID, func(cur *store.SnapshotGroup) error {
		if cur.State != store.SnapshotCreating {
			return fmt.Errorf("group snapshot %s changed to %s while it was taken: %w", cur.Name, cur.State, ErrAborted)
		}
		cur.State, cur.CutAt = store.SnapshotReady, cutAt
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	klog.InfoS("Took group snapshot", "group", g.ID, "name", g.Name, "snapshots", g.SnapshotIDs)
	return g, snaps, nil
}

func allReady(snaps []*store.Snapshot) bool {
	for _, snap := range snaps {
		if snap.State != store.SnapshotReady {
			return false
		}
	}
	return true
}

// groupSnapshots returns the group's snapshots that still exist.
func (s *Service) groupSnapshots(ctx context.Context, g *store.SnapshotGroup) ([]*store.Snapshot, error) {
	var out []*store.Snapshot
	for _, id := range g.SnapshotIDs {
		snap, err := s.o.Store.GetSnapshot(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, snap)
	}
	return out, nil
}

// GetSnapshotGroup returns a group and its snapshots.
func (s *Service) GetSnapshotGroup(ctx context.Context, id string) (*store.SnapshotGroup, []*store.Snapshot, error) {
	g, err := s.o.Store.GetSnapshotGroup(ctx, id)
	if err != nil {
		return nil, nil, fmt.Errorf("group snapshot %s: %w", id, err)
	}
	snaps, err := s.groupSnapshots(ctx, g)
	return g, snaps, err
}

// DeleteSnapshotGroup deletes a group's snapshots, then the group. Unknown:
// success.
func (s *Service) DeleteSnapshotGroup(ctx context.Context, id string) error {
	if err := s.requireLeader(); err != nil {
		return err
	}
	if id == "" {
		return fmt.Errorf("%w: group_snapshot_id is required", ErrInvalidArgument)
	}
	g, err := s.o.Store.UpdateSnapshotGroup(ctx, id, func(cur *store.SnapshotGroup) error {
		cur.State = store.SnapshotDeleting
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, snapID := range g.SnapshotIDs {
		if err := s.DeleteSnapshot(ctx, snapID); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := s.o.Store.DeleteSnapshotGroup(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	klog.InfoS("Deleted group snapshot", "group", id, "name", g.Name)
	return nil
}
