package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := NewStore(filepath.Join(dir, StateFileName))
	got, err := s.Load()
	if err != nil || len(got) != 0 {
		t.Fatalf("Load of missing file = %v, %v; want empty", got, err)
	}
	want := map[string]*Replica{
		"r1": {ID: "r1", VolumeID: "v1", SizeBytes: 4096, Provisioning: Thin, AllowedHosts: []string{"nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555"}, State: StateReady},
		"r2": {ID: "r2", VolumeID: "v1", SizeBytes: 8192, Provisioning: Thick, State: StateDeleting, CutPending: true},
	}
	if err := s.Save(want); err != nil {
		t.Fatal(err)
	}
	got, err = s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Load = %+v, want %+v", got, want)
	}
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("state file mode %v is readable by others", fi.Mode())
	}
}

// A crash during Save leaves a temporary file and the old state: Load
// returns the old state and removes the leftover.
func TestStoreCrashDuringSave(t *testing.T) {
	dir := t.TempDir()
	s := NewStore(filepath.Join(dir, StateFileName))
	old := map[string]*Replica{"r1": {ID: "r1", VolumeID: "v", SizeBytes: 4096, Provisioning: Thin, State: StateReady}}
	if err := s.Save(old); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(dir, "."+StateFileName+".tmp-12345")
	if err := os.WriteFile(leftover, []byte(`{"version":1,"replicas":[{"id":"half`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, old) {
		t.Fatalf("Load = %+v, want old state", got)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatalf("leftover temp file not removed: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("dir holds %d entries after Load, want only the state file", len(ents))
	}
}

// A corrupt state file must stop the agent, not look like an empty state
// (which would unexport everything).
func TestStoreCorruptIsError(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"truncated":   `{"version":1,"replicas":[`,
		"version":     `{"version":99,"replicas":[]}`,
		"bad id":      `{"version":1,"replicas":[{"id":"../etc"}]}`,
		"duplicate":   `{"version":1,"replicas":[{"id":"a"},{"id":"a"}]}`,
		"null record": `{"version":1,"replicas":[null]}`,
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".json")
		os.WriteFile(p, []byte(content), 0o600)
		if _, err := NewStore(p).Load(); err == nil {
			t.Errorf("%s: Load accepted %s", name, content)
		}
	}
}

// Save failing (directory gone) leaves no state change visible.
func TestStoreSaveFailure(t *testing.T) {
	dir := t.TempDir()
	s := NewStore(filepath.Join(dir, "sub", StateFileName))
	if err := s.Save(map[string]*Replica{}); err == nil {
		t.Fatal("Save into a missing directory succeeded")
	}
}
