package store

import (
	"testing"

	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

func TestCloneIsDeep(t *testing.T) {
	p := storageclass.Defaults()
	p.Zones = []string{"z1"}
	v := &Volume{ID: "v", Name: "n", Parameters: p, Replicas: []Replica{{ID: "r0", Addresses: []Endpoint{{Address: "a"}}}},
		Metadata: map[string]string{"csi.storage.k8s.io/pvc/name": "data"}}
	c := v.Clone()
	c.Metadata["csi.storage.k8s.io/pvc/name"] = "changed"
	c.Parameters.Zones[0] = "changed"
	c.Replicas[0].Addresses[0].Address = "changed"
	c.Replicas[0].State = ReplicaDeleted
	if v.Parameters.Zones[0] != "z1" || v.Replicas[0].Addresses[0].Address != "a" || v.Replicas[0].State != "" ||
		v.Metadata["csi.storage.k8s.io/pvc/name"] != "data" {
		t.Errorf("Clone aliases the original: %+v", v)
	}
}

func TestReplicaLookup(t *testing.T) {
	v := &Volume{Replicas: []Replica{{ID: "r0"}, {ID: "r1"}}}
	r := v.Replica("r1")
	if r == nil || r.ID != "r1" {
		t.Fatalf("Replica(r1) = %v", r)
	}
	r.State = ReplicaRemoved // returns a pointer into the volume
	if v.Replicas[1].State != ReplicaRemoved {
		t.Error("Replica does not point into the volume")
	}
	if v.Replica("nope") != nil {
		t.Error("Replica(nope) != nil")
	}
}
