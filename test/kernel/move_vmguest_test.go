//go:build vmguest

package kernel

import (
	"fmt"
	"maps"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// runCtl runs the admin CLI against the stack's provisioner.
func runCtl(s *stack, args ...string) (string, error) {
	full := append(s.nvmirrorctlFlags(), args...)
	out, err := exec.Command("nvmirrorctl", full...).CombinedOutput()
	return string(out), err
}

// mustCtl runs the admin CLI and fails the test if it fails.
func mustCtl(t *testing.T, s *stack, args ...string) string {
	t.Helper()
	out, err := runCtl(s, args...)
	if err != nil {
		t.Fatalf("nvmirrorctl %v: %v\n%s", args, err, out)
	}
	return out
}

// inSyncMembers counts the array's members md holds in sync.
func inSyncMembers(a mdraid.Array) int {
	n := 0
	for _, m := range a.Members {
		if m.State.InSync && !m.State.Faulty {
			n++
		}
	}
	return n
}

// newReplica returns the active replica of v not among before.
func newReplica(v *volume.Volume, before []volume.Replica) (volume.Replica, bool) {
	for _, r := range v.ActiveReplicas() {
		known := false
		for _, b := range before {
			known = known || b.ID == r.ID
		}
		if !known {
			return r, true
		}
	}
	return volume.Replica{}, false
}

// waitMoved waits until the registry holds the move done (the old replica
// out, the new one in sync) and md agrees (its slots back to the replica
// count, all in sync, idle), checking throughout that md never holds fewer
// in-sync members than atLeast when staged.
func waitMoved(t *testing.T, p *provisionerclient.Client, md *mdraid.Manager, v *volume.Volume, oldID string, staged bool, atLeast int) volume.Replica {
	t.Helper()
	var nr volume.Replica
	waitFor(t, 4*time.Minute, "the move to finish", func() (bool, string) {
		cur := mustVolume(t, p, v.ID)
		var ok bool
		if nr, ok = newReplica(cur, v.ActiveReplicas()); !ok {
			return false, "no new replica"
		}
		oldGone := replicaByID(cur, oldID) == nil || replicaByID(cur, oldID).State != volume.ReplicaActive
		if !staged {
			return oldGone && nr.InSync(), fmt.Sprintf("old gone %v, new %+v", oldGone, nr)
		}
		arr := mdOf(t, md, cur)
		if n := inSyncMembers(arr); n < atLeast {
			t.Fatalf("md holds %d in-sync members during the move, fewer than the %d before it: %s", n, atLeast, describe(arr))
		}
		return oldGone && nr.InSync() && arr.RaidDisks == atLeast && len(arr.Members) == atLeast && arr.Degraded == 0 && arr.SyncAction == "idle",
			fmt.Sprintf("old gone %v, new in sync %v; %s", oldGone, nr.InSync(), describe(arr))
	})
	return nr
}

// testMoveReplica moves replicas live on the real kernel: of a staged
// volume under continuous writes (the node's healer grows md by a slot,
// fills it, then takes the old replica out and shrinks md back), then of the
// same volume with no host (an offline repair fills the new replica).
func testMoveReplica(t *testing.T, s *stack, c csiClients, p *provisionerclient.Client, md *mdraid.Manager, ini *host.Initiator) {
	vol := provisionVolume(t, c, "move-live", 64<<20, map[string]string{"numReplicas": "2", "maxReplicaDownTime": "600"})
	before := writeFiles(t, vol.target, "before", 8, 1<<20)
	v := mustVolume(t, p, vol.id)
	old := v.ActiveReplicas()[0]

	w := startRingWriter(t, vol.target, 64)
	start := time.Now()
	t.Logf("nvmirrorctl move:\n%s", mustCtl(t, s, "move", vol.id, old.ID))
	nr := waitMoved(t, p, md, v, old.ID, true, 2)
	during := w.stop(t)
	t.Logf("%d files written during the move", len(during))
	t.Logf("MOVE (staged): replica %s on %s moved to %s on %s in %v under writes; md never below 2 in-sync members",
		old.ID, old.StorageNode, nr.ID, nr.StorageNode, time.Since(start).Round(time.Millisecond))
	if nr.StorageNode == old.StorageNode {
		t.Errorf("moved onto the same storage node %s", nr.StorageNode)
	}
	waitFor(t, time.Minute, "the old replica disconnected", func() (bool, string) {
		ctrls, _ := ini.ControllersFor(old.NQN)
		return len(ctrls) == 0, fmt.Sprintf("%d controllers", len(ctrls))
	})
	arr := mdOf(t, md, v)
	checkMirrors(t, md, arr.Name)
	dropCaches(t)
	verifyFiles(t, mergeSums(before, during))

	// No host: the move is an offline repair's.
	release(t, c, vol)
	v = mustVolume(t, p, vol.id)
	second := v.ActiveReplicas()[0]
	start = time.Now()
	// Retried while the first move's old replica still waits for the
	// sweeper on its node: a node never holds two copies of a volume, so
	// placement leaves that node out until then (ResourceExhausted).
	waitFor(t, 2*time.Minute, "the second move accepted", func() (bool, string) {
		out, err := runCtl(s, "move", vol.id, second.ID)
		return err == nil, out
	})
	nr2 := waitMoved(t, p, md, v, second.ID, false, 2)
	t.Logf("MOVE (no host): replica %s on %s moved to %s on %s by an offline repair in %v",
		second.ID, second.StorageNode, nr2.ID, nr2.StorageNode, time.Since(start).Round(time.Millisecond))
	attach(t, c, vol)
	cur := mustVolume(t, p, vol.id)
	// The array comes back with the old replica's slot empty; the healer
	// drops it.
	waitFor(t, time.Minute, "md back to 2 slots, both in sync", func() (bool, string) {
		a := mdOf(t, md, cur)
		return a.RaidDisks == 2 && inSyncMembers(a) == 2 && a.Degraded == 0, describe(a)
	})
	checkMirrors(t, md, mdOf(t, md, cur).Name)
	dropCaches(t)
	verifyFiles(t, mergeSums(before, during))

	// The replica count of the live volume: 2 → 3 → 2 under writes.
	w = startRingWriter(t, vol.target, 64)
	for _, n := range []int{3, 2} {
		start := time.Now()
		// Retried while the storage node of a moved-away replica still
		// holds it (placement keeps a node from holding two copies).
		waitFor(t, 2*time.Minute, fmt.Sprintf("numReplicas=%d accepted", n), func() (bool, string) {
			out, err := runCtl(s, "set", vol.id, fmt.Sprintf("numReplicas=%d", n))
			return err == nil, out
		})
		waitFor(t, 4*time.Minute, fmt.Sprintf("%d replicas in sync", n), func() (bool, string) {
			cur := mustVolume(t, p, vol.id)
			a := mdOf(t, md, cur)
			if k := inSyncMembers(a); k < 2 {
				t.Fatalf("md holds %d in-sync members while the count changes: %s", k, describe(a))
			}
			inSync := 0
			for _, r := range cur.ActiveReplicas() {
				if r.InSync() {
					inSync++
				}
			}
			return len(cur.ActiveReplicas()) == n && inSync == n && a.RaidDisks == n && inSyncMembers(a) == n && a.Degraded == 0 && a.SyncAction == "idle",
				fmt.Sprintf("%d active, %d in sync; %s", len(cur.ActiveReplicas()), inSync, describe(a))
		})
		t.Logf("NUMREPLICAS: %d in %v under writes; md never below 2 in-sync members", n, time.Since(start).Round(time.Millisecond))
	}
	during = mergeSums(during, w.stop(t)) // the ring rewrote some of the move's files
	checkMirrors(t, md, mdOf(t, md, cur).Name)
	dropCaches(t)
	verifyFiles(t, mergeSums(before, during))
}

// testDrain drains a storage node holding replicas of three volumes (two
// staged, one with no host) under writes, with the provisioner killed in
// the middle: the drain goes on from the registry when it is back.
func testDrain(t *testing.T, top *testing.T, s *stack, c csiClients, p *provisionerclient.Client, md *mdraid.Manager) {
	// sn1 cordoned while the volumes are made: each lands on sn2 and sn3.
	mustCtl(t, s, "cordon", "sn1")
	var vols []csiVolume
	sums := map[string]string{}
	for i := range 3 {
		vol := provisionVolume(t, c, fmt.Sprintf("drain-%d", i), 32<<20, map[string]string{"numReplicas": "2", "maxReplicaDownTime": "600"})
		maps.Copy(sums, writeFiles(t, vol.target, "before", 4, 1<<20))
		vols = append(vols, vol)
		for _, r := range mustVolume(t, p, vol.id).ActiveReplicas() {
			if r.StorageNode == "sn1" {
				t.Fatalf("volume %s got a replica on the cordoned sn1", vol.id)
			}
		}
	}
	release(t, c, vols[2])
	mustCtl(t, s, "uncordon", "sn1")
	staged := []*volume.Volume{mustVolume(t, p, vols[0].id), mustVolume(t, p, vols[1].id)}
	w := startRingWriter(t, vols[0].target, 32)

	start := time.Now()
	t.Logf("nvmirrorctl drain:\n%s", mustCtl(t, s, "drain", "sn2"))
	// Kill the provisioner once a move runs; the drain must go on.
	waitFor(t, 2*time.Minute, "a move under way", func() (bool, string) {
		for _, v := range vols {
			if len(mustVolume(t, p, v.id).ActiveReplicas()) == 3 {
				return true, ""
			}
		}
		return false, "no volume with a third replica"
	})
	s.provisioner.stop(t, syscall.SIGKILL)
	t.Logf("killed nvmirror-provisioner during the drain")
	s.provisioner = startDaemon(top, "provisioner-restarted", s.provisioner.args...)
	s.provisioner.waitListening(t, "tcp", s.provAddr)

	var last string
	waitFor(t, 6*time.Minute, "sn2 drained", func() (bool, string) {
		for _, v := range staged {
			if a := mdOf(t, md, v); inSyncMembers(a) < 2 {
				t.Fatalf("volume %s: md holds %d in-sync members during the drain: %s", v.ID, inSyncMembers(a), describe(a))
			}
		}
		out, err := runCtl(s, "drain", "sn2")
		last = out
		if err != nil || !strings.Contains(out, "replicas left:    0 ") {
			return false, out
		}
		for _, v := range staged {
			if a := mdOf(t, md, v); a.RaidDisks != 2 || inSyncMembers(a) != 2 || a.SyncAction != "idle" {
				return false, describe(a)
			}
		}
		return true, ""
	})
	t.Logf("DRAIN: sn2 (3 volumes, 2 staged, 1 with no host; provisioner killed midway) drained in %v:\n%s", time.Since(start).Round(time.Millisecond), last)
	maps.Copy(sums, w.stop(t))
	for _, v := range vols {
		for _, r := range mustVolume(t, p, v.id).ActiveReplicas() {
			if r.StorageNode == "sn2" || !r.InSync() {
				t.Errorf("volume %s after the drain: replica %+v", v.id, r)
			}
		}
	}
	attach(t, c, vols[2])
	third := mustVolume(t, p, vols[2].id)
	waitFor(t, time.Minute, "the undrained volume's md whole", func() (bool, string) {
		a := mdOf(t, md, third)
		return a.RaidDisks == 2 && inSyncMembers(a) == 2 && a.Degraded == 0, describe(a)
	})
	for _, v := range append(staged, third) {
		checkMirrors(t, md, mdOf(t, md, v).Name)
	}
	dropCaches(t)
	verifyFiles(t, sums)
	mustCtl(t, s, "uncordon", "sn2")
}
