package provisioner_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/mdraid"

	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/fakeagent"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/boltstore"
)

const gib = int64(1) << 30

const (
	hostA = "nqn.2014-08.org.nvmexpress:uuid:6f1c2a10-7d3e-4b8a-9c1d-1a2b3c4d5e6f"
	hostB = "nqn.2014-08.org.nvmexpress:uuid:0b9a8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"
)

type env struct {
	svc     *provisioner.Service
	store   store.Store
	cluster *fakeagent.Cluster
	ctx     context.Context
}

// node describes a fake storage node: id, zone, rack, pool GiB.
type node struct {
	id, zone, rack string
	gib            int64
}

func threeRacks() []node {
	return []node{{"sn-1", "z1", "r1", 100}, {"sn-2", "z1", "r2", 100}, {"sn-3", "z1", "r3", 100}}
}

func newEnvWithStore(t testing.TB, st store.Store, nodes []node, o provisioner.Options) *env {
	t.Helper()
	ctx := context.Background()
	c := fakeagent.New()
	for _, n := range nodes {
		if err := st.PutStorageNode(ctx, c.AddNode(n.id, n.zone, n.rack, n.gib*gib)); err != nil {
			t.Fatal(err)
		}
	}
	o.Store, o.Agents = st, c
	svc, err := provisioner.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return &env{svc: svc, store: st, cluster: c, ctx: ctx}
}

func newEnv(t testing.TB, nodes []node) *env {
	t.Helper()
	return newEnvOpts(t, nodes, provisioner.Options{})
}

func newEnvOpts(t testing.TB, nodes []node, o provisioner.Options) *env {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "registry.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newEnvWithStore(t, st, nodes, o)
}

func (e *env) create(t *testing.T, name string, size int64, p map[string]string) *store.Volume {
	t.Helper()
	v, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: name, SizeBytes: size, Parameters: p})
	if err != nil {
		t.Fatalf("CreateVolume(%s): %v", name, err)
	}
	return v
}

