//go:build vmguest

package kernel

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// repairedBytes reads the bytes an offline repair wrote, from its
// SynchEnded event's message.
var repairedBytes = regexp.MustCompile(`(\d+) bytes written`)

// unstage lets go of a volume on the node: NodeUnpublish, NodeUnstage
// (the volume stays published to the node's host).
func unstage(t *testing.T, c csiClients, vol csiVolume) {
	t.Helper()
	nodeCall(t, "NodeUnpublishVolume", func() error {
		_, err := c.node.NodeUnpublishVolume(ctxTimeout(t, time.Minute), &csi.NodeUnpublishVolumeRequest{VolumeId: vol.id, TargetPath: vol.target})
		return err
	})
	nodeCall(t, "NodeUnstageVolume", func() error {
		_, err := c.node.NodeUnstageVolume(ctxTimeout(t, 2*time.Minute), &csi.NodeUnstageVolumeRequest{VolumeId: vol.id, StagingTargetPath: vol.staging})
		return err
	})
}

// waitOutOfSync waits until the registry records the replica out of sync.
func waitOutOfSync(t *testing.T, p *provisionerclient.Client, volumeID, replicaID string) {
	t.Helper()
	waitFor(t, time.Minute, "replica "+replicaID+" recorded out of sync", func() (bool, string) {
		for _, r := range mustVolume(t, p, volumeID).Replicas {
			if r.ID == replicaID && !r.InSync() {
				return true, ""
			}
		}
		return false, "in sync"
	})
}

