//go:build vmguest

package kernel

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	utilexec "k8s.io/utils/exec"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

var blockRW = &csi.VolumeCapability{
	AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
	AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
}

func fromSnapshot(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: id}}}
}

func fromVolume(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: id}}}
}

// snapshotClients are the driver's snapshot services on its socket.
type snapshotClients struct {
	group csi.GroupControllerClient
	meta  csi.SnapshotMetadataClient
}

func dialSnapshotServices(t *testing.T, socket string) snapshotClients {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return snapshotClients{group: csi.NewGroupControllerClient(conn), meta: csi.NewSnapshotMetadataClient(conn)}
}

// takeSnapshot calls CreateSnapshot and requires it ready.
func takeSnapshot(t *testing.T, c csiClients, name, volumeID string) *csi.Snapshot {
	t.Helper()
	start := time.Now()
	resp, err := c.ctrl.CreateSnapshot(ctxTimeout(t, 2*time.Minute), &csi.CreateSnapshotRequest{Name: name, SourceVolumeId: volumeID})
	if err != nil {
		t.Fatalf("CreateSnapshot %s of %s: %v", name, volumeID, err)
	}
	s := resp.GetSnapshot()
	if !s.GetReadyToUse() {
		t.Fatalf("snapshot %s not ready: %v", name, s)
	}
	t.Logf("snapshot %s of %s: %s, %d bytes, taken in %v", name, volumeID, s.GetSnapshotId(), s.GetSizeBytes(), time.Since(start).Round(time.Millisecond))
	return s
}

// verifyIn checks that every file of sums (by path) exists under dir with
// the same base name and its checksum: the files of a volume, read on a
// volume restored from it.
func verifyIn(t *testing.T, dir string, sums map[string]string) {
	t.Helper()
	moved := make(map[string]string, len(sums))
	for p, sum := range sums {
		moved[filepath.Join(dir, filepath.Base(p))] = sum
	}
	verifyFiles(t, moved)
}

// checkVolumeMirrors runs an md check on a staged volume's array.
func checkVolumeMirrors(t *testing.T, s *stack, md *mdraid.Manager, volumeID string) {
	t.Helper()
	v, err := dialProvisioner(t, s).GetVolume(ctxTimeout(t, time.Minute), volumeID)
	if err != nil {
		t.Fatal(err)
	}
	checkMirrors(t, md, mdOf(t, md, v).Name)
}

