package provisioner_test

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

func TestCreateVolume(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", 10*gib+1, map[string]string{"numReplicas": "3", "provisioningType": "thick"})
	if v.State != store.VolumeReady || v.SizeBytes != 10*gib+1<<20 || len(v.Replicas) != 3 {
		t.Fatalf("volume = %+v", v)
	}
	if !strings.HasPrefix(v.ID, "vol-") || len(v.MDName) > 27 || v.MDName == "" {
		t.Errorf("ID %q / md name %q", v.ID, v.MDName)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}(:[0-9a-f]{8}){3}$`).MatchString(v.MDUUID) {
		t.Errorf("md UUID %q is not in mdadm's colon form", v.MDUUID)
	}
	nodes := map[string]bool{}
	for _, r := range v.Replicas {
		if r.NQN == "" || len(r.Addresses) == 0 || r.State != store.ReplicaActive {
			t.Errorf("replica not created: %+v", r)
		}
		if nodes[r.StorageNode] {
			t.Errorf("two replicas on %s", r.StorageNode)
		}
		nodes[r.StorageNode] = true
		ar := e.cluster.Replica(r.StorageNode, r.ID)
		if ar == nil || ar.VolumeID != v.ID || ar.SizeBytes != layout.ReplicaSize(v.SizeBytes) || ar.Type != "thick" {
			t.Errorf("agent replica = %+v", ar)
		}
	}
	got, err := e.store.GetVolumeByName(e.ctx, "pvc-1")
	if err != nil || got.ID != v.ID || got.State != store.VolumeReady {
		t.Errorf("stored = %+v, %v", got, err)
	}
}

func TestCreateVolumeDefaultsToTwoReplicas(t *testing.T) {
	e := newEnv(t, threeRacks())
	if v := e.create(t, "pvc-1", gib, nil); len(v.Replicas) != 2 {
		t.Errorf("default replicas = %d, want 2", len(v.Replicas))
	}
}

func TestCreateVolumeIdempotent(t *testing.T) {
	e := newEnv(t, threeRacks())
	p := map[string]string{"numReplicas": "2", "racks": "r1,r2,r3"}
	v1 := e.create(t, "pvc-1", gib, p)
	v2 := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2", "racks": "r3, r2,r1", "csi.storage.k8s.io/pvc/name": "other"})
	if v1.ID != v2.ID || e.cluster.TotalReplicas() != 2 {
		t.Errorf("retry created a second volume: %s vs %s, %d replicas on agents", v1.ID, v2.ID, e.cluster.TotalReplicas())
	}
	_, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-1", SizeBytes: 2 * gib, Parameters: p})
	wantCode(t, err, provisioner.ErrAlreadyExists, "size")
	_, err = e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-1", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "3"}})
	wantCode(t, err, provisioner.ErrAlreadyExists, "other parameters")
}

func TestCreateVolumeConcurrentSameName(t *testing.T) {
	e := newEnv(t, threeRacks())
	var wg sync.WaitGroup
	ids := make([]string, 8)
	errs := make([]error, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-race", SizeBytes: gib})
			errs[i] = err
			if err == nil {
				ids[i] = v.ID
			}
		}()
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Errorf("call %d: %s, %v; want %s", i, ids[i], errs[i], ids[0])
		}
	}
	if n := e.cluster.TotalReplicas(); n != 2 {
		t.Errorf("%d replicas on agents, want 2", n)
	}
}

func TestCreateVolumeNameAtTheLimit(t *testing.T) {
	e := newEnv(t, threeRacks())
	for _, name := range []string{strings.Repeat("n", 253), "pvc-6f1c2a10-7d3e-4b8a-9c1d-1a2b3c4d5e6f", "Sanity_Test.1"} {
		e.create(t, name, gib, map[string]string{"numReplicas": "1"})
	}
}

func TestCreateVolumeInvalid(t *testing.T) {
	e := newEnv(t, threeRacks())
	tests := []struct {
		req  provisioner.CreateRequest
		want []string
	}{
		{provisioner.CreateRequest{Name: "", SizeBytes: gib}, []string{"name"}},
		{provisioner.CreateRequest{Name: strings.Repeat("n", 254), SizeBytes: gib}, []string{"name", "253"}},
		{provisioner.CreateRequest{Name: "pvc/../x", SizeBytes: gib}, []string{"name"}},
		{provisioner.CreateRequest{Name: "pvc 1", SizeBytes: gib}, []string{"name"}},
		{provisioner.CreateRequest{Name: "pvc\n1", SizeBytes: gib}, []string{"name"}},
		{provisioner.CreateRequest{Name: "-pvc", SizeBytes: gib}, []string{"name"}},
		{provisioner.CreateRequest{Name: "x", SizeBytes: 0}, []string{"size"}},
		{provisioner.CreateRequest{Name: "x", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "5"}}, []string{"numReplicas", `"5"`}},
		{provisioner.CreateRequest{Name: "x", SizeBytes: gib, Parameters: map[string]string{"replicas": "2"}}, []string{`unknown parameter "replicas"`}},
	}
	for _, tc := range tests {
		_, err := e.svc.CreateVolume(e.ctx, tc.req)
		wantCode(t, err, provisioner.ErrInvalidArgument, tc.want...)
		if provisioner.Code(err).String() != "InvalidArgument" {
			t.Errorf("code = %v", provisioner.Code(err))
		}
	}
}

func TestCreateVolumeNotEnoughNodes(t *testing.T) {
	e := newEnv(t, []node{{"sn-1", "", "r1", 100}, {"sn-2", "", "r1", 100}, {"sn-3", "", "r2", 5}})
	_, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-1", SizeBytes: 10 * gib, Parameters: map[string]string{"numReplicas": "2"}})
	wantCode(t, err, provisioner.ErrResourceExhausted, "need 2 storage nodes in distinct racks", "node sn-3 has only 5 GiB free")
	if _, err := e.store.GetVolumeByName(e.ctx, "pvc-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("failed create left a record: %v", err)
	}
	// sameRackAllowed makes it possible.
	e.create(t, "pvc-1", 10*gib, map[string]string{"numReplicas": "2", "sameRackAllowed": "true"})
}

func TestCreateVolumeUnhealthyNodeSkipped(t *testing.T) {
	e := newEnv(t, threeRacks())
	e.cluster.SetDown("sn-1", true)
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	for _, r := range v.Replicas {
		if r.StorageNode == "sn-1" {
			t.Errorf("replica placed on the down node")
		}
	}
	_, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-2", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "3"}})
	wantCode(t, err, provisioner.ErrResourceExhausted, "node sn-1 is not healthy")
}

func TestCreateVolumeRollsBackOnAgentFailure(t *testing.T) {
	e := newEnv(t, threeRacks())
	boom := fmt.Errorf("pool full: %w", provisioner.ErrResourceExhausted)
	e.cluster.SetCreateHook("sn-3", func(provisioner.ReplicaSpec) error { return boom })
	_, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-1", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "3"}})
	wantCode(t, err, provisioner.ErrResourceExhausted, "sn-3")
	if n := e.cluster.TotalReplicas(); n != 0 {
		t.Errorf("%d replicas left on agents after rollback", n)
	}
	if _, err := e.store.GetVolumeByName(e.ctx, "pvc-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("rolled-back record still there: %v", err)
	}
	e.cluster.SetCreateHook("sn-3", nil)
	e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
}

func TestCreateRollbackWaitsForDownNode(t *testing.T) {
	e := newEnv(t, threeRacks())
	// sn-2 answers the survey but goes down before its replica is made,
	// after sn-1 made its replica.
	e.cluster.SetCreateHook("sn-2", func(provisioner.ReplicaSpec) error {
		e.cluster.SetDown("sn-2", true)
		return fmt.Errorf("connection reset: %w", provisioner.ErrUnavailable)
	})
	e.cluster.SetCreateHook("sn-3", func(provisioner.ReplicaSpec) error { return nil })
	_, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-1", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "3"}})
	wantCode(t, err, provisioner.ErrUnavailable)
	// A retry while the cleanup waits for sn-2 is told to wait.
	_, err = e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-1", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "3"}})
	wantCode(t, err, provisioner.ErrUnavailable, "being deleted")
	e.cluster.SetCreateHook("sn-2", nil)
	e.cluster.SetDown("sn-2", false)
	if n, err := e.svc.Sweep(e.ctx); err != nil || n != 0 {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	if _, err := e.store.GetVolumeByName(e.ctx, "pvc-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("record still there after the sweep: %v", err)
	}
	e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
}

func TestDeleteVolume(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
	down := v.Replicas[2]
	e.cluster.SetDown(down.StorageNode, true)
	if err := e.svc.DeleteVolume(e.ctx, v.ID); err != nil {
		t.Fatalf("DeleteVolume: %v", err)
	}
	got, err := e.store.GetVolume(e.ctx, v.ID)
	if err != nil {
		t.Fatalf("record gone while a replica is still on a down node: %v", err)
	}
	if got.State != store.VolumeDeleting {
		t.Errorf("state = %s", got.State)
	}
	for _, r := range got.Replicas {
		wantPending := r.ID == down.ID
		if r.PendingDelete != wantPending {
			t.Errorf("replica %s on %s: pending %v, want %v", r.ID, r.StorageNode, r.PendingDelete, wantPending)
		}
	}
	if n := e.cluster.TotalReplicas(); n != 1 {
		t.Errorf("%d replicas on agents, want 1 (on the down node)", n)
	}
	// Deleting again is fine; the name stays taken until the sweeper is done.
	if err := e.svc.DeleteVolume(e.ctx, v.ID); err != nil {
		t.Errorf("second DeleteVolume: %v", err)
	}
	if n, _ := e.svc.Sweep(e.ctx); n != 1 {
		t.Errorf("Sweep with the node down: %d remaining, want 1", n)
	}
	e.cluster.SetDown(down.StorageNode, false)
	if n, err := e.svc.Sweep(e.ctx); err != nil || n != 0 {
		t.Errorf("Sweep = %d, %v", n, err)
	}
	if _, err := e.store.GetVolume(e.ctx, v.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("record after sweep: %v", err)
	}
	if e.cluster.TotalReplicas() != 0 {
		t.Error("replica left on the returned node")
	}
	if err := e.svc.DeleteVolume(e.ctx, "vol-unknown"); err != nil {
		t.Errorf("DeleteVolume(unknown) = %v, want nil", err)
	}
}

func TestDeletePublishedVolumeRefused(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, nil)
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-x"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.svc.DeleteVolume(e.ctx, v.ID), provisioner.ErrFailedPrecondition, hostA)
}

func TestCreateVolumeRecordsUUIDMetadataBlock(t *testing.T) {
	e := newEnv(t, threeRacks())
	p := map[string]string{"numReplicas": "1", "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "db", "csi.storage.k8s.io/pv/name": "pv-1"}
	v, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-1", SizeBytes: gib, Parameters: p, Block: true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "db", "csi.storage.k8s.io/pv/name": "pv-1"}
	if !reflect.DeepEqual(v.Metadata, want) || !v.Block {
		t.Errorf("metadata %v block %v", v.Metadata, v.Block)
	}
	// Single-replica volumes get a UUID too (the node ignores it).
	if v.MDUUID == "" {
		t.Error("no md UUID for a single-replica volume")
	}
	w := e.create(t, "pvc-2", gib, nil)
	if w.MDUUID == v.MDUUID || w.Metadata != nil {
		t.Errorf("second volume: uuid %q (first %q), metadata %v", w.MDUUID, v.MDUUID, w.Metadata)
	}
	// A retry returns the same UUID: it is chosen once.
	again, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-1", SizeBytes: gib, Parameters: p, Block: true})
	if err != nil || again.MDUUID != v.MDUUID {
		t.Errorf("retry: %v, uuid %q want %q", err, again.MDUUID, v.MDUUID)
	}
}

// A size near 2^63 must not wrap when rounded up to whole MiB: above the
// largest volume it is OutOfRange, for creation and expansion alike.
func TestVolumeSizeOverflow(t *testing.T) {
	e := newEnv(t, threeRacks())
	for _, size := range []int64{math.MaxInt64, math.MaxInt64 - 1<<20 + 2, layout.MaxVolumeSize + 1} {
		_, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: fmt.Sprintf("huge-%d", size), SizeBytes: size})
		wantCode(t, err, provisioner.ErrOutOfRange, "size")
		if c := provisioner.Code(err); c.String() != "OutOfRange" {
			t.Errorf("CreateVolume(%d): code %v", size, c)
		}
	}
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	for _, size := range []int64{math.MaxInt64, layout.MaxVolumeSize + 1} {
		_, err := e.svc.ExpandVolume(e.ctx, v.ID, size)
		wantCode(t, err, provisioner.ErrOutOfRange, "size")
	}
	if got, _ := e.store.GetVolume(e.ctx, v.ID); got.SizeBytes != gib {
		t.Errorf("size after refused expansions: %d", got.SizeBytes)
	}
}
