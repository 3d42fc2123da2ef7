//go:build vmguest

package kernel

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// testStaleReplicaNeverServed is the data-loss sequence the registry's sync
// state exists for, on the real kernel: 2 replicas A and B; B drops off and
// md fails it while fsync'ed writes go on to A; the node lets go of the
// volume; A becomes unreachable and B comes back. NodeStage must refuse to
// start the volume from B alone (it would serve the volume as it was before
// B dropped), naming B and where A is; once A is back the volume stages with
// every acknowledged write, B is brought up to date (registry in sync again)
// and an md check finds the legs identical.
func testStaleReplicaNeverServed(t *testing.T, s *stack, c csiClients, p *provisionerclient.Client, md *mdraid.Manager, tgt *nvmet.Target, ini *host.Initiator) {
	vol := provisionVolume(t, c, "stale-leg", 64<<20, map[string]string{"numReplicas": "2", "maxReplicaDownTime": "600"})
	before := writeFiles(t, vol.target, "before", 4, 1<<20)
	v, err := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id)
	if err != nil {
		t.Fatal(err)
	}
	replicas := v.ActiveReplicas()
	a, b := replicas[0], replicas[1]
	nodeA, nodeB := agentNamed(t, s, a.StorageNode), agentNamed(t, s, b.StorageNode)
	arrName := mdOf(t, md, v).Name

	// B drops off; the writes after it are acknowledged by A alone.
	cutAt := time.Now()
	if err := tgt.UnlinkSubsystem(nodeB.portID, b.NQN); err != nil {
		t.Fatal(err)
	}
	during := writeFiles(t, vol.target, "during", 10, 256<<10)
	var mdFailedAt time.Time
	waitFor(t, 60*time.Second, "md to run without B", func() (bool, string) {
		arr, err := md.ReadArray(arrName)
		if err != nil {
			return false, err.Error()
		}
		if arr.Degraded > 0 {
			mdFailedAt = time.Now()
			return true, ""
		}
		return false, describe(arr)
	})
	var recordedAt time.Time
	waitFor(t, 60*time.Second, "the registry to record B out of sync", func() (bool, string) {
		cur, err := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id)
		if err != nil {
			return false, err.Error()
		}
		for _, r := range cur.Replicas {
			if r.ID == b.ID && !r.InSync() {
				recordedAt = time.Now()
				t.Logf("WINDOW: B recorded out of sync since %s (md events %d); md ran degraded %v after the cut, the registry knew %v after that (polled every 100 ms, so both are upper bounds)",
					r.OutOfSyncSince.Format(time.RFC3339Nano), r.OutOfSyncAtEvents, mdFailedAt.Sub(cutAt).Round(time.Millisecond), recordedAt.Sub(mdFailedAt).Round(time.Millisecond))
				return true, ""
			}
		}
		return false, "B still recorded in sync"
	})
	for _, r := range mustVolume(t, p, vol.id).Replicas {
		if r.ID == a.ID && !r.InSync() {
			t.Fatalf("A recorded out of sync: %+v", r)
		}
	}

	// The node lets go of the volume; then A is away and B is back.
	unstage(t, c, vol)
	if err := tgt.UnlinkSubsystem(nodeA.portID, a.NQN); err != nil {
		t.Fatal(err)
	}
	if err := tgt.LinkSubsystem(nodeB.portID, b.NQN); err != nil {
		t.Fatal(err)
	}
	stage := func() error {
		info, err := c.node.NodeGetInfo(ctxTimeout(t, 10*time.Second), &csi.NodeGetInfoRequest{})
		if err != nil {
			return err
		}
		pub, err := c.ctrl.ControllerPublishVolume(ctxTimeout(t, time.Minute), &csi.ControllerPublishVolumeRequest{VolumeId: vol.id, NodeId: info.GetNodeId(), VolumeCapability: mountRW})
		if err != nil {
			return err
		}
		_, err = c.node.NodeStageVolume(ctxTimeout(t, 2*time.Minute), &csi.NodeStageVolumeRequest{VolumeId: vol.id, StagingTargetPath: vol.staging,
			VolumeCapability: mountRW, PublishContext: pub.GetPublishContext()})
		return err
	}
	err = stage()
	msg := status.Convert(err).Message()
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(msg, b.ID) || !strings.Contains(msg, a.StorageNode) || !strings.Contains(msg, "nvmirrorctl promote") {
		t.Fatalf("NodeStage with only the stale replica reachable: %v; want FailedPrecondition naming %s, %s and the escape", err, b.ID, a.StorageNode)
	}
	t.Logf("REFUSED: %s", msg)
	if _, err := md.FindByUUID(v.MDUUID); err == nil {
		t.Fatal("an md array runs for the volume after the refused stage")
	}
	if ctrls, _ := ini.ControllersFor(b.NQN); len(ctrls) != 0 {
		t.Errorf("the refused stage left %d controllers to B", len(ctrls))
	}

	// A is back: the volume stages with every acknowledged write.
	if err := tgt.LinkSubsystem(nodeA.portID, a.NQN); err != nil {
		t.Fatal(err)
	}
	// Retried while A's first connection settles; a stage that still
	// refuses after that fails the test.
	nodeCall(t, "NodeStageVolume", stage, codes.FailedPrecondition)
	nodeCall(t, "NodePublishVolume", func() error {
		_, err := c.node.NodePublishVolume(ctxTimeout(t, time.Minute), &csi.NodePublishVolumeRequest{VolumeId: vol.id, StagingTargetPath: vol.staging,
			TargetPath: vol.target, VolumeCapability: mountRW})
		return err
	})
	verifyFiles(t, mergeSums(before, during))
	waitFor(t, 3*time.Minute, "B brought up to date and recorded in sync", func() (bool, string) {
		cur, err := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id)
		if err != nil {
			return false, err.Error()
		}
		arr, err := md.FindByUUID(cur.MDUUID)
		if err != nil {
			return false, err.Error()
		}
		for _, r := range cur.ActiveReplicas() {
			if !r.InSync() {
				return false, fmt.Sprintf("%s recorded out of sync; %s", r.ID, describe(arr))
			}
		}
		return arr.Degraded == 0 && arr.SyncAction == "idle", describe(arr)
	})
	arr, err := md.FindByUUID(v.MDUUID)
	if err != nil {
		t.Fatal(err)
	}
	checkMirrors(t, md, filepath.Base(arr.Device))
	verifyFiles(t, mergeSums(before, during))
}

