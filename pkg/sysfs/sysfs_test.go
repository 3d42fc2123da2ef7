package sysfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadAttrTrims(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state")
	writeFile(t, p, "live \n")
	got, err := Reader{}.ReadAttr(p)
	if err != nil || got != "live" {
		t.Fatalf("got %q, %v; want live", got, err)
	}
}

func TestReadAttrNoDev(t *testing.T) {
	enodev := func(path string) ([]byte, error) {
		return nil, &fs.PathError{Op: "read", Path: path, Err: syscall.ENODEV}
	}
	if _, err := (Reader{ReadFile: enodev}).ReadAttr("/x/state"); !errors.Is(err, syscall.ENODEV) || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("zero policy: got %v, want ENODEV unchanged", err)
	}
	r := Reader{ReadFile: enodev, NoDevIsGone: true}
	if _, err := r.ReadAttr("/x/state"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("NoDevIsGone: got %v, want fs.ErrNotExist", err)
	}
	if v, err := r.ReadOptionalAttr("/x/state"); err != nil || v != "" {
		t.Fatalf("NoDevIsGone optional: got %q, %v; want \"\", nil", v, err)
	}
}

func TestReadOptionalAttr(t *testing.T) {
	dir := t.TempDir()
	for _, r := range []Reader{{}, {MissingDirIsError: true}} {
		if v, err := r.ReadOptionalAttr(filepath.Join(dir, "missing")); err != nil || v != "" {
			t.Fatalf("%+v: missing attribute: got %q, %v", r, v, err)
		}
	}
	gone := filepath.Join(dir, "gone", "attr")
	if v, err := (Reader{}).ReadOptionalAttr(gone); err != nil || v != "" {
		t.Fatalf("missing dir, zero policy: got %q, %v; want \"\", nil", v, err)
	}
	if _, err := (Reader{MissingDirIsError: true}).ReadOptionalAttr(gone); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing dir, MissingDirIsError: got %v, want fs.ErrNotExist", err)
	}
}

func TestReadNumbers(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "raid_disks"), "3 (2)\n")
	writeFile(t, filepath.Join(dir, "degraded"), "-1\n")
	writeFile(t, filepath.Join(dir, "mismatch_cnt"), "18446744073709551615\n")
	writeFile(t, filepath.Join(dir, "errors"), "many\n")
	mine := errors.New("mine")
	r := Reader{Malformed: mine}
	if n, err := r.ReadInt(filepath.Join(dir, "raid_disks")); err != nil || n != 3 {
		t.Fatalf("raid_disks: got %d, %v; want 3", n, err)
	}
	if _, err := r.ReadInt(filepath.Join(dir, "degraded")); !errors.Is(err, mine) {
		t.Fatalf("negative count: got %v, want the Reader's sentinel", err)
	}
	if n, err := r.ReadUint(filepath.Join(dir, "mismatch_cnt")); err != nil || n != 1<<64-1 {
		t.Fatalf("mismatch_cnt: got %d, %v", n, err)
	}
	if _, err := (Reader{}).ReadUint(filepath.Join(dir, "errors")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("not a number: got %v, want ErrMalformed", err)
	}
	if n, err := r.ReadUint(filepath.Join(dir, "absent")); err != nil || n != 0 {
		t.Fatalf("absent: got %d, %v; want 0", n, err)
	}
}

func TestWriteAttrNeverCreates(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "enable")
	if err := WriteAttr(p, "1"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want fs.ErrNotExist (attributes cannot be created)", err)
	}
	writeFile(t, p, "0")
	if err := WriteAttr(p, "1"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "1" {
		t.Fatalf("file holds %q, want 1", b)
	}
}
