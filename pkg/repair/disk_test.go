package repair

import (
	"os"
	"path/filepath"
	"testing"
)

func writeStat(t *testing.T, root, dev, sectorsWritten string) {
	t.Helper()
	dir := filepath.Join(root, "sys", "block", dev)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	line := "     100        0     8000       10      200        0 " + sectorsWritten + "      50        0       60       60\n"
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWrittenBytes(t *testing.T) {
	root := t.TempDir()
	// A multipath head counts nothing; its two paths count.
	writeStat(t, root, "nvme3n1", "0")
	writeStat(t, root, "nvme3c3n1", "2048")
	writeStat(t, root, "nvme3c4n1", "1024")
	writeStat(t, root, "nvme3c3n2", "999999") // another namespace
	writeStat(t, root, "md5", "4096")
	d := SysDisk{Root: root}
	if n, err := d.WrittenBytes("nvme3n1"); err != nil || n != 3072*512 {
		t.Errorf("head: %d, %v; want the paths' sum %d", n, err, 3072*512)
	}
	if n, err := d.WrittenBytes("md5"); err != nil || n != 4096*512 {
		t.Errorf("md5: %d, %v", n, err)
	}
	for _, bad := range []string{"", "../x", "a/b"} {
		if _, err := d.WrittenBytes(bad); err == nil {
			t.Errorf("WrittenBytes(%q) accepted", bad)
		}
	}
}

func TestBlank(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "r.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	const size = 8 << 20
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	d := SysDisk{}
	if blank, err := d.Blank(img, size); err != nil || !blank {
		t.Fatalf("sparse file: %v, %v", blank, err)
	}
	// Data in the middle is not looked at; a signature at either end is.
	for _, off := range []int64{4 << 20, 1024, size - 512} {
		if _, err := f.WriteAt([]byte{0x53, 0xef}, off); err != nil {
			t.Fatal(err)
		}
		blank, err := d.Blank(img, size)
		if want := off == 4<<20; err != nil || blank != want {
			t.Errorf("bytes at %d: blank = %v, %v; want %v", off, blank, err, want)
		}
		if _, err := f.WriteAt([]byte{0, 0}, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if _, err := d.Blank(img, 0); err == nil {
		t.Error("size 0 accepted")
	}
}
