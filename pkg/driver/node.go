package driver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
	"k8s.io/mount-utils"

	"github.com/nvmirror/nvmirror/pkg/connector"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

var nodeCapabilities = []csi.NodeServiceCapability_RPC_Type{
	csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
	csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
	csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
	csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
	csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
}

// cleanupTimeout bounds rollback work after a failed NodeStage, which runs on
// a fresh context because the call's own may be what expired.
const cleanupTimeout = 60 * time.Second

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

// undo collects what one NodeStage did, to reverse it on failure.
type undo struct {
	arrays []string // md devices this call started
	nqns   []string // subsystems this call connected
}

func (d *Driver) rollback(volumeID string, u *undo) error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	var errs []error
	for _, dev := range slices.Backward(u.arrays) {
		if err := d.node.Raid.Stop(ctx, dev); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", dev, err))
		}
	}
	for _, nqn := range u.nqns {
		if err := d.node.Initiator.DisconnectNQN(ctx, nqn); err != nil {
			errs = append(errs, fmt.Errorf("disconnect %s: %w", nqn, err))
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		klog.ErrorS(err, "Rolling back a failed NodeStage left something behind; NodeUnstage will retry", "volumeID", volumeID)
	} else {
		klog.InfoS("Rolled back a failed NodeStage", "volumeID", volumeID, "stoppedArrays", u.arrays, "disconnected", u.nqns)
	}
	return err
}

func (d *Driver) stage(ctx context.Context, req *csi.NodeStageVolumeRequest) (retErr error) {
	volID := req.GetVolumeId()
	stagingPath := req.GetStagingTargetPath()
	capability := req.GetVolumeCapability()
	block := capability.GetBlock() != nil
	fsType := capability.GetMount().GetFsType()
	if fsType == "" {
		fsType = req.GetVolumeContext()[VolumeContextFSType]
	}
	if fsType == "" {
		fsType = storageclass.DefaultFSType
	}
	if h := req.GetPublishContext()[PublishContextHostNQN]; h != "" && h != d.node.Host.NQN {
		return volume.Errorf(volume.ErrFailedPrecondition, "volume %s was published to host %s, this node is %s", volID, h, d.node.Host.NQN)
	}

	prev, err := d.state.Load(volID)
	if err != nil {
		return err
	}
	if prev != nil && prev.StagingPath != stagingPath {
		return volume.Errorf(volume.ErrFailedPrecondition, "volume %s is already staged at %s", volID, prev.StagingPath)
	}
	if prev != nil && prev.Phase == stagestate.Staged {
		if prev.Block != block {
			return volume.Errorf(volume.ErrFailedPrecondition, "volume %s is staged as %s", volID, accessTypeName(prev.Block))
		}
		if ok, why := d.stagedInPlace(prev); ok {
			klog.V(4).InfoS("Volume already staged", "volumeID", volID, "device", prev.Device)
			return nil
		} else {
			klog.InfoS("Volume recorded as staged but not in place; staging again", "volumeID", volID, "reason", why)
		}
	}

	vol, err := d.prov.GetVolume(ctx, volID)
	if err != nil {
		return fmt.Errorf("volume %s: %w", volID, err)
	}
	if vol.PublishedHost != d.node.Host.NQN {
		// The storage nodes would refuse us anyway; saying so here gives a
		// readable error instead of refused connections.
		return volume.Errorf(volume.ErrFailedPrecondition, "volume %s is published to host %q, not to this node (%s): ControllerPublishVolume first", volID, vol.PublishedHost, d.node.Host.NQN)
	}
	replicas := vol.ActiveReplicas()
	if len(replicas) == 0 {
		return volume.Errorf(volume.ErrFailedPrecondition, "volume %s has no active replica", volID)
	}
	useMD := numReplicas(vol) > 1
	mdUUID := ""
	if useMD {
		if mdUUID, err = mdraid.NormalizeUUID(vol.MDUUID); err != nil {
			return fmt.Errorf("volume %s has no usable md UUID %q: %w", volID, vol.MDUUID, err)
		}
	}

	st := prev
	if st == nil {
		st = &stagestate.State{VolumeID: volID, StagingPath: stagingPath}
	}
	st.Phase, st.Block, st.FSType, st.HostNQN, st.MDUUID = stagestate.Staging, block, fsType, d.node.Host.NQN, mdUUID
	if block {
		st.FSType = ""
	}
	st.AddReplicas(stagedReplicas(replicas))
	if err := d.state.Save(st); err != nil {
		return err
	}

	var u undo
	defer func() {
		if retErr == nil {
			return
		}
		if rbErr := d.rollback(volID, &u); rbErr == nil && prev == nil {
			// Nothing from this call or an earlier one is left.
			if err := d.state.Delete(volID, stagingPath); err != nil {
				klog.ErrorS(err, "Could not remove staging state after rollback", "volumeID", volID)
			}
		}
	}()

	creds, err := d.prov.GetHostCredentials(ctx, d.node.Host.NQN)
	if err != nil {
		return fmt.Errorf("authentication secrets of host %s: %w", d.node.Host.NQN, err)
	}
	devices, err := d.connectReplicas(ctx, replicas, creds, vol.Authentication(), &u)
	if err != nil {
		return err
	}
	var device string
	if useMD {
		device, err = d.ensureArray(ctx, vol, mdUUID, replicas, devices, &u)
		if err != nil {
			return err
		}
		st.MDDevice = device
	} else {
		device, err = d.singleReplicaDevice(ctx, replicas[0], devices)
		if err != nil {
			return err
		}
	}
	st.Device = device

	if !block {
		if err := d.mountStaging(device, stagingPath, fsType, capability.GetMount().GetMountFlags()); err != nil {
			return err
		}
	}
	st.Phase = stagestate.Staged
	if err := d.state.Save(st); err != nil {
		return err
	}
	klog.InfoS("Staged volume", "volumeID", volID, "device", device, "stagingPath", stagingPath, "accessType", accessTypeName(block), "replicas", len(devices), "of", len(replicas))
	return nil
}