// TestSnapshotsOnTheStack takes snapshots through the whole product on the
// real kernel, with the storage nodes' pools on XFS with reflink: a
// snapshot of a volume under continuous fsynced writes restores to a
// filesystem that mounts and holds every file fsynced before the snapshot
// call with its checksum, and its mirrors match (md check); a clone of a
// live volume; a group snapshot of two volumes written in lockstep
// restores to matching points; GetMetadataDelta between two snapshots of a
// raw block volume reports exactly the ranges written between them; and
// last (it takes a storage node away) a restore after a storage node
// holding a copy is gone.
func TestSnapshotsOnTheStack(t *testing.T) {
	pool := loopFS(t, snapFS{name: "xfs", mkfs: []string{"mkfs.xfs", "-f", "-q", "-m", "reflink=1"}, reflink: true}, 6<<30)
	s := startStackWith(t, stackOptions{storageNodes: 3, poolRoot: pool})
	c := dialCSI(t, s.csiSocket)
	sc := dialSnapshotServices(t, s.csiSocket)
	md := mdraid.NewManager(utilexec.New(), "")
	prov := dialProvisioner(t, s)
	three := map[string]string{"numReplicas": "3"}

	src := provisionVolume(t, c, "snap-src", 256<<20, three)
	w := startFileWriter(src.target)
	waitFor(t, time.Minute, "the writer's first files", func() (bool, string) {
		return w.count() >= 20, fmt.Sprintf("%d files", w.count())
	})
	called := time.Now()
	snap := takeSnapshot(t, c, "snap-1", src.id)
	before := w.syncedBefore(called)
	waitFor(t, time.Minute, "writes to go on after the snapshot", func() (bool, string) {
		return w.count() >= len(before)+10, fmt.Sprintf("%d files", w.count())
	})
	rec, err := prov.GetSnapshot(ctxTimeout(t, time.Minute), snap.GetSnapshotId())
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Copies) != 3 {
		t.Errorf("snapshot copies on %v, want 3 storage nodes", rec.Copies)
	}
	t.Logf("snapshot under writes: %d files fsynced before the call", len(before))

	t.Run("restore", func(t *testing.T) {
		r := provisionWith(t, c, "snap-restore", 512<<20, three, mountRW, fromSnapshot(snap.GetSnapshotId()))
		verifyIn(t, r.target, before)
		checkVolumeMirrors(t, s, md, r.id)
		var st unix.Statfs_t
		if err := unix.Statfs(r.target, &st); err != nil {
			t.Fatal(err)
		}
		if size := int64(st.Blocks) * st.Bsize; size < 400<<20 {
			t.Errorf("restored filesystem is %d bytes on a 512 MiB volume: not grown", size)
		}
	})

	t.Run("clone of a live volume", func(t *testing.T) {
		called := time.Now()
		cl := provisionWith(t, c, "snap-clone", 256<<20, map[string]string{"numReplicas": "2"}, mountRW, fromVolume(src.id))
		verifyIn(t, cl.target, w.syncedBefore(called))
		checkVolumeMirrors(t, s, md, cl.id)
	})
	if _, err := w.finish(); err != nil {
		t.Errorf("writer: %v", err)
	}

	t.Run("group snapshot of volumes written in lockstep", func(t *testing.T) {
		a := provisionWith(t, c, "snap-group-a", 64<<20, three, blockRW, nil)
		b := provisionWith(t, c, "snap-group-b", 64<<20, map[string]string{"numReplicas": "2"}, blockRW, nil)
		// Sequence numbers, a then b, each write synchronous: at any
		// instant b's number is a's or one less.
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() { done <- lockstep(a.target, b.target, stop) }()
		waitFor(t, time.Minute, "lockstep writes", func() (bool, string) {
			n, err := readSeq(a.target)
			return err == nil && n > 50, fmt.Sprint(n, err)
		})
		resp, err := sc.group.CreateVolumeGroupSnapshot(ctxTimeout(t, 2*time.Minute), &csi.CreateVolumeGroupSnapshotRequest{
			Name: "snap-group", SourceVolumeIds: []string{a.id, b.id}})
		close(stop)
		if werr := <-done; werr != nil {
			t.Fatalf("lockstep writer: %v", werr)
		}
		if err != nil {
			t.Fatalf("CreateVolumeGroupSnapshot: %v", err)
		}
		g := resp.GetGroupSnapshot()
		if !g.GetReadyToUse() || len(g.GetSnapshots()) != 2 {
			t.Fatalf("group snapshot %v", g)
		}
		seq := map[string]uint64{}
		for _, gs := range g.GetSnapshots() {
			r := provisionWith(t, c, "restore-"+gs.GetSnapshotId(), 64<<20, map[string]string{"numReplicas": "2"}, blockRW, fromSnapshot(gs.GetSnapshotId()))
			n, err := readSeq(r.target)
			if err != nil {
				t.Fatal(err)
			}
			seq[gs.GetSourceVolumeId()] = n
		}
		t.Logf("group snapshot restored: a at %d, b at %d", seq[a.id], seq[b.id])
		if seq[b.id] != seq[a.id] && seq[b.id]+1 != seq[a.id] {
			t.Errorf("restored a at %d and b at %d: not one point in time (b must be a or a-1)", seq[a.id], seq[b.id])
		}
		if _, err := sc.group.DeleteVolumeGroupSnapshot(ctxTimeout(t, time.Minute), &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: g.GetGroupSnapshotId()}); err != nil {
			t.Errorf("DeleteVolumeGroupSnapshot: %v", err)
		}
	})

	t.Run("an XFS restore staged beside its source", func(t *testing.T) {
		two := map[string]string{"numReplicas": "2"}
		xfs := provisionWith(t, c, "snap-xfs-src", driver.MinXFSVolumeSizeBytes, two, mountXFS, nil)
		sums := writeFiles(t, xfs.target, "xfs", 4, 1<<20)
		xsnap := takeSnapshot(t, c, "snap-xfs", xfs.id)
		// The source stays staged: the restore's filesystem has the same
		// UUID, which XFS refuses to mount twice unless told nouuid.
		r := provisionWith(t, c, "snap-xfs-restore", driver.MinXFSVolumeSizeBytes, two, mountXFS, fromSnapshot(xsnap.GetSnapshotId()))
		verifyIn(t, r.target, sums)
		srcUUID, restoredUUID := xfsUUIDOf(t, s, md, xfs.id), xfsUUIDOf(t, s, md, r.id)
		if srcUUID != restoredUUID {
			t.Errorf("the restore's XFS UUID %x differs from its source's %x: this subtest no longer tests a duplicate", restoredUUID, srcUUID)
		}
		t.Logf("XFS restore mounted beside its source, both UUID %x", srcUUID)
	})

	t.Run("changed blocks between two snapshots", func(t *testing.T) {
		v := provisionWith(t, c, "snap-delta", 128<<20, three, blockRW, nil)
		writeAt(t, v.target, 0, 64<<10)
		writeAt(t, v.target, 20<<20, 1<<20)
		base := takeSnapshot(t, c, "snap-delta-1", v.id)
		wrote := []volume.ByteRange{{Offset: 4 << 20, Length: 4096}, {Offset: 20<<20 + 128<<10, Length: 256 << 10}, {Offset: 100 << 20, Length: 3 << 20}}
		for _, r := range wrote {
			writeAt(t, v.target, r.Offset, r.Length)
		}
		target := takeSnapshot(t, c, "snap-delta-2", v.id)
		got := metadata(t, sc.meta, &csi.GetMetadataDeltaRequest{BaseSnapshotId: base.GetSnapshotId(), TargetSnapshotId: target.GetSnapshotId()})
		if !equalRanges(got, wrote) {
			t.Errorf("GetMetadataDelta = %v, want exactly what was written: %v", got, wrote)
		}
		alloc := metadata(t, sc.meta, &csi.GetMetadataAllocatedRequest{SnapshotId: base.GetSnapshotId()})
		if want := []volume.ByteRange{{Offset: 0, Length: 64 << 10}, {Offset: 20 << 20, Length: 1 << 20}}; !equalRanges(alloc, want) {
			t.Errorf("GetMetadataAllocated = %v, want %v", alloc, want)
		}
		t.Logf("changed blocks: %v; allocated in the base: %v", got, alloc)
	})

	t.Run("restore with a storage node gone", func(t *testing.T) {
		a := agentNamed(t, s, "sn1")
		_ = a.stop(t, syscall.SIGKILL) // "signal: killed": what was asked
		t.Cleanup(func() {
			a.start(t)
			a.waitReady(t, a.client(t, agentToken))
		})
		r := provisionWith(t, c, "snap-restore-sn1-gone", 256<<20, map[string]string{"numReplicas": "2"}, mountRW, fromSnapshot(snap.GetSnapshotId()))
		verifyIn(t, r.target, before)
		checkVolumeMirrors(t, s, md, r.id)
	})
}

