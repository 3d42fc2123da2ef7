package healer

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSaveMemoryReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "healer", "memory.json")
	m := Memory{Volumes: map[string]VolumeMemory{"vol-1": {DegradedSince: t0.Add(-72 * time.Hour)}}}
	for range 2 {
		if err := SaveMemory(p, m); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(filepath.Dir(p))
	if err != nil || len(entries) != 1 {
		t.Fatalf("leftover temporary files: %v %v", entries, err)
	}
	got, err := LoadMemory(p)
	if err != nil || !got.Volumes["vol-1"].DegradedSince.Equal(t0.Add(-72*time.Hour)) || got.Version != MemoryVersion {
		t.Fatalf("%+v %v", got, err)
	}
}
