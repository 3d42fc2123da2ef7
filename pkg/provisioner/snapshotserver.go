package provisioner

import (
	"context"
	"slices"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
)

func snapshotKey(name string) string { return "snapshot " + name }

func (s *Server) CreateSnapshot(ctx context.Context, req *provisionerapi.CreateSnapshotRequest) (*provisionerapi.Snapshot, error) {
	if err := required("name", req.GetName()); err != nil {
		return nil, err
	}
	if err := required("source_volume_id", req.GetSourceVolumeId()); err != nil {
		return nil, err
	}
	return guard(s, snapshotKey(req.GetName()), func() (*provisionerapi.Snapshot, error) {
		snap, err := s.svc.CreateSnapshot(ctx, SnapshotRequest{Name: req.GetName(), SourceVolumeID: req.GetSourceVolumeId(), Parameters: req.GetParameters()})
		if err != nil {
			return nil, err
		}
		return SnapshotToProto(snap), nil
	})
}

func (s *Server) DeleteSnapshot(ctx context.Context, req *provisionerapi.DeleteSnapshotRequest) (*provisionerapi.DeleteSnapshotResponse, error) {
	if err := required("snapshot_id", req.GetSnapshotId()); err != nil {
		return nil, err
	}
	return guard(s, snapshotKey(req.GetSnapshotId()), func() (*provisionerapi.DeleteSnapshotResponse, error) {
		return &provisionerapi.DeleteSnapshotResponse{}, s.svc.DeleteSnapshot(ctx, req.GetSnapshotId())
	})
}

func (s *Server) GetSnapshot(ctx context.Context, req *provisionerapi.GetSnapshotRequest) (*provisionerapi.Snapshot, error) {
	if err := required("snapshot_id", req.GetSnapshotId()); err != nil {
		return nil, err
	}
	snap, err := s.svc.GetSnapshot(ctx, req.GetSnapshotId())
	if err != nil {
		return nil, Status(err)
	}
	return SnapshotToProto(snap), nil
}

func (s *Server) ListSnapshots(ctx context.Context, req *provisionerapi.ListSnapshotsRequest) (*provisionerapi.ListSnapshotsResponse, error) {
	snaps, next, err := s.svc.ListSnapshots(ctx, SnapshotFilter{SnapshotID: req.GetSnapshotId(), SourceVolumeID: req.GetSourceVolumeId()},
		req.GetStartingToken(), int(req.GetMaxEntries()))
	if err != nil {
		return nil, Status(err)
	}
	out := &provisionerapi.ListSnapshotsResponse{NextToken: next}
	for _, snap := range snaps {
		out.Snapshots = append(out.Snapshots, SnapshotToProto(snap))
	}
	return out, nil
}

func (s *Server) CreateSnapshotGroup(ctx context.Context, req *provisionerapi.CreateSnapshotGroupRequest) (*provisionerapi.SnapshotGroup, error) {
	if err := required("name", req.GetName()); err != nil {
		return nil, err
	}
	return guard(s, "group snapshot "+req.GetName(), func() (*provisionerapi.SnapshotGroup, error) {
		g, snaps, err := s.svc.CreateSnapshotGroup(ctx, GroupRequest{Name: req.GetName(), VolumeIDs: req.GetSourceVolumeIds(), Parameters: req.GetParameters()})
		if err != nil {
			return nil, err
		}
		return GroupToProto(g, snaps), nil
	})
}

func (s *Server) GetSnapshotGroup(ctx context.Context, req *provisionerapi.GetSnapshotGroupRequest) (*provisionerapi.SnapshotGroup, error) {
	if err := required("group_id", req.GetGroupId()); err != nil {
		return nil, err
	}
	g, snaps, err := s.svc.GetSnapshotGroup(ctx, req.GetGroupId())
	if err != nil {
		return nil, Status(err)
	}
	return GroupToProto(g, snaps), nil
}

func (s *Server) DeleteSnapshotGroup(ctx context.Context, req *provisionerapi.DeleteSnapshotGroupRequest) (*provisionerapi.DeleteSnapshotGroupResponse, error) {
	if err := required("group_id", req.GetGroupId()); err != nil {
		return nil, err
	}
	return guard(s, "group snapshot "+req.GetGroupId(), func() (*provisionerapi.DeleteSnapshotGroupResponse, error) {
		return &provisionerapi.DeleteSnapshotGroupResponse{}, s.svc.DeleteSnapshotGroup(ctx, req.GetGroupId())
	})
}

func (s *Server) GetSnapshotRanges(ctx context.Context, req *provisionerapi.GetSnapshotRangesRequest) (*provisionerapi.GetSnapshotRangesResponse, error) {
	ranges, size, next, err := s.svc.SnapshotRanges(ctx, RangesRequest{SnapshotID: req.GetSnapshotId(), Base: req.GetBaseSnapshotId(),
		Start: req.GetStartingOffset(), Max: int(req.GetMaxResults())})
	if err != nil {
		return nil, Status(err)
	}
	out := &provisionerapi.GetSnapshotRangesResponse{VolumeSizeBytes: size, NextOffset: next}
	for _, r := range ranges {
		out.Ranges = append(out.Ranges, &provisionerapi.ByteRange{Offset: r.Offset, Length: r.Length})
	}
	return out, nil
}

// SnapshotToProto converts a snapshot record to the wire form.
func SnapshotToProto(snap *store.Snapshot) *provisionerapi.Snapshot {
	p := &provisionerapi.Snapshot{Id: snap.ID, Name: snap.Name, SourceVolumeId: snap.SourceVolumeID, SizeBytes: snap.SizeBytes,
		Created: ts(snap.CutAt), State: string(snap.State), ReadyToUse: snap.State == store.SnapshotReady, GroupId: snap.GroupID,
		DataOffset: snap.DataOffset, WantCopies: int32(snap.WantCopies), Parameters: snap.Parameters,
		SourceParameters: snap.SourceParameters.Map(), Block: snap.SourceBlock}
	if p.Created == nil {
		p.Created = ts(snap.CreatedAt)
	}
	for _, c := range snap.Copies {
		p.Copies = append(p.Copies, &provisionerapi.SnapshotCopy{StorageNode: c.StorageNode, State: string(c.State), AllocatedBytes: c.AllocatedBytes, Reflinked: c.Reflinked})
	}
	return p
}

// GroupToProto converts a group and its snapshots.
func GroupToProto(g *store.SnapshotGroup, snaps []*store.Snapshot) *provisionerapi.SnapshotGroup {
	p := &provisionerapi.SnapshotGroup{Id: g.ID, Name: g.Name, Created: ts(g.CutAt), ReadyToUse: g.State == store.SnapshotReady,
		MemberSnapshotIds: slices.Clone(g.SnapshotIDs)}
	if p.Created == nil {
		p.Created = ts(g.CreatedAt)
	}
	for _, snap := range snaps {
		p.Snapshots = append(p.Snapshots, SnapshotToProto(snap))
	}
	return p
}
