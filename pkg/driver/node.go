package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
	"k8s.io/mount-utils"

	"github.com/nvmirror/nvmirror/pkg/stagestate"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

var nodeCapabilities = []csi.NodeServiceCapability_RPC_Type{
	csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
	csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
	csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
	csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
	csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
}

func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	caps := make([]*csi.NodeServiceCapability, 0, len(nodeCapabilities))
	for _, c := range nodeCapabilities {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: c}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// NodeGetInfo returns "<node name>/<host NQN>" (see nodeid.go) and the
// volume limit. No topology: any node reaches any storage node.
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.nodeID, MaxVolumesPerNode: d.opts.MaxVolumesPerNode}, nil
}

// NodeStageVolume connects the replicas, brings up the md array (creating it
// on first use, assembling it otherwise, degraded if some replicas are away),
// and mounts it (formatting only a blank device) or leaves it for a block
// publish.
//
// Retry safety, step by step:
//  1. the intent is recorded (phase staging, replica NQNs) before anything
//     is connected, so NodeUnstage after a crash knows what to disconnect;
//  2. Connect returns existing controllers, so reconnecting is free;
//  3. an array already running with the volume's UUID is reused; otherwise
//     members carrying that UUID are assembled; only when no reachable
//     member carries it and every replica is present and verified blank is
//     the array created, with the UUID the provisioner assigned, so a crash
//     after create is answered by an assemble on retry;
//  4. FormatAndMount formats only what blkid calls blank, and a mount
//     already in place is kept;
//  5. the state is marked staged last.
//
// A failure undoes what this call did (the array it started, the
// controllers it connected) and nothing an earlier call did.
func (d *Driver) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	if err := validateNodeStageRequest(req); err != nil {
		return nil, err
	}
	unlock, err := d.lock(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := d.stage(ctx, req); err != nil {
		return nil, err
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

// NodeUnstageVolume unmounts the staging path, stops the array and
// disconnects every replica subsystem of the volume, then forgets the state.
// Each step is a no-op when already done, and the state goes last, so a
// crash anywhere is finished by the retry.
func (d *Driver) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := required("staging_target_path", req.GetStagingTargetPath()); err != nil {
		return nil, err
	}
	volID, stagingPath := req.GetVolumeId(), req.GetStagingTargetPath()
	unlock, err := d.lock(volID)
	if err != nil {
		return nil, err
	}
	defer unlock()

	st, err := d.state.Load(volID)
	if err != nil {
		return nil, err
	}
	if st == nil {
		if st, err = d.state.LoadSidecar(volID, stagingPath); err != nil {
			return nil, err
		}
	}
	if st != nil && len(st.Targets) > 0 {
		klog.InfoS("Unstaging with publish targets recorded; the CO unpublishes first, so they are stale", "volumeID", volID, "targets", st.Targets)
	}
	if st != nil && st.Phase == stagestate.Staged {
		// Tell the healer first: the members and sessions about to go are
		// not a degradation.
		st.Phase = stagestate.Unstaging
		if err := d.state.Save(st); err != nil {
			return nil, err
		}
	}

	if mounted, err := d.isMountPoint(stagingPath); err != nil {
		return nil, err
	} else if mounted {
		if err := d.node.Mounter.Unmount(stagingPath); err != nil {
			return nil, fmt.Errorf("unmount %s: %w", stagingPath, err)
		}
	}
	if st == nil {
		// The state is written before anything is connected and deleted
		// last, so without it nothing of this volume is on the node.
		klog.V(4).InfoS("Volume not staged here", "volumeID", volID)
		return &csi.NodeUnstageVolumeResponse{}, nil
	}

	// Replicas the healer connected without recording (or that the
	// provisioner added since) are disconnected too, best effort.
	if vol, err := d.prov.GetVolume(ctx, volID); err == nil {
		st.AddReplicas(stagedReplicas(vol.Replicas))
	} else if !errors.Is(err, volume.ErrNotFound) {
		klog.InfoS("Provisioner not reachable; disconnecting the recorded replicas only", "volumeID", volID, "err", err)
	}

	if st.MDUUID != "" {
		if err := d.stopArray(ctx, st); err != nil {
			return nil, err
		}
	}
	var errs []error
	for _, r := range st.Replicas {
		if err := d.node.Initiator.DisconnectNQN(ctx, r.NQN); err != nil {
			errs = append(errs, fmt.Errorf("disconnect replica %s (%s): %w", r.ID, r.NQN, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := d.state.Delete(volID, stagingPath); err != nil {
		return nil, err
	}
	klog.InfoS("Unstaged volume", "volumeID", volID, "stagingPath", stagingPath)
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// NodePublishVolume bind-mounts the staging path (filesystem) or the device
// (block, onto a file) at the target, read-only when asked. A target already
// mounted is success; SINGLE_NODE_SINGLE_WRITER refuses a second target.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if err := validateNodePublishRequest(req); err != nil {
		return nil, err
	}
	volID, target := req.GetVolumeId(), req.GetTargetPath()
	unlock, err := d.lock(volID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := d.state.Load(volID)
	if err != nil {
		return nil, err
	}
	if st == nil || st.Phase != stagestate.Staged {
		return nil, volume.Errorf(volume.ErrFailedPrecondition, "volume %s is not staged on this node", volID)
	}
	if st.StagingPath != req.GetStagingTargetPath() {
		return nil, volume.Errorf(volume.ErrFailedPrecondition, "volume %s is staged at %s, not %s", volID, st.StagingPath, req.GetStagingTargetPath())
	}
	block := req.GetVolumeCapability().GetBlock() != nil
	if block != st.Block {
		return nil, volume.Errorf(volume.ErrFailedPrecondition, "volume %s is staged as %s, publish asks for %s", volID, accessTypeName(st.Block), accessTypeName(block))
	}
	mode := req.GetVolumeCapability().GetAccessMode().GetMode().String()
	for t, p := range st.Targets {
		if t == target {
			continue
		}
		if mode == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER.String() || p.AccessMode == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER.String() {
			return nil, volume.Errorf(volume.ErrFailedPrecondition, "volume %s is SINGLE_NODE_SINGLE_WRITER and already published at %s", volID, t)
		}
	}

	source := st.StagingPath
	if block {
		source = st.Device
		if err := ensureFile(target); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, err
	}
	mounted, err := d.isMountPoint(target)
	if err != nil {
		return nil, err
	}
	if !mounted {
		opts := []string{"bind"}
		if req.GetReadonly() {
			opts = append(opts, "ro")
		}
		if m := req.GetVolumeCapability().GetMount(); m != nil {
			opts = append(opts, m.GetMountFlags()...)
		}
		if err := d.node.Mounter.Mount(source, target, "", opts); err != nil {
			return nil, fmt.Errorf("bind mount %s at %s: %w", source, target, err)
		}
	}
	if st.Targets == nil {
		st.Targets = map[string]stagestate.PublishTarget{}
	}
	st.Targets[target] = stagestate.PublishTarget{ReadOnly: req.GetReadonly(), AccessMode: mode}
	if err := d.state.Save(st); err != nil {
		return nil, err
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

// ensureFile creates the file a block volume is bind-mounted onto.
func ensureFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o640)
	if err != nil {
		if errors.Is(err, unix.EISDIR) {
			return nil // a directory the CO made; the bind mount decides
		}
		return err
	}
	return f.Close()
}

// NodeUnpublishVolume unmounts the target and removes it, as CSI requires.
// A target that is gone is success.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := required("target_path", req.GetTargetPath()); err != nil {
		return nil, err
	}
	volID, target := req.GetVolumeId(), req.GetTargetPath()
	unlock, err := d.lock(volID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := mount.CleanupMountPoint(target, d.node.Mounter.Interface, true); err != nil {
		return nil, fmt.Errorf("unpublish %s: %w", target, err)
	}
	st, err := d.state.Load(volID)
	if err != nil {
		return nil, err
	}
	if st != nil {
		if _, ok := st.Targets[target]; ok {
			delete(st.Targets, target)
			if err := d.state.Save(st); err != nil {
				return nil, err
			}
		}
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// NodeGetVolumeStats reports filesystem usage (statfs) or the block size.
func (d *Driver) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := required("volume_path", req.GetVolumePath()); err != nil {
		return nil, err
	}
	st, err := d.state.Load(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if st == nil || st.Phase != stagestate.Staged {
		return nil, status.Errorf(codes.NotFound, "volume %s is not staged on this node", req.GetVolumeId())
	}
	path := req.GetVolumePath()
	if _, ok := st.Targets[path]; !ok && path != st.StagingPath {
		return nil, status.Errorf(codes.NotFound, "volume %s is not published at %s", req.GetVolumeId(), path)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume path %s: %v", path, err)
	}
	resp := &csi.NodeGetVolumeStatsResponse{}
	if st.Block {
		size, err := d.deviceSize(st)
		if err != nil {
			return nil, err
		}
		resp.Usage = []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES, Total: size}}
		return resp, nil
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err != nil {
		return nil, fmt.Errorf("statfs %s: %w", path, err)
	}
	bsize := int64(sfs.Bsize)
	resp.Usage = []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: int64(sfs.Blocks) * bsize, Available: int64(sfs.Bavail) * bsize, Used: int64(sfs.Blocks-sfs.Bfree) * bsize},
		{Unit: csi.VolumeUsage_INODES, Total: int64(sfs.Files), Available: int64(sfs.Ffree), Used: int64(sfs.Files - sfs.Ffree)},
	}
	return resp, nil
}

// deviceSize is the size of the staged device, from md sysfs or the NVMe
// namespace: no process spawned, no device opened.
func (d *Driver) deviceSize(st *stagestate.State) (int64, error) {
	if st.MDDevice != "" {
		a, err := d.node.Raid.ReadArray(filepath.Base(st.MDDevice))
		if err != nil {
			return 0, err
		}
		return int64(a.SizeKiB) * 1024, nil
	}
	if len(st.Replicas) == 0 {
		return 0, volume.Errorf(volume.ErrFailedPrecondition, "volume %s records no replica", st.VolumeID)
	}
	r := st.Replicas[0]
	dev, err := d.node.Initiator.FindDevice(r.NQN, r.NamespaceUUID)
	if err != nil {
		return 0, err
	}
	return int64(dev.SizeBytes), nil
}

// NodeExpandVolume grows the md array onto the enlarged replicas, then the
// filesystem. Both steps are no-ops when already done.
func (d *Driver) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := required("volume_path", req.GetVolumePath()); err != nil {
		return nil, err
	}
	volID := req.GetVolumeId()
	unlock, err := d.lock(volID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := d.state.Load(volID)
	if err != nil {
		return nil, err
	}
	if st == nil || st.Phase != stagestate.Staged {
		return nil, status.Errorf(codes.NotFound, "volume %s is not staged on this node", volID)
	}
	if st.MDDevice != "" {
		if err := d.node.Raid.GrowSize(ctx, st.MDDevice); err != nil {
			return nil, fmt.Errorf("grow md %s of volume %s: %w", st.MDDevice, volID, err)
		}
	}
	if !st.Block && req.GetVolumeCapability().GetBlock() == nil {
		if _, err := mount.NewResizeFs(d.node.Mounter.Exec).Resize(st.Device, st.StagingPath); err != nil {
			return nil, fmt.Errorf("resize filesystem on %s of volume %s: %w", st.Device, volID, err)
		}
	}
	size, err := d.deviceSize(st)
	if err != nil {
		return nil, err
	}
	if want := req.GetCapacityRange().GetRequiredBytes(); want > 0 && size < want {
		return nil, volume.Errorf(volume.ErrFailedPrecondition, "volume %s is %d bytes after growing, %d required: the replicas have not grown yet", volID, size, want)
	}
	klog.InfoS("Expanded volume on node", "volumeID", volID, "device", st.Device, "sizeBytes", size)
	return &csi.NodeExpandVolumeResponse{CapacityBytes: size}, nil
}
