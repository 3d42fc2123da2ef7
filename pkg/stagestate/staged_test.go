package stagestate

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestListStagedAndRecordReplica(t *testing.T) {
	dir := t.TempDir()
	s := New(dir)
	for _, st := range []*State{
		{VolumeID: "vol-2", Phase: Staging},
		{VolumeID: "vol-1", Phase: Staged, MDDevice: "/dev/md127", MDUUID: "a:b:c:d", HostNQN: "nqn.h",
			Replicas: []Replica{{ID: "r0", NQN: "nqn.x:r0", NamespaceUUID: "u0"}}},
	} {
		if err := s.Save(st); err != nil {
			t.Fatal(err)
		}
	}
	// The healer keeps its own files in a subdirectory; they are not volumes.
	if err := os.MkdirAll(filepath.Join(dir, "healer"), 0o700); err != nil {
		t.Fatal(err)
	}
	list, err := ListVolumes(dir)
	if err != nil || len(list) != 2 {
		t.Fatalf("ListVolumes = %+v, %v", list, err)
	}
	if v := list[0]; v.VolumeID != "vol-1" || !v.Staged || v.MDUUID != "a:b:c:d" || len(v.Replicas) != 1 || v.Replicas[0].NamespaceUUID != "u0" {
		t.Fatalf("vol-1 = %+v", v)
	}
	if list[1].Staged {
		t.Fatal("a volume still staging reads as staged")
	}

	r := Replica{ID: "r3", NQN: "nqn.x:r3", NamespaceUUID: "u3"}
	if err := RecordReplica(dir, "vol-1", r); err != nil {
		t.Fatal(err)
	}
	if err := RecordReplica(dir, "vol-1", r); err != nil {
		t.Fatalf("second record: %v", err)
	}
	got, _ := s.Load("vol-1")
	if len(got.Replicas) != 2 || got.Replicas[1].NQN != "nqn.x:r3" {
		t.Fatalf("replicas %+v", got.Replicas)
	}
	if err := RecordReplica(dir, "vol-9", r); !errors.Is(err, ErrNotStaged) {
		t.Fatalf("unstaged volume: %v", err)
	}
	if st, _ := s.Load("vol-9"); st != nil {
		t.Fatal("recording a replica of an unstaged volume created its state")
	}
}