func accessTypeName(block bool) string {
	if block {
		return "block"
	}
	return "mount"
}

func stagedReplicas(rs []volume.Replica) []stagestate.Replica {
	out := make([]stagestate.Replica, 0, len(rs))
	for _, r := range rs {
		out = append(out, stagestate.Replica{ID: r.ID, NQN: r.NQN, NamespaceUUID: r.NamespaceID()})
	}
	return out
}

// stagedInPlace checks that a volume recorded as staged still is: its device
// is up with the right identity and, for a filesystem, mounted at the staging
// path. Anything else is redone by the (idempotent) stage steps.
func (d *Driver) stagedInPlace(st *stagestate.State) (bool, string) {
	if st.MDDevice != "" {
		a, err := d.node.Raid.ReadArray(filepath.Base(st.MDDevice))
		if err != nil {
			return false, err.Error()
		}
		if a.UUID != st.MDUUID {
			return false, fmt.Sprintf("%s has uuid %q, want %q", st.MDDevice, a.UUID, st.MDUUID)
		}
	}
	if !st.Block {
		mounted, err := d.isMountPoint(st.StagingPath)
		if err != nil || !mounted {
			return false, fmt.Sprintf("%s not mounted (%v)", st.StagingPath, err)
		}
	}
	return true, ""
}

// ConnectTemplate is the host identity and timeouts every replica
// connection of this node uses, without a target: the healer reconnects
// replicas with exactly what NodeStage would.
func (d *Driver) ConnectTemplate() host.ConnectOptions {
	ctrlLoss, reconnect, fastFail, keepAlive := d.opts.CtrlLossTmo, d.opts.ReconnectDelay, d.opts.FastIOFailTmo, d.opts.KeepAliveTmo
	return host.ConnectOptions{
		Transport:      "tcp",
		HostNQN:        d.node.Host.NQN,
		HostID:         d.node.Host.ID,
		CtrlLossTmo:    &ctrlLoss,
		ReconnectDelay: &reconnect,
		FastIOFailTmo:  &fastFail,
		KeepAliveTmo:   &keepAlive,
	}
}

