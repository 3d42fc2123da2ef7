package driver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"k8s.io/klog/v2"
)

// controllerCapabilities are exactly what controller.go implements.
// PUBLISH_READONLY is not offered: the fence works per host and the
// provisioner records no read-only attachment; NodePublish honours readonly.
var controllerCapabilities = []csi.ControllerServiceCapability_RPC_Type{
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
	csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
	csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
	csi.ControllerServiceCapability_RPC_LIST_VOLUMES_PUBLISHED_NODES,
	csi.ControllerServiceCapability_RPC_GET_CAPACITY,
	csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
	csi.ControllerServiceCapability_RPC_GET_VOLUME,
	csi.ControllerServiceCapability_RPC_GET_VOLUME_HEALTH,
	csi.ControllerServiceCapability_RPC_LIST_VOLUME_HEALTH,
	csi.ControllerServiceCapability_RPC_MODIFY_VOLUME,
	csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
	csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
	csi.ControllerServiceCapability_RPC_GET_SNAPSHOT,
	csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
}

func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	caps := make([]*csi.ControllerServiceCapability, 0, len(controllerCapabilities))
	for _, c := range controllerCapabilities {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: c}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// lock claims a volume (or name) for one call; a concurrent call on it gets
// Aborted and is retried by the CO.
func (d *Driver) lock(key string) (func(), error) {
	if !d.inflight.Insert(key) {
		return nil, status.Errorf(codes.Aborted, "an operation on %s is already in progress", key)
	}
	return func() { d.inflight.Delete(key) }, nil
}

// CreateVolume asks the provisioner for the volume. Idempotent by name (the
// provisioner's contract): a crash after the provisioner created it is
// answered by returning the same volume on retry.
func (d *Driver) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if err := validateCreateVolumeRequest(req); err != nil {
		return nil, err
	}
	block, fsType := volumeFormat(req)
	minimum := MinVolumeSizeBytes
	if !block {
		minimum = minVolumeSize(cmp.Or(fsType, storageclass.DefaultFSType))
	}
	size, err := volumeSize(req.GetCapacityRange(), DefaultVolumeSizeBytes, minimum)
	if err != nil {
		return nil, err
	}
	unlock, err := d.lock("name:" + req.GetName())
	if err != nil {
		return nil, err
	}
	defer unlock()

	params := maps.Clone(req.GetParameters())
	if params == nil {
		params = map[string]string{}
	}
	// The CSI spec: mutable parameters (from a VolumeAttributesClass) take
	// precedence over the StorageClass's parameters of the same name.
	for k, v := range req.GetMutableParameters() {
		params[k] = v
	}
	caps := req.GetVolumeCapabilities()
	srcSnapshot, srcVolume, _ := contentSource(req) // validated above
	vol, err := d.prov.CreateVolume(ctx, volume.CreateVolumeRequest{
		Name:             req.GetName(),
		SizeBytes:        size,
		Parameters:       params,
		Block:            block,
		AccessMode:       caps[0].GetAccessMode().GetMode().String(),
		SourceSnapshotID: srcSnapshot,
		SourceVolumeID:   srcVolume,
	})
	if err != nil {
		return nil, fmt.Errorf("create volume %q: %w", req.GetName(), err)
	}
	if lim := req.GetCapacityRange().GetLimitBytes(); lim > 0 && vol.SizeBytes > lim {
		// Only possible if the provisioner returned an older volume of
		// the same name and size mismatch it did not catch.
		return nil, status.Errorf(codes.AlreadyExists, "volume %q exists with %d bytes, above limit_bytes %d", req.GetName(), vol.SizeBytes, lim)
	}
	klog.InfoS("Created volume", "name", req.GetName(), "volumeID", vol.ID, "sizeBytes", vol.SizeBytes, "replicas", len(vol.Replicas))
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      vol.ID,
		CapacityBytes: vol.SizeBytes,
		VolumeContext: volumeContext(vol, fsType),
		ContentSource: csiContentSource(vol),
	}}, nil
}

// volumeContext is what NodeStage may read without asking the provisioner;
// it only informs (the replica set is always re-fetched).
func volumeContext(v *volume.Volume, fsType string) map[string]string {
	if fsType == "" {
		fsType = v.Policy.FSType
	}
	if fsType == "" {
		fsType = storageclass.DefaultFSType
	}
	return map[string]string{
		VolumeContextFSType:      fsType,
		VolumeContextNumReplicas: strconv.Itoa(numReplicas(v)),
		VolumeContextMDUUID:      v.MDUUID,
	}
}

