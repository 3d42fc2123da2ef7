package vm

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestSparseDisk: the scratch disk has the size asked for, takes no space
// until written, and is never an existing file reused.
func TestSparseDisk(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := newSparseDisk(p, 4096); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 4096<<20 {
		t.Errorf("size %d, want %d", st.Size, int64(4096)<<20)
	}
	if st.Blocks*512 > 1<<20 {
		t.Errorf("a new 4 GiB disk takes %d bytes on the host; want it sparse", st.Blocks*512)
	}
	if err := newSparseDisk(p, 1); err == nil {
		t.Error("an existing file was reused as a new disk")
	}
	if err := newSparseDisk(filepath.Join(t.TempDir(), "zero.raw"), 0); err == nil {
		t.Error("a disk of 0 MiB was made")
	}
}

func TestDriveArgs(t *testing.T) {
	got := driveArgs("/tmp/a,b/disk.raw")
	want := []string{"-drive", "file=/tmp/a,,b/disk.raw,format=raw,if=virtio,cache=unsafe,discard=unmap,detect-zeroes=unmap"}
	if !slices.Equal(got, want) {
		t.Errorf("driveArgs = %q, want %q", got, want)
	}
}

// TestBuildDiskImage: an image with a disk loads the disk's modules before
// its /init waits for the device, and an image without one does not wait.
func TestBuildDiskImage(t *testing.T) {
	k := Prerequisites(t)
	dm, err := DiskModules(k)
	if err != nil {
		t.Fatal(err)
	}
	initOf := func(img Image) string {
		t.Helper()
		out := filepath.Join(t.TempDir(), "initrd.gz")
		if err := img.Build(out); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		gz, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(gz)
		if err != nil {
			t.Fatal(err)
		}
		return string(raw)
	}
	with := initOf(Image{Kernel: k, Modules: append([]string{"ext4"}, dm...), Script: "true", Disk: true})
	load := strings.Index(with, "loadmod /lib/modules/kernel/drivers/block/virtio_blk.ko")
	wait := strings.Index(with, "while [ ! -b "+GuestDisk+" ]")
	if load < 0 || wait < 0 || load > wait {
		t.Errorf("init does not load virtio_blk (%d) before waiting for %s (%d)", load, GuestDisk, wait)
	}
	without := initOf(Image{Kernel: k, Modules: []string{"ext4"}, Script: "true"})
	if strings.Contains(without, "while [ ! -b "+GuestDisk) {
		t.Error("an image without a disk waits for one")
	}
}