// connectReplicas connects every endpoint of every replica and waits, under
// one deadline, for their block devices. Replicas that fail or do not show
// up are logged and left out: the volume runs degraded and the healer
// brings them back. No device at all is Unavailable.
//
// With authentication, a replica whose storage node has no secrets is not
// connected (never without authentication), and a kernel without NVMe
// in-band authentication fails the whole call (FailedPrecondition naming
// the missing kernel feature): no replica could be connected as asked.
func (d *Driver) connectReplicas(ctx context.Context, replicas []volume.Replica, creds []volume.Credentials, auth storageclass.Authentication, u *undo) (map[string]host.Device, error) {
	var problems []string
	connected := make([]volume.Replica, 0, len(replicas))
	conn := d.connector()
	for _, r := range replicas {
		had := d.hasController(r.NQN)
		err := conn.Connect(ctx, r, creds, auth)
		if !had && d.hasController(r.NQN) {
			u.nqns = append(u.nqns, r.NQN)
		}
		switch {
		case errors.Is(err, nvmeof.ErrAuthUnsupported):
			return nil, volume.Errorf(volume.ErrFailedPrecondition, "volume needs NVMe in-band authentication, which this node's kernel lacks: %v", err)
		case errors.Is(err, connector.ErrNoSecrets):
			problems = append(problems, err.Error())
			klog.ErrorS(nil, "Replica not connected: no authentication secrets for its storage node", "replica", r.ID, "storageNode", r.StorageNode)
			continue
		case err != nil:
			problems = append(problems, err.Error())
			klog.ErrorS(err, "Replica not connected; continuing without it", "replica", r.ID, "nqn", r.NQN)
			continue
		}
		connected = append(connected, r)
	}
	devices := map[string]host.Device{}
	wctx, cancel := context.WithTimeout(ctx, d.opts.DeviceWaitTimeout)
	defer cancel()
	for _, r := range connected {
		dev, err := d.node.Initiator.WaitForDevice(wctx, r.NQN, r.NamespaceID())
		if err != nil {
			// A namespace with another identity (ErrIdentityMismatch) is
			// never used, whatever else happens.
			problems = append(problems, fmt.Sprintf("replica %s (%s): %v", r.ID, r.StorageNode, err))
			klog.ErrorS(err, "Replica block device not available; continuing without it", "replica", r.ID, "nqn", r.NQN)
			continue
		}
		devices[r.ID] = dev
	}
	if len(devices) == 0 {
		return nil, volume.Errorf(volume.ErrUnavailable, "no replica of %d reachable: %s", len(replicas), strings.Join(problems, "; "))
	}
	return devices, nil
}

// connector connects replicas as this node: NodeStage and the healer
// share the routine and the template.
func (d *Driver) connector() *connector.Connector {
	return &connector.Connector{Fabric: d.node.Initiator, Template: d.ConnectTemplate()}
}

// hasController reports whether the host has a controller for nqn that
// Connect would reuse.
func (d *Driver) hasController(nqn string) bool {
	ctrls, err := d.node.Initiator.ControllersFor(nqn)
	if err != nil {
		return false
	}
	for _, c := range ctrls {
		if c.State != host.StateDeleting && c.State != host.StateDeletingNoIO && c.State != host.StateDead {
			return true
		}
	}
	return false
}

// member is one reachable replica's device, classified by what it holds.
type member struct {
	replica volume.Replica
	device  host.Device
}