// volumeFormat is whether a new volume is a block volume (no mount
// capability) and, if not, the filesystem it will be formatted with as far
// as the request says: the first mount capability's fs_type, else the
// class's csi.storage.k8s.io/fstype parameter (an invalid one is left to
// the provisioner, which refuses it naming it), else "" (the default).
func volumeFormat(req *csi.CreateVolumeRequest) (block bool, fsType string) {
	block = true
	for _, c := range req.GetVolumeCapabilities() {
		if m := c.GetMount(); m != nil {
			if block {
				fsType = m.GetFsType()
			}
			block = false
		}
	}
	if !block && fsType == "" {
		fsType, _ = storageclass.ParseFSType(req.GetParameters()[storageclass.KeyFSType])
	}
	return block, fsType
}

// numReplicas is the configured replica count (the provisioner's default
// when the parameters do not say).
func numReplicas(v *volume.Volume) int {
	if v.Policy.NumReplicas > 0 {
		return v.Policy.NumReplicas
	}
	return storageclass.DefaultNumReplicas
}

// DeleteVolume is idempotent: an unknown volume is success.
func (d *Driver) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	unlock, err := d.lock(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := d.prov.DeleteVolume(ctx, req.GetVolumeId()); err != nil && !errors.Is(err, volume.ErrNotFound) {
		return nil, fmt.Errorf("delete volume %s: %w", req.GetVolumeId(), err)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

// ControllerPublishVolume admits the node's host NQN on every replica (the
// fence). The provisioner does it idempotently per replica, so a retry after
// a partial publish completes it; another host already published is
// FailedPrecondition, as CSI asks for a single-node volume.
func (d *Driver) ControllerPublishVolume(ctx context.Context, req *csi.ControllerPublishVolumeRequest) (*csi.ControllerPublishVolumeResponse, error) {
	if err := validateControllerPublishRequest(req); err != nil {
		return nil, err
	}
	if r := unsupportedReason(req.GetVolumeCapability()); r != "" {
		return nil, invalid("volume_capability", "%s", r)
	}
	_, hostNQN, err := parseNodeID(req.GetNodeId())
	if err != nil {
		return nil, err
	}
	unlock, err := d.lock(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := d.prov.PublishVolume(ctx, req.GetVolumeId(), hostNQN, req.GetNodeId()); err != nil {
		return nil, fmt.Errorf("publish volume %s to %s: %w", req.GetVolumeId(), req.GetNodeId(), err)
	}
	return &csi.ControllerPublishVolumeResponse{PublishContext: map[string]string{PublishContextHostNQN: hostNQN}}, nil
}

// ControllerUnpublishVolume revokes the node's host NQN (or whichever host,
// when node_id is empty). Unknown volumes and nodes are success: the volume
// is certainly not published to them.
func (d *Driver) ControllerUnpublishVolume(ctx context.Context, req *csi.ControllerUnpublishVolumeRequest) (*csi.ControllerUnpublishVolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	hostNQN := ""
	if req.GetNodeId() != "" {
		var err error
		if _, hostNQN, err = parseNodeID(req.GetNodeId()); err != nil {
			klog.InfoS("Unpublish from a node ID this driver never issued: nothing to revoke", "volumeID", req.GetVolumeId(), "nodeID", req.GetNodeId())
			return &csi.ControllerUnpublishVolumeResponse{}, nil
		}
	}
	unlock, err := d.lock(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := d.prov.UnpublishVolume(ctx, req.GetVolumeId(), hostNQN); err != nil && !errors.Is(err, volume.ErrNotFound) {
		return nil, fmt.Errorf("unpublish volume %s from %s: %w", req.GetVolumeId(), req.GetNodeId(), err)
	}
	return &csi.ControllerUnpublishVolumeResponse{}, nil
}

// ValidateVolumeCapabilities confirms capabilities every volume supports
// (single-node modes, block, mount with ext4/xfs) and, when parameters are
// given, that they match the volume's.
func (d *Driver) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := validateCapabilities("volume_capabilities", req.GetVolumeCapabilities()); err != nil {
		return nil, err
	}
	vol, err := d.prov.GetVolume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", req.GetVolumeId(), err)
	}
	for _, c := range req.GetVolumeCapabilities() {
		if r := unsupportedReason(c); r != "" {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: r}, nil
		}
	}
	for k, v := range req.GetParameters() {
		if got, ok := vol.Parameters[k]; !ok || got != v {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: fmt.Sprintf("parameter %q=%q does not match the volume's %q", k, v, got)}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
		MutableParameters:  req.GetMutableParameters(),
	}}, nil
}

