package provisioner_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/fakeagent"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/repair"
)

// staleVolume creates a 2-replica volume on sn-1/sn-2 whose second replica
// a node recorded out of sync, then unpublished: what a pod leaves behind
// when it stops while a replica is away.
func staleVolume(t *testing.T, e *env) (*store.Volume, store.Replica, store.Replica) {
	t.Helper()
	v := e.create(t, "pvc-offline", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2"})
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-a"); err != nil {
		t.Fatal(err)
	}
	b := v.Replicas[1]
	if _, err := e.svc.ReportReplicaSync(e.ctx, provisioner.SyncReport{VolumeID: v.ID, ReplicaID: b.ID, ObservedAt: time.Now(), ArrayEvents: 40}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.UnpublishVolume(e.ctx, v.ID, hostA); err != nil {
		t.Fatal(err)
	}
	v, err := e.store.GetVolume(e.ctx, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	return v, v.Replicas[0], v.Replicas[1]
}

func repairOnce(t *testing.T, e *env) int {
	t.Helper()
	n, err := e.svc.RepairOnce(e.ctx)
	if err != nil {
		t.Fatalf("RepairOnce: %v", err)
	}
	return n
}

func volumeEvents(t *testing.T, e *env, id string, typ events.Type) []events.Event {
	t.Helper()
	evs, err := e.store.ListEvents(e.ctx, events.Filter{Volume: id, Types: []events.Type{typ}})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestOfflineRepairOfAReturningReplica(t *testing.T) {
	e := newEnv(t, threeRacks())
	v, a, b := staleVolume(t, e)
	host := fakeagent.RepairNQNPrefix + b.StorageNode

	if n := repairOnce(t, e); n != 1 {
		t.Fatalf("RepairOnce started %d repairs, want 1", n)
	}
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	rec := cur.Repair
	if rec == nil || rec.StorageNode != b.StorageNode || rec.HostNQN != host || len(rec.Replicas) != 1 || rec.Replicas[0] != b.ID {
		t.Fatalf("repair record %+v: want one on %s (the out-of-sync replica's node) for %s", rec, b.StorageNode, b.ID)
	}
	if w := provisioner.VolumeToProto(cur).GetRepair(); w.GetRepairId() != rec.ID || w.GetStorageNode() != b.StorageNode || w.GetLeaseUntil() == nil {
		t.Errorf("the API's view of the repair: %v", w)
	}
	fr := e.cluster.Repair(b.StorageNode, rec.ID)
	if fr == nil {
		t.Fatalf("no repair started on %s", b.StorageNode)
	}
	if len(fr.Request.Members) != 2 || fr.Request.MDUUID != v.MDUUID || fr.Request.Lease <= 0 {
		t.Fatalf("request %+v", fr.Request)
	}
	for _, m := range fr.Request.Members {
		if want := m.ID == a.ID; m.InSync != want {
			t.Errorf("member %s in sync = %v, want %v", m.ID, m.InSync, want)
		}
		if !e.cluster.Replica(m.StorageNode, m.ID).Hosts[host] {
			t.Errorf("replica %s does not allow the repair host before the repair starts", m.ID)
		}
	}
	if len(volumeEvents(t, e, v.ID, events.VolumeDegraded)) != 1 || len(volumeEvents(t, e, v.ID, events.SynchStarted)) != 1 {
		t.Error("want one VolumeDegraded and one SynchStarted event")
	}

	// Running: each pass asks (renewing the lease) and starts nothing new.
	lease := rec.LeaseUntil
	time.Sleep(2 * time.Millisecond) // the lease is renewed from the answer's time
	if n := repairOnce(t, e); n != 1 {
		t.Fatalf("second pass: %d running", n)
	}
	cur, _ = e.store.GetVolume(e.ctx, v.ID)
	if !cur.Repair.LeaseUntil.After(lease) || e.cluster.Repair(b.StorageNode, rec.ID).Gets != 1 {
		t.Errorf("lease %v → %v, gets %d: want renewed once", lease, cur.Repair.LeaseUntil, e.cluster.Repair(b.StorageNode, rec.ID).Gets)
	}
	if ids := e.cluster.RepairsOn(b.StorageNode); len(ids) != 1 {
		t.Errorf("repairs on %s: %v", b.StorageNode, ids)
	}

	e.cluster.SetRepair(b.StorageNode, rec.ID, func(s *repair.Status) {
		s.State, s.Synced, s.BytesWritten = repair.Succeeded, []string{b.ID}, 64<<20
	})
	if n := repairOnce(t, e); n != 0 {
		t.Fatalf("after success: %d running", n)
	}
	cur, _ = e.store.GetVolume(e.ctx, v.ID)
	if cur.Repair != nil || !cur.Replica(b.ID).InSync() {
		t.Fatalf("after success: repair %+v, B %+v", cur.Repair, cur.Replica(b.ID))
	}
	for _, r := range []store.Replica{a, b} {
		if e.cluster.Replica(r.StorageNode, r.ID).Hosts[host] || cur.Replica(r.ID).AllowedHost != "" {
			t.Errorf("replica %s still allows the repair host after it ended", r.ID)
		}
	}
	ended := volumeEvents(t, e, v.ID, events.SynchEnded)
	if len(ended) != 1 || ended[0].StorageNode != b.StorageNode {
		t.Errorf("SynchEnded events %+v", ended)
	}
	// The next pass finds it whole: Healed, degradation cleared.
	repairOnce(t, e)
	cur, _ = e.store.GetVolume(e.ctx, v.ID)
	if !cur.DegradedSince.IsZero() || len(volumeEvents(t, e, v.ID, events.VolumeHealed)) != 1 {
		t.Errorf("after the repair: degraded since %v, healed events %d", cur.DegradedSince, len(volumeEvents(t, e, v.ID, events.VolumeHealed)))
	}
	if n := repairOnce(t, e); n != 0 || len(e.cluster.RepairsOn(b.StorageNode)) != 1 {
		t.Errorf("a whole volume got another repair")
	}
}

func TestOfflineRepairLeavesPublishedVolumesToTheirHost(t *testing.T) {
	e := newEnv(t, threeRacks())
	v, _, b := staleVolume(t, e)
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-a"); err != nil {
		t.Fatal(err)
	}
	if n := repairOnce(t, e); n != 0 || len(e.cluster.RepairsOn(b.StorageNode)) != 0 {
		t.Fatalf("a published volume was repaired offline")
	}
}

func TestOfflineRepairNeedsAnInSyncReplica(t *testing.T) {
	e := newEnv(t, threeRacks())
	v, a, b := staleVolume(t, e)
	e.cluster.SetDown(a.StorageNode, true)
	repairOnce(t, e)
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	if cur.Repair != nil || len(e.cluster.RepairsOn(b.StorageNode)) != 0 {
		t.Fatal("repair started with the only in-sync replica away: it would copy stale data")
	}
}

func TestOfflineRepairFailureIsRetriedAfterABackoff(t *testing.T) {
	// Wide enough that a loaded CI machine's slow pass cannot run past the
	// doubled wait (2 x retry) before the check that it has not.
	const retry = 250 * time.Millisecond
	e := newEnvOpts(t, threeRacks(), provisioner.Options{RepairRetry: retry})
	v, _, b := staleVolume(t, e)
	fail := func() string {
		t.Helper()
		cur, _ := e.store.GetVolume(e.ctx, v.ID)
		id := cur.Repair.ID
		e.cluster.SetRepair(b.StorageNode, id, func(s *repair.Status) { s.State, s.Message = repair.Failed, "md refused" })
		repairOnce(t, e)
		cur, _ = e.store.GetVolume(e.ctx, v.ID)
		if cur.Repair != nil || cur.Replica(b.ID).InSync() {
			t.Fatalf("after a failure: repair %+v, B in sync %v", cur.Repair, cur.Replica(b.ID).InSync())
		}
		return id
	}
	repairOnce(t, e)
	first := fail()
	// Not at once: a repair that cannot succeed must not be retried, and
	// announced, every pass.
	if repairOnce(t, e); len(e.cluster.RepairsOn(b.StorageNode)) != 1 {
		t.Fatal("retried at once after a failure")
	}
	time.Sleep(retry + 20*time.Millisecond)
	repairOnce(t, e)
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	if cur.Repair == nil || cur.Repair.ID == first {
		t.Fatalf("no new repair after the backoff: %+v", cur.Repair)
	}
	// A second failure in a row doubles the wait.
	fail()
	time.Sleep(retry + 20*time.Millisecond)
	if repairOnce(t, e); len(e.cluster.RepairsOn(b.StorageNode)) != 2 {
		t.Fatal("the second backoff did not double")
	}
	time.Sleep(retry + 20*time.Millisecond)
	if repairOnce(t, e); len(e.cluster.RepairsOn(b.StorageNode)) != 3 {
		t.Fatal("no repair after the doubled backoff")
	}
}

func TestOfflineReplacementAfterMaxReplicaDownTime(t *testing.T) {
	e := newEnvOpts(t, threeRacks(), provisioner.Options{HealTimeUnit: time.Millisecond})
	v := e.create(t, "pvc-lost", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2,sn-3", "maxReplicaDownTime": "50"})
	a, lost := v.Replicas[0], v.Replicas[1]
	e.cluster.SetDown(lost.StorageNode, true)

	// First pass: degraded recorded, nothing replaced before 50 ms.
	repairOnce(t, e)
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	if cur.DegradedSince.IsZero() || len(cur.Replicas) != 2 {
		t.Fatalf("first pass: degraded since %v, replicas %+v", cur.DegradedSince, cur.Replicas)
	}
	repairOnce(t, e)
	if cur, _ = e.store.GetVolume(e.ctx, v.ID); len(cur.Replicas) != 2 {
		t.Fatalf("replaced before maxReplicaDownTime: %+v", cur.Replicas)
	}
	time.Sleep(60 * time.Millisecond)
	if n := repairOnce(t, e); n != 1 {
		t.Fatalf("pass after maxReplicaDownTime: %d repairs", n)
	}
	cur, _ = e.store.GetVolume(e.ctx, v.ID)
	if m := cur.Replica(lost.ID); m.State != store.ReplicaRemoved || !m.PendingDelete {
		t.Errorf("lost replica %+v: want removed, pending delete", m)
	}
	nr := cur.Replica(cur.Replica(lost.ID).ReplacedBy)
	if nr == nil || nr.StorageNode == a.StorageNode || nr.StorageNode == lost.StorageNode || nr.InSync() {
		t.Fatalf("replacement %+v", nr)
	}
	if cur.Repair == nil || cur.Repair.StorageNode != nr.StorageNode || cur.Repair.Replicas[0] != nr.ID {
		t.Fatalf("repair %+v: want the replacement filled by its own node", cur.Repair)
	}
	fr := e.cluster.Repair(nr.StorageNode, cur.Repair.ID)
	if fr == nil || len(fr.Request.Members) != 2 {
		t.Fatalf("repair request %+v", fr)
	}
}

func TestPublishTakesOverAnOfflineRepair(t *testing.T) {
	e := newEnv(t, threeRacks())
	v, a, b := staleVolume(t, e)
	repairOnce(t, e)
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	rec := cur.Repair
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostB, "node-b"); err != nil {
		t.Fatalf("PublishVolume during an offline repair: %v", err)
	}
	if !e.cluster.WasStopped(rec.StorageNode, rec.ID) {
		t.Error("the publish did not stop the offline repair")
	}
	cur, _ = e.store.GetVolume(e.ctx, v.ID)
	if cur.Repair != nil || cur.PublishedHostNQN != hostB {
		t.Fatalf("after the takeover: repair %+v, published to %q", cur.Repair, cur.PublishedHostNQN)
	}
	for _, r := range []store.Replica{a, b} {
		hs := e.cluster.Replica(r.StorageNode, r.ID).Hosts
		if hs[rec.HostNQN] || !hs[hostB] {
			t.Errorf("replica %s allows %v: want the new host only", r.ID, hs)
		}
	}
	if cur.Replica(b.ID).InSync() {
		t.Error("a taken-over repair marked its replica in sync")
	}
	// The stopped repair ID is never started again, and a published
	// volume gets no new one.
	if n := repairOnce(t, e); n != 0 {
		t.Errorf("%d repairs of a published volume", n)
	}
}

func TestPublishWaitsForAnUnreachableRepairNodesLease(t *testing.T) {
	e := newEnvOpts(t, threeRacks(), provisioner.Options{RepairLease: time.Hour})
	v, a, b := staleVolume(t, e)
	repairOnce(t, e)
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	rec := cur.Repair
	e.cluster.SetDown(rec.StorageNode, true)
	_, err := e.svc.PublishVolume(e.ctx, v.ID, hostB, "node-b")
	wantCode(t, err, provisioner.ErrUnavailable, rec.StorageNode, "stops by itself")
	if cur, _ = e.store.GetVolume(e.ctx, v.ID); cur.PublishedHostNQN != "" || cur.Repair == nil {
		t.Fatalf("refused publish changed the volume: %+v", cur)
	}

	// Once the lease has run out the storage node has stopped: the publish
	// goes on, revoking the repair host where it can.
	if _, err := e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error {
		v.Repair.LeaseUntil = time.Now().Add(-time.Minute)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostB, "node-b"); err != nil {
		t.Fatalf("PublishVolume after the lease: %v", err)
	}
	cur, _ = e.store.GetVolume(e.ctx, v.ID)
	if hs := e.cluster.Replica(a.StorageNode, a.ID).Hosts; hs[rec.HostNQN] || !hs[hostB] {
		t.Errorf("reachable replica allows %v", hs)
	}
	// B's node is the repair node, away: its replica keeps the repair host
	// recorded, for the sweeper to revoke when it returns.
	if got := cur.Replica(b.ID).AllowedHost; got != rec.HostNQN {
		t.Errorf("unreachable replica's AllowedHost = %q, want the repair host %q left for the sweeper", got, rec.HostNQN)
	}
	e.cluster.SetDown(rec.StorageNode, false)
	if _, err := e.svc.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	if hs := e.cluster.Replica(b.StorageNode, b.ID).Hosts; hs[rec.HostNQN] || !hs[hostB] {
		t.Errorf("after the sweep replica %s allows %v, want the published host only", b.ID, hs)
	}
}

func TestDeleteVolumeStopsAnOfflineRepair(t *testing.T) {
	e := newEnv(t, threeRacks())
	v, _, _ := staleVolume(t, e)
	repairOnce(t, e)
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	rec := cur.Repair
	if err := e.svc.DeleteVolume(e.ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if !e.cluster.WasStopped(rec.StorageNode, rec.ID) {
		t.Error("DeleteVolume left the offline repair running")
	}
}

func TestOfflineRepairNeedsARepairingNode(t *testing.T) {
	e := newEnv(t, threeRacks())
	v, _, _ := staleVolume(t, e)
	for _, n := range []string{"sn-1", "sn-2", "sn-3"} {
		e.cluster.SetRepairHostNQN(n, "")
	}
	repairOnce(t, e)
	if cur, _ := e.store.GetVolume(e.ctx, v.ID); cur.Repair != nil {
		t.Fatalf("repair recorded with no node able to run it: %+v", cur.Repair)
	}
}

func TestPublishWaitsWhileARepairIsSetUp(t *testing.T) {
	e := newEnv(t, threeRacks())
	v, a, b := staleVolume(t, e)
	reached, release := make(chan struct{}), make(chan struct{})
	e.cluster.SetRepairHook(b.StorageNode, func(repair.Request) error {
		close(reached)
		<-release
		return nil
	})
	done := make(chan error, 1)
	go func() { _, err := e.svc.RepairOnce(e.ctx); done <- err }()
	<-reached
	// The repair's host is allowed and its start is on its way: a publish
	// now would race its allowances.
	_, err := e.svc.PublishVolume(e.ctx, v.ID, hostB, "node-b")
	wantCode(t, err, provisioner.ErrAborted, "retry")
	if err := e.svc.DeleteVolume(e.ctx, v.ID); !errors.Is(err, provisioner.ErrAborted) {
		t.Errorf("DeleteVolume while a repair is set up: %v, want ErrAborted", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Retried, the publish takes the repair over and leaves only its host.
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostB, "node-b"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []store.Replica{a, b} {
		hs := e.cluster.Replica(r.StorageNode, r.ID).Hosts
		if len(hs) != 1 || !hs[hostB] {
			t.Errorf("replica %s allows %v after the takeover, want only %s", r.ID, hs, hostB)
		}
	}
}
