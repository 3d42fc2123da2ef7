package healer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nvmirror/nvmirror/pkg/atomicfile"
)

// LoadMemory reads the memory file; a missing file is an empty memory (first
// start). A file of a newer layout is refused rather than misread: its
// clocks decide replacements.
func LoadMemory(path string) (Memory, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Memory{Version: MemoryVersion}, nil
	}
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	if err := json.Unmarshal(b, &m); err != nil {
		return Memory{}, fmt.Errorf("healer memory %s: %w", path, err)
	}
	if m.Version > MemoryVersion {
		return Memory{}, fmt.Errorf("healer memory %s has version %d, this build reads up to %d", path, m.Version, MemoryVersion)
	}
	m.Version = MemoryVersion
	return m, nil
}

// SaveMemory writes the memory atomically: a temporary file, fsynced,
// renamed over the old one, and the directory fsynced, so a crash leaves
// either the old or the new memory, never a torn one.
func SaveMemory(path string, m Memory) error {
	m.Version = MemoryVersion
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}
