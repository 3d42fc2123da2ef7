//go:build vmguest

package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// snapFS is a pool filesystem of TestSnapshotsOnFilesystems.
type snapFS struct {
	name    string
	mkfs    []string
	reflink bool // what the agent must report for its copies
}

// TestSnapshotsOnFilesystems runs the agent's snapshots on a pool on XFS
// with reflink (mkfs.xfs -m reflink=1) and on ext4 (none), each on a loop
// device: a snapshot of a replica file is a reflink on XFS (the pool's
// used space barely grows, and the time does not follow the data) and a
// sparse copy on ext4 (used space grows by the data), with identical
// content on both; after O_DIRECT writes of known ranges between two
// snapshots, SnapshotRanges reports exactly those ranges; a replica
// created from a snapshot at the md data offset reads back right; and
// ReadSuperblock reads what mdadm wrote on a replica file.
func TestSnapshotsOnFilesystems(t *testing.T) {
	tlsDir := t.TempDir()
	writeAgentCredentials(t, tlsDir, "127.0.0.2", "127.0.0.3", "snap-xfs", "snap-ext4")
	for i, fs := range []snapFS{
		{name: "xfs", mkfs: []string{"mkfs.xfs", "-f", "-q", "-m", "reflink=1"}, reflink: true},
		{name: "ext4", mkfs: []string{"mkfs.ext4", "-q", "-F"}, reflink: false},
	} {
		t.Run(fs.name, func(t *testing.T) {
			testSnapshotsOn(t, fs, tlsDir, fmt.Sprintf("127.0.0.%d", 2+i), 60+i)
		})
	}
}

