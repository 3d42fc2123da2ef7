package store

import (
	"encoding/json"
	"strings"
	"time"

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

// TestReplicaSyncStateJSON: records written before the sync state existed
// read as in sync, and an in-sync replica is written without the fields,
// so an older provisioner reading a newer record sees what it always saw.
func TestReplicaSyncStateJSON(t *testing.T) {
	var old Replica
	if err := json.Unmarshal([]byte(`{"id":"r0","storageNode":"sn-1","state":"active","createdAt":"2026-01-01T00:00:00Z"}`), &old); err != nil {
		t.Fatal(err)
	}
	if !old.InSync() || old.OutOfSyncAtEvents != 0 {
		t.Errorf("old record reads out of sync: %+v", old)
	}
	b, err := json.Marshal(Replica{ID: "r0", State: ReplicaActive})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "outOfSync") {
		t.Errorf("in-sync replica written with sync fields: %s", b)
	}
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b, err = json.Marshal(Replica{ID: "r0", OutOfSyncSince: since, OutOfSyncAtEvents: 42})
	if err != nil {
		t.Fatal(err)
	}
	var back Replica
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"outOfSyncSince":"2026-01-02T03:04:05Z"`) || !strings.Contains(string(b), `"outOfSyncAtEvents":42`) ||
		!back.OutOfSyncSince.Equal(since) || back.OutOfSyncAtEvents != 42 || back.InSync() {
		t.Errorf("round trip: %s → %+v", b, back)
	}
}
