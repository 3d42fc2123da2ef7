package driver

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestListStagedAndRecordReplica(t *testing.T) {
	dir := t.TempDir()
	s := newStateStore(dir)
	for _, st := range []*stageState{
		{VolumeID: "vol-2", Phase: phaseStaging},
		{VolumeID: "vol-1", Phase: phaseStaged, MDDevice: "/dev/md127", MDUUID: "a:b:c:d", HostNQN: "nqn.h",
			Replicas: []stagedReplica{{ID: "r0", NQN: "nqn.x:r0", NamespaceUUID: "u0"}}},
	} {
		if err := s.Save(st); err != nil {
			t.Fatal(err)
		}
	}
	// The healer keeps its own files in a subdirectory; they are not volumes.
	if err := os.MkdirAll(filepath.Join(dir, "healer"), 0o700); err != nil {
		t.Fatal(err)
	}
	list, err := ListStaged(dir)
	if err != nil || len(list) != 2 {
		t.Fatalf("ListStaged = %+v, %v", list, err)
	}
	if v := list[0]; v.VolumeID != "vol-1" || !v.Staged || v.MDUUID != "a:b:c:d" || len(v.Replicas) != 1 || v.Replicas[0].NamespaceUUID != "u0" {
		t.Fatalf("vol-1 = %+v", v)
	}
	if list[1].Staged {
		t.Fatal("a volume still staging reads as staged")
	}

	r := StagedReplica{ID: "r3", NQN: "nqn.x:r3", NamespaceUUID: "u3"}
	if err := RecordStagedReplica(dir, "vol-1", r); err != nil {
		t.Fatal(err)
	}
	if err := RecordStagedReplica(dir, "vol-1", r); err != nil {
		t.Fatalf("second record: %v", err)
	}
	got, _ := s.Load("vol-1")
	if len(got.Replicas) != 2 || got.Replicas[1].NQN != "nqn.x:r3" {
		t.Fatalf("replicas %+v", got.Replicas)
	}
	if err := RecordStagedReplica(dir, "vol-9", r); !errors.Is(err, ErrNotStaged) {
		t.Fatalf("unstaged volume: %v", err)
	}
	if st, _ := s.Load("vol-9"); st != nil {
		t.Fatal("recording a replica of an unstaged volume created its state")
	}
}

func TestTryLockVolume(t *testing.T) {
	d := &Driver{inflight: newInFlight()}
	unlock, ok := d.TryLockVolume("vol-1")
	if !ok {
		t.Fatal("free volume not locked")
	}
	if _, ok := d.TryLockVolume("vol-1"); ok {
		t.Fatal("locked twice")
	}
	if err := func() error { _, err := d.lock("vol-1"); return err }(); err == nil {
		t.Fatal("CSI lock taken while the healer holds the volume")
	}
	unlock()
	if _, ok := d.TryLockVolume("vol-1"); !ok {
		t.Fatal("not released")
	}
}