// ListVolumes pages through the registry (see listPage).
func (d *Driver) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	vols, next, err := d.listPage(ctx, req)
	if err != nil {
		return nil, err
	}
	resp := &csi.ListVolumesResponse{NextToken: next}
	for _, v := range vols {
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{
			Volume: &csi.Volume{VolumeId: v.ID, CapacityBytes: v.SizeBytes, VolumeContext: volumeContext(v, "")},
			Status: &csi.ListVolumesResponse_VolumeStatus{
				PublishedNodeIds: publishedNodes(v),
			},
		})
	}
	return resp, nil
}

// pagedRequest is what ListVolumes and ControllerListVolumeHealth page by.
type pagedRequest interface {
	GetStartingToken() string
	GetMaxEntries() int32
}

// listPage reads one page of the registry for a paged CSI call. The token is
// the provisioner's, passed through opaque; one it refuses is Aborted, as
// CSI asks.
func (d *Driver) listPage(ctx context.Context, req pagedRequest) ([]*volume.Volume, string, error) {
	if req.GetMaxEntries() < 0 {
		return nil, "", invalid("max_entries", "must not be negative")
	}
	vols, next, err := d.prov.ListVolumes(ctx, req.GetStartingToken(), int(req.GetMaxEntries()))
	if errors.Is(err, volume.ErrInvalidArgument) {
		return nil, "", status.Errorf(codes.Aborted, "starting_token %q: %v", req.GetStartingToken(), err)
	}
	if err != nil {
		return nil, "", fmt.Errorf("list volumes: %w", err)
	}
	return vols, next, nil
}

func publishedNodes(v *volume.Volume) []string {
	if v.PublishedNode == "" {
		return nil
	}
	return []string{v.PublishedNode}
}

// Volume health. CSI 1.13 replaced the VolumeCondition of ControllerGetVolume
// and NodeGetVolumeStats with the volume health RPCs; nvmirror reports there.
// Health reasons (CamelCase, one entry per status and reason):
const (
	reasonReplicaNotActive = "ReplicaNotActive"
	reasonReplicasMissing  = "ReplicasMissing"
	reasonMirrorDegraded   = "MirrorDegraded"
	reasonNoActiveReplica  = "NoActiveReplica"
	reasonArrayDegraded    = "ArrayDegraded"
	reasonArrayNotRunning  = "ArrayNotRunning"
	reasonArrayBroken      = "ArrayBroken"
	reasonReplicaOffline   = "ReplicaDisconnected"
	reasonNotStaged        = "NotStaged"
)

// volumeHealth is the controller's view: degraded when the volume runs short
// of its mirror (a replica being deleted or replaced, fewer active replicas
// than configured, or the node's healer having reported it degraded),
// inaccessible without any active replica. Messages name the missing
// replicas and their storage nodes so an admin can go straight there.
func volumeHealth(v *volume.Volume) *csi.VolumeHealth {
	h := &csi.VolumeHealth{VolumeId: v.ID}
	var notActive []string
	active := 0
	for _, r := range v.Replicas {
		switch r.State {
		case volume.ReplicaActive:
			active++
		case volume.ReplicaRemoved:
			// History: it left the mirror and was replaced.
		default:
			notActive = append(notActive, fmt.Sprintf("replica %s on %s is %s", r.ID, r.StorageNode, r.State))
		}
	}
	add := func(s csi.VolumeHealthErrorType, reason, msg string) {
		h.HealthStatuses = append(h.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{Status: s, Reason: reason, Message: msg})
	}
	if active == 0 {
		add(csi.VolumeHealthErrorType_INACCESSIBLE, reasonNoActiveReplica, "no replica of the volume is active")
	}
	if len(notActive) > 0 {
		sort.Strings(notActive)
		add(csi.VolumeHealthErrorType_DEGRADED, reasonReplicaNotActive, strings.Join(notActive, "; "))
	}
	if want := numReplicas(v); active > 0 && active < want {
		add(csi.VolumeHealthErrorType_DEGRADED, reasonReplicasMissing, fmt.Sprintf("%d of %d replicas active", active, want))
	}
	if !v.DegradedSince.IsZero() {
		add(csi.VolumeHealthErrorType_DEGRADED, reasonMirrorDegraded, "the node reports the mirror degraded since "+v.DegradedSince.UTC().Format(time.RFC3339))
	}
	return h
}

