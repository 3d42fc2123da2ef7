package driver

import (
	"context"
	"errors"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// Snapshots are the provisioner's (docs/snapshots.md): this file turns CSI
// calls into its calls and its records into CSI answers.

// CreateSnapshot is idempotent by name: the same name of the same volume
// returns the existing snapshot, of another volume AlreadyExists.
func (d *Driver) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if p := storageclass.VolumeNameProblem(req.GetName()); p != "" {
		return nil, invalid("name", "%s", p)
	}
	if err := required("source_volume_id", req.GetSourceVolumeId()); err != nil {
		return nil, err
	}
	unlock, err := d.lock("snapshot:" + req.GetName())
	if err != nil {
		return nil, err
	}
	defer unlock()
	snap, err := d.prov.CreateSnapshot(ctx, req.GetName(), req.GetSourceVolumeId(), req.GetParameters())
	if err != nil {
		return nil, fmt.Errorf("create snapshot %q of volume %s: %w", req.GetName(), req.GetSourceVolumeId(), err)
	}
	klog.InfoS("Created snapshot", "name", req.GetName(), "snapshotID", snap.ID, "volumeID", snap.SourceVolumeID, "copies", snap.Copies)
	return &csi.CreateSnapshotResponse{Snapshot: csiSnapshot(snap)}, nil
}

// DeleteSnapshot is idempotent: an unknown snapshot is success.
func (d *Driver) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	if err := required("snapshot_id", req.GetSnapshotId()); err != nil {
		return nil, err
	}
	unlock, err := d.lock("snapshot-id:" + req.GetSnapshotId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := d.prov.DeleteSnapshot(ctx, req.GetSnapshotId()); err != nil && !errors.Is(err, volume.ErrNotFound) {
		return nil, fmt.Errorf("delete snapshot %s: %w", req.GetSnapshotId(), err)
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

// ListSnapshots pages through the snapshots; a snapshot_id that does not
// exist is an empty answer, as CSI asks.
func (d *Driver) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, invalid("max_entries", "must not be negative")
	}
	snaps, next, err := d.prov.ListSnapshots(ctx, req.GetSnapshotId(), req.GetSourceVolumeId(), req.GetStartingToken(), int(req.GetMaxEntries()))
	if errors.Is(err, volume.ErrInvalidArgument) {
		return nil, status.Errorf(codes.Aborted, "starting_token %q: %v", req.GetStartingToken(), err)
	}
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	resp := &csi.ListSnapshotsResponse{NextToken: next}
	for _, s := range snaps {
		resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: csiSnapshot(s)})
	}
	return resp, nil
}

// GetSnapshot: an unknown snapshot is NotFound.
func (d *Driver) GetSnapshot(ctx context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	if err := required("snapshot_id", req.GetSnapshotId()); err != nil {
		return nil, err
	}
	snap, err := d.prov.GetSnapshot(ctx, req.GetSnapshotId())
	if err != nil {
		return nil, fmt.Errorf("get snapshot %s: %w", req.GetSnapshotId(), err)
	}
	return &csi.GetSnapshotResponse{Snapshot: csiSnapshot(snap)}, nil
}

func csiSnapshot(s *volume.Snapshot) *csi.Snapshot {
	out := &csi.Snapshot{SnapshotId: s.ID, SourceVolumeId: s.SourceVolumeID, SizeBytes: s.SizeBytes, ReadyToUse: s.ReadyToUse, GroupSnapshotId: s.GroupID}
	if !s.CreatedAt.IsZero() {
		out.CreationTime = timestamppb.New(s.CreatedAt)
	}
	return out
}

// contentSource returns the snapshot or volume a CreateVolume copies
// ("" when none), refusing a source this driver cannot restore.
func contentSource(req *csi.CreateVolumeRequest) (snapshotID, volumeID string, err error) {
	src := req.GetVolumeContentSource()
	if src == nil {
		return "", "", nil
	}
	switch {
	case src.GetSnapshot() != nil:
		if src.GetSnapshot().GetSnapshotId() == "" {
			return "", "", invalid("volume_content_source.snapshot.snapshot_id", "is empty")
		}
		return src.GetSnapshot().GetSnapshotId(), "", nil
	case src.GetVolume() != nil:
		if src.GetVolume().GetVolumeId() == "" {
			return "", "", invalid("volume_content_source.volume.volume_id", "is empty")
		}
		return "", src.GetVolume().GetVolumeId(), nil
	}
	return "", "", invalid("volume_content_source", "names neither a snapshot nor a volume")
}

// csiContentSource is the content source a created volume reports.
func csiContentSource(v *volume.Volume) *csi.VolumeContentSource {
	switch {
	case v.SourceSnapshotID != "":
		return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: v.SourceSnapshotID}}}
	case v.SourceVolumeID != "":
		return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: v.SourceVolumeID}}}
	}
	return nil
}