// nodeCall retries a CSI call while it is Aborted or Unavailable (the
// healer holds the volume's lock while it acts; a replica just linked may
// take a moment to answer), as kubelet does.
func nodeCall(t *testing.T, what string, call func() error, alsoRetry ...codes.Code) {
	t.Helper()
	var err error
	waitFor(t, 2*time.Minute, what, func() (bool, string) {
		err = call()
		c := status.Code(err)
		retry := c == codes.Aborted || c == codes.Unavailable
		for _, r := range alsoRetry {
			retry = retry || c == r
		}
		return !retry, fmt.Sprint(err)
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func mustVolume(t *testing.T, p *provisionerclient.Client, id string) *volume.Volume {
	t.Helper()
	v, err := p.GetVolume(ctxTimeout(t, 10*time.Second), id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// testPromoteStaleReplica is the administrator's escape on the real kernel:
// the in-sync replica A is gone, so NodeStage refuses B; `nvmirrorctl
// promote --accept-data-loss` lets the volume start from B as it was when
// it dropped out (the writes after that are lost, as the command says).
func testPromoteStaleReplica(t *testing.T, s *stack, c csiClients, p *provisionerclient.Client, md *mdraid.Manager, tgt *nvmet.Target, ini *host.Initiator) {
	vol := provisionVolume(t, c, "promote-stale", 64<<20, map[string]string{"numReplicas": "2", "maxReplicaDownTime": "600"})
	before := writeFiles(t, vol.target, "before", 4, 1<<20)
	v := mustVolume(t, p, vol.id)
	a, b := v.ActiveReplicas()[0], v.ActiveReplicas()[1]
	nodeA, nodeB := agentNamed(t, s, a.StorageNode), agentNamed(t, s, b.StorageNode)
	if err := tgt.UnlinkSubsystem(nodeB.portID, b.NQN); err != nil {
		t.Fatal(err)
	}
	lost := writeFiles(t, vol.target, "lost", 4, 256<<10)
	waitOutOfSync(t, p, vol.id, b.ID)
	// A's md event count as the array leaves it (the stop adds a few).
	aEvents := memberEvents(t, md, ini, a)
	unstage(t, c, vol)
	if err := tgt.UnlinkSubsystem(nodeA.portID, a.NQN); err != nil {
		t.Fatal(err)
	}
	if err := tgt.LinkSubsystem(nodeB.portID, b.NQN); err != nil {
		t.Fatal(err)
	}
	stage := func() error {
		_, err := c.node.NodeStageVolume(ctxTimeout(t, 2*time.Minute), &csi.NodeStageVolumeRequest{VolumeId: vol.id, StagingTargetPath: vol.staging, VolumeCapability: mountRW})
		return err
	}
	if err := stage(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("NodeStage from the stale replica alone: %v, want FailedPrecondition", err)
	}

	ctl := func(args ...string) (string, error) { return runCtl(s, args...) }
	out, err := ctl("promote", vol.id, b.ID, "--accept-data-loss", "--reason", "sn lost for good (test)")
	t.Logf("nvmirrorctl promote:\n%s", out)
	if err != nil {
		t.Fatalf("promote: %v", err)
	}
	nodeCall(t, "NodeStageVolume after the promotion", stage, codes.FailedPrecondition)
	nodeCall(t, "NodePublishVolume", func() error {
		_, err := c.node.NodePublishVolume(ctxTimeout(t, time.Minute), &csi.NodePublishVolumeRequest{VolumeId: vol.id, StagingTargetPath: vol.staging,
			TargetPath: vol.target, VolumeCapability: mountRW})
		return err
	})
	dropCaches(t)
	verifyFiles(t, before)
	for name := range lost {
		if _, err := os.Stat(name); err == nil {
			t.Errorf("%s, written after B dropped out, is there although the volume started from B", name)
		}
	}
	arr := mdOf(t, md, v)
	if arr.Degraded != 1 || len(arr.Members) != 1 {
		t.Errorf("started from B alone: %s", describe(arr))
	}
	t.Logf("PROMOTE: started from B; the %d files written after B dropped out are gone, as the promotion accepted", len(lost))

	// A, given up by the promotion, holds the lost writes. Once the running
	// array's md event count has passed A's, md would take A for an
	// ordinary stale member and a bitmap re-add would copy only what was
	// written since, leaving the lost writes on A's leg alone: the mirror's
	// legs would differ. The registry marks A diverged; nothing may join it.
	cur := mustVolume(t, p, vol.id)
	if r := replicaByID(cur, a.ID); r == nil || !r.Diverged() || r.InSync() {
		t.Fatalf("replica A after the promotion: %+v; want diverged and out of sync", r)
	}
	// A degraded array counts every clean/dirty transition (md's "no
	// spares" shortcut is off while degraded): write, let it go clean (its
	// safe-mode delay), again.
	after := map[string]string{}
	waitFor(t, 3*time.Minute, "the running array's md event count to pass the given-up replica's", func() (bool, string) {
		maps.Copy(after, writeFiles(t, vol.target, fmt.Sprintf("after-%d", len(after)), 1, 64<<10))
		waitFor(t, 30*time.Second, "the array to go clean after a write", func() (bool, string) {
			a := mdOf(t, md, cur)
			return a.ArrayState == "clean", a.ArrayState
		})
		n := memberEvents(t, md, ini, b)
		return n > aEvents+8, fmt.Sprintf("running array at %d events, A at %d", n, aEvents)
	})
	if err := tgt.LinkSubsystem(nodeA.portID, a.NQN); err != nil {
		t.Fatal(err)
	}
	// Three heal cycles (5 s each) with A back on its storage node: before
	// the mark, the healer connected A and re-added it here.
	watchUntil := time.Now().Add(15 * time.Second)
	for time.Now().Before(watchUntil) {
		assertNotJoined(t, md, ini, cur, a)
		time.Sleep(250 * time.Millisecond)
	}
	// Its time is up: A is replaced (never re-added) and the new replica
	// fills from B.
	if out, err := ctl("set", vol.id, "maxReplicaDownTime=1"); err != nil {
		t.Fatalf("set maxReplicaDownTime: %v\n%s", err, out)
	}
	waitFor(t, 3*time.Minute, "the diverged replica replaced and the mirror whole", func() (bool, string) {
		assertNotJoined(t, md, ini, cur, a)
		v := mustVolume(t, p, vol.id)
		r := replicaByID(v, a.ID)
		arr := mdOf(t, md, v)
		return r != nil && r.State != "active" && arr.Degraded == 0 && len(arr.Members) == 2 && arr.SyncAction == "idle",
			fmt.Sprintf("A %+v; %s", r, describe(arr))
	})
	arr = mdOf(t, md, cur)
	checkMirrors(t, md, arr.Name)
	dropCaches(t)
	verifyFiles(t, mergeSums(before, after))
	for name := range lost {
		if _, err := os.Stat(name); err == nil {
			t.Errorf("%s, given up by the promotion, is back", name)
		}
	}
	t.Logf("PROMOTE: the given-up replica A (md events %d) came back after the running array passed it and was never joined; replaced", aEvents)
}

func replicaByID(v *volume.Volume, id string) *volume.Replica {
	for i := range v.Replicas {
		if v.Replicas[i].ID == id {
			return &v.Replicas[i]
		}
	}
	return nil
}

// memberEvents is the md event count in the superblock of replica r's
// device on this host.
func memberEvents(t *testing.T, md *mdraid.Manager, ini *host.Initiator, r volume.Replica) uint64 {
	t.Helper()
	dev, err := ini.FindDevice(r.NQN, r.NamespaceID())
	if err != nil {
		t.Fatalf("device of replica %s: %v", r.ID, err)
	}
	sb, err := md.Examine(ctxTimeout(t, 30*time.Second), dev.Path)
	if err != nil {
		t.Fatalf("examine replica %s (%s): %v", r.ID, dev.Path, err)
	}
	return sb.Events
}

// assertNotJoined fails the test if this host connected replica r or its
// device is a member of the volume's array.
func assertNotJoined(t *testing.T, md *mdraid.Manager, ini *host.Initiator, v *volume.Volume, r volume.Replica) {
	t.Helper()
	if ctrls, _ := ini.ControllersFor(r.NQN); len(ctrls) > 0 {
		t.Fatalf("the diverged replica %s was connected: %+v", r.ID, ctrls)
	}
	if dev, err := ini.FindDevice(r.NQN, r.NamespaceID()); err == nil {
		for _, m := range mdOf(t, md, v).Members {
			if m.Device == dev.Name {
				t.Fatalf("the diverged replica %s (%s) is an md member", r.ID, dev.Name)
			}
		}
	}
}
