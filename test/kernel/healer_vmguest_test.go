//go:build vmguest

package kernel

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	utilexec "k8s.io/utils/exec"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// csiVolume is a volume created, published, staged and published to a
// target path through the CSI API, as kubelet and the sidecars would.
type csiVolume struct {
	id, staging, target string
}

// csiClients are the driver's CSI services on its socket.
type csiClients struct {
	ctrl csi.ControllerClient
	node csi.NodeClient
}

func dialCSI(t *testing.T, socket string) csiClients {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return csiClients{ctrl: csi.NewControllerClient(conn), node: csi.NewNodeClient(conn)}
}

func dialProvisioner(t *testing.T, s *stack) *provisionerclient.Client {
	t.Helper()
	conn, err := rpcauth.Dial(s.provAddr, rpcauth.ClientConfig{
		CAFile: filepath.Join(s.tlsDir, "ca.crt"), TokenFile: filepath.Join(s.tlsDir, "token"),
		// The test's own calls: the controller's, an administrator's, and
		// the node plugin's (the stack's node).
		CertFile: filepath.Join(s.tlsDir, "test-client.crt"), KeyFile: filepath.Join(s.tlsDir, "test-client.key"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return provisionerclient.New(conn)
}

var mountRW = &csi.VolumeCapability{
	AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
	AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
}

// provisionVolume goes through CreateVolume, ControllerPublish, NodeStage
// and NodePublish, and undoes them at cleanup.
func provisionVolume(t *testing.T, c csiClients, name string, size int64, params map[string]string) csiVolume {
	t.Helper()
	return provisionWith(t, c, name, size, params, mountRW, nil)
}

// provisionWith is provisionVolume for a capability (mount or block) and
// an optional content source (a snapshot or a volume). A block volume's
// target is the device file NodePublish makes.
func provisionWith(t *testing.T, c csiClients, name string, size int64, params map[string]string, capability *csi.VolumeCapability, source *csi.VolumeContentSource) csiVolume {
	t.Helper()
	ctx := ctxTimeout(t, 3*time.Minute)
	info, err := c.node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cv, err := c.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{capability}, Parameters: params, VolumeContentSource: source,
	})
	if err != nil {
		t.Fatalf("CreateVolume %s: %v", name, err)
	}
	v := csiVolume{id: cv.GetVolume().GetVolumeId(),
		staging: filepath.Join("/run/nvmirror-test/kubelet", name, "staging"),
		target:  filepath.Join("/run/nvmirror-test/kubelet", name, "target")}
	pub, err := c.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{
		VolumeId: v.id, NodeId: info.GetNodeId(), VolumeCapability: capability,
	})
	if err != nil {
		t.Fatalf("ControllerPublishVolume: %v", err)
	}
	if err := os.MkdirAll(v.staging, 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := c.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
		VolumeId: v.id, StagingTargetPath: v.staging, VolumeCapability: capability,
		PublishContext: pub.GetPublishContext(), VolumeContext: cv.GetVolume().GetVolumeContext(),
	}); err != nil {
		t.Fatalf("NodeStageVolume: %v", err)
	}
	if _, err := c.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId: v.id, StagingTargetPath: v.staging, TargetPath: v.target, VolumeCapability: capability,
		PublishContext: pub.GetPublishContext(), VolumeContext: cv.GetVolume().GetVolumeContext(),
	}); err != nil {
		t.Fatalf("NodePublishVolume: %v", err)
	}
	t.Cleanup(func() {
		ctx := ctxTimeout(t, 3*time.Minute)
		steps := []func() error{
			func() error {
				_, err := c.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: v.target})
				return err
			},
			func() error {
				_, err := c.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging})
				return err
			},
			func() error {
				_, err := c.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: v.id, NodeId: info.GetNodeId()})
				return err
			},
			func() error {
				_, err := c.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.id})
				return err
			},
		}
		for i, step := range steps {
			// Like kubelet and the sidecars, retry Aborted: the healer holds
			// a volume's lock while it acts on it.
			var err error
			waitFor(t, 2*time.Minute, fmt.Sprintf("cleanup step %d of %s", i, v.id), func() (bool, string) {
				err = step()
				return status.Code(err) != codes.Aborted, fmt.Sprint(err)
			})
			if err != nil {
				t.Errorf("cleanup step %d of %s: %v", i, v.id, err)
				return
			}
		}
	})
	return v
}

