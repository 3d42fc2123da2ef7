package provisioner_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

func replicaOn(t *testing.T, v *store.Volume, node string) store.Replica {
	t.Helper()
	for _, r := range v.Replicas {
		if r.StorageNode == node {
			return r
		}
	}
	t.Fatalf("volume %s has no replica on %s", v.ID, node)
	return store.Replica{}
}

func TestReplaceReplica(t *testing.T) {
	// sn-1 and sn-2 hold the volume; sn-3 shares sn-1's rack, sn-4 has its
	// own: the replacement must go to sn-4.
	e := newEnv(t, []node{{"sn-1", "z1", "r1", 100}, {"sn-2", "z1", "r2", 100}, {"sn-3", "z1", "r1", 100}, {"sn-4", "z1", "r3", 100}})
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2,sn-3,sn-4", "racks": "r1,r2"})
	// The selectors above pin the first placement to racks r1/r2; widen
	// the configuration so that r3 is allowed for the replacement.
	if _, err := e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error { v.Parameters.Racks = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-x"); err != nil {
		t.Fatal(err)
	}
	v, _ = e.store.GetVolume(e.ctx, v.ID)
	missing := v.Replicas[1]
	keep := v.Replicas[0]
	e.cluster.SetDown(missing.StorageNode, true)

	nr, err := e.svc.ReplaceReplica(e.ctx, v.ID, missing.ID)
	if err != nil {
		t.Fatalf("ReplaceReplica: %v", err)
	}
	if nr.StorageNode == keep.StorageNode || nr.StorageNode == missing.StorageNode {
		t.Fatalf("replacement on %s, a node holding the volume", nr.StorageNode)
	}
	keepRack := map[string]string{"sn-1": "r1", "sn-2": "r2", "sn-3": "r1", "sn-4": "r3"}
	if keepRack[nr.StorageNode] == keepRack[keep.StorageNode] {
		t.Errorf("replacement on %s shares rack %s with the kept replica", nr.StorageNode, keepRack[keep.StorageNode])
	}
	if nr.NQN == "" || nr.Replaces != missing.ID || nr.AllowedHost != hostA {
		t.Errorf("new replica = %+v", nr)
	}
	if hs := e.cluster.Replica(nr.StorageNode, nr.ID).Hosts; !hs[hostA] || len(hs) != 1 {
		t.Errorf("new replica allows %v, want the volume's host", hs)
	}
	got, _ := e.store.GetVolume(e.ctx, v.ID)
	m := got.Replica(missing.ID)
	if m.State != store.ReplicaRemoved || !m.PendingDelete || m.ReplacedBy != nr.ID {
		t.Errorf("missing replica = %+v", m)
	}

	// Idempotent: a retry returns the same replica and creates nothing.
	before := e.cluster.TotalReplicas()
	again, err := e.svc.ReplaceReplica(e.ctx, v.ID, missing.ID)
	if err != nil || again.ID != nr.ID || e.cluster.TotalReplicas() != before {
		t.Errorf("retry = %+v, %v; replicas %d → %d", again, err, before, e.cluster.TotalReplicas())
	}

	// The old node returns: the sweeper deletes the replaced replica.
	e.cluster.SetDown(missing.StorageNode, false)
	if n, err := e.svc.Sweep(e.ctx); err != nil || n != 0 {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	if e.cluster.Replica(missing.StorageNode, missing.ID) != nil {
		t.Error("replaced replica not deleted from its returning node")
	}
	got, _ = e.store.GetVolume(e.ctx, v.ID)
	if m := got.Replica(missing.ID); m.PendingDelete || m.State != store.ReplicaRemoved {
		t.Errorf("after sweep: %+v", m)
	}
}

func TestReplaceReplicaRefusals(t *testing.T) {
	e := newEnv(t, []node{{"sn-1", "", "r1", 100}, {"sn-2", "", "r2", 100}, {"sn-3", "", "r3", 100}, {"sn-4", "", "r4", 100}, {"sn-5", "", "r5", 100}})
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})

	_, err := e.svc.ReplaceReplica(e.ctx, v.ID, "rep-nope")
	wantCode(t, err, provisioner.ErrNotFound)
	_, err = e.svc.ReplaceReplica(e.ctx, "vol-nope", v.Replicas[0].ID)
	wantCode(t, err, provisioner.ErrNotFound)

	// A fourth replica in the configuration (one deleted but not yet out
	// of the array): no replacement may make it five.
	_, err = e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error {
		v.Replicas = append(v.Replicas, store.Replica{ID: "rep-old", StorageNode: "sn-5", State: store.ReplicaDeleted})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.ReplaceReplica(e.ctx, v.ID, v.Replicas[0].ID)
	wantCode(t, err, provisioner.ErrFailedPrecondition, "4 replicas")

	// Once the node has taken it out of the array, replacement proceeds.
	if err := e.svc.MarkReplicaRemoved(e.ctx, v.ID, "rep-old"); err != nil {
		t.Fatal(err)
	}
	nr, err := e.svc.ReplaceReplica(e.ctx, v.ID, v.Replicas[0].ID)
	if err != nil {
		t.Fatalf("ReplaceReplica with 3 in configuration: %v", err)
	}
	// sn-4 and sn-5 are equally used (rep-old is a record only); the id
	// breaks the tie.
	if nr.StorageNode != "sn-4" {
		t.Errorf("replacement on %s, want sn-4", nr.StorageNode)
	}
	// Replacing a replica that is no longer active is refused.
	_, err = e.svc.ReplaceReplica(e.ctx, v.ID, "rep-old")
	wantCode(t, err, provisioner.ErrFailedPrecondition, "removed")
}

