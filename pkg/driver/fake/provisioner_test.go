package fake

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// TestProvisionerBehavesLikeTheRealOne pins the contract the driver (and
// csi-sanity) rely on.
func TestProvisionerBehavesLikeTheRealOne(t *testing.T) {
	ctx := context.Background()
	f := NewFabric()
	p := NewProvisioner(f, 10<<20)
	v, err := p.CreateVolume(ctx, volume.CreateVolumeRequest{Name: "a", SizeBytes: 2 << 20})
	if err != nil || len(v.Replicas) != storageclass.DefaultNumReplicas || v.MDUUID == "" {
		t.Fatalf("create %+v %v", v, err)
	}
	if again, _ := p.CreateVolume(ctx, volume.CreateVolumeRequest{Name: "a", SizeBytes: 2 << 20}); again.ID != v.ID {
		t.Fatal("not idempotent by name")
	}
	if _, err := p.CreateVolume(ctx, volume.CreateVolumeRequest{Name: "a", SizeBytes: 3 << 20}); !errors.Is(err, volume.ErrAlreadyExists) {
		t.Fatalf("mismatch: %v", err)
	}
	if _, err := p.CreateVolume(ctx, volume.CreateVolumeRequest{Name: "b", SizeBytes: 4 << 20}); !errors.Is(err, volume.ErrResourceExhausted) {
		t.Fatalf("capacity: %v", err)
	}
	if _, err := p.PublishVolume(ctx, v.ID, "nqn.h1", "n1"); err != nil {
		t.Fatal(err)
	}
	if ns, _ := f.Get(v.Replicas[0].NQN); ns.AllowedHost != "nqn.h1" {
		t.Fatal("publish did not admit the host on the fabric")
	}
	if _, err := p.PublishVolume(ctx, v.ID, "nqn.h2", "n2"); !errors.Is(err, volume.ErrFailedPrecondition) {
		t.Fatalf("second host: %v", err)
	}
	if _, _, err := p.ListVolumes(ctx, "zz", 0); !errors.Is(err, volume.ErrInvalidArgument) {
		t.Fatalf("bad token: %v", err)
	}
	if _, err := p.GetVolume(ctx, "nope"); !errors.Is(err, volume.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
	if err := p.DeleteVolume(ctx, "nope"); err != nil {
		t.Fatalf("delete unknown: %v", err)
	}
}

func TestProvisionerReportReplicaSync(t *testing.T) {
	ctx := context.Background()
	p := NewProvisioner(NewFabric(), 10<<20)
	v, err := p.CreateVolume(ctx, volume.CreateVolumeRequest{Name: "a", SizeBytes: 1 << 20, Parameters: map[string]string{"numReplicas": "2"}})
	if err != nil {
		t.Fatal(err)
	}
	r0, r1 := v.Replicas[0].ID, v.Replicas[1].ID
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	if _, err := p.ReportReplicaSync(ctx, v.ID, r1, false, t0, 100, "n1"); err != nil {
		t.Fatal(err)
	}
	got, err := p.ReportReplicaSync(ctx, v.ID, r1, false, t0.Add(time.Minute), 150, "n1")
	if err != nil || !got.Replicas[1].OutOfSyncSince.Equal(t0) || got.Replicas[1].OutOfSyncAtEvents != 100 {
		t.Errorf("later report: %+v, %v; want the earliest kept", got, err)
	}
	if _, err := p.ReportReplicaSync(ctx, v.ID, r0, false, t0, 120, "n1"); !errors.Is(err, volume.ErrFailedPrecondition) {
		t.Errorf("last in-sync replica marked out of sync: %v", err)
	}
	if _, err := p.ReportReplicaSync(ctx, v.ID, r1, false, time.Time{}, 0, "n1"); !errors.Is(err, volume.ErrInvalidArgument) {
		t.Errorf("no observed time: %v", err)
	}
	if _, err := p.ReportReplicaSync(ctx, v.ID, "nope", true, t0, 0, "n1"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("unknown replica: %v", err)
	}
	if got, _ := p.ReportReplicaSync(ctx, v.ID, r1, true, t0, 90, "n1"); got.Replicas[1].InSync() {
		t.Error("an in-sync report older than the failure cleared it")
	}
	if got, _ := p.ReportReplicaSync(ctx, v.ID, r1, true, t0, 200, "n1"); !got.Replicas[1].InSync() || got.Replicas[1].OutOfSyncAtEvents != 0 {
		t.Errorf("in-sync report: %+v", got.Replicas[1])
	}
}
