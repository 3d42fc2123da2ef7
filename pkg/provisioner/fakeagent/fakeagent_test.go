package fakeagent

import (
	"context"
	"errors"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// TestContract checks the fake keeps the agent contract the provisioner
// relies on, so provisioner tests do not pass against a lenient fake.
func TestContract(t *testing.T) {
	ctx := context.Background()
	c := New()
	rec := c.AddNode("sn-1", "z1", "r1", 100)
	a, err := c.Agent(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	spec := provisioner.ReplicaSpec{ReplicaID: "r1", VolumeID: "v1", SizeBytes: 60, ProvisioningType: storageclass.Thick, AllowedHosts: []string{"h1"}}
	r1, err := a.CreateReplica(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := a.CreateReplica(ctx, spec)
	if err != nil || r2.NQN != r1.NQN || c.TotalReplicas() != 1 {
		t.Errorf("create not idempotent: %v %v %d", r2, err, c.TotalReplicas())
	}
	if capa, _ := a.GetCapacity(ctx); capa.AvailableBytes != 40 || capa.ProvisionedBytes != 60 || capa.ReplicaCount != 1 {
		t.Errorf("thick accounting: %+v", capa)
	}
	if _, err := a.CreateReplica(ctx, provisioner.ReplicaSpec{ReplicaID: "r2", SizeBytes: 50, ProvisioningType: storageclass.Thick}); !errors.Is(err, provisioner.ErrResourceExhausted) {
		t.Errorf("oversized create: %v", err)
	}
	if err := a.RevokeHost(ctx, "r1", "h1"); err != nil || len(c.Replica("sn-1", "r1").Hosts) != 0 {
		t.Errorf("revoke: %v", err)
	}
	if err := a.AllowHost(ctx, "nope", "h1"); !errors.Is(err, provisioner.ErrNotFound) {
		t.Errorf("allow on missing replica: %v", err)
	}
	c.SetDown("sn-1", true)
	if _, err := a.GetCapacity(ctx); !errors.Is(err, provisioner.ErrUnavailable) {
		t.Errorf("down node answered: %v", err)
	}
	c.SetDown("sn-1", false)
	if err := a.DeleteReplica(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteReplica(ctx, "r1"); err != nil {
		t.Errorf("delete not idempotent: %v", err)
	}
	if capa, _ := a.GetCapacity(ctx); capa.AvailableBytes != 100 || capa.ProvisionedBytes != 0 {
		t.Errorf("after delete: %+v", capa)
	}
	if info, _ := a.NodeInfo(ctx); info.Zone != "z1" || info.Rack != "r1" {
		t.Errorf("NodeInfo = %+v", info)
	}
}