func TestReplaceReplicaNoRoom(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
	e.cluster.SetDown("sn-3", true)
	_, err := e.svc.ReplaceReplica(e.ctx, v.ID, replicaOn(t, v, "sn-3").ID)
	wantCode(t, err, provisioner.ErrResourceExhausted, "already holds a replica")
	got, _ := e.store.GetVolume(e.ctx, v.ID)
	if len(got.Replicas) != 3 || got.Replica(replicaOn(t, v, "sn-3").ID).ReplacedBy != "" {
		t.Errorf("failed replacement left a reservation: %+v", got.Replicas)
	}
}

func TestReplaceReplicaCreateFailureUndone(t *testing.T) {
	e := newEnv(t, []node{{"sn-1", "", "r1", 100}, {"sn-2", "", "r2", 100}, {"sn-3", "", "r3", 100}, {"sn-4", "", "r4", 100}})
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2"})
	if _, err := e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error { v.Parameters.StorageNodes = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	e.cluster.SetCreateHook("sn-3", func(provisioner.ReplicaSpec) error { return provisioner.ErrUnavailable })
	missing := v.Replicas[0]
	_, err := e.svc.ReplaceReplica(e.ctx, v.ID, missing.ID)
	wantCode(t, err, provisioner.ErrUnavailable)
	got, _ := e.store.GetVolume(e.ctx, v.ID)
	if got.Replica(missing.ID).ReplacedBy != "" || got.Replica(missing.ID).State != store.ReplicaActive {
		t.Errorf("reservation not undone: %+v", got.Replica(missing.ID))
	}
	// The retry avoids sn-3 (it may hold a half-made replica) and uses sn-4.
	nr, err := e.svc.ReplaceReplica(e.ctx, v.ID, missing.ID)
	if err != nil || nr.StorageNode != "sn-4" {
		t.Fatalf("retry = %+v, %v; want sn-4", nr, err)
	}
	e.cluster.SetCreateHook("sn-3", nil)
	// Every node is up: the sweep deletes the replaced replica from sn-1
	// and the abandoned reservation on sn-3, leaving nothing to do.
	if n, err := e.svc.Sweep(e.ctx); err != nil || n != 0 {
		t.Errorf("Sweep = %d, %v; want 0 remaining", n, err)
	}
	got, _ = e.store.GetVolume(e.ctx, v.ID)
	for _, r := range got.Replicas {
		if r.PendingDelete {
			t.Errorf("replica %s still pending deletion after sweep", r.ID)
		}
	}
}

func TestReplacementsBoundedPerStorageNode(t *testing.T) {
	e := newEnvOpts(t, threeRacks(), provisioner.Options{MaxReplacementsPerNode: 1})
	v1 := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2"})
	v2 := e.create(t, "pvc-2", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2"})
	for _, v := range []*store.Volume{v1, v2} {
		if _, err := e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error { v.Parameters.StorageNodes = nil; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	// Hold the first replacement on sn-3 (the only possible target).
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	e.cluster.SetCreateHook("sn-3", func(provisioner.ReplicaSpec) error {
		once.Do(func() { close(entered) })
		<-release
		return nil
	})
	done := make(chan error, 1)
	go func() {
		_, err := e.svc.ReplaceReplica(e.ctx, v1.ID, replicaOn(t, v1, "sn-1").ID)
		done <- err
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("first replacement never reached the agent")
	}
	_, err := e.svc.ReplaceReplica(e.ctx, v2.ID, replicaOn(t, v2, "sn-1").ID)
	wantCode(t, err, provisioner.ErrUnavailable, "busy")
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("first replacement: %v", err)
	}
	if _, err := e.svc.ReplaceReplica(e.ctx, v2.ID, replicaOn(t, v2, "sn-1").ID); err != nil {
		t.Errorf("second replacement after the first finished: %v", err)
	}
}

func TestMarkReplicaRemoved(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, nil)
	wantCode(t, e.svc.MarkReplicaRemoved(e.ctx, v.ID, v.Replicas[0].ID), provisioner.ErrFailedPrecondition, "active")
	wantCode(t, e.svc.MarkReplicaRemoved(e.ctx, v.ID, "rep-nope"), provisioner.ErrNotFound)
	if _, err := e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error {
		v.Replicas[0].State = store.ReplicaDeleted
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := e.svc.MarkReplicaRemoved(e.ctx, v.ID, v.Replicas[0].ID); err != nil {
			t.Fatalf("MarkReplicaRemoved #%d: %v", i, err)
		}
	}
	got, _ := e.store.GetVolume(e.ctx, v.ID)
	if got.Replicas[0].State != store.ReplicaRemoved {
		t.Errorf("state = %s", got.Replicas[0].State)
	}
	if err := e.svc.MarkReplicaRemoved(e.ctx, "vol-nope", "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown volume: %v", err)
	}
}
