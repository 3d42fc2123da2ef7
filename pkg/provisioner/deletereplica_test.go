package provisioner_test

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
)

func TestDeleteReplica(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-x"); err != nil {
		t.Fatal(err)
	}
	victim := v.Replicas[1]
	got, err := e.svc.DeleteReplica(e.ctx, v.ID, victim.ID)
	if err != nil {
		t.Fatalf("DeleteReplica: %v", err)
	}
	r := got.Replica(victim.ID)
	if r.State != store.ReplicaDeleted || r.PendingDelete || r.AllowedHost != "" {
		t.Errorf("replica after delete: state %s pending %v allowed %q; want deleted, not pending, no host", r.State, r.PendingDelete, r.AllowedHost)
	}
	if e.cluster.Replica(victim.StorageNode, victim.ID) != nil {
		t.Error("replica still on its storage node")
	}
	for _, o := range got.Replicas {
		if o.ID != victim.ID && (o.State != store.ReplicaActive || e.cluster.Replica(o.StorageNode, o.ID) == nil) {
			t.Errorf("other replica %s touched: state %s", o.ID, o.State)
		}
	}
	if got.PublishedHostNQN != hostA {
		t.Errorf("volume unpublished: %q", got.PublishedHostNQN)
	}
	// Idempotent: again, then after the node marked it removed.
	if again, err := e.svc.DeleteReplica(e.ctx, v.ID, victim.ID); err != nil || again.Replica(victim.ID).State != store.ReplicaDeleted {
		t.Errorf("second DeleteReplica: %v", err)
	}
	if err := e.svc.MarkReplicaRemoved(e.ctx, v.ID, victim.ID); err != nil {
		t.Fatal(err)
	}
	if again, err := e.svc.DeleteReplica(e.ctx, v.ID, victim.ID); err != nil || again.Replica(victim.ID).State != store.ReplicaRemoved {
		t.Errorf("DeleteReplica of a removed replica: %v", err)
	}
	if n, err := e.svc.Sweep(e.ctx); err != nil || n != 0 {
		t.Errorf("Sweep = %d, %v", n, err)
	}
	// A replica that stayed away can no longer be replaced once deleted.
	_, err = e.svc.ReplaceReplica(e.ctx, v.ID, victim.ID)
	wantCode(t, err, provisioner.ErrFailedPrecondition, "not active")
}

func TestDeleteReplicaNodeAwayIsSwept(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-x"); err != nil {
		t.Fatal(err)
	}
	victim := v.Replicas[0]
	e.cluster.SetDown(victim.StorageNode, true)
	got, err := e.svc.DeleteReplica(e.ctx, v.ID, victim.ID)
	if err != nil {
		t.Fatalf("DeleteReplica with its node away must succeed: %v", err)
	}
	if r := got.Replica(victim.ID); r.State != store.ReplicaDeleted || !r.PendingDelete {
		t.Errorf("state %s pending %v; want deleted and pending", r.State, r.PendingDelete)
	}
	if n, _ := e.svc.Sweep(e.ctx); n != 1 {
		t.Errorf("Sweep with the node away: %d remaining, want 1", n)
	}
	// The node completes its part meanwhile; the storage node's copy stays
	// pending.
	if err := e.svc.MarkReplicaRemoved(e.ctx, v.ID, victim.ID); err != nil {
		t.Fatal(err)
	}
	e.cluster.SetDown(victim.StorageNode, false)
	if e.cluster.Replica(victim.StorageNode, victim.ID) == nil {
		t.Fatal("test setup: replica not on its node")
	}
	if n, err := e.svc.Sweep(e.ctx); err != nil || n != 0 {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	if e.cluster.Replica(victim.StorageNode, victim.ID) != nil {
		t.Error("sweeper left the replica on its returned node")
	}
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	if r := cur.Replica(victim.ID); r.State != store.ReplicaRemoved || r.PendingDelete || r.AllowedHost != "" {
		t.Errorf("after sweep: state %s pending %v allowed %q", r.State, r.PendingDelete, r.AllowedHost)
	}
}

