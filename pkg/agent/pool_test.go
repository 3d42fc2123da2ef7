package agent

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestPoolThinIsSparse(t *testing.T) {
	p, err := NewPool(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	if err := p.Ensure("thin-1", size, Thin); err != nil {
		t.Fatal(err)
	}
	if got, _ := p.Size("thin-1"); got != size {
		t.Fatalf("size %d, want %d", got, size)
	}
	if a := allocatedBytes(t, p.Path("thin-1")); a > 1<<20 {
		t.Fatalf("thin file has %d bytes allocated, want ~0", a)
	}
	// Idempotent, and grows.
	if err := p.Ensure("thin-1", size, Thin); err != nil {
		t.Fatal(err)
	}
	if err := p.Ensure("thin-1", 2*size, Thin); err != nil {
		t.Fatal(err)
	}
	if got, _ := p.Size("thin-1"); got != 2*size {
		t.Fatalf("after growth size %d, want %d", got, 2*size)
	}
	// Never shrinks.
	if err := p.Ensure("thin-1", size, Thin); err != nil {
		t.Fatal(err)
	}
	if got, _ := p.Size("thin-1"); got != 2*size {
		t.Fatalf("Ensure shrank the file to %d", got)
	}
}

func TestPoolThickIsAllocated(t *testing.T) {
	p, err := NewPool(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const size = 16 << 20
	before, err := p.Capacity()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Ensure("thick-1", size, Thick); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			t.Skipf("filesystem of %s has no fallocate: %v", p.Dir(), err)
		}
		t.Fatal(err)
	}
	if a := allocatedBytes(t, p.Path("thick-1")); a < size {
		t.Fatalf("thick file has %d bytes allocated, want >= %d", a, size)
	}
	after, err := p.Capacity()
	if err != nil {
		t.Fatal(err)
	}
	// Others share the filesystem, so only check the direction and rough size.
	if d := before.AvailableBytes - after.AvailableBytes; d < size/2 {
		t.Logf("available dropped by %d bytes only (shared filesystem?)", d)
	}
	if err := p.Ensure("thick-1", 2*size, Thick); err != nil {
		t.Fatal(err)
	}
	if a := allocatedBytes(t, p.Path("thick-1")); a < 2*size {
		t.Fatalf("grown thick file has %d bytes allocated, want >= %d", a, 2*size)
	}
}

func TestPoolENOSPCIsResourceExhausted(t *testing.T) {
	p, err := NewPool(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Capacity()
	if err != nil {
		t.Fatal(err)
	}
	huge := (c.AvailableBytes + 1<<40) &^ (BlockSize - 1)
	err = p.Ensure("too-big", huge, Thick)
	if errors.Is(err, unix.EOPNOTSUPP) {
		t.Skip("no fallocate")
	}
	if !errors.Is(err, ErrResourceExhausted) {
		t.Fatalf("err = %v, want ErrResourceExhausted", err)
	}
}

func TestPoolRemoveAndList(t *testing.T) {
	dir := t.TempDir()
	p, err := NewPool(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"b", "a"} {
		if err := p.Ensure(id, BlockSize, Thin); err != nil {
			t.Fatal(err)
		}
	}
	// Not replicas: the state file, a bad name, a directory.
	os.WriteFile(filepath.Join(dir, StateFileName), []byte("{}"), 0o600)
	os.WriteFile(filepath.Join(dir, "Bad_Name.img"), nil, 0o600)
	os.Mkdir(filepath.Join(dir, "d.img"), 0o700)
	ids, err := p.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 || ids[0] != "a" || ids[1] != "b" {
		t.Fatalf("List = %v, want [a b]", ids)
	}
	if err := p.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove("a"); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, err := p.Size("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Size of removed = %v, want ErrNotFound", err)
	}
}

func TestNewPoolNeedsAbsolutePath(t *testing.T) {
	if _, err := NewPool("relative/pool"); err == nil {
		t.Fatal("relative pool dir accepted")
	}
}
