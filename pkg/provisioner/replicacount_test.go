package provisioner_test

import (
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

func activeReplicas(t *testing.T, e *env, id string) []store.Replica {
	t.Helper()
	v, err := e.store.GetVolume(e.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.Replica
	for _, r := range v.Replicas {
		if r.State == store.ReplicaActive {
			out = append(out, r)
		}
	}
	return out
}

// numReplicas of a live volume: 2 → 3 adds a replica (out of sync, filled
// by md), 3 → 2 deletes the one that matters least; retries change nothing.
func TestReplicaCountFollowsNumReplicas(t *testing.T) {
	nodes := append(threeRacks(), node{"sn-4", "z1", "r4", 100})
	e := newEnv(t, nodes)
	v := e.create(t, "pvc-count", gib, map[string]string{"numReplicas": "2"})
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-a"); err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.ModifyVolume(e.ctx, v.ID, map[string]string{"numReplicas": "3"})
	if err != nil {
		t.Fatalf("numReplicas 3: %v", err)
	}
	act := activeReplicas(t, e, v.ID)
	if got.Parameters.NumReplicas != 3 || len(act) != 3 {
		t.Fatalf("after numReplicas 3: parameter %d, active %+v", got.Parameters.NumReplicas, act)
	}
	added := act[2]
	if added.InSync() || added.NQN == "" || added.StorageNode == act[0].StorageNode || added.StorageNode == act[1].StorageNode {
		t.Fatalf("added replica %+v: want created, out of sync, on a third node", added)
	}
	if ar := e.cluster.Replica(added.StorageNode, added.ID); ar == nil || !ar.Hosts[hostA] {
		t.Errorf("added replica on its agent %+v: want the volume's host allowed", ar)
	}
	if _, err := e.svc.ModifyVolume(e.ctx, v.ID, map[string]string{"numReplicas": "3"}); err != nil || len(activeReplicas(t, e, v.ID)) != 3 {
		t.Fatalf("retry: %v, %d active", err, len(activeReplicas(t, e, v.ID)))
	}

	// The added replica is still filling: it goes first when the count
	// drops back.
	if _, err := e.svc.ModifyVolume(e.ctx, v.ID, map[string]string{"numReplicas": "2"}); err != nil {
		t.Fatalf("numReplicas 2: %v", err)
	}
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	if r := cur.Replica(added.ID); r.State != store.ReplicaDeleted || !r.PendingDelete && e.cluster.Replica(added.StorageNode, added.ID) != nil {
		t.Fatalf("replica to go %+v: want the out-of-sync one deleted", r)
	}
	if n := len(activeReplicas(t, e, v.ID)); n != 2 || cur.Parameters.NumReplicas != 2 {
		t.Fatalf("after numReplicas 2: %d active, parameter %d", n, cur.Parameters.NumReplicas)
	}
}

func TestReplicaCountRefusals(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-2", gib, map[string]string{"numReplicas": "2"})
	_, err := e.svc.ModifyVolume(e.ctx, v.ID, map[string]string{"numReplicas": "1"})
	wantCode(t, err, provisioner.ErrFailedPrecondition, "numReplicas", "at least 2")
	single := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "1"})
	_, err = e.svc.ModifyVolume(e.ctx, single.ID, map[string]string{"numReplicas": "2"})
	wantCode(t, err, provisioner.ErrFailedPrecondition, "numReplicas", "no md array")
	_, err = e.svc.ModifyVolume(e.ctx, v.ID, map[string]string{"numReplicas": "4"})
	wantCode(t, err, provisioner.ErrInvalidArgument, "numReplicas")

	// One change at a time: a move runs.
	if _, err := e.svc.MoveReplica(e.ctx, v.ID, v.Replicas[0].ID, ""); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.ModifyVolume(e.ctx, v.ID, map[string]string{"numReplicas": "3"})
	wantCode(t, err, provisioner.ErrAborted, "move or replacement")
	for _, id := range []string{v.ID, single.ID} {
		cur, _ := e.store.GetVolume(e.ctx, id)
		if want := map[string]int{v.ID: 2, single.ID: 1}[id]; cur.Parameters.NumReplicas != want {
			t.Errorf("volume %s: numReplicas %d after refusals, want %d", id, cur.Parameters.NumReplicas, want)
		}
	}
}

// Lowering the count never deletes the last in-sync replica, and prefers
// one that misses writes.
func TestReplicaCountKeepsTheInSyncOnes(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-3", gib, map[string]string{"numReplicas": "3"})
	stale(t, e, v.ID, v.Replicas[1].ID, time.Now(), 10)
	if _, err := e.svc.ModifyVolume(e.ctx, v.ID, map[string]string{"numReplicas": "2"}); err != nil {
		t.Fatal(err)
	}
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	if r := cur.Replica(v.Replicas[1].ID); r.State != store.ReplicaDeleted {
		t.Errorf("the out-of-sync replica %+v stays; want it deleted first", r)
	}
	for _, i := range []int{0, 2} {
		if r := cur.Replica(v.Replicas[i].ID); r.State != store.ReplicaActive {
			t.Errorf("in-sync replica %+v deleted", r)
		}
	}
}

// Lowered, then raised again on a cluster with no other node: the node that
// gave a replica up may take the volume back once that replica is gone
// from it, never while it still holds it.
func TestReplicaCountRaisedAgainReusesAFreedNode(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-back", gib, map[string]string{"numReplicas": "3"})
	if _, err := e.svc.ModifyVolume(e.ctx, v.ID, map[string]string{"numReplicas": "2"}); err != nil {
		t.Fatalf("numReplicas 2: %v", err)
	}
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	var gone store.Replica
	for _, r := range cur.Replicas {
		if r.State != store.ReplicaActive {
			gone = r
		}
	}
	if gone.ID == "" || gone.PendingDelete || e.cluster.Replica(gone.StorageNode, gone.ID) != nil {
		t.Fatalf("lowered replica %+v: want deleted on its node", gone)
	}
	got, err := e.svc.ModifyVolume(e.ctx, v.ID, map[string]string{"numReplicas": "3"})
	if err != nil {
		t.Fatalf("numReplicas 3 again, with only the freed node left: %v", err)
	}
	act := activeReplicas(t, e, v.ID)
	if got.Parameters.NumReplicas != 3 || len(act) != 3 || act[2].StorageNode != gone.StorageNode || act[2].ID == gone.ID {
		t.Fatalf("after raising again: active %+v; want a new replica on %s", act, gone.StorageNode)
	}

	// While a node still holds a copy (its deletion pending), it is not
	// chosen.
	e.cluster.SetDown(act[2].StorageNode, true)
	if _, err := e.svc.ModifyVolume(e.ctx, v.ID, map[string]string{"numReplicas": "2"}); err != nil {
		t.Fatalf("numReplicas 2 with the node away: %v", err)
	}
	e.cluster.SetDown(act[2].StorageNode, false)
	if _, err = e.svc.ModifyVolume(e.ctx, v.ID, map[string]string{"numReplicas": "3"}); err == nil {
		t.Fatal("numReplicas 3 succeeded with the only free node still holding a copy")
	}
	for _, r := range activeReplicas(t, e, v.ID) {
		if r.StorageNode == act[2].StorageNode {
			t.Fatalf("replica %s placed on %s, which still holds a copy to delete", r.ID, r.StorageNode)
		}
	}
}