func TestDeleteReplicaRetriedAfterNodeReturns(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	victim := v.Replicas[1]
	e.cluster.SetDown(victim.StorageNode, true)
	if _, err := e.svc.DeleteReplica(e.ctx, v.ID, victim.ID); err != nil {
		t.Fatal(err)
	}
	e.cluster.SetDown(victim.StorageNode, false)
	got, err := e.svc.DeleteReplica(e.ctx, v.ID, victim.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r := got.Replica(victim.ID); r.PendingDelete || e.cluster.Replica(victim.StorageNode, victim.ID) != nil {
		t.Errorf("retry did not delete the pending replica: pending %v", r.PendingDelete)
	}
}

func TestDeleteReplicaLastActiveRefused(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	if _, err := e.svc.DeleteReplica(e.ctx, v.ID, v.Replicas[0].ID); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.DeleteReplica(e.ctx, v.ID, v.Replicas[1].ID)
	wantCode(t, err, provisioner.ErrFailedPrecondition, "last active replica", v.Replicas[1].ID)
	got, _ := e.store.GetVolume(e.ctx, v.ID)
	if r := got.Replica(v.Replicas[1].ID); r.State != store.ReplicaActive || r.PendingDelete {
		t.Errorf("refused replica changed: state %s pending %v", r.State, r.PendingDelete)
	}
	if e.cluster.Replica(v.Replicas[1].StorageNode, v.Replicas[1].ID) == nil {
		t.Error("refused replica deleted on its node")
	}
}

func TestDeleteReplicaReservedReplacement(t *testing.T) {
	// A replacement recorded but not created (its ReplaceReplica cut
	// short) does not count as active, and deleting it unlinks it so that
	// a retried ReplaceReplica places a new one instead of creating it.
	setup := func(t *testing.T) (*env, store.Replica, store.Replica, *store.Volume) {
		e := newEnv(t, []node{{"sn-1", "z1", "r1", 100}, {"sn-2", "z1", "r2", 100}, {"sn-3", "z1", "r3", 100}, {"sn-4", "z1", "r4", 100}})
		v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2"})
		v, err := e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error {
			v.Parameters.StorageNodes = nil
			v.Replicas[0].ReplacedBy = "rep-reserved"
			v.Replicas = append(v.Replicas, store.Replica{ID: "rep-reserved", StorageNode: "sn-3", State: store.ReplicaActive, Replaces: v.Replicas[0].ID})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return e, v.Replicas[0], v.Replicas[1], v
	}
	t.Run("not counted as active", func(t *testing.T) {
		e, missing, other, v := setup(t)
		if _, err := e.svc.DeleteReplica(e.ctx, v.ID, missing.ID); err != nil {
			t.Fatal(err)
		}
		_, err := e.svc.DeleteReplica(e.ctx, v.ID, other.ID)
		wantCode(t, err, provisioner.ErrFailedPrecondition, "last active replica")
	})
	t.Run("unlinked", func(t *testing.T) {
		e, missing, _, v := setup(t)
		got, err := e.svc.DeleteReplica(e.ctx, v.ID, "rep-reserved")
		if err != nil {
			t.Fatal(err)
		}
		if got.Replica(missing.ID).ReplacedBy != "" {
			t.Error("deleted reservation still linked")
		}
		nr, err := e.svc.ReplaceReplica(e.ctx, v.ID, missing.ID)
		if err != nil {
			t.Fatalf("ReplaceReplica after the reservation was deleted: %v", err)
		}
		// The reservation's node may hold the new one: the deletion was
		// confirmed there, so it holds no copy.
		if nr.ID == "rep-reserved" || nr.NQN == "" || nr.StorageNode == missing.StorageNode {
			t.Errorf("replacement %s on %s (nqn %q); want a new, created one away from the replaced replica's node", nr.ID, nr.StorageNode, nr.NQN)
		}
		if e.cluster.Replica("sn-3", "rep-reserved") != nil {
			t.Error("deleted reservation created on its node")
		}
	})
}

func TestDeleteReplicaNotFoundAndRefusals(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, nil)
	_, err := e.svc.DeleteReplica(e.ctx, "vol-nope", "rep-x")
	wantCode(t, err, provisioner.ErrNotFound)
	_, err = e.svc.DeleteReplica(e.ctx, v.ID, "rep-nope")
	wantCode(t, err, provisioner.ErrNotFound, "rep-nope")
	if _, err := e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error {
		v.State = store.VolumeCreating
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.DeleteReplica(e.ctx, v.ID, v.Replicas[0].ID)
	wantCode(t, err, provisioner.ErrUnavailable, "being created")
	// A deleted volume's replicas are already on their way out.
	if _, err := e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error {
		v.State = store.VolumeReady
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteVolume(e.ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.DeleteReplica(e.ctx, v.ID, v.Replicas[0].ID)
	wantCode(t, err, provisioner.ErrNotFound)
}

func TestDeleteReplicaAgentFailureRevokesHost(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-x"); err != nil {
		t.Fatal(err)
	}
	victim := v.Replicas[0]
	e.cluster.SetDeleteHook(victim.StorageNode, func(string) error { return errors.New("disk on fire") })
	_, err := e.svc.DeleteReplica(e.ctx, v.ID, victim.ID)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("DeleteReplica with a failing agent: %v; want its error", err)
	}
	// Out of the configuration anyway, fenced off the host, and pending.
	got, _ := e.store.GetVolume(e.ctx, v.ID)
	if r := got.Replica(victim.ID); r.State != store.ReplicaDeleted || !r.PendingDelete || r.AllowedHost != "" {
		t.Errorf("state %s pending %v allowed %q; want deleted, pending, no host", r.State, r.PendingDelete, r.AllowedHost)
	}
	if ar := e.cluster.Replica(victim.StorageNode, victim.ID); ar == nil || len(ar.Hosts) != 0 {
		t.Errorf("replica on its node: %+v; want it there with no host allowed", ar)
	}
	e.cluster.SetDeleteHook(victim.StorageNode, nil)
	if n, err := e.svc.Sweep(e.ctx); err != nil || n != 0 {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	if e.cluster.Replica(victim.StorageNode, victim.ID) != nil {
		t.Error("sweeper did not delete the replica")
	}
}

// The server guards DeleteReplica like the other mutating calls and checks
// its fields.
func TestServerDeleteReplica(t *testing.T) {
	e := newEnv(t, threeRacks())
	srv := provisioner.NewServer(e.svc)
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
	for _, tc := range []struct {
		req  *provisionerapi.DeleteReplicaRequest
		code codes.Code
		msg  string
	}{
		{&provisionerapi.DeleteReplicaRequest{ReplicaId: "r"}, codes.InvalidArgument, "volume_id"},
		{&provisionerapi.DeleteReplicaRequest{VolumeId: v.ID}, codes.InvalidArgument, "replica_id"},
		{&provisionerapi.DeleteReplicaRequest{VolumeId: "vol-x", ReplicaId: "r"}, codes.NotFound, "vol-x"},
		{&provisionerapi.DeleteReplicaRequest{VolumeId: v.ID, ReplicaId: "rep-x"}, codes.NotFound, "rep-x"},
	} {
		_, err := srv.DeleteReplica(e.ctx, tc.req)
		if st, _ := status.FromError(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("DeleteReplica(%v) = %v, want %v mentioning %q", tc.req, err, tc.code, tc.msg)
		}
	}

	victim := v.Replicas[0]
	entered, release := make(chan struct{}, 1), make(chan struct{})
	e.cluster.SetDeleteHook(victim.StorageNode, func(string) error {
		entered <- struct{}{}
		<-release
		return nil
	})
	req := &provisionerapi.DeleteReplicaRequest{VolumeId: v.ID, ReplicaId: victim.ID}
	done := make(chan error, 1)
	go func() {
		_, err := srv.DeleteReplica(e.ctx, req)
		done <- err
	}()
	<-entered
	if _, err := srv.DeleteReplica(e.ctx, &provisionerapi.DeleteReplicaRequest{VolumeId: v.ID, ReplicaId: v.Replicas[1].ID}); status.Code(err) != codes.Aborted {
		t.Errorf("concurrent DeleteReplica: %v, want Aborted", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("first DeleteReplica: %v", err)
	}
	resp, err := srv.DeleteReplica(e.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.GetVolume().GetReplicas() {
		want := provisionerapi.ReplicaState_REPLICA_STATE_ACTIVE
		if r.GetId() == victim.ID {
			want = provisionerapi.ReplicaState_REPLICA_STATE_DELETED
		}
		if r.GetState() != want {
			t.Errorf("replica %s: %v, want %v", r.GetId(), r.GetState(), want)
		}
	}
}