// mountXFS is mountRW with XFS.
var mountXFS = &csi.VolumeCapability{
	AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: storageclass.FSXFS}},
	AccessMode: mountRW.AccessMode,
}

// xfsUUIDOf reads the filesystem UUID from the XFS superblock (sb_uuid, 16
// bytes at offset 32, after the magic "XFSB") of a staged volume's array.
func xfsUUIDOf(t *testing.T, s *stack, md *mdraid.Manager, volumeID string) [16]byte {
	t.Helper()
	v, err := dialProvisioner(t, s).GetVolume(ctxTimeout(t, time.Minute), volumeID)
	if err != nil {
		t.Fatal(err)
	}
	dev := "/dev/" + mdOf(t, md, v).Name
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sb := make([]byte, 48)
	if _, err := f.ReadAt(sb, 0); err != nil {
		t.Fatalf("read the XFS superblock of %s: %v", dev, err)
	}
	if string(sb[:4]) != "XFSB" {
		t.Fatalf("%s: no XFS superblock (magic %q)", dev, sb[:4])
	}
	return [16]byte(sb[32:48])
}

// lockstep writes increasing sequence numbers to a's then b's first block
// (O_DIRECT, O_DSYNC) until stop.
func lockstep(a, b string, stop <-chan struct{}) error {
	fa, err := os.OpenFile(a, os.O_WRONLY|unix.O_DIRECT|unix.O_DSYNC, 0)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.OpenFile(b, os.O_WRONLY|unix.O_DIRECT|unix.O_DSYNC, 0)
	if err != nil {
		return err
	}
	defer fb.Close()
	buf := alignedBlock()
	for n := uint64(1); ; n++ {
		select {
		case <-stop:
			return nil
		default:
		}
		binary.LittleEndian.PutUint64(buf, n)
		if _, err := fa.WriteAt(buf, 0); err != nil {
			return fmt.Errorf("write %d to a: %w", n, err)
		}
		if _, err := fb.WriteAt(buf, 0); err != nil {
			return fmt.Errorf("write %d to b: %w", n, err)
		}
	}
}

