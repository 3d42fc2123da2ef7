package driver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// The CSI GroupController service: group snapshots, one crash-consistent
// point across several volumes (the provisioner holds every volume's
// writes while all of their copies are cut).

// groupCapabilities are exactly what this file implements.
var groupCapabilities = []csi.GroupControllerServiceCapability_RPC_Type{
	csi.GroupControllerServiceCapability_RPC_CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT,
}

// groupController serves the GroupController service of a Driver (its own
// type: the service's method names would not collide, but its embedded
// forward-compatibility type would).
type groupController struct {
	csi.UnimplementedGroupControllerServer
	d *Driver
}

func (g groupController) GroupControllerGetCapabilities(context.Context, *csi.GroupControllerGetCapabilitiesRequest) (*csi.GroupControllerGetCapabilitiesResponse, error) {
	out := &csi.GroupControllerGetCapabilitiesResponse{}
	for _, c := range groupCapabilities {
		out.Capabilities = append(out.Capabilities, &csi.GroupControllerServiceCapability{Type: &csi.GroupControllerServiceCapability_Rpc{Rpc: &csi.GroupControllerServiceCapability_RPC{Type: c}}})
	}
	return out, nil
}

// CreateVolumeGroupSnapshot is idempotent by name: the same name of the
// same volumes returns the existing group, of other volumes AlreadyExists.
func (g groupController) CreateVolumeGroupSnapshot(ctx context.Context, req *csi.CreateVolumeGroupSnapshotRequest) (*csi.CreateVolumeGroupSnapshotResponse, error) {
	if p := storageclass.VolumeNameProblem(req.GetName()); p != "" {
		return nil, invalid("name", "%s", p)
	}
	if len(req.GetSourceVolumeIds()) == 0 {
		return nil, invalid("source_volume_ids", "at least one volume is required")
	}
	for i, id := range req.GetSourceVolumeIds() {
		if id == "" {
			return nil, invalid(fmt.Sprintf("source_volume_ids[%d]", i), "is empty")
		}
	}
	unlock, err := g.d.lock("group-snapshot:" + req.GetName())
	if err != nil {
		return nil, err
	}
	defer unlock()
	grp, err := g.d.prov.CreateSnapshotGroup(ctx, req.GetName(), req.GetSourceVolumeIds(), req.GetParameters())
	if err != nil {
		return nil, fmt.Errorf("create group snapshot %q of %s: %w", req.GetName(), strings.Join(req.GetSourceVolumeIds(), ", "), err)
	}
	klog.InfoS("Created group snapshot", "name", req.GetName(), "groupSnapshotID", grp.ID, "snapshots", len(grp.Snapshots))
	return &csi.CreateVolumeGroupSnapshotResponse{GroupSnapshot: csiGroupSnapshot(grp)}, nil
}

// DeleteVolumeGroupSnapshot deletes the group and its snapshots; an unknown
// group is success. snapshot_ids, when given, must be the group's.
func (g groupController) DeleteVolumeGroupSnapshot(ctx context.Context, req *csi.DeleteVolumeGroupSnapshotRequest) (*csi.DeleteVolumeGroupSnapshotResponse, error) {
	if err := required("group_snapshot_id", req.GetGroupSnapshotId()); err != nil {
		return nil, err
	}
	unlock, err := g.d.lock("group-snapshot-id:" + req.GetGroupSnapshotId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	grp, err := g.d.prov.GetSnapshotGroup(ctx, req.GetGroupSnapshotId())
	if errors.Is(err, volume.ErrNotFound) {
		return &csi.DeleteVolumeGroupSnapshotResponse{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("group snapshot %s: %w", req.GetGroupSnapshotId(), err)
	}
	if err := sameSnapshots(grp, req.GetSnapshotIds()); err != nil {
		return nil, err
	}
	if err := g.d.prov.DeleteSnapshotGroup(ctx, req.GetGroupSnapshotId()); err != nil && !errors.Is(err, volume.ErrNotFound) {
		return nil, fmt.Errorf("delete group snapshot %s: %w", req.GetGroupSnapshotId(), err)
	}
	return &csi.DeleteVolumeGroupSnapshotResponse{}, nil
}

// GetVolumeGroupSnapshot: an unknown group is NotFound.
func (g groupController) GetVolumeGroupSnapshot(ctx context.Context, req *csi.GetVolumeGroupSnapshotRequest) (*csi.GetVolumeGroupSnapshotResponse, error) {
	if err := required("group_snapshot_id", req.GetGroupSnapshotId()); err != nil {
		return nil, err
	}
	grp, err := g.d.prov.GetSnapshotGroup(ctx, req.GetGroupSnapshotId())
	if err != nil {
		return nil, fmt.Errorf("group snapshot %s: %w", req.GetGroupSnapshotId(), err)
	}
	if err := sameSnapshots(grp, req.GetSnapshotIds()); err != nil {
		return nil, err
	}
	return &csi.GetVolumeGroupSnapshotResponse{GroupSnapshot: csiGroupSnapshot(grp)}, nil
}

// sameSnapshots refuses a snapshot_ids list (when given) that is not the
// group's: the CO would act on a group it does not know. The group's are
// its members as it was taken, deleted or not: a DeleteVolumeGroupSnapshot
// that failed after deleting some members is retried with the same list.
func sameSnapshots(grp *volume.SnapshotGroup, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	have := slices.Clone(grp.MemberIDs)
	if len(have) == 0 { // a provisioner older than MemberIDs
		for _, s := range grp.Snapshots {
			have = append(have, s.ID)
		}
	}
	if !slices.Equal(slices.Sorted(slices.Values(have)), slices.Sorted(slices.Values(ids))) {
		return invalid("snapshot_ids", "%s are not the snapshots of group snapshot %s (%s)", strings.Join(ids, ", "), grp.ID, strings.Join(have, ", "))
	}
	return nil
}

func csiGroupSnapshot(g *volume.SnapshotGroup) *csi.VolumeGroupSnapshot {
	out := &csi.VolumeGroupSnapshot{GroupSnapshotId: g.ID, ReadyToUse: g.ReadyToUse}
	if !g.CreatedAt.IsZero() {
		out.CreationTime = timestamppb.New(g.CreatedAt)
	}
	for _, s := range g.Snapshots {
		out.Snapshots = append(out.Snapshots, csiSnapshot(s))
	}
	return out
}
