package volume

import (
	"testing"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

func TestActiveReplicasKeepsRegistryOrder(t *testing.T) {
	v := &Volume{Replicas: []Replica{{ID: "a", State: ReplicaActive}, {ID: "b", State: ReplicaDeleted},
		{ID: "c", State: ReplicaActive}, {ID: "d", State: ReplicaRemoved}, {ID: "e", State: ReplicaDeleting}}}
	got := v.ActiveReplicas()
	if len(got) != 2 || got[0].ID != "a" || got[1].ID != "c" {
		t.Errorf("ActiveReplicas = %+v", got)
	}
}

func TestNamespaceIDFallsBackToDerived(t *testing.T) {
	if got := (Replica{ID: "r1", NamespaceUUID: "u"}).NamespaceID(); got != "u" {
		t.Errorf("recorded: %q", got)
	}
	if got, want := (Replica{ID: "r1"}).NamespaceID(), nvmeof.NamespaceUUID("r1"); got != want {
		t.Errorf("derived: %q, want %q", got, want)
	}
}

func TestAuthenticationDefaultsToNone(t *testing.T) {
	if got := (&Volume{}).Authentication(); got != storageclass.AuthNone {
		t.Errorf("unset: %q", got)
	}
	v := &Volume{Policy: storageclass.Policy{Authentication: storageclass.AuthHost}}
	if got := v.Authentication(); got != storageclass.AuthHost {
		t.Errorf("host: %q", got)
	}
}
