package driver

import (
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

// cleanupTimeout bounds rollback work after a failed NodeStage, which runs on
// a fresh context because the call's own may be what expired.
const cleanupTimeout = 60 * time.Second

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
		st = &stagestate.State{VolumeID: volID, StagingPath: stagingPath, StageStarted: time.Now()}
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
	// A replica a promotion gave up is never connected: md could take it
	// for a member (its event count may be the highest), and no node
	// should see its data again. The healer replaces it. One reserved but
	// not created yet (no NQN) has nothing to connect.
	usable := slices.DeleteFunc(slices.Clone(replicas), func(r volume.Replica) bool { return r.Diverged() || r.NQN == "" })
	if len(usable) < len(replicas) {
		klog.InfoS("Leaving out replicas given up by a promotion or not created yet", "volumeID", volID, "replicas", len(replicas)-len(usable))
	}
	devices, err := d.connectReplicas(ctx, usable, creds, vol.Authentication(), &u)
	if err != nil {
		return err
	}
	var device string
	if useMD {
		device, err = d.ensureArray(ctx, vol, mdUUID, usable, devices, &u)
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
		if err := d.mountStaging(device, stagingPath, fsType, stagingMountFlags(fsType, capability.GetMount().GetMountFlags())); err != nil {
			return err
		}
		if vol.SourceSnapshotID != "" || vol.SourceVolumeID != "" {
			// A volume restored or cloned into a larger size carries
			// its source's smaller filesystem: grow it to the device,
			// as an expansion would (a no-op when it fits already).
			if _, err := mount.NewResizeFs(d.node.Mounter.Exec).Resize(device, stagingPath); err != nil {
				return fmt.Errorf("grow the filesystem of restored volume %s on %s: %w", volID, device, err)
			}
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

// stagedReplicas are the replicas a node may hold connections to: those
// created on their storage node (a replacement or move the provisioner has
// reserved but not created yet has no NQN: nothing to connect or
// disconnect).
func stagedReplicas(rs []volume.Replica) []stagestate.Replica {
	out := make([]stagestate.Replica, 0, len(rs))
	for _, r := range rs {
		if r.NQN == "" {
			continue
		}
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

// stagingMountFlags are the options NodeStage mounts a filesystem with: the
// capability's mount flags, and for XFS "nouuid". A volume restored from a
// snapshot or cloned carries its source's filesystem UUID, and XFS refuses
// to mount a filesystem whose UUID is already mounted ("Filesystem has
// duplicate UUID"), so without it a restore or clone could not be staged
// on the node where its source is (Kubernetes' multiVolume suite does just
// that). The check guards against mounting one filesystem twice through
// two paths to it; each nvmirror volume is an array of its own, so a
// duplicate UUID here is always a copy, the case nouuid exists for (as for
// LVM snapshots).
func stagingMountFlags(fsType string, flags []string) []string {
	if fsType != storageclass.FSXFS || slices.Contains(flags, xfsNoUUID) {
		return flags
	}
	return append(slices.Clone(flags), xfsNoUUID)
}

// xfsNoUUID is XFS's mount option that skips the duplicate UUID check.
const xfsNoUUID = "nouuid"

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