// ensureArray returns the md device of the volume, started. See stage's
// comment for the decision; the invariant is that nothing destructive
// (mdadm --create) runs unless every replica is present and verified blank:
// no md superblock (mdadm --examine) and nothing blkid recognises.
func (d *Driver) ensureArray(ctx context.Context, vol *volume.Volume, mdUUID string, replicas []volume.Replica, devices map[string]host.Device, u *undo) (string, error) {
	d.mdMu.Lock()
	defer d.mdMu.Unlock()

	if a, err := d.node.Raid.FindByUUID(mdUUID); err == nil {
		// Already running: a previous stage, or udev assembled it.
		klog.InfoS("md array already running", "volumeID", vol.ID, "device", a.Device, "uuid", mdUUID)
		return a.Device, nil
	} else if !errors.Is(err, mdraid.ErrNotFound) {
		return "", err
	}

	var ours, blank []member
	var foreign []string
	for _, r := range replicas {
		dev, ok := devices[r.ID]
		if !ok {
			continue
		}
		m := member{replica: r, device: dev}
		sb, err := d.node.Raid.Examine(ctx, dev.Path)
		switch {
		case errors.Is(err, mdraid.ErrNoSuperblock):
			format, ferr := d.node.Mounter.GetDiskFormat(dev.Path)
			if ferr != nil {
				return "", fmt.Errorf("probing replica %s device %s: %w", r.ID, dev.Path, ferr)
			}
			if format != "" {
				foreign = append(foreign, fmt.Sprintf("replica %s (%s) holds %q without an md superblock", r.ID, dev.Path, format))
				continue
			}
			blank = append(blank, m)
		case err != nil:
			return "", fmt.Errorf("examining replica %s device %s: %w", r.ID, dev.Path, err)
		case sb.UUID == mdUUID:
			if err := d.stopInactiveHolder(ctx, dev.Path, mdUUID); err != nil {
				return "", err
			}
			ours = append(ours, m)
		default:
			// Never touched: not ours. The name is untrusted input; only
			// the UUID is reported.
			foreign = append(foreign, fmt.Sprintf("replica %s (%s) carries md array %s", r.ID, dev.Path, sb.UUID))
		}
	}
	for _, f := range foreign {
		klog.ErrorS(nil, "Replica device holds data of another array; leaving it alone", "volumeID", vol.ID, "problem", f)
	}

	if len(ours) > 0 {
		paths := memberPaths(ours)
		dev, err := d.node.Raid.NextFreeDevice()
		if err != nil {
			return "", err
		}
		err = d.node.Raid.Assemble(ctx, dev, mdUUID, paths)
		if errors.Is(err, mdraid.ErrAssembledElsewhere) {
			a, ferr := d.node.Raid.FindByUUID(mdUUID)
			if ferr != nil {
				return "", errors.Join(err, ferr)
			}
			return a.Device, nil
		}
		if err != nil {
			return "", fmt.Errorf("assemble md %s of volume %s from %v: %w", mdUUID, vol.ID, paths, err)
		}
		u.arrays = append(u.arrays, dev)
		if err := d.verifyArray(dev, mdUUID); err != nil {
			return "", err
		}
		if len(ours) < len(replicas) {
			klog.InfoS("Assembled md array degraded; the healer will bring back the other replicas", "volumeID", vol.ID, "device", dev, "members", len(ours), "replicas", len(replicas))
		} else {
			klog.InfoS("Assembled md array", "volumeID", vol.ID, "device", dev, "members", len(ours))
		}
		return dev, nil
	}

	// No reachable replica carries the array: first use, if it is provably
	// one. A replica that is away might hold the only copy of the data.
	if len(foreign) > 0 {
		return "", volume.Errorf(volume.ErrFailedPrecondition, "volume %s: refusing to create its md array: %s", vol.ID, strings.Join(foreign, "; "))
	}
	if len(blank) != len(replicas) {
		return "", volume.Errorf(volume.ErrUnavailable, "volume %s: creating its md array needs every replica, %d of %d reachable", vol.ID, len(blank), len(replicas))
	}
	if len(blank) < 2 {
		return "", volume.Errorf(volume.ErrFailedPrecondition, "volume %s wants %d replicas but has %d active: an md RAID1 needs two", vol.ID, numReplicas(vol), len(blank))
	}
	dev, err := d.node.Raid.NextFreeDevice()
	if err != nil {
		return "", err
	}
	paths := memberPaths(blank)
	err = d.node.Raid.Create(ctx, mdraid.CreateOptions{
		Device:      dev,
		Name:        mdName(vol),
		UUID:        mdUUID,
		Devices:     paths,
		BitmapChunk: d.opts.BitmapChunkBytes,
		// The provisioner sized each replica as the volume plus this.
		DataOffset: mdraid.MetadataReserve,
		// The legs are identical already: every replica of a new volume is
		// a file the agent has just created (sparse or fallocated, both
		// read as zeros), and each was verified to carry no superblock or
		// filesystem. An initial resync would rewrite zeros over zeros for
		// the whole size, and md refuses to grow the array until it ends.
		// An md check (mismatch_cnt) would show any divergence; replicas
		// added later (re-add, replacement) are synced by md as usual.
		AssumeClean: true,
	})
	if err != nil {
		return "", fmt.Errorf("create md array of volume %s on %v: %w", vol.ID, paths, err)
	}
	u.arrays = append(u.arrays, dev)
	if err := d.verifyArray(dev, mdUUID); err != nil {
		return "", err
	}
	klog.InfoS("Created md array", "volumeID", vol.ID, "device", dev, "uuid", mdUUID, "members", paths)
	return dev, nil
}

func memberPaths(ms []member) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.device.Path)
	}
	return out
}

