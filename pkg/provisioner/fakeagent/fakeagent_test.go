package fakeagent

import (
	"context"
	"errors"
	"slices"
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

// TestSnapshotRangesContract: the fake's SnapshotRanges keeps the agent's
// rules (pkg/agent's TestSnapshotRangesExact): exactly the changed blocks,
// merged and paged; beyond a smaller base everything allocated; a larger
// base and out-of-range windows refused; a complete copy received again
// with another size is AlreadyExists.
func TestSnapshotRangesContract(t *testing.T) {
	ctx := context.Background()
	c := New()
	const mib = 1 << 20
	rec := c.AddNode("sn-1", "z1", "r1", 1<<30)
	a, err := c.Agent(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range []provisioner.ReplicaSpec{
		{ReplicaID: "big", VolumeID: "v1", SizeBytes: 16 * mib, ProvisioningType: storageclass.Thin},
		{ReplicaID: "small", VolumeID: "v2", SizeBytes: 8 * mib, ProvisioningType: storageclass.Thin},
	} {
		if _, err := a.CreateReplica(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	fill := func(n int, v byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = v
		}
		return b
	}
	c.WriteReplica("sn-1", "big", 0, fill(mib, 1))
	c.WriteReplica("sn-1", "big", 12*mib, make([]byte, 4096)) // allocated zeros beyond 8 MiB
	c.WriteReplica("sn-1", "small", 0, fill(mib, 1))
	if _, _, err := a.CreateSnapshot(ctx, "s1", "big"); err != nil {
		t.Fatal(err)
	}
	c.WriteReplica("sn-1", "big", 4096, fill(8192, 2))
	c.WriteReplica("sn-1", "big", 0, fill(4096, 1)) // same bytes: no change
	c.WriteReplica("sn-1", "big", 3*mib, fill(4096, 3))
	if _, _, err := a.CreateSnapshot(ctx, "s2", "big"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.CreateSnapshot(ctx, "small", "small"); err != nil {
		t.Fatal(err)
	}
	var got []provisioner.ByteRange
	for off := int64(0); ; {
		rs, next, err := a.SnapshotRanges(ctx, "s2", "s1", off, 0, 1)
		if err != nil || len(rs) > 1 {
			t.Fatalf("SnapshotRanges = %v, %v", rs, err)
		}
		got = append(got, rs...)
		if next == 0 {
			break
		}
		off = next
	}
	want := []provisioner.ByteRange{{Offset: 4096, Length: 8192}, {Offset: 3 * mib, Length: 4096}}
	if !slices.Equal(got, want) {
		t.Fatalf("changed ranges = %v, want %v", got, want)
	}
	if rs, _, err := a.SnapshotRanges(ctx, "s1", "small", 0, 0, 0); err != nil || !slices.Equal(rs, []provisioner.ByteRange{{Offset: 12 * mib, Length: 4096}}) {
		t.Fatalf("ranges over a smaller base = %v, %v", rs, err)
	}
	if _, _, err := a.SnapshotRanges(ctx, "small", "s1", 0, 0, 0); !errors.Is(err, provisioner.ErrInvalidArgument) {
		t.Fatalf("larger base: %v", err)
	}
	if _, _, err := a.SnapshotRanges(ctx, "s1", "", 17*mib, 0, 0); !errors.Is(err, provisioner.ErrInvalidArgument) {
		t.Fatalf("offset beyond the end: %v", err)
	}
	if err := a.ReadData(ctx, provisioner.DataRef{SnapshotID: "s1"}, mib, 16*mib, func(int64, []byte) error { return nil }); !errors.Is(err, provisioner.ErrInvalidArgument) {
		t.Fatalf("ReadData beyond the end: %v", err)
	}
	if _, err := a.WriteData(ctx, provisioner.DataRef{SnapshotID: "s1", SizeBytes: 32 * mib}, func(func(int64, []byte) error) error { return nil }); !errors.Is(err, provisioner.ErrAlreadyExists) {
		t.Fatalf("receive over a complete copy of another size: %v", err)
	}
}
