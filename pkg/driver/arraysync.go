package driver

import (
	"context"
	"fmt"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// Which replicas hold the volume's newest data. NodeStage never starts an
// array from replicas the registry records out of sync (volume.CheckStartable),
// and before the volume is mounted, before any write can reach it, it records
// in the registry every active replica the array runs without: from then on
// such a replica misses writes, and no node may start the volume from it
// alone. The healer records the failures md makes later, and the returns.

// adoptRunning takes over an array already running (a previous stage's, or
// one udev assembled from whichever members it saw) under the same rule as
// one this call starts: it must hold an in-sync replica, and the replicas it
// runs without are recorded before the volume takes writes.
func (d *Driver) adoptRunning(ctx context.Context, vol *volume.Volume, a mdraid.Array, replicas []volume.Replica, devices map[string]host.Device) (string, error) {
	if err := vol.CheckStartable(inSyncReplicaIDs(a, replicas, devices)); err != nil {
		return "", err
	}
	if err := d.recordMissingReplicas(ctx, vol, a, devices); err != nil {
		return "", err
	}
	return a.Device, nil
}

// inSyncReplicaIDs returns the replicas whose device md holds as an in-sync
// member of arr.
func inSyncReplicaIDs(arr mdraid.Array, replicas []volume.Replica, devices map[string]host.Device) []string {
	inSync := map[string]bool{}
	for _, m := range arr.Members {
		if m.State.InSync && !m.State.Faulty {
			inSync[m.Device] = true
		}
	}
	var ids []string
	for _, r := range replicas {
		if dev, ok := devices[r.ID]; ok && inSync[dev.Name] {
			ids = append(ids, r.ID)
		}
	}
	return ids
}

// recordMissingReplicas records out of sync, durably at the provisioner, each
// active replica recorded in sync that the running array arr does not hold
// as an in-sync member. It fails (Unavailable) if the provisioner cannot
// record it: the volume must not take writes the registry would not know
// the replica misses.
func (d *Driver) recordMissingReplicas(ctx context.Context, vol *volume.Volume, arr mdraid.Array, devices map[string]host.Device) error {
	held := map[string]bool{}
	for _, id := range inSyncReplicaIDs(arr, vol.ActiveReplicas(), devices) {
		held[id] = true
	}
	now := time.Now()
	for _, r := range vol.ActiveReplicas() {
		if held[r.ID] || !r.InSync() {
			continue
		}
		if _, err := d.prov.ReportReplicaSync(ctx, vol.ID, r.ID, false, now, 0, d.nodeID); err != nil {
			return fmt.Errorf("volume %s: record replica %s out of sync before the volume takes writes without it: %w", vol.ID, r.ID, err)
		}
		klog.InfoS("Recorded replica out of sync: the array runs without it", "volumeID", vol.ID, "replica", r.ID, "storageNode", r.StorageNode, "array", arr.Device)
	}
	return nil
}

// StagedInSyncReplicas returns the replicas of a volume staged on this
// node that md holds as in-sync members of arr, by the rule NodeStage uses
// (inSyncReplicaIDs): each replica subsystem of the staging record is
// resolved to its namespace device, and a replica counts when md holds
// that device in sync and not faulty. A replica whose device cannot be
// found (its controller gone) is left out: md cannot hold it in sync.
// The freeze of a snapshot reports this, read while the array's writes
// are held.
func (d *Driver) StagedInSyncReplicas(v stagestate.Volume, arr mdraid.Array) []string {
	replicas := make([]volume.Replica, 0, len(v.Replicas))
	devices := map[string]host.Device{}
	for _, r := range v.Replicas {
		dev, err := d.node.Initiator.FindDevice(r.NQN, r.NamespaceUUID)
		if err != nil {
			klog.V(4).InfoS("Replica has no device: not an in-sync member", "volumeID", v.VolumeID, "replica", r.ID, "nqn", r.NQN, "err", err)
			continue
		}
		replicas = append(replicas, volume.Replica{ID: r.ID})
		devices[r.ID] = dev
	}
	return inSyncReplicaIDs(arr, replicas, devices)
}