// eventsOf returns the volume's events of the given types, oldest first.
func eventsOf(t *testing.T, p *provisionerclient.Client, volumeID string, typ events.Type) []events.Event {
	t.Helper()
	evs, err := p.ListEvents(ctxTimeout(t, 10*time.Second), events.Filter{Volume: volumeID, Types: []events.Type{typ}})
	if err != nil {
		t.Fatalf("ListEvents: %v", err)
	}
	return evs
}

func waitEvent(t *testing.T, p *provisionerclient.Client, volumeID string, typ events.Type, timeout time.Duration, after time.Time) events.Event {
	t.Helper()
	var found events.Event
	waitFor(t, timeout, fmt.Sprintf("a %s event for %s", typ, volumeID), func() (bool, string) {
		evs, err := p.ListEvents(ctxTimeout(t, 10*time.Second), events.Filter{Volume: volumeID, Types: []events.Type{typ}, Since: after})
		if err != nil {
			return false, err.Error()
		}
		if len(evs) == 0 {
			return false, "none yet"
		}
		found = evs[0]
		return true, ""
	})
	return found
}

func replicaOn(t *testing.T, v *volume.Volume, storageNode string) volume.Replica {
	t.Helper()
	for _, r := range v.Replicas {
		if r.StorageNode == storageNode && r.State == "active" {
			return r
		}
	}
	t.Fatalf("volume %s has no active replica on %s: %+v", v.ID, storageNode, v.Replicas)
	return volume.Replica{}
}

func agentNamed(t *testing.T, s *stack, name string) *agentProc {
	t.Helper()
	for _, a := range s.agents {
		if a.name == name {
			return a
		}
	}
	t.Fatalf("no agent %s", name)
	return nil
}

// mdOf finds the volume's running md array by its UUID.
func mdOf(t *testing.T, md *mdraid.Manager, v *volume.Volume) mdraid.Array {
	t.Helper()
	a, err := md.FindByUUID(v.MDUUID)
	if err != nil {
		t.Fatalf("md array of %s (uuid %s): %v", v.ID, v.MDUUID, err)
	}
	return a
}