// release lets go of a volume the way Kubernetes does when its pod goes
// away: NodeUnpublish, NodeUnstage, ControllerUnpublish. Afterwards no host
// may reach its replicas, and offline repair is the provisioner's.
func release(t *testing.T, c csiClients, vol csiVolume) {
	t.Helper()
	info, err := c.node.NodeGetInfo(ctxTimeout(t, 10*time.Second), &csi.NodeGetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	unstage(t, c, vol)
	nodeCall(t, "ControllerUnpublishVolume", func() error {
		_, err := c.ctrl.ControllerUnpublishVolume(ctxTimeout(t, time.Minute), &csi.ControllerUnpublishVolumeRequest{VolumeId: vol.id, NodeId: info.GetNodeId()})
		return err
	})
}

// attach publishes, stages and mounts the volume again, retrying what
// kubelet and the attacher retry.
func attach(t *testing.T, c csiClients, vol csiVolume) {
	t.Helper()
	info, err := c.node.NodeGetInfo(ctxTimeout(t, 10*time.Second), &csi.NodeGetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var pubCtx map[string]string
	nodeCall(t, "ControllerPublishVolume", func() error {
		pub, err := c.ctrl.ControllerPublishVolume(ctxTimeout(t, time.Minute), &csi.ControllerPublishVolumeRequest{VolumeId: vol.id, NodeId: info.GetNodeId(), VolumeCapability: mountRW})
		pubCtx = pub.GetPublishContext()
		return err
	})
	nodeCall(t, "NodeStageVolume", func() error {
		_, err := c.node.NodeStageVolume(ctxTimeout(t, 2*time.Minute), &csi.NodeStageVolumeRequest{VolumeId: vol.id, StagingTargetPath: vol.staging,
			VolumeCapability: mountRW, PublishContext: pubCtx})
		return err
	})
	nodeCall(t, "NodePublishVolume", func() error {
		_, err := c.node.NodePublishVolume(ctxTimeout(t, time.Minute), &csi.NodePublishVolumeRequest{VolumeId: vol.id, StagingTargetPath: vol.staging,
			TargetPath: vol.target, VolumeCapability: mountRW})
		return err
	})
}

// waitOfflineRepair waits for the volume's offline repair to end with every
// active replica in sync, with no host involved: nothing of the volume is
// assembled or connected as this node's host meanwhile. It returns the
// SynchEnded event.
func waitOfflineRepair(t *testing.T, p *provisionerclient.Client, md *mdraid.Manager, ini *host.Initiator, v *volume.Volume, after time.Time) events.Event {
	t.Helper()
	ended := waitEvent(t, p, v.ID, events.SynchEnded, 4*time.Minute, after)
	waitFor(t, time.Minute, "every active replica recorded in sync", func() (bool, string) {
		cur := mustVolume(t, p, v.ID)
		for _, r := range cur.ActiveReplicas() {
			if !r.InSync() {
				return false, r.ID + " out of sync"
			}
		}
		return true, ""
	})
	// The repair stops its array and disconnects before it reports.
	if a, err := md.FindByUUID(v.MDUUID); err == nil {
		t.Errorf("an md array of the volume still runs after the offline repair: %s", describe(a))
	}
	for _, r := range mustVolume(t, p, v.ID).ActiveReplicas() {
		ctrls, _ := ini.ControllersFor(r.NQN)
		if len(ctrls) != 0 {
			t.Errorf("replica %s still has %d controller(s) after the offline repair: %+v", r.ID, len(ctrls), ctrls)
		}
	}
	return ended
}

func bytesOf(t *testing.T, e events.Event) uint64 {
	t.Helper()
	m := repairedBytes.FindStringSubmatch(e.Message)
	if m == nil {
		t.Fatalf("SynchEnded event without the bytes written: %q", e.Message)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// testOfflineRepair: volumes no host has staged are repaired by a storage
// node, with md, and a host that stages one afterwards (or in the middle)
// finds every acknowledged write.
func testOfflineRepair(t *testing.T, s *stack, top *testing.T, c csiClients, p *provisionerclient.Client, md *mdraid.Manager, tgt *nvmet.Target, ini *host.Initiator) {
	const size = 128 << 20
	t.Run("a returning replica is re-added from the bitmap with no host", func(t *testing.T) {
		// The figure docs/healer.md gives: 1 GiB, 64 MiB written while a
		// replica was away.
		const size, away = 1 << 30, 64
		vol := provisionVolume(t, c, "offline-readd", size, map[string]string{"numReplicas": "2", "maxReplicaDownTime": "600"})
		before := writeFiles(t, vol.target, "before", 4, 1<<20)
		v := mustVolume(t, p, vol.id)
		b := v.ActiveReplicas()[1]
		nodeB := agentNamed(t, s, b.StorageNode)
		if err := tgt.UnlinkSubsystem(nodeB.portID, b.NQN); err != nil {
			t.Fatal(err)
		}
		during := writeFiles(t, vol.target, "during", away, 1<<20)
		waitOutOfSync(t, p, vol.id, b.ID)
		release(t, c, vol)
		backAt := time.Now()
		if err := tgt.LinkSubsystem(nodeB.portID, b.NQN); err != nil {
			t.Fatal(err)
		}
		ended := waitOfflineRepair(t, p, md, ini, v, backAt)
		written := bytesOf(t, ended)
		t.Logf("OFFLINE RE-ADD: %v after B came back; %.1f MiB written to B for %d MiB written while it was away (volume %d MiB)",
			ended.Time.Sub(backAt).Round(time.Millisecond), float64(written)/(1<<20), away, size>>20)
		if written == 0 || written > size/2 {
			t.Errorf("the offline re-add wrote %d bytes to B: want a bitmap resync, some but well under half of %d", written, size)
		}
		attach(t, c, vol)
		arr := mdOf(t, md, v)
		if arr.Degraded != 0 || len(arr.Members) != 2 {
			t.Errorf("staged after the offline repair: %s", describe(arr))
		}
		checkMirrors(t, md, arr.Name)
		dropCaches(t)
		verifyFiles(t, mergeSums(before, during))
	})

	t.Run("a storage node lost with no host: replaced and filled offline, then staged", func(t *testing.T) {
		vol := provisionVolume(t, c, "offline-replace", size, map[string]string{"numReplicas": "2", "maxReplicaDownTime": "5"})
		data := writeFiles(t, vol.target, "data", 16, 1<<20)
		v := mustVolume(t, p, vol.id)
		a, lost := v.ActiveReplicas()[0], v.ActiveReplicas()[1]
		var spare string
		for _, ag := range s.agents {
			if ag.name != a.StorageNode && ag.name != lost.StorageNode {
				spare = ag.name
			}
		}
		release(t, c, vol)
		lostNode := agentNamed(t, s, lost.StorageNode)
		lostAt := time.Now()
		if err := lostNode.stop(t, syscall.SIGKILL); err != nil {
			t.Logf("agent %s: %v", lostNode.name, err)
		}
		defer func() {
			lostNode.start(top)
			lostNode.waitReady(t, lostNode.client(top, agentToken))
		}()
		if err := tgt.UnlinkSubsystem(lostNode.portID, lost.NQN); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, p, vol.id, events.VolumeDegraded, time.Minute, lostAt.Add(-time.Second))
		ended := waitOfflineRepair(t, p, md, ini, v, lostAt)
		cur := mustVolume(t, p, vol.id)
		var repl volume.Replica
		for _, r := range cur.ActiveReplicas() {
			if r.ID != a.ID {
				repl = r
			}
		}
		if repl.ID == "" || repl.ID == lost.ID || repl.StorageNode != spare {
			t.Fatalf("after the offline repair the active replicas are %+v; want %s and a replacement on %s", cur.ActiveReplicas(), a.ID, spare)
		}
		written := bytesOf(t, ended)
		t.Logf("OFFLINE REPLACE: %s on %s replaced by %s on %s and filled %v after the node was lost (maxReplicaDownTime 5 s); %.1f MiB written for %d MiB of data (volume %d MiB: md recovers a new member in full)",
			lost.ID, lost.StorageNode, repl.ID, repl.StorageNode, ended.Time.Sub(lostAt).Round(time.Millisecond), float64(written)/(1<<20), 16, size>>20)
		if written < size/2 {
			t.Errorf("the replacement received %d bytes; a full recovery writes the whole member (%d)", written, size)
		}
		// The pass after the repair finds the volume whole.
		waitEvent(t, p, vol.id, events.VolumeHealed, time.Minute, lostAt)
		attach(t, c, vol)
		arr := mdOf(t, md, cur)
		if arr.Degraded != 0 || len(arr.Members) != 2 {
			t.Errorf("staged after the offline replacement: %s", describe(arr))
		}
		checkMirrors(t, md, arr.Name)
		dropCaches(t)
		verifyFiles(t, data)
	})

	t.Run("a host staging mid-repair takes the repair over", func(t *testing.T) {
		// 1 MiB/s: the offline re-add of 24 MiB runs long enough to be
		// caught in the middle.
		vol := provisionVolume(t, c, "offline-takeover", size, map[string]string{"numReplicas": "2", "maxReplicaDownTime": "600", "rebuildBandwidthLimit": "1"})
		before := writeFiles(t, vol.target, "before", 4, 1<<20)
		v := mustVolume(t, p, vol.id)
		b := v.ActiveReplicas()[1]
		nodeB := agentNamed(t, s, b.StorageNode)
		if err := tgt.UnlinkSubsystem(nodeB.portID, b.NQN); err != nil {
			t.Fatal(err)
		}
		during := writeFiles(t, vol.target, "during", 24, 1<<20)
		waitOutOfSync(t, p, vol.id, b.ID)
		release(t, c, vol)
		backAt := time.Now()
		if err := tgt.LinkSubsystem(nodeB.portID, b.NQN); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, p, vol.id, events.SynchStarted, 2*time.Minute, backAt)
		waitFor(t, time.Minute, "the offline repair's array to be recovering", func() (bool, string) {
			a, err := md.FindByUUID(v.MDUUID)
			if err != nil {
				return false, err.Error()
			}
			return a.SyncAction == "recover" && a.SyncCompleted.Done > 0, describe(a)
		})
		takeAt := time.Now()
		attach(t, c, vol)
		t.Logf("TAKEOVER: staged %v after asking, mid-repair", time.Since(takeAt).Round(time.Millisecond))
		if ended := eventsOf(t, p, vol.id, events.SynchEnded); len(ended) > 0 && ended[len(ended)-1].Time.After(backAt) && ended[len(ended)-1].Node == "" {
			t.Errorf("the offline repair reported an end although the host took it over: %+v", ended[len(ended)-1])
		}
		// One array of the volume, the host's: the repair's was stopped
		// before the host was allowed.
		arrays, err := md.ListArrays()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, a := range arrays {
			if a.UUID == v.MDUUID {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d md arrays of the volume run after the takeover, want the host's only", n)
		}
		verifyFiles(t, mergeSums(before, during))
		// The limit has done its job (the repair was caught midway); lifted,
		// the host's healer finishes B and md's check runs at full speed.
		if _, err := c.ctrl.ControllerModifyVolume(ctxTimeout(t, time.Minute), &csi.ControllerModifyVolumeRequest{VolumeId: vol.id,
			MutableParameters: map[string]string{"rebuildBandwidthLimit": "0"}}); err != nil {
			t.Fatalf("lift the limit: %v", err)
		}
		waitFor(t, 4*time.Minute, "the host's healer to finish B and record it in sync", func() (bool, string) {
			cur := mustVolume(t, p, vol.id)
			arr := mdOf(t, md, cur)
			for _, r := range cur.ActiveReplicas() {
				if !r.InSync() {
					return false, fmt.Sprintf("%s out of sync; %s", r.ID, describe(arr))
				}
			}
			return arr.Degraded == 0 && arr.SyncAction == "idle", describe(arr)
		})
		arr := mdOf(t, md, v)
		checkMirrors(t, md, filepath.Base(arr.Device))
		dropCaches(t)
		verifyFiles(t, mergeSums(before, during))
	})
}
