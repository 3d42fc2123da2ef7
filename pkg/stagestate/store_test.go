package stagestate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStateStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := New(filepath.Join(dir, "state"))
	staging := filepath.Join(dir, "pv", "globalmount")
	st := &State{VolumeID: "vol-1", Phase: Staged, StagingPath: staging, MDDevice: "/dev/md127", MDUUID: "a:b:c:d",
		Replicas: []Replica{{ID: "r0", NQN: "nqn.x:r0"}}}
	if err := s.Save(st); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load("vol-1")
	if err != nil || got == nil || got.MDDevice != "/dev/md127" || got.Version != stateVersion || len(got.Replicas) != 1 {
		t.Fatalf("Load = %+v, %v", got, err)
	}
	side, err := s.LoadSidecar("vol-1", staging+"/")
	if err != nil || side == nil || side.MDUUID != "a:b:c:d" {
		t.Fatalf("LoadSidecar = %+v, %v", side, err)
	}
	if _, err := s.Load("vol-2"); err != nil {
		t.Fatal(err)
	}
	if list, err := s.List(); err != nil || len(list) != 1 || list[0].VolumeID != "vol-1" {
		t.Fatalf("List = %v, %v", list, err)
	}
	if err := s.Delete("vol-1", staging); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Load("vol-1"); got != nil {
		t.Fatal("state survived Delete")
	}
	if _, err := os.Stat(staging + sidecarSuffix); !os.IsNotExist(err) {
		t.Fatal("sidecar survived Delete")
	}
	if err := s.Delete("vol-1", staging); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}

func TestStateFileNamesStayInDir(t *testing.T) {
	s := New("/var/lib/nvmirror/node")
	for _, id := range []string{"../../etc/passwd", ".hidden", "a/b", strings.Repeat("x", 300), "vol-1"} {
		p := s.fileFor(id)
		if filepath.Dir(p) != s.dir || strings.HasPrefix(filepath.Base(p), ".") {
			t.Errorf("volume %q maps to %q", id, p)
		}
	}
	if s.fileFor("a/b") == s.fileFor("a_b") {
		t.Error("distinct IDs share a file")
	}
}

func TestStateLoadRejectsOtherVolume(t *testing.T) {
	dir := t.TempDir()
	s := New(dir)
	if err := os.WriteFile(filepath.Join(dir, "vol-1.json"), []byte(`{"volumeID":"vol-9"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load("vol-1"); err == nil {
		t.Fatal("state of another volume accepted")
	}
}

func TestAddReplicasKeepsEveryNQN(t *testing.T) {
	st := &State{Replicas: []Replica{{ID: "r0", NQN: "n0"}}}
	st.AddReplicas([]Replica{{ID: "r0", NQN: "n0"}, {ID: "r3", NQN: "n3"}})
	if len(st.Replicas) != 2 || st.Replicas[1].NQN != "n3" {
		t.Fatalf("replicas %+v", st.Replicas)
	}
}