// TestHealer injects storage node faults under a staged, published,
// written volume and checks what the node's healer does about them, with
// the real binaries on the real kernel. One stack serves every scenario;
// maxReplicaDownTime is counted in seconds here (--heal-time-unit=1s).
func TestHealer(t *testing.T) {
	s := startStackWith(t, stackOptions{
		csiArgs: []string{"--heal-time-unit=1s", "--heal-interval=5s"},
		// Offline repair checks often, with a lease that survives a slow
		// pass under emulation.
		provArgs: []string{"--heal-time-unit=1s", "--repair-interval=2s", "--repair-lease=30s", "--drain-interval=2s"},
		// Room for a thin 1 GiB volume (offline repair's figure) and for
		// the 20 volumes of 2 replicas the scale subtest stages at once
		// (each replica of a 16 MiB volume takes 20 MiB); tmpfs takes
		// memory only for what is written.
		poolSize: 1280 << 20,
	})
	top := t // daemons restarted by a subtest live as long as the stack
	c := dialCSI(t, s.csiSocket)
	p := dialProvisioner(t, s)
	md := mdraid.NewManager(utilexec.New(), "")
	tgt := nvmet.NewTarget("")
	ini := host.NewInitiator("")

	t.Run("replica back after an outage is re-added from the bitmap", func(t *testing.T) {
		// Ten minutes of allowed downtime: this outage must heal by re-add.
		vol := provisionVolume(t, c, "heal-readd", 128<<20, map[string]string{"numReplicas": "3", "maxReplicaDownTime": "600"})
		before := writeFiles(t, vol.target, "before", 8, 1<<20)
		v, err := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id)
		if err != nil {
			t.Fatal(err)
		}
		cutNode := agentNamed(t, s, "sn2")
		cut := replicaOn(t, v, "sn2")
		arr := mdOf(t, md, v)

		faultAt := time.Now()
		if err := tgt.UnlinkSubsystem(cutNode.portID, cut.NQN); err != nil {
			t.Fatal(err)
		}
		during := writeFiles(t, vol.target, "during", 8, 1<<20)
		degraded := waitEvent(t, p, vol.id, events.VolumeDegraded, 60*time.Second, faultAt.Add(-time.Second))
		t.Logf("DETECTION: Degraded event %v after the cut (event time %v); names replica %s %v",
			time.Since(faultAt).Round(time.Millisecond), degraded.Time.Sub(faultAt).Round(time.Millisecond), degraded.Replica, degraded.Replicas)
		named := 0
		for _, id := range degraded.Replicas {
			if id == cut.ID {
				named++
			}
		}
		if degraded.Replica != cut.ID && named != 1 {
			t.Errorf("Degraded event %+v does not name the cut replica %s once", degraded, cut.ID)
		}

		// Sectors written to the replica's device so far: what the resync
		// adds to it is the bitmap-driven copy.
		nsUUID := cut.NamespaceUUID
		if nsUUID == "" {
			nsUUID = nvmeof.NamespaceUUID(cut.ID)
		}
		dev, err := ini.FindDevice(cut.NQN, nsUUID)
		if err != nil {
			t.Fatalf("device of the cut replica: %v", err)
		}
		writtenBefore := writeSectors(t, dev.Name)

		restoreAt := time.Now()
		if err := tgt.LinkSubsystem(cutNode.portID, cut.NQN); err != nil {
			t.Fatal(err)
		}
		healed := waitEvent(t, p, vol.id, events.VolumeHealed, 2*time.Minute, restoreAt)
		devAfter, err := ini.FindDevice(cut.NQN, nsUUID)
		if err != nil {
			t.Fatalf("device of the returned replica: %v", err)
		}
		resynced := writeSectors(t, devAfter.Name)
		if devAfter.Name == dev.Name {
			resynced -= writtenBefore
		}
		volSectors := uint64(128<<20) / 512
		t.Logf("RESYNC: the returning replica received %.1f MiB for a %d MiB volume (%.1f%%)", float64(resynced)/2048, 128, 100*float64(resynced)/float64(volSectors))
		if resynced == 0 || resynced > volSectors/2 {
			t.Errorf("resync wrote %d sectors to the returning replica: want a bitmap resync, some but well under half of %d", resynced, volSectors)
		}
		t.Logf("HEAL: Healed event %v after the replica's port came back", healed.Time.Sub(restoreAt).Round(time.Millisecond))
		// md marks the member in sync a moment before its sync_action
		// returns to idle: a cycle in between reports the volume healed
		// and the sync ended at the next one.
		for _, typ := range []events.Type{events.SynchStarted, events.SynchEnded} {
			deadline := time.Now().Add(30 * time.Second)
			for len(eventsOf(t, p, vol.id, typ)) == 0 && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if len(eventsOf(t, p, vol.id, typ)) == 0 {
				t.Errorf("no %s event within 30 s of the Healed event", typ)
			}
		}
		// Edges, not levels: one Disconnected and one Reconnected for the
		// one outage of sn2, however many cycles saw it down.
		for _, typ := range []events.Type{events.HostDisconnected, events.HostReconnected} {
			var onNode []events.Event
			for _, e := range eventsOf(t, p, "", typ) {
				if strings.Contains(e.StorageNode, "sn2") && !e.Time.Before(faultAt.Add(-time.Second)) {
					onNode = append(onNode, e)
				}
			}
			if len(onNode) != 1 {
				t.Errorf("%d %s events for sn2 after the cut, want 1: %+v", len(onNode), typ, onNode)
			}
		}
		arr = mdOf(t, md, v)
		if arr.Degraded != 0 || len(arr.Members) != 3 {
			t.Errorf("after healing: %s", describe(arr))
		}
		checkMirrors(t, md, arr.Name)
		dropCaches(t)
		verifyFiles(t, mergeSums(before, during))
		if v2, _ := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id); v2 != nil && len(v2.Replicas) != 3 {
			t.Errorf("a re-add changed the configuration: %+v", v2.Replicas)
		}
	})

	t.Run("replica away past maxReplicaDownTime is replaced on another node", func(t *testing.T) {
		vol := provisionVolume(t, c, "heal-replace", 64<<20, map[string]string{"numReplicas": "2", "maxReplicaDownTime": "15"})
		before := writeFiles(t, vol.target, "before", 4, 1<<20)
		v, err := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id)
		if err != nil {
			t.Fatal(err)
		}
		lost := v.Replicas[1]
		lostNode := agentNamed(t, s, lost.StorageNode)
		var spare string
		for _, a := range s.agents {
			if a.name != v.Replicas[0].StorageNode && a.name != lost.StorageNode {
				spare = a.name
			}
		}
		faultAt := time.Now()
		if err := tgt.UnlinkSubsystem(lostNode.portID, lost.NQN); err != nil {
			t.Fatal(err)
		}
		during := writeFiles(t, vol.target, "during", 4, 1<<20)
		waitEvent(t, p, vol.id, events.VolumeDegraded, 60*time.Second, faultAt.Add(-time.Second))

		var repl volume.Replica
		waitFor(t, 2*time.Minute, "a replacement replica in the configuration", func() (bool, string) {
			cur, err := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id)
			if err != nil {
				return false, err.Error()
			}
			for _, r := range cur.Replicas {
				if r.ID != lost.ID && r.ID != v.Replicas[0].ID && r.State == "active" {
					repl = r
					return true, ""
				}
			}
			return false, fmt.Sprintf("%+v", cur.Replicas)
		})
		t.Logf("REPLACE: replica %s on %s replaced by %s on %s, %v after the cut (maxReplicaDownTime 15 s)",
			lost.ID, lost.StorageNode, repl.ID, repl.StorageNode, time.Since(faultAt).Round(time.Millisecond))
		if repl.StorageNode != spare {
			t.Errorf("replacement on %s, want the node that held no replica: %s", repl.StorageNode, spare)
		}
		healed := waitEvent(t, p, vol.id, events.VolumeHealed, 3*time.Minute, faultAt)
		t.Logf("REPLACE: healed %v after the cut", healed.Time.Sub(faultAt).Round(time.Millisecond))

		cur, err := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range cur.Replicas {
			if r.ID == lost.ID && r.State == "active" {
				t.Errorf("the lost replica is still active in the configuration: %+v", r)
			}
		}
		arr := mdOf(t, md, cur)
		if arr.Degraded != 0 {
			t.Errorf("after replacement: %s", describe(arr))
		}

		// The old node comes back: its replica must not rejoin the array.
		if err := tgt.LinkSubsystem(lostNode.portID, lost.NQN); err != nil && !strings.Contains(err.Error(), "not found") {
			t.Logf("relink old replica: %v (it may be deleted already)", err)
		}
		waitFor(t, time.Minute, "the old replica to stay out of md and be disconnected", func() (bool, string) {
			a := mdOf(t, md, cur)
			ctrls, _ := ini.ControllersFor(lost.NQN)
			return len(a.Members) == 2 && a.Degraded == 0 && len(ctrls) == 0, fmt.Sprintf("%s; controllers of old replica %d", describe(a), len(ctrls))
		})
		checkMirrors(t, md, arr.Name)
		dropCaches(t)
		verifyFiles(t, mergeSums(before, during))
	})

	t.Run("replica deleted while its node is away is removed from md", func(t *testing.T) {
		vol := provisionVolume(t, c, "heal-delete", 64<<20, map[string]string{"numReplicas": "3", "maxReplicaDownTime": "600"})
		before := writeFiles(t, vol.target, "before", 4, 1<<20)
		v, err := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id)
		if err != nil {
			t.Fatal(err)
		}
		gone := replicaOn(t, v, "sn3")
		a3 := agentNamed(t, s, "sn3")
		faultAt := time.Now()
		if err := tgt.UnlinkSubsystem(a3.portID, gone.NQN); err != nil {
			t.Fatal(err)
		}
		during := writeFiles(t, vol.target, "during", 4, 1<<20)
		waitEvent(t, p, vol.id, events.VolumeDegraded, time.Minute, faultAt.Add(-time.Second))
		if _, err := p.DeleteReplica(ctxTimeout(t, 30*time.Second), vol.id, gone.ID); err != nil {
			t.Fatalf("DeleteReplica: %v", err)
		}
		deletedAt := time.Now()
		waitFor(t, time.Minute, "the deleted replica out of md, disconnected and marked removed", func() (bool, string) {
			cur, err := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id)
			if err != nil {
				return false, err.Error()
			}
			var state volume.ReplicaState
			for _, r := range cur.Replicas {
				if r.ID == gone.ID {
					state = r.State
				}
			}
			a := mdOf(t, md, cur)
			ctrls, _ := ini.ControllersFor(gone.NQN)
			return state == "removed" && len(a.Members) == 2 && len(ctrls) == 0,
				fmt.Sprintf("replica %s; %s; %d controllers", state, describe(a), len(ctrls))
		})
		t.Logf("DELETE: replica removed from md and marked removed %v after DeleteReplica", time.Since(deletedAt).Round(time.Millisecond))
		arr := mdOf(t, md, v)
		// The volume now has two replicas by configuration: md agrees.
		if arr.RaidDisks != 2 || arr.Degraded != 0 {
			t.Errorf("after the deletion md shows %d slots, %d degraded: %s", arr.RaidDisks, arr.Degraded, describe(arr))
		}
		checkMirrors(t, md, arr.Name)
		dropCaches(t)
		verifyFiles(t, mergeSums(before, during))
	})

	t.Run("two storage nodes lost at once", func(t *testing.T) {
		vol := provisionVolume(t, c, "heal-double", 64<<20, map[string]string{"numReplicas": "3", "maxReplicaDownTime": "600"})
		before := writeFiles(t, vol.target, "before", 4, 1<<20)
		v, err := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id)
		if err != nil {
			t.Fatal(err)
		}
		r1, r3 := replicaOn(t, v, "sn1"), replicaOn(t, v, "sn3")
		a1, a3 := agentNamed(t, s, "sn1"), agentNamed(t, s, "sn3")
		faultAt := time.Now()
		if err := tgt.UnlinkSubsystem(a1.portID, r1.NQN); err != nil {
			t.Fatal(err)
		}
		if err := tgt.UnlinkSubsystem(a3.portID, r3.NQN); err != nil {
			t.Fatal(err)
		}
		during := writeFiles(t, vol.target, "during", 4, 1<<20)
		// Wait until the healer has reported both missing, then look at
		// every Degraded event of the fault.
		var degradedEvents []events.Event
		waitFor(t, time.Minute, "Degraded events naming both lost replicas", func() (bool, string) {
			degradedEvents = nil
			named := map[string]bool{}
			for _, e := range eventsOf(t, p, vol.id, events.VolumeDegraded) {
				if e.Time.Before(faultAt.Add(-time.Second)) {
					continue
				}
				degradedEvents = append(degradedEvents, e)
				for _, id := range append([]string{e.Replica}, e.Replicas...) {
					named[id] = true
				}
			}
			return named[r1.ID] && named[r3.ID], fmt.Sprintf("%d events naming %v", len(degradedEvents), named)
		})
		last := degradedEvents[len(degradedEvents)-1]
		t.Logf("DOUBLE FAULT: %d Degraded event(s); the last names %s %v", len(degradedEvents), last.Replica, last.Replicas)
		// Both legs go in the same instant; the healer names every missing
		// replica, in one event when it sees both in one cycle and in a
		// second, complete one if the second loss shows a cycle later.
		if len(degradedEvents) > 2 || !(slicesContains(last.Replicas, r1.ID) && slicesContains(last.Replicas, r3.ID)) {
			t.Errorf("Degraded events %+v: want at most two, the last naming %s and %s", degradedEvents, r1.ID, r3.ID)
		}
		restoreAt := time.Now()
		if err := tgt.LinkSubsystem(a1.portID, r1.NQN); err != nil {
			t.Fatal(err)
		}
		if err := tgt.LinkSubsystem(a3.portID, r3.NQN); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, p, vol.id, events.VolumeHealed, 2*time.Minute, restoreAt)
		arr := mdOf(t, md, v)
		if arr.Degraded != 0 || len(arr.Members) != 3 {
			t.Errorf("after healing: %s", describe(arr))
		}
		checkMirrors(t, md, arr.Name)
		dropCaches(t)
		verifyFiles(t, mergeSums(before, during))
	})

	t.Run("a flapping target gives one event pair per flap and no replacement", func(t *testing.T) {
		// 15 s of allowed downtime and three flaps of a few seconds within
		// a minute: the down clock restarts each time the replica serves.
		vol := provisionVolume(t, c, "heal-flap", 64<<20, map[string]string{"numReplicas": "3", "maxReplicaDownTime": "15"})
		before := writeFiles(t, vol.target, "before", 2, 1<<20)
		v, err := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id)
		if err != nil {
			t.Fatal(err)
		}
		flapping := replicaOn(t, v, "sn2")
		a2 := agentNamed(t, s, "sn2")
		start := time.Now()
		count := func(typ events.Type) int {
			n := 0
			for _, e := range eventsOf(t, p, "", typ) {
				if strings.Contains(e.StorageNode, "sn2") && !e.Time.Before(start) {
					n++
				}
			}
			return n
		}
		const flaps = 3
		written := []map[string]string{before}
		for i := 1; i <= flaps; i++ {
			if err := tgt.UnlinkSubsystem(a2.portID, flapping.NQN); err != nil {
				t.Fatal(err)
			}
			written = append(written, writeFiles(t, vol.target, fmt.Sprintf("flap%d", i), 1, 256<<10))
			waitFor(t, 30*time.Second, fmt.Sprintf("HostDisconnected #%d", i), func() (bool, string) {
				n := count(events.HostDisconnected)
				return n >= i, fmt.Sprint(n)
			})
			if err := tgt.LinkSubsystem(a2.portID, flapping.NQN); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 30*time.Second, fmt.Sprintf("HostReconnected #%d", i), func() (bool, string) {
				n := count(events.HostReconnected)
				return n >= i, fmt.Sprint(n)
			})
		}
		waitEvent(t, p, vol.id, events.VolumeHealed, time.Minute, start)
		elapsed := time.Since(start)
		// Let the healer run a few more cycles (heal interval 5 s) before
		// counting: a storm would show as more events.
		waitFor(t, 30*time.Second, "the volume to stay whole for two heal intervals", func() (bool, string) {
			arr := mdOf(t, md, v)
			return time.Since(start) > elapsed+10*time.Second && arr.Degraded == 0 && arr.SyncAction == "idle", describe(arr)
		})
		dis, rec := count(events.HostDisconnected), count(events.HostReconnected)
		t.Logf("FLAP: %d flaps in %v: %d HostDisconnected, %d HostReconnected", flaps, elapsed.Round(time.Second), dis, rec)
		if dis != flaps || rec != flaps {
			t.Errorf("%d HostDisconnected and %d HostReconnected for %d flaps, want %d each", dis, rec, flaps, flaps)
		}
		cur, err := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id)
		if err != nil {
			t.Fatal(err)
		}
		if len(cur.Replicas) != 3 || replicaOn(t, cur, "sn2").ID != flapping.ID {
			t.Errorf("a flapping replica was replaced: %+v", cur.Replicas)
		}
		checkMirrors(t, md, mdOf(t, md, cur).Name)
		dropCaches(t)
		verifyFiles(t, mergeSums(written...))
	})

	t.Run("node plugin killed mid-resync resumes without a second replacement", func(t *testing.T) {
		vol := provisionVolume(t, c, "heal-restart", 64<<20, map[string]string{"numReplicas": "2", "maxReplicaDownTime": "5"})
		before := writeFiles(t, vol.target, "before", 8, 1<<20)
		v, err := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id)
		if err != nil {
			t.Fatal(err)
		}
		orig := map[string]bool{v.Replicas[0].ID: true, v.Replicas[1].ID: true}
		lost := v.Replicas[1]
		// Slow md's rebuild so the kill lands while it runs.
		setSyncSpeed(t, 4000)
		if err := tgt.UnlinkSubsystem(agentNamed(t, s, lost.StorageNode).portID, lost.NQN); err != nil {
			t.Fatal(err)
		}
		during := writeFiles(t, vol.target, "during", 1, 1<<20)
		waitFor(t, 2*time.Minute, "the replacement's rebuild to run", func() (bool, string) {
			a, err := md.FindByUUID(v.MDUUID)
			if err != nil {
				return false, err.Error()
			}
			return a.SyncAction == "recover" && a.SyncCompleted.Done > 0, describe(a)
		})
		s.csi.stop(t, syscall.SIGKILL)
		t.Logf("killed nvmirror-csi during the rebuild")
		s.csi = startDaemon(top, "csi-restarted", s.csi.args...)
		s.csi.waitListening(t, "unix", s.csiSocket)
		setSyncSpeed(t, 200000)
		healed := waitEvent(t, p, vol.id, events.VolumeHealed, 3*time.Minute, time.Now().Add(-time.Minute))
		t.Logf("RESTART: healed at %v", healed.Time.Format(time.RFC3339Nano))
		cur, err := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id)
		if err != nil {
			t.Fatal(err)
		}
		var added []string
		for _, r := range cur.Replicas {
			if !orig[r.ID] {
				added = append(added, r.ID+"@"+r.StorageNode+"="+string(r.State))
			}
		}
		if len(added) != 1 {
			t.Errorf("replacements after the restart: %v, want exactly one", added)
		}
		arr := mdOf(t, md, cur)
		if arr.Degraded != 0 || len(arr.Members) != 2 {
			t.Errorf("after the restart: %s", describe(arr))
		}
		checkMirrors(t, md, arr.Name)
		dropCaches(t)
		verifyFiles(t, mergeSums(before, during))
	})

	t.Run("a stale replica is never served alone", func(t *testing.T) {
		testStaleReplicaNeverServed(t, s, c, p, md, tgt, ini)
	})

	t.Run("nvmirrorctl promote starts a volume from a stale replica; the replica given up never rejoins", func(t *testing.T) {
		testPromoteStaleReplica(t, s, c, p, md, tgt, ini)
	})

	t.Run("nvmirrorctl move moves a replica live, staged or not", func(t *testing.T) {
		testMoveReplica(t, s, c, p, md, ini)
	})

	t.Run("nvmirrorctl drain moves every replica off a storage node, across a provisioner restart", func(t *testing.T) {
		testDrain(t, top, s, c, p, md)
	})

	t.Run("volumes no host has staged are repaired offline", func(t *testing.T) {
		testOfflineRepair(t, s, top, c, p, md, tgt, ini)
	})

	t.Run("a rebuild runs at the volume's bandwidth limit until it is lifted", func(t *testing.T) {
		testRebuildPacing(t, s, c, p, md, tgt, ini)
	})

	t.Run("with many volumes staged an idle volume's lost replica is detected within 2 s", func(t *testing.T) {
		testIdleDetectionAtScale(t, s, c, p, md, tgt)
	})
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// setSyncSpeed caps md's resync speed (KiB/s) for every array.
func setSyncSpeed(t *testing.T, kbps int) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/dev/raid/speed_limit_max", []byte(fmt.Sprint(kbps)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile("/proc/sys/dev/raid/speed_limit_max", []byte("200000"), 0o644) })
}
