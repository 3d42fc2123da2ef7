package provisioner_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/fakeagent"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/repair"
)

func moveAudits(t *testing.T, e *env, volumeID string) []events.Event {
	t.Helper()
	var out []events.Event
	for _, a := range audits(t, e, volumeID) {
		if a.Method == provisioner.MoveMethod {
			out = append(out, a)
		}
	}
	return out
}

// A move adds before it removes: the old replica stays active (and in
// sync) until the new one is recorded in sync.
func TestMoveReplicaAddsThenRemoves(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-move", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2,sn-3"})
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-a"); err != nil {
		t.Fatal(err)
	}
	old := v.Replicas[0]
	nr, err := e.svc.MoveReplica(e.ctx, v.ID, old.ID, "")
	if err != nil {
		t.Fatalf("MoveReplica: %v", err)
	}
	if nr.StorageNode == old.StorageNode || nr.StorageNode == v.Replicas[1].StorageNode || !nr.Move || nr.Replaces != old.ID || nr.InSync() || nr.NQN == "" {
		t.Fatalf("new replica %+v: want on the third node, a move of %s, out of sync, created", nr, old.ID)
	}
	if ar := e.cluster.Replica(nr.StorageNode, nr.ID); ar == nil || !ar.Hosts[hostA] {
		t.Fatalf("new replica on its agent %+v: want created with the volume's host allowed", ar)
	}
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	if o := cur.Replica(old.ID); o.State != store.ReplicaActive || !o.InSync() || o.ReplacedBy != nr.ID {
		t.Fatalf("old replica during the move %+v: want active, in sync, linked to %s", o, nr.ID)
	}
	// A retry answers with the move in flight; nothing new is made.
	again, err := e.svc.MoveReplica(e.ctx, v.ID, old.ID, "")
	if err != nil || again.ID != nr.ID {
		t.Fatalf("retry: %+v, %v; want %s", again, err, nr.ID)
	}
	// A fifth replica is never made, and an out-of-sync report of the new
	// one changes nothing about the old.
	if _, err := e.svc.ReportReplicaSync(e.ctx, inSync(v, v.Replicas[1].ID, 10)); err != nil {
		t.Fatal(err)
	}
	if cur, _ = e.store.GetVolume(e.ctx, v.ID); cur.Replica(old.ID).State != store.ReplicaActive || len(cur.Replicas) != 3 {
		t.Fatalf("after an unrelated report: %+v", cur.Replicas)
	}
	if n := len(moveAudits(t, e, v.ID)); n != 1 {
		t.Errorf("%d move audit events while in flight, want 1 (started)", n)
	}

	// The node's md finished filling the new replica.
	if _, err := e.svc.ReportReplicaSync(e.ctx, inSync(v, nr.ID, 20)); err != nil {
		t.Fatal(err)
	}
	cur, _ = e.store.GetVolume(e.ctx, v.ID)
	if o := cur.Replica(old.ID); o.State != store.ReplicaRemoved || !o.PendingDelete {
		t.Fatalf("old replica after the new one is in sync: %+v; want removed, pending deletion", o)
	}
	if n := cur.Replica(nr.ID); n.State != store.ReplicaActive || !n.InSync() || n.Move {
		t.Fatalf("new replica %+v: want active, in sync, an ordinary replica now", n)
	}
	if as := moveAudits(t, e, v.ID); len(as) != 2 || as[1].StorageNode != old.StorageNode {
		t.Errorf("move audit events %+v: want started and finished", as)
	}
}