// stopInactiveHolder stops an array that udev's incremental assembly left
// holding one of our members without starting it. A running holder would
// have been found by UUID; one with another UUID is not ours to stop.
func (d *Driver) stopInactiveHolder(ctx context.Context, devPath, mdUUID string) error {
	a, err := d.node.Raid.ArrayHolding(devPath)
	if errors.Is(err, mdraid.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if a.UUID != "" && a.UUID != mdUUID {
		return volume.Errorf(volume.ErrFailedPrecondition, "%s is held by md array %s (%s)", devPath, a.Device, a.UUID)
	}
	if a.ArrayState != "inactive" && a.ArrayState != "clear" && a.ArrayState != "" {
		return volume.Errorf(volume.ErrFailedPrecondition, "%s is held by running md array %s", devPath, a.Device)
	}
	klog.InfoS("Stopping an inactive md array holding our replica", "device", a.Device, "member", devPath)
	return d.node.Raid.Stop(ctx, a.Device)
}

// verifyArray checks that the array at dev is the volume's.
func (d *Driver) verifyArray(dev, mdUUID string) error {
	a, err := d.node.Raid.ReadArray(filepath.Base(dev))
	if err != nil {
		return fmt.Errorf("reading %s after start: %w", dev, err)
	}
	if a.UUID != mdUUID {
		return volume.Errorf(volume.ErrFailedPrecondition, "%s runs md array %q, expected %q", dev, a.UUID, mdUUID)
	}
	return nil
}

// mdName is stored in the superblock: the provisioner's name, or one derived
// from the volume ID (md keeps 31 bytes of [A-Za-z0-9._-]).
func mdName(v *volume.Volume) string {
	if v.MDName != "" {
		return v.MDName
	}
	var b strings.Builder
	for _, c := range v.ID {
		if c < 0x80 && (c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			b.WriteRune(c)
		}
	}
	name := strings.TrimLeft(b.String(), ".-")
	if len(name) > 27 {
		name = name[:27]
	}
	if name == "" {
		name = "volume"
	}
	return name
}

// singleReplicaDevice returns the namespace device of a one-replica volume,
// which is used without md. It must not carry an md superblock: that would
// mean the replica belonged to a mirror and someone mixed up identities.
func (d *Driver) singleReplicaDevice(ctx context.Context, r volume.Replica, devices map[string]host.Device) (string, error) {
	dev, ok := devices[r.ID]
	if !ok {
		return "", volume.Errorf(volume.ErrUnavailable, "replica %s not reachable", r.ID)
	}
	sb, err := d.node.Raid.Examine(ctx, dev.Path)
	switch {
	case errors.Is(err, mdraid.ErrNoSuperblock):
	case err != nil:
		return "", fmt.Errorf("examining %s: %w", dev.Path, err)
	default:
		return "", volume.Errorf(volume.ErrFailedPrecondition, "single-replica volume's device %s carries md array %s", dev.Path, sb.UUID)
	}
	if a, err := d.node.Raid.ArrayHolding(dev.Path); err == nil {
		return "", volume.Errorf(volume.ErrFailedPrecondition, "%s is held by md array %s", dev.Path, a.Device)
	}
	return dev.Path, nil
}

// mountStaging formats a blank device and mounts it at the staging path, or
// keeps a mount already there.
func (d *Driver) mountStaging(device, stagingPath, fsType string, flags []string) error {
	if err := os.MkdirAll(stagingPath, 0o750); err != nil {
		return err
	}
	mounted, err := d.isMountPoint(stagingPath)
	if err != nil {
		return err
	}
	if mounted {
		src, _, err := mount.GetDeviceNameFromMount(d.node.Mounter.Interface, stagingPath)
		if err == nil && src != "" && src != device {
			return volume.Errorf(volume.ErrFailedPrecondition, "%s is mounted from %s, not %s", stagingPath, src, device)
		}
		return nil
	}
	// SafeFormatAndMount runs mkfs only when blkid finds nothing on the
	// device, and fsck before mounting an existing filesystem.
	if err := d.node.Mounter.FormatAndMount(device, stagingPath, fsType, flags); err != nil {
		return fmt.Errorf("format and mount %s at %s: %w", device, stagingPath, err)
	}
	return nil
}

// isMountPoint reports whether path is a mount point; a missing path is not.
func (d *Driver) isMountPoint(path string) (bool, error) {
	m, err := d.node.Mounter.IsMountPoint(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return m, err
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

// stopArray stops the volume's array wherever it runs, identified by UUID
// (the recorded device number may have been reused by another array after a
// reboot).
func (d *Driver) stopArray(ctx context.Context, st *stagestate.State) error {
	a, err := d.node.Raid.FindByUUID(st.MDUUID)
	if errors.Is(err, mdraid.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := d.node.Raid.Stop(ctx, a.Device); err != nil {
		return fmt.Errorf("stop md array %s of volume %s: %w", a.Device, st.VolumeID, err)
	}
	return nil
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

// NodeGetVolumeHealth reports the mirror's health on this node: the health
// source's (the healer's) view when it has a current one, which also counts
// replicas whose controller is not live, else md's array state, degraded
// slots and members, or the connection of a single replica. A volume not
// staged here is NotFound.
func (d *Driver) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	st, err := d.state.Load(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, status.Errorf(codes.NotFound, "volume %s is not staged on this node", req.GetVolumeId())
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: d.nodeVolumeHealth(st)}, nil
}

func (d *Driver) nodeVolumeHealth(st *stagestate.State) *csi.VolumeHealth {
	h := &csi.VolumeHealth{VolumeId: st.VolumeID}
	add := func(s csi.VolumeHealthErrorType, reason, msg string) {
		h.HealthStatuses = append(h.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{Status: s, Reason: reason, Message: msg})
	}
	if st.Phase != stagestate.Staged {
		add(csi.VolumeHealthErrorType_INACCESSIBLE, reasonNotStaged, "staging did not complete")
		return h
	}
	if src := d.healthSource(); src != nil {
		if vh, ok := src.VolumeHealth(st.VolumeID); ok {
			switch {
			case vh.Inaccessible:
				add(csi.VolumeHealthErrorType_INACCESSIBLE, cmp.Or(vh.Reason, reasonArrayNotRunning), vh.Message)
			case vh.Abnormal:
				add(csi.VolumeHealthErrorType_DEGRADED, cmp.Or(vh.Reason, reasonMirrorDegraded), vh.Message)
			}
			return h
		}
	}
	if st.MDDevice == "" {
		for _, r := range st.Replicas {
			if d.hasLiveController(r.NQN) {
				return h
			}
		}
		add(csi.VolumeHealthErrorType_INACCESSIBLE, reasonReplicaOffline, "the only replica's controller is not live")
		return h
	}
	a, err := d.node.Raid.ReadArray(filepath.Base(st.MDDevice))
	if err != nil {
		add(csi.VolumeHealthErrorType_INACCESSIBLE, reasonArrayNotRunning, fmt.Sprintf("md array %s: %v", st.MDDevice, err))
		return h
	}
	if a.UUID != st.MDUUID {
		add(csi.VolumeHealthErrorType_INACCESSIBLE, reasonArrayNotRunning, fmt.Sprintf("%s now runs array %q, not %q", st.MDDevice, a.UUID, st.MDUUID))
		return h
	}
	h.HealthStatuses = append(h.HealthStatuses, arrayHealth(a)...)
	return h
}

func (d *Driver) hasLiveController(nqn string) bool {
	ctrls, err := d.node.Initiator.ControllersFor(nqn)
	if err != nil {
		return false
	}
	for _, c := range ctrls {
		if c.State.IsLive() {
			return true
		}
	}
	return false
}

// arrayHealth turns md state into health entries: inaccessible when the
// array is broken or not running, degraded when a slot lacks an in-sync
// member. Messages carry the members' states and any sync progress.
func arrayHealth(a mdraid.Array) []*csi.VolumeHealth_VolumeHealthEntry {
	var members []string
	inSync := 0
	for _, m := range a.Members {
		members = append(members, m.Device+"="+m.State.Raw)
		if m.State.InSync && !m.State.Faulty {
			inSync++
		}
	}
	msg := fmt.Sprintf("%s %s: %d of %d slots in sync [%s]", a.Name, a.ArrayState, inSync, a.RaidDisks, strings.Join(members, " "))
	if a.SyncAction != "" && a.SyncAction != "idle" {
		msg += " sync_action=" + a.SyncAction
		if a.SyncCompleted.State == "progress" && a.SyncCompleted.Total > 0 {
			msg += fmt.Sprintf(" %.1f%%", 100*float64(a.SyncCompleted.Done)/float64(a.SyncCompleted.Total))
		}
	}
	entry := func(s csi.VolumeHealthErrorType, reason string) []*csi.VolumeHealth_VolumeHealthEntry {
		return []*csi.VolumeHealth_VolumeHealthEntry{{Status: s, Reason: reason, Message: msg}}
	}
	switch a.ArrayState {
	case "broken":
		return entry(csi.VolumeHealthErrorType_INACCESSIBLE, reasonArrayBroken)
	case "inactive", "clear", "suspended":
		return entry(csi.VolumeHealthErrorType_INACCESSIBLE, reasonArrayNotRunning)
	}
	if a.IsDegraded() {
		return entry(csi.VolumeHealthErrorType_DEGRADED, reasonArrayDegraded)
	}
	return nil
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
