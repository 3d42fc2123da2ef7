package provisioner_test

import (
	"testing"

	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

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