func TestMoveReplicaRefusals(t *testing.T) {
	nodes := []node{{"sn-1", "z1", "r1", 100}, {"sn-2", "z1", "r2", 100}, {"sn-3", "z1", "r3", 100}, {"sn-4", "z1", "r2", 100}}
	e := newEnv(t, nodes)
	v := e.create(t, "pvc-rules", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2,sn-4"})
	other := e.create(t, "pvc-other", gib, map[string]string{"numReplicas": "2"})
	byNode := map[string]store.Replica{}
	for _, r := range v.Replicas {
		byNode[r.StorageNode] = r
	}
	r1, ok := byNode["sn-1"]
	if !ok {
		t.Fatalf("replicas %+v: want one on sn-1", v.Replicas)
	}
	rackMate := "sn-4"
	if _, ok := byNode["sn-4"]; ok {
		rackMate = "sn-2"
	}

	_, err := e.svc.MoveReplica(e.ctx, v.ID, r1.ID, rackMate)
	wantCode(t, err, provisioner.ErrFailedPrecondition, rackMate, "rack")
	_, err = e.svc.MoveReplica(e.ctx, v.ID, r1.ID, "sn-3")
	wantCode(t, err, provisioner.ErrFailedPrecondition, "sn-3", "storageNodes")
	_, err = e.svc.MoveReplica(e.ctx, v.ID, r1.ID, "sn-9")
	wantCode(t, err, provisioner.ErrInvalidArgument, "to_storage_node", "sn-9")
	_, err = e.svc.MoveReplica(e.ctx, v.ID, other.Replicas[0].ID, "")
	wantCode(t, err, provisioner.ErrInvalidArgument, "replica_id", other.Replicas[0].ID)
	// A one-replica volume has no md to fill a new replica: the move
	// could never finish, so it never starts.
	single := e.create(t, "pvc-single", gib, map[string]string{"numReplicas": "1"})
	_, err = e.svc.MoveReplica(e.ctx, single.ID, single.Replicas[0].ID, "")
	wantCode(t, err, provisioner.ErrFailedPrecondition, "one replica")
	if cur, _ := e.store.GetVolume(e.ctx, single.ID); len(cur.Replicas) != 1 {
		t.Fatalf("one-replica volume after a refused move: %+v", cur.Replicas)
	}
	// Nothing was half-made.
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	if len(cur.Replicas) != 2 || cur.Replica(r1.ID).ReplacedBy != "" {
		t.Fatalf("after refusals: %+v", cur.Replicas)
	}
	// No rule-abiding node is left: placement says why.
	if _, err := e.svc.MoveReplica(e.ctx, v.ID, r1.ID, ""); err == nil {
		t.Fatal("a move with nowhere to go succeeded")
	}
}

func TestCordonedNodeGetsNoNewReplica(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-cordon", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2,sn-3"})
	used := map[string]bool{v.Replicas[0].StorageNode: true, v.Replicas[1].StorageNode: true}
	free := ""
	for _, n := range []string{"sn-1", "sn-2", "sn-3"} {
		if !used[n] {
			free = n
		}
	}
	n, err := e.svc.CordonStorageNode(e.ctx, free, true)
	if err != nil || !n.Cordoned {
		t.Fatalf("cordon: %+v, %v", n, err)
	}
	if _, err := e.svc.MoveReplica(e.ctx, v.ID, v.Replicas[0].ID, ""); err == nil || !strings.Contains(err.Error(), "cordoned") {
		t.Fatalf("move with only a cordoned node left: %v; want refused naming the cordon", err)
	}
	if _, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-3", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "3"}}); err == nil {
		t.Fatal("a 3-replica volume was placed with one of three nodes cordoned")
	}
	list, err := e.svc.ListStorageNodes(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		if s.Cordoned != (s.ID == free) {
			t.Errorf("node %s cordoned = %v", s.ID, s.Cordoned)
		}
	}
	if _, err := e.svc.CordonStorageNode(e.ctx, free, false); err != nil {
		t.Fatal(err)
	}
	if nr, err := e.svc.MoveReplica(e.ctx, v.ID, v.Replicas[0].ID, ""); err != nil || nr.StorageNode != free {
		t.Fatalf("move after uncordon: %+v, %v", nr, err)
	}
	_, err = e.svc.CordonStorageNode(e.ctx, "sn-9", true)
	wantCode(t, err, provisioner.ErrNotFound)
}

// A volume no host has staged is moved by an offline repair: the new
// replica is filled on a storage node, and its end removes the old one.
func TestMoveReplicaOfAnUnstagedVolume(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-offline-move", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2,sn-3"})
	old := v.Replicas[0]
	nr, err := e.svc.MoveReplica(e.ctx, v.ID, old.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if n := repairOnce(t, e); n != 1 {
		t.Fatalf("RepairOnce started %d repairs, want the move's", n)
	}
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	fr := e.cluster.Repair(cur.Repair.StorageNode, cur.Repair.ID)
	if fr == nil || len(fr.Request.Members) != 3 {
		t.Fatalf("repair request %+v: want all three replicas (the old one in sync, a source)", fr)
	}
	for _, m := range fr.Request.Members {
		if m.InSync != (m.ID != nr.ID) {
			t.Errorf("member %s in sync = %v", m.ID, m.InSync)
		}
	}
	e.cluster.SetRepair(cur.Repair.StorageNode, cur.Repair.ID, func(s *repair.Status) {
		s.State, s.Synced = repair.Succeeded, []string{nr.ID}
	})
	repairOnce(t, e)
	cur, _ = e.store.GetVolume(e.ctx, v.ID)
	if o := cur.Replica(old.ID); o.State != store.ReplicaRemoved || !o.PendingDelete || !cur.Replica(nr.ID).InSync() {
		t.Fatalf("after the repair: old %+v, new %+v", o, cur.Replica(nr.ID))
	}
	for _, n := range []string{"sn-1", "sn-2", "sn-3"} {
		if r := e.cluster.Replica(old.StorageNode, old.ID); r != nil && r.Hosts[fakeagent.RepairNQNPrefix+n] {
			t.Errorf("old replica still allows the repair host of %s", n)
		}
	}
}

// The offline repairer starts filling a new replica of a volume no host
// has published as soon as it is created, not an interval later: with an
// interval of an hour, only that wake-up can start it.
func TestRepairerStartsAtOnceForANewReplica(t *testing.T) {
	e := newEnv(t, threeRacks())
	first := e.create(t, "pvc-first", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2,sn-3"})
	second := e.create(t, "pvc-second", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2,sn-3"})
	if _, err := e.svc.MoveReplica(e.ctx, first.ID, first.Replicas[0].ID, ""); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.svc.RunRepairer(ctx, time.Hour) }()
	t.Cleanup(func() { cancel(); <-done })
	repairing := func(id string) func() bool {
		return func() bool {
			v, err := e.store.GetVolume(e.ctx, id)
			return err == nil && v.Repair != nil
		}
	}
	// The first pass (at start) repairs the first volume's move; the
	// second volume's move comes after that pass listed the volumes.
	waitCond(t, "the first pass to start the first volume's repair", repairing(first.ID))
	if _, err := e.svc.MoveReplica(e.ctx, second.ID, second.Replicas[0].ID, ""); err != nil {
		t.Fatal(err)
	}
	waitCond(t, "a repair of the second volume's new replica", repairing(second.ID))
}

// waitCond polls cond every few milliseconds, failing after 10 s.
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