// loopFS makes a filesystem on a loop device over a sparse file in a
// tmpfs of its own and mounts it; all undone at cleanup.
func loopFS(t *testing.T, fs snapFS, sizeBytes int64) string {
	t.Helper()
	base := filepath.Join("/run/snaptest", fs.name)
	backing, mnt := filepath.Join(base, "backing"), filepath.Join(base, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", backing, "tmpfs", 0, fmt.Sprintf("size=%d", sizeBytes+(64<<20))); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(backing, unix.MNT_DETACH) })
	file := filepath.Join(backing, "disk.img")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(sizeBytes); err != nil {
		t.Fatal(err)
	}
	f.Close()
	loop := attachLoop(t, file)
	t.Cleanup(func() { detachLoop(loop) })
	if out, err := exec.Command(fs.mkfs[0], append(fs.mkfs[1:], loop)...).CombinedOutput(); err != nil {
		t.Fatalf("%v %s: %v\n%s", fs.mkfs, loop, err, out)
	}
	if err := unix.Mount(loop, mnt, fs.name, 0, ""); err != nil {
		t.Fatalf("mount %s (%s) on %s: %v", loop, fs.name, mnt, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

// attachLoop binds file to a free loop device (LOOP_CTL_GET_FREE,
// LOOP_SET_FD: busybox's losetup cannot print the device it took).
func attachLoop(t *testing.T, file string) string {
	t.Helper()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
	if err != nil {
		t.Fatalf("LOOP_CTL_GET_FREE: %v", err)
	}
	dev := fmt.Sprintf("/dev/loop%d", n)
	lf, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_SET_FD, int(f.Fd())); err != nil {
		t.Fatalf("LOOP_SET_FD %s on %s: %v", file, dev, err)
	}
	return dev
}

func detachLoop(dev string) {
	if f, err := os.OpenFile(dev, os.O_RDWR, 0); err == nil {
		_ = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
		f.Close()
	}
}

func usedBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

// directWrite writes data at off of path with O_DIRECT (data page aligned,
// sizes multiples of 4 KiB), as the kernel target writes replica files.
func directWrite(t *testing.T, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatalf("O_DIRECT write of %d bytes at %d to %s: %v", len(data), off, path, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// filledBuf is an O_DIRECT-able buffer of n bytes of seed (not 0): every
// byte differs from another seed's (block patterns could coincide, and a
// rewrite with equal bytes is rightly no change).
func filledBuf(t *testing.T, n int, seed byte) []byte {
	b := alignedBuf(t, n)
	for i := range b {
		b[i] = seed
	}
	return b
}

// sameContent reports whether files a and b are the same size and read
// the same, and how many bytes it compared: it reads only the ranges where
// either file has data (SEEK_DATA/SEEK_HOLE), since a hole in both reads as
// zeros in both. Hashing the whole of two 1 GiB files took most of this
// test's minute per filesystem under emulation.
func sameContent(t *testing.T, a, b string) (bool, int64) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	sa, sb := fileSize(t, fa), fileSize(t, fb)
	if sa != sb {
		return false, 0
	}
	ranges := mergeRanges(append(dataRanges(t, fa, sa), dataRanges(t, fb, sb)...))
	bufA, bufB := make([]byte, 1<<20), make([]byte, 1<<20)
	var compared int64
	for _, r := range ranges {
		for off, end := r.Offset, r.Offset+r.Length; off < end; {
			n := int(min(int64(len(bufA)), end-off))
			if _, err := fa.ReadAt(bufA[:n], off); err != nil {
				t.Fatal(err)
			}
			if _, err := fb.ReadAt(bufB[:n], off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(bufA[:n], bufB[:n]) {
				return false, compared
			}
			off += int64(n)
			compared += int64(n)
		}
	}
	return true, compared
}

func fileSize(t *testing.T, f *os.File) int64 {
	t.Helper()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// dataRanges lists f's data extents. It is the test's own walk, not the
// agent's dataExtents (pkg/agent/fiemap.go), which made the copies under
// test: a range that walk missed must not also go unchecked here.
func dataRanges(t *testing.T, f *os.File, size int64) []volume.ByteRange {
	t.Helper()
	var out []volume.ByteRange
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if err != nil {
			t.Fatalf("SEEK_DATA %s at %d: %v", f.Name(), off, err)
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			t.Fatalf("SEEK_HOLE %s at %d: %v", f.Name(), start, err)
		}
		out = append(out, volume.ByteRange{Offset: start, Length: end - start})
		off = end
	}
	return out
}

func testSnapshotsOn(t *testing.T, fs snapFS, tlsDir, addr string, portID int) {
	const mib = 1 << 20
	mnt := loopFS(t, fs, 3<<30)
	a := newAgentOn(t, "snap-"+fs.name, addr, portID, tlsDir, 0, mnt)
	a.start(t)
	c := a.client(t, agentToken)
	a.waitReady(t, c)
	ctx := ctxTimeout(t, 10*time.Minute)
	thin := agentapi.ProvisioningType_PROVISIONING_TYPE_THIN

	// Two replicas, 64 MiB and 1 GiB, with the same density of data: 1
	// MiB in every 16 MiB (4 and 64 MiB written).
	sizes := map[string]int64{"small": 64 * mib, "large": 1 << 30}
	data := filledBuf(t, mib, 1)
	for _, id := range []string{"small", "large"} {
		if _, err := c.CreateReplica(ctx, &agentapi.CreateReplicaRequest{ReplicaId: id, VolumeId: "vol-" + id, SizeBytes: sizes[id], ProvisioningType: thin}); err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < sizes[id]; off += 16 * mib {
			directWrite(t, filepath.Join(a.pool, id+".img"), off+4*mib, data)
		}
	}
	// --- Snapshot cost and content.
	times := map[string]time.Duration{}
	for _, id := range []string{"small", "large"} {
		before := usedBytes(t, mnt)
		start := time.Now()
		resp, err := c.CreateSnapshot(ctx, &agentapi.CreateSnapshotRequest{SnapshotId: "s-" + id, ReplicaId: id})
		times[id] = time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		grew := usedBytes(t, mnt) - before
		sn := resp.GetSnapshot()
		written := sizes[id] / 16
		t.Logf("%s: snapshot of the %d MiB replica (%d MiB written): reflinked=%v in %v, pool used +%d KiB, snapshot allocates %d KiB",
			fs.name, sizes[id]/mib, written/mib, sn.GetReflinked(), times[id].Round(time.Millisecond), grew>>10, sn.GetAllocatedBytes()>>10)
		if sn.GetReflinked() != fs.reflink {
			t.Fatalf("%s: reflinked = %v, want %v", fs.name, sn.GetReflinked(), fs.reflink)
		}
		if fs.reflink && grew > written/8 {
			t.Errorf("%s: a reflink snapshot of %d bytes of data grew the pool by %d", fs.name, written, grew)
		}
		if !fs.reflink && (grew < written || grew > written+written/4+mib) {
			t.Errorf("%s: a sparse copy of %d bytes of data grew the pool by %d", fs.name, written, grew)
		}
		if sn.GetAllocatedBytes() < written || sn.GetAllocatedBytes() > written+written/4+mib {
			t.Errorf("%s: snapshot allocates %d bytes for %d of data: holes not kept", fs.name, sn.GetAllocatedBytes(), written)
		}
		same, compared := sameContent(t, filepath.Join(a.pool, "snapshots", "s-"+id+".snap"), filepath.Join(a.pool, id+".img"))
		if !same {
			t.Fatalf("%s: snapshot of %s differs from the replica", fs.name, id)
		}
		if compared < written {
			t.Fatalf("%s: compared %d bytes of the snapshot of %s, less than the %d written", fs.name, compared, id, written)
		}
	}
	t.Logf("%s: snapshot time 64 MiB %v, 1 GiB %v (ratio %.1f for 16x the data)", fs.name,
		times["small"].Round(time.Millisecond), times["large"].Round(time.Millisecond), float64(times["large"])/float64(times["small"]))

	// --- Exact changed ranges after O_DIRECT writes.
	changes := []struct{ off, n int64 }{
		{4096, 4096}, {4*mib + 64<<10, 128 << 10}, {10 * mib, 2 * mib}, {20*mib + 4096, 8192}, {64*mib - 4096, 4096},
	}
	img := filepath.Join(a.pool, "small.img")
	for i, ch := range changes {
		directWrite(t, img, ch.off, filledBuf(t, int(ch.n), byte(i+2)))
	}
	// The same bytes again over an unchanged range: not a change.
	directWrite(t, img, 36*mib, data)
	if _, err := c.CreateSnapshot(ctx, &agentapi.CreateSnapshotRequest{SnapshotId: "s-small-2", ReplicaId: "small"}); err != nil {
		t.Fatal(err)
	}
	var got []*agentapi.ByteRange
	start := time.Now()
	for off, pages := int64(0), 0; ; pages++ {
		r, err := c.SnapshotRanges(ctx, &agentapi.SnapshotRangesRequest{SnapshotId: "s-small-2", BaseSnapshotId: "s-small", Offset: off, MaxRanges: 2})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.GetRanges()...)
		if r.GetNextOffset() == 0 {
			break
		}
		off = r.GetNextOffset()
	}
	var gotS []string
	for _, r := range got {
		gotS = append(gotS, fmt.Sprintf("%d+%d", r.GetOffset(), r.GetLength()))
	}
	var wantS []string
	for _, ch := range changes {
		wantS = append(wantS, fmt.Sprintf("%d+%d", ch.off, ch.n))
	}
	t.Logf("%s: changed ranges between the snapshots (in %v): %v", fs.name, time.Since(start).Round(time.Millisecond), gotS)
	if !slices.Equal(gotS, wantS) {
		t.Fatalf("%s: SnapshotRanges = %v, want %v", fs.name, gotS, wantS)
	}

	// --- A replica from the snapshot at the md data offset.
	if _, err := c.CreateReplica(ctx, &agentapi.CreateReplicaRequest{ReplicaId: "restored", VolumeId: "vol-r", SizeBytes: 68 * mib, ProvisioningType: thin,
		Source: &agentapi.SnapshotSource{SnapshotId: "s-small-2", Length: 64 * mib, TargetOffset: 4 * mib}}); err != nil {
		t.Fatal(err)
	}
	restored, err := os.ReadFile(filepath.Join(a.pool, "restored.img"))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := os.ReadFile(filepath.Join(a.pool, "snapshots", "s-small-2.snap"))
	if err != nil {
		t.Fatal(err)
	}
	if len(restored) != 68*mib || !bytes.Equal(restored[4*mib:], snap) || !bytes.Equal(restored[:4*mib], make([]byte, 4*mib)) {
		t.Fatalf("%s: replica from the snapshot at 4 MiB reads back wrong", fs.name)
	}
	// Deleting the snapshot leaves the replica made from it.
	if _, err := c.DeleteSnapshot(ctx, &agentapi.DeleteSnapshotRequest{SnapshotId: "s-small-2"}); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(filepath.Join(a.pool, "restored.img")); !bytes.Equal(again, restored) {
		t.Fatalf("%s: deleting the snapshot changed the replica made from it", fs.name)
	}

	// --- ReadSuperblock against mdadm's own superblock.
	checkSuperblockAgainstMdadm(t, c, a.pool, fs.name)

	capr, err := c.GetCapacity(ctx, &agentapi.GetCapacityRequest{})
	if err != nil || capr.GetSnapshotCount() != 2 {
		t.Fatalf("GetCapacity = %v, %v", capr, err)
	}
}

var mdadmUUID = regexp.MustCompile(`Array UUID : ([0-9a-f:]+)`)

// checkSuperblockAgainstMdadm creates a degraded md RAID1 with metadata
// 1.2 and nvmirror's data offset on a loop device over the replica
// "small" (as a compute node does over its NVMe device), stops it, and
// compares ReadSuperblock and a snapshot's superblock with mdadm
// --examine.
func checkSuperblockAgainstMdadm(t *testing.T, c agentapi.TargetClient, pool, fsName string) {
	t.Helper()
	ctx := ctxTimeout(t, 2*time.Minute)
	img := filepath.Join(pool, "small.img")
	loop := attachLoop(t, img)
	defer detachLoop(loop)
	md := map[string]string{"xfs": "/dev/md90", "ext4": "/dev/md91"}[fsName]
	if out, err := exec.Command("mdadm", "--create", md, "--run", "--level=1", "--raid-devices=2", "--metadata=1.2",
		"--data-offset=4096K", "--bitmap=internal", "--homehost=any", "--name=snaptest-"+fsName, "--assume-clean", loop, "missing").CombinedOutput(); err != nil {
		t.Fatalf("mdadm --create: %v\n%s", err, out)
	}
	if out, err := exec.Command("mdadm", "--stop", md).CombinedOutput(); err != nil {
		t.Fatalf("mdadm --stop: %v\n%s", err, out)
	}
	exam, err := exec.Command("mdadm", "--examine", loop).CombinedOutput()
	if err != nil {
		t.Fatalf("mdadm --examine: %v\n%s", err, exam)
	}
	m := mdadmUUID.FindSubmatch(exam)
	if m == nil {
		t.Fatalf("no Array UUID in mdadm --examine:\n%s", exam)
	}
	rs, err := c.ReadSuperblock(ctx, &agentapi.ReadSuperblockRequest{ReplicaId: "small"})
	if err != nil {
		t.Fatal(err)
	}
	sb := rs.GetSuperblock()
	t.Logf("%s: mdadm --examine says Array UUID %s; ReadSuperblock: %v", fsName, m[1], sb)
	if !sb.GetPresent() || sb.GetArrayUuid() != string(m[1]) || sb.GetDataOffsetSectors() != 8192 || sb.GetDevNumber() != 0 ||
		len(sb.GetDevRoles()) < 2 || sb.GetDevRoles()[0] != 0 || sb.GetRecovering() || !sb.GetClean() {
		t.Fatalf("%s: ReadSuperblock = %v; mdadm --examine:\n%s", fsName, sb, exam)
	}
	if !strings.Contains(string(exam), fmt.Sprintf("Events : %d", sb.GetEvents())) {
		t.Fatalf("%s: events %d not what mdadm --examine says:\n%s", fsName, sb.GetEvents(), exam)
	}
	cs, err := c.CreateSnapshot(ctx, &agentapi.CreateSnapshotRequest{SnapshotId: "s-md", ReplicaId: "small"})
	if err != nil || cs.GetSuperblock().GetArrayUuid() != string(m[1]) || cs.GetSuperblock().GetEvents() != sb.GetEvents() {
		t.Fatalf("%s: CreateSnapshot of an md member = %v, %v", fsName, cs, err)
	}
	if _, err := c.DeleteSnapshot(ctx, &agentapi.DeleteSnapshotRequest{SnapshotId: "s-md"}); err != nil {
		t.Fatal(err)
	}
}