func readSeq(dev string) (uint64, error) {
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := alignedBlock()
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, 4096), buf); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(buf), nil
}

// alignedBlock is 4 KiB aligned for O_DIRECT.
func alignedBlock() []byte {
	b := make([]byte, 8192)
	off := 4096 - int(uintptr(unsafe.Pointer(&b[0]))%4096)
	if off == 4096 {
		off = 0
	}
	return b[off : off+4096]
}

// writeAt writes n random bytes at off of a block device, synchronously.
func writeAt(t *testing.T, dev string, off, n int64) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_DSYNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		t.Fatalf("write %d bytes at %d of %s: %v", n, off, dev, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// metadata reads a whole GetMetadataAllocated or GetMetadataDelta stream.
func metadata(t *testing.T, c csi.SnapshotMetadataClient, req any) []volume.ByteRange {
	t.Helper()
	ctx := ctxTimeout(t, time.Minute)
	type recv interface {
		GetBlockMetadata() []*csi.BlockMetadata
	}
	var next func() (recv, error)
	switch r := req.(type) {
	case *csi.GetMetadataAllocatedRequest:
		st, err := c.GetMetadataAllocated(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		next = func() (recv, error) { return st.Recv() }
	case *csi.GetMetadataDeltaRequest:
		st, err := c.GetMetadataDelta(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		next = func() (recv, error) { return st.Recv() }
	}
	var out []volume.ByteRange
	for {
		m, err := next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("snapshot metadata: %v", err)
		}
		for _, b := range m.GetBlockMetadata() {
			out = append(out, volume.ByteRange{Offset: b.GetByteOffset(), Length: b.GetSizeBytes()})
		}
	}
}

// equalRanges compares after merging adjacent ranges.
func equalRanges(a, b []volume.ByteRange) bool {
	return bytes.Equal([]byte(fmt.Sprint(mergeRanges(a))), []byte(fmt.Sprint(mergeRanges(b))))
}

func mergeRanges(rs []volume.ByteRange) []volume.ByteRange {
	rs = append([]volume.ByteRange(nil), rs...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].Offset < rs[j].Offset })
	var out []volume.ByteRange
	for _, r := range rs {
		if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length >= r.Offset {
			if end := r.Offset + r.Length; end > out[n-1].Offset+out[n-1].Length {
				out[n-1].Length = end - out[n-1].Offset
			}
			continue
		}
		out = append(out, r)
	}
	return out
}
