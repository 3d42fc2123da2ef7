package fake

import (
	"context"
	"errors"
	"testing"

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
