package boltstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/storetest"
)

func open(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(path, Options{EventRetention: storetest.Retention, LockTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "registry.db"))
	})
}

func TestPersistsAcrossReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "registry.db")
	s := open(t, path)
	if err := s.CreateVolume(ctx, storetest.NewVolume("v1", "pvc-1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	defer s.Close()
	if v, err := s.GetVolumeByName(ctx, "pvc-1"); err != nil || v.ID != "v1" || len(v.Replicas) != 2 {
		t.Fatalf("after reopen: %+v, %v", v, err)
	}
}

func TestSecondProcessIsLockedOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s := open(t, path)
	defer s.Close()
	// bbolt's flock is per open file description, so a second Open in the
	// same process contends exactly like a second provisioner would.
	_, err := Open(path, Options{LockTimeout: 100 * time.Millisecond})
	if err == nil {
		t.Fatal("second Open of a locked registry succeeded")
	}
	if !errors.Is(err, bolt.ErrTimeout) {
		t.Errorf("second Open: %v, want a lock timeout", err)
	}
}

func BenchmarkCreateGetDelete(b *testing.B) {
	ctx := context.Background()
	s := open(b, filepath.Join(b.TempDir(), "registry.db"))
	defer s.Close()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("v%d", i)
		i++
		if err := s.CreateVolume(ctx, storetest.NewVolume(id, "pvc-"+id)); err != nil {
			b.Fatal(err)
		}
		if _, err := s.GetVolumeByName(ctx, "pvc-"+id); err != nil {
			b.Fatal(err)
		}
		if err := s.DeleteVolume(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}