// ControllerGetVolumeHealth reports the controller's view of one volume.
func (d *Driver) ControllerGetVolumeHealth(ctx context.Context, req *csi.ControllerGetVolumeHealthRequest) (*csi.ControllerGetVolumeHealthResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	v, err := d.prov.GetVolume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", req.GetVolumeId(), err)
	}
	return &csi.ControllerGetVolumeHealthResponse{VolumeHealth: volumeHealth(v)}, nil
}

// ControllerListVolumeHealth pages through the volumes and returns the
// abnormal ones (the spec lists only those), with the provisioner's paging.
func (d *Driver) ControllerListVolumeHealth(ctx context.Context, req *csi.ControllerListVolumeHealthRequest) (*csi.ControllerListVolumeHealthResponse, error) {
	vols, next, err := d.listPage(ctx, req)
	if err != nil {
		return nil, err
	}
	resp := &csi.ControllerListVolumeHealthResponse{NextToken: next}
	for _, v := range vols {
		if h := volumeHealth(v); len(h.HealthStatuses) > 0 {
			resp.Entries = append(resp.Entries, h)
		}
	}
	return resp, nil
}

// ControllerGetVolume returns the volume with its publication (its health is
// ControllerGetVolumeHealth's).
func (d *Driver) ControllerGetVolume(ctx context.Context, req *csi.ControllerGetVolumeRequest) (*csi.ControllerGetVolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	v, err := d.prov.GetVolume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", req.GetVolumeId(), err)
	}
	return &csi.ControllerGetVolumeResponse{
		Volume: &csi.Volume{VolumeId: v.ID, CapacityBytes: v.SizeBytes, VolumeContext: volumeContext(v, "")},
		Status: &csi.ControllerGetVolumeResponse_VolumeStatus{
			PublishedNodeIds: publishedNodes(v),
		},
	}, nil
}

// GetCapacity reports the largest volume the provisioner could place now.
// Capabilities this driver cannot serve have no capacity.
func (d *Driver) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	for i, c := range req.GetVolumeCapabilities() {
		if err := validateCapability(fmt.Sprintf("volume_capabilities[%d]", i), c); err != nil {
			return nil, err
		}
		if unsupportedReason(c) != "" {
			return &csi.GetCapacityResponse{AvailableCapacity: 0}, nil
		}
	}
	n, err := d.prov.GetCapacity(ctx, req.GetParameters())
	if err != nil {
		return nil, fmt.Errorf("get capacity: %w", err)
	}
	return &csi.GetCapacityResponse{
		AvailableCapacity: n,
		MinimumVolumeSize: wrapperspb.Int64(MinVolumeSizeBytes),
	}, nil
}

// ControllerExpandVolume grows every replica. Node expansion is always
// required, for block volumes too: the md array must be grown onto the
// larger replicas (mdadm --grow --size=max) before anyone sees the space.
// Idempotent: the provisioner ignores sizes not above the current one.
func (d *Driver) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	if req.GetCapacityRange() == nil {
		return nil, invalid("capacity_range", "required")
	}
	size, err := volumeSize(req.GetCapacityRange(), 0, MinVolumeSizeBytes)
	if err != nil {
		return nil, err
	}
	unlock, err := d.lock(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	v, err := d.prov.ExpandVolume(ctx, req.GetVolumeId(), size)
	if err != nil {
		return nil, fmt.Errorf("expand volume %s to %d bytes: %w", req.GetVolumeId(), size, err)
	}
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: v.SizeBytes, NodeExpansionRequired: true}, nil
}

// ControllerModifyVolume changes mutable parameters (healing policy).
func (d *Driver) ControllerModifyVolume(ctx context.Context, req *csi.ControllerModifyVolumeRequest) (*csi.ControllerModifyVolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	if len(req.GetMutableParameters()) == 0 {
		return nil, invalid("mutable_parameters", "required")
	}
	if err := validateMutableParameters(req.GetMutableParameters()); err != nil {
		return nil, err
	}
	unlock, err := d.lock(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := d.prov.ModifyVolume(ctx, req.GetVolumeId(), req.GetMutableParameters()); err != nil {
		return nil, fmt.Errorf("modify volume %s: %w", req.GetVolumeId(), err)
	}
	return &csi.ControllerModifyVolumeResponse{}, nil
}