func wantCode(t *testing.T, err error, sentinel error, contains ...string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("err = %v, want %v", err, sentinel)
	}
	for _, s := range contains {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
}

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
		if ar == nil || ar.VolumeID != v.ID || ar.SizeBytes != provisioner.ReplicaSize(v.SizeBytes) || ar.Type != "thick" {
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

func TestCreateVolumeInvalid(t *testing.T) {
	e := newEnv(t, threeRacks())
	tests := []struct {
		req  provisioner.CreateRequest
		want []string
	}{
		{provisioner.CreateRequest{Name: "", SizeBytes: gib}, []string{"name"}},
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

func hostsOf(e *env, v *store.Volume) map[string][]string {
	out := map[string][]string{}
	for _, r := range v.Replicas {
		ar := e.cluster.Replica(r.StorageNode, r.ID)
		if ar == nil {
			continue
		}
		for h := range ar.Hosts {
			out[r.ID] = append(out[r.ID], h)
		}
	}
	return out
}

func TestPublishUnpublish(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
	pv, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-x")
	if err != nil {
		t.Fatal(err)
	}
	if pv.PublishedHostNQN != hostA || pv.PublishedNodeID != "node-x" {
		t.Errorf("published = %q (node %q)", pv.PublishedHostNQN, pv.PublishedNodeID)
	}
	for _, r := range pv.Replicas {
		if hs := hostsOf(e, pv)[r.ID]; len(hs) != 1 || hs[0] != hostA || r.AllowedHost != hostA {
			t.Errorf("replica %s hosts %v recorded %q", r.ID, hs, r.AllowedHost)
		}
	}
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-x"); err != nil {
		t.Errorf("re-publish to the same host: %v", err)
	}
	_, err = e.svc.PublishVolume(e.ctx, v.ID, hostB, "node-x")
	wantCode(t, err, provisioner.ErrFailedPrecondition, hostA)
	if err := e.svc.UnpublishVolume(e.ctx, v.ID, hostB); err != nil {
		t.Errorf("unpublish from a host it is not published to: %v", err)
	}
	if got, _ := e.store.GetVolume(e.ctx, v.ID); got.PublishedHostNQN != hostA {
		t.Error("unpublish from another host changed the volume")
	}
	if err := e.svc.UnpublishVolume(e.ctx, v.ID, hostA); err != nil {
		t.Fatal(err)
	}
	got, _ := e.store.GetVolume(e.ctx, v.ID)
	if got.PublishedHostNQN != "" || got.PublishedNodeID != "" || len(hostsOf(e, got)) != 0 {
		t.Errorf("after unpublish: published %q, agent hosts %v", got.PublishedHostNQN, hostsOf(e, got))
	}
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostB, "node-x"); err != nil {
		t.Errorf("publish to another host after unpublish: %v", err)
	}
	if err := e.svc.UnpublishVolume(e.ctx, "vol-unknown", hostA); err != nil {
		t.Errorf("unpublish unknown: %v", err)
	}
	_, err = e.svc.PublishVolume(e.ctx, "vol-unknown", hostA, "node-x")
	wantCode(t, err, provisioner.ErrNotFound)
}

func TestPublishWithNodeDownIsReconciled(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
	down := v.Replicas[0]
	e.cluster.SetDown(down.StorageNode, true)
	pv, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-x")
	if err != nil {
		t.Fatalf("publish with one replica away must succeed (degraded): %v", err)
	}
	if pv.Replica(down.ID).AllowedHost != "" {
		t.Error("unreachable replica recorded as allowed")
	}
	e.cluster.SetDown(down.StorageNode, false)
	if n, err := e.svc.Sweep(e.ctx); err != nil || n != 0 {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	if hs := e.cluster.Replica(down.StorageNode, down.ID).Hosts; !hs[hostA] {
		t.Errorf("returned replica hosts = %v, want %s", hs, hostA)
	}
	// Every replica away: the host could connect nothing.
	for _, r := range v.Replicas {
		e.cluster.SetDown(r.StorageNode, true)
	}
	e.svc.UnpublishVolume(e.ctx, v.ID, hostA)
	_, err = e.svc.PublishVolume(e.ctx, v.ID, hostB, "node-x")
	wantCode(t, err, provisioner.ErrUnavailable)
}

func TestUnpublishWithNodeDownRevokesLater(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-x"); err != nil {
		t.Fatal(err)
	}
	down := v.Replicas[1]
	e.cluster.SetDown(down.StorageNode, true)
	if err := e.svc.UnpublishVolume(e.ctx, v.ID, hostA); err != nil {
		t.Fatalf("unpublish with a node away: %v", err)
	}
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostB, "node-x"); err != nil {
		t.Fatal(err)
	}
	e.cluster.SetDown(down.StorageNode, false)
	if n, err := e.svc.Sweep(e.ctx); err != nil || n != 0 {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	hs := e.cluster.Replica(down.StorageNode, down.ID).Hosts
	if hs[hostA] || !hs[hostB] {
		t.Errorf("returned replica allows %v; want only %s (the old host fenced off)", hs, hostB)
	}
}

func TestExpandVolume(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	got, err := e.svc.ExpandVolume(e.ctx, v.ID, 3*gib)
	if err != nil || got.SizeBytes != 3*gib {
		t.Fatalf("ExpandVolume = %+v, %v", got, err)
	}
	for _, r := range got.Replicas {
		if ar := e.cluster.Replica(r.StorageNode, r.ID); ar.SizeBytes != provisioner.ReplicaSize(3*gib) {
			t.Errorf("replica %s size %d", r.ID, ar.SizeBytes)
		}
	}
	if got, err := e.svc.ExpandVolume(e.ctx, v.ID, 2*gib); err != nil || got.SizeBytes != 3*gib {
		t.Errorf("shrink request: %v, %v; want a no-op", got.SizeBytes, err)
	}
	e.cluster.SetDown(v.Replicas[0].StorageNode, true)
	_, err = e.svc.ExpandVolume(e.ctx, v.ID, 4*gib)
	wantCode(t, err, provisioner.ErrUnavailable)
	if got, _ := e.store.GetVolume(e.ctx, v.ID); got.SizeBytes != 3*gib {
		t.Errorf("partial expansion recorded: %d", got.SizeBytes)
	}
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

func TestListVolumesPaging(t *testing.T) {
	e := newEnv(t, threeRacks())
	var want []string
	for i := range 5 {
		want = append(want, e.create(t, fmt.Sprintf("pvc-%d", i), gib, map[string]string{"numReplicas": "1"}).ID)
	}
	sort.Strings(want)
	for _, max := range []int{0, 1, 2, 5, 6} {
		var got []string
		token := ""
		for pages := 0; ; pages++ {
			vols, next, err := e.svc.ListVolumes(e.ctx, token, max)
			if err != nil {
				t.Fatalf("max %d: %v", max, err)
			}
			if max > 0 && len(vols) > max {
				t.Fatalf("max %d: page of %d", max, len(vols))
			}
			for _, v := range vols {
				got = append(got, v.ID)
			}
			if next == "" {
				break
			}
			if pages > 10 {
				t.Fatal("paging does not end")
			}
			token = next
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("max %d: got %v, want %v", max, got, want)
		}
	}
	// A token stays valid when its volume is deleted meanwhile.
	_, next, err := e.svc.ListVolumes(e.ctx, "", 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteVolume(e.ctx, want[1]); err != nil {
		t.Fatal(err)
	}
	vols, _, err := e.svc.ListVolumes(e.ctx, next, 1)
	if err != nil || len(vols) != 1 || vols[0].ID != want[2] {
		t.Errorf("after deleting the token's volume: %v, %v", vols, err)
	}
	for _, tc := range []struct {
		token string
		max   int
		msg   string
	}{
		{"not base64!", 0, "starting token"},
		{base64.RawURLEncoding.EncodeToString([]byte("vol-1")), 0, "starting token"},
		{"", -1, "max entries"},
	} {
		_, _, err := e.svc.ListVolumes(e.ctx, tc.token, tc.max)
		wantCode(t, err, provisioner.ErrInvalidArgument, tc.msg)
	}
}

func TestModifyVolume(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, nil)
	for _, tc := range []struct {
		name    string
		mutable map[string]string
		want    int
		err     error
		msg     string
	}{
		{"set", map[string]string{"maxReplicaDownTime": "15"}, 15, nil, ""},
		{"same again (retry)", map[string]string{"maxReplicaDownTime": "15"}, 15, nil, ""},
		{"disable", map[string]string{"maxReplicaDownTime": "0"}, 0, nil, ""},
		{"nothing", map[string]string{}, 0, nil, ""},
		{"negative", map[string]string{"maxReplicaDownTime": "-1"}, 0, provisioner.ErrInvalidArgument, `maxReplicaDownTime="-1"`},
		{"not a number", map[string]string{"maxReplicaDownTime": "1h"}, 0, provisioner.ErrInvalidArgument, "maxReplicaDownTime"},
		{"immutable", map[string]string{"numReplicas": "3"}, 0, provisioner.ErrInvalidArgument, `"numReplicas"`},
		{"unknown", map[string]string{"maxReplicaDownTime": "5", "bogus": "1"}, 0, provisioner.ErrInvalidArgument, `"bogus"`},
	} {
		got, err := e.svc.ModifyVolume(e.ctx, v.ID, tc.mutable)
		if tc.err != nil {
			wantCode(t, err, tc.err, tc.msg)
			continue
		}
		if err != nil || got.Parameters.MaxReplicaDownTimeMinutes != tc.want {
			t.Errorf("%s: %v, %v; want %d", tc.name, got, err, tc.want)
		}
	}
	if cur, _ := e.store.GetVolume(e.ctx, v.ID); cur.Parameters.MaxReplicaDownTimeMinutes != 0 || cur.Parameters.NumReplicas != 2 {
		t.Errorf("stored parameters %+v", cur.Parameters)
	}
	_, err := e.svc.ModifyVolume(e.ctx, "vol-unknown", map[string]string{"maxReplicaDownTime": "5"})
	wantCode(t, err, provisioner.ErrNotFound)
}

func TestGetCapacity(t *testing.T) {
	e := newEnv(t, []node{{"sn-1", "", "r1", 10}, {"sn-2", "", "r2", 20}, {"sn-3", "", "r3", 30}})
	c, err := e.svc.GetCapacity(e.ctx, map[string]string{"numReplicas": "2", "storageNodes": "sn-2,sn-3"})
	if err != nil || c.AvailableBytes != 20*gib || c.TotalBytes != 50*gib {
		t.Errorf("GetCapacity = %+v, %v; want 20 GiB available of 50", c, err)
	}
	e.cluster.SetDown("sn-3", true)
	c, err = e.svc.GetCapacity(e.ctx, nil)
	if err != nil || c.AvailableBytes != 10*gib || c.TotalBytes != 30*gib {
		t.Errorf("GetCapacity with sn-3 down = %+v, %v", c, err)
	}
	_, err = e.svc.GetCapacity(e.ctx, map[string]string{"numReplica": "2"})
	wantCode(t, err, provisioner.ErrInvalidArgument, "numReplica")
	nodes, err := e.svc.ListStorageNodes(e.ctx)
	if err != nil || len(nodes) != 3 || nodes[2].ID != "sn-3" || nodes[2].Reachable || nodes[2].Err == nil || !nodes[0].Reachable || nodes[0].TotalBytes != 10*gib || nodes[0].Rack != "r1" {
		t.Errorf("ListStorageNodes = %+v, %v", nodes, err)
	}
}

func TestMaxVolumeSize(t *testing.T) {
	e := newEnv(t, []node{{"sn-1", "", "r1", 10}, {"sn-2", "", "r2", 20}, {"sn-3", "", "r3", 30}})
	for _, tc := range []struct {
		params map[string]string
		want   int64
	}{
		{map[string]string{"numReplicas": "1"}, 30 * gib},
		{map[string]string{"numReplicas": "2"}, 20 * gib},
		{map[string]string{"numReplicas": "3"}, 10 * gib},
		{map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-3"}, 10 * gib},
	} {
		got, err := e.svc.MaxVolumeSize(e.ctx, tc.params)
		if err != nil || got != tc.want {
			t.Errorf("MaxVolumeSize(%v) = %d GiB, %v; want %d GiB", tc.params, got/gib, err, tc.want/gib)
		}
	}
}

type notLeader struct{ store.Store }

func (notLeader) IsLeader() bool { return false }

func TestNotLeaderRefuses(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "r.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e := newEnvWithStore(t, notLeader{st}, threeRacks(), provisioner.Options{})
	_, err = e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "x", SizeBytes: gib})
	wantCode(t, err, store.ErrNotLeader)
	if c := provisioner.Code(err); c.String() != "Unavailable" {
		t.Errorf("code %v", c)
	}
}

// Replicas carry the md metadata reserve on top of the volume, so the md
// device the node assembles holds the whole volume.
func TestReplicaSize(t *testing.T) {
	if got, want := provisioner.ReplicaSize(1<<30), int64(1<<30)+mdraid.MetadataReserve; got != want {
		t.Fatalf("provisioner.ReplicaSize(1 GiB) = %d, want %d", got, want)
	}
}
