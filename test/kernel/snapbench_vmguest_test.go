//go:build vmguest

package kernel

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	utilexec "k8s.io/utils/exec"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
	"github.com/nvmirror/nvmirror/test/bench"
)

// snapBenchParams size one run of TestBenchSnapshots: the full benchmark
// (NVMIRROR_BENCH_MODE=full, `make bench-snapshots`) or the smoke run that
// TestRealKernel's boot keeps so the benchmark cannot rot.
type snapBenchParams struct {
	mode       string
	sizes      []int64
	chunks     int
	chunkBytes int
	reps       int
	// poolBytes is the loop device's sparse file: only what is written
	// takes guest RAM.
	poolBytes int64
	// warmup runs an unmeasured round first on each stack.
	warmup bool
}

func snapBenchParamsFromEnv() snapBenchParams {
	if os.Getenv("NVMIRROR_BENCH_MODE") == "full" {
		return snapBenchParams{mode: "full", sizes: []int64{1 << 30, 16 << 30}, chunks: 64, chunkBytes: 1 << 20, reps: 3, poolBytes: 64 << 30, warmup: true}
	}
	return snapBenchParams{mode: "smoke", sizes: []int64{32 << 20, 128 << 20}, chunks: 16, chunkBytes: 256 << 10, reps: 1, poolBytes: 4 << 30}
}

// snapBenchPool is a pool filesystem of the benchmark.
type snapBenchPool struct {
	fs    snapFS
	label string
}

var snapBenchPools = []snapBenchPool{
	{snapFS{name: "xfs", mkfs: []string{"mkfs.xfs", "-f", "-q", "-m", "reflink=1"}, reflink: true}, "XFS, reflink=1"},
	// One inode per MiB and a 64 MiB journal, both written at mkfs: the
	// defaults' inode tables (2 GiB on 64 GiB) and journal would take
	// guest RAM, or be zeroed in the background during the measurements.
	{snapFS{name: "ext4", mkfs: []string{"mkfs.ext4", "-q", "-F", "-T", "largefile", "-J", "size=64", "-E", "lazy_itable_init=0,lazy_journal_init=0"}}, "ext4"},
}

// snapBenchEnv is one pool's stack.
type snapBenchEnv struct {
	pool  snapBenchPool
	mnt   string
	s     *stack
	c     csiClients
	admin provisionerapi.ProvisionerClient
	prov  *provisionerclient.Client
	md    *mdraid.Manager
	p     snapBenchParams
}

// TestBenchSnapshots measures snapshots and restores through the whole
// product (CSI calls to the driver, the provisioner, three storage nodes)
// for volumes of two sizes with the same data written, on a pool
// filesystem with reflinks (XFS) and one without (ext4): whether their
// cost follows the volume's size or only its data. For each pool kind and
// size, a 3-replica thin volume is staged and published (block), written
// with random chunks spread evenly over it (O_DIRECT), and then, a few
// times: CreateSnapshot is timed until it returns ready, CreateVolume from
// the snapshot until it returns, and NodeStage of the restored volume; the
// restored volume must read back every chunk with its checksum and zeros
// between them, its md array must come up clean without a resync, and an
// md check of the first restore must find no mismatch; the copies must be
// reflinks on XFS and sparse copies on ext4, with the pool space that
// implies. Prints the report as one JSON line for the host
// (TestSnapshotBenchmark, `make bench-snapshots`); TestRealKernel runs
// its smoke variant.
func TestBenchSnapshots(t *testing.T) {
	p := snapBenchParamsFromEnv()
	start := time.Now()
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	rep := bench.SnapshotReport{
		Mode: p.mode, Kernel: unix.ByteSliceToString(uts.Release[:]), Repetitions: p.reps,
		WrittenBytes: int64(p.chunks * p.chunkBytes), Chunks: p.chunks,
		Settings: []string{
			"3 storage nodes (nvmirror-target), the provisioner and the CSI driver (controller and node plugin) in one VM, NVMe/TCP on loopback; " +
				"3-replica thin volumes in block mode, staged and published when snapshotted (the node holds their writes during the cut), idle",
			fmt.Sprintf("the three pools are directories of one filesystem on a loop device over a %d GiB sparse file in tmpfs: "+
				"XFS made with `mkfs.xfs -m reflink=1`, ext4 with `mkfs.ext4 -T largefile`", p.poolBytes>>30),
			fmt.Sprintf("data: %d random chunks of %d KiB at evenly spaced offsets, written with O_DIRECT through md", p.chunks, p.chunkBytes>>10),
			"snapshot: CSI CreateSnapshot until it returns the snapshot ready (the node freezes the md array, the 3 storage nodes copy their replica files in parallel, the node thaws); " +
				"restore: CSI CreateVolume with the snapshot as its source until it returns (each new replica built from the copy on its own storage node); " +
				"NodeStage of the restored volume: 3 NVMe/TCP connects, md created with --assume-clean",
			"one volume of each size per pool; the sizes take turns, in alternating order, after one unmeasured round on the smallest (cold caches and connections); " +
				"each round ends with the restored volume and the snapshot deleted, the filesystem trimmed (FITRIM) and the page cache dropped; " +
				"pool space is the filesystem's used bytes (statfs) before and after, all three pools together",
		},
	}
	for _, pool := range snapBenchPools {
		t.Run(pool.fs.name, func(t *testing.T) {
			mnt := loopFS(t, pool.fs, p.poolBytes)
			s := startStackWith(t, stackOptions{storageNodes: 3, poolRoot: mnt})
			e := &snapBenchEnv{pool: pool, mnt: mnt, s: s, c: dialCSI(t, s.csiSocket), admin: dialProvisionerAPI(t, s),
				prov: dialProvisioner(t, s), md: mdraid.NewManager(utilexec.New(), ""), p: p}
			srcs := make([]*snapBenchSource, len(p.sizes))
			cells := make([]bench.SnapshotCell, len(p.sizes))
			for i, size := range p.sizes {
				srcs[i] = e.source(t, size)
				cells[i] = bench.SnapshotCell{Pool: pool.fs.name, PoolLabel: pool.label, VolumeBytes: size, Copies: 3, Reflinked: pool.fs.reflink}
			}
			// Unmeasured: the first snapshot, restore and stage of a
			// stack pay for connections and cold caches.
			if p.warmup {
				e.round(t, srcs[0], &bench.SnapshotCell{}, "warmup")
			}
			// The sizes take turns, in alternating order, so that the
			// load the machine's other work puts on the VM falls on both
			// alike.
			for r := 0; r < p.reps; r++ {
				for k := range srcs {
					i := k
					if r%2 == 1 {
						i = len(srcs) - 1 - k
					}
					e.round(t, srcs[i], &cells[i], fmt.Sprint(r+1))
				}
			}
			rep.Cells = append(rep.Cells, cells...)
		})
	}
	rep.Seconds = time.Since(start).Seconds()
	if t.Failed() {
		return
	}
	if err := rep.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot benchmark (%s run) in %v:\n%s", p.mode, time.Since(start).Round(time.Second), rep.Table())
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s%s\n", bench.SnapshotResultMarker, b)
}

// benchChunk is one chunk written to a source volume.
type benchChunk struct {
	off int64
	n   int
	sum [32]byte
}

// snapBenchSource is a volume the benchmark snapshots: staged, published,
// written.
type snapBenchSource struct {
	name, id string
	size     int64
	chunks   []benchChunk
}

var snapBenchParams3 = map[string]string{"numReplicas": "3", "provisioningType": "thin"}

// source creates, stages and publishes a volume of size bytes and writes
// the chunks to it.
func (e *snapBenchEnv) source(t *testing.T, size int64) *snapBenchSource {
	t.Helper()
	name := fmt.Sprintf("sb-%s-%d", e.pool.fs.name, size>>20)
	v := provisionWith(t, e.c, name, size, snapBenchParams3, blockRW, nil)
	src := &snapBenchSource{name: name, id: v.id, size: size, chunks: writeChunks(t, v.target, size, e.p.chunks, e.p.chunkBytes)}
	t.Logf("%s (%s): %d chunks of %d KiB written over %s", name, v.id, e.p.chunks, e.p.chunkBytes>>10, bench.SizeLabel(size))
	return src
}

// round is one repetition on a source volume: a snapshot, a restore from
// it, the restored volume staged, each timed and checked and added to
// cell; then the restored volume and the snapshot are deleted, the
// filesystem trimmed and the page cache dropped, so every round starts
// from the same state. The
// first round of a cell md-checks the restored array.
func (e *snapBenchEnv) round(t *testing.T, src *snapBenchSource, cell *bench.SnapshotCell, label string) {
	t.Helper()
	p := e.p
	used0 := usedBytes(t, e.mnt)
	start := time.Now()
	snap := e.snapshot(t, fmt.Sprintf("%s-snap-%s", src.name, label), src.id)
	snapTime := time.Since(start)
	used1 := usedBytes(t, e.mnt)

	rec, err := e.admin.GetSnapshot(ctxTimeout(t, time.Minute), &provisionerapi.GetSnapshotRequest{SnapshotId: snap.GetSnapshotId()})
	if err != nil {
		t.Fatal(err)
	}
	var alloc int64
	ready := 0
	for _, cp := range rec.GetCopies() {
		alloc += cp.GetAllocatedBytes()
		if cp.GetState() == "ready" {
			ready++
		}
		if cp.GetReflinked() != e.pool.fs.reflink {
			t.Errorf("%s: copy on %s reflinked=%v, want %v", e.pool.fs.name, cp.GetStorageNode(), cp.GetReflinked(), e.pool.fs.reflink)
		}
	}
	if ready != 3 {
		t.Fatalf("snapshot %s: %d ready copies, want 3: %v", snap.GetSnapshotId(), ready, rec.GetCopies())
	}
	written := int64(p.chunks * p.chunkBytes)
	// Each copy allocates what its replica does: the chunks (st_blocks
	// counts shared blocks too), and md's superblock and bitmap.
	if alloc < 3*written || alloc > 3*(written+written/4+8<<20) {
		t.Errorf("%s: the copies allocate %d bytes, want about 3 × %d", e.pool.fs.name, alloc, written)
	}

	start = time.Now()
	r := e.restore(t, fmt.Sprintf("%s-restore-%s", src.name, label), src.size, snapBenchParams3, snap.GetSnapshotId())
	restoreTime := time.Since(start)
	used2 := usedBytes(t, e.mnt)
	stageTime := r.stage(t, e.c)

	// Space: next to nothing on a reflink pool; on ext4 the data of each
	// copy or replica (plus md's metadata blocks, and a little for the
	// filesystem's own).
	snapGrew, restoreGrew := used1-used0, used2-used1
	for what, grew := range map[string]int64{"snapshot": snapGrew, "restore": restoreGrew} {
		if e.pool.fs.reflink && grew > written/4 {
			t.Errorf("XFS: the %s took %d bytes of the pool for %d bytes of data in each of 3 reflinked files", what, grew, written)
		}
		if !e.pool.fs.reflink && (grew < 3*written || grew > 3*(written+written/4+8<<20)) {
			t.Errorf("ext4: the %s took %d bytes of the pool, want about 3 × %d (sparse copies of the data)", what, grew, written)
		}
	}

	// The restored array: created clean (no resync), every chunk read
	// back, zeros between chunks, and in a cell's first round an md check
	// of all three legs.
	a := mdOf(t, e.md, mustVolume(t, e.prov, r.id))
	if a.SyncAction != "idle" || a.Degraded != 0 || inSyncMembers(a) != 3 {
		t.Errorf("restored volume %s: md %s after NodeStage, want 3 in-sync members, idle (--assume-clean)", r.id, describe(a))
	}
	r.publish(t, e.c)
	verifyChunks(t, r.target, src.size, src.chunks)
	cell.Verified++
	if cell.MDChecks == 0 && label != "warmup" {
		cell.MDMismatches += mdCheck(t, e.md, a.Name, src.size)
		cell.MDChecks++
	}
	t.Logf("%s %s round %s: snapshot %v, restore %v, NodeStage %v; copies allocate %s (reflinked %v), pool +%s by the snapshot, +%s by the restore",
		e.pool.fs.name, bench.SizeLabel(src.size), label, snapTime.Round(time.Millisecond), restoreTime.Round(time.Millisecond), stageTime.Round(time.Millisecond),
		mibs(alloc), e.pool.fs.reflink, mibs(snapGrew), mibs(restoreGrew))
	cell.SnapshotSeconds = append(cell.SnapshotSeconds, snapTime.Seconds())
	cell.RestoreSeconds = append(cell.RestoreSeconds, restoreTime.Seconds())
	cell.StageSeconds = append(cell.StageSeconds, stageTime.Seconds())
	cell.CopyAllocatedBytes = append(cell.CopyAllocatedBytes, alloc)
	cell.SnapshotPoolBytes = append(cell.SnapshotPoolBytes, snapGrew)
	cell.RestorePoolBytes = append(cell.RestorePoolBytes, restoreGrew)

	r.teardown(t, e.c)
	nodeCall(t, "DeleteSnapshot", func() error {
		_, err := e.c.ctrl.DeleteSnapshot(ctxTimeout(t, time.Minute), &csi.DeleteSnapshotRequest{SnapshotId: snap.GetSnapshotId()})
		return err
	})
	fstrim(t, e.mnt)
	// The same page cache at every round's start: an md check leaves
	// gigabytes of it behind, which the next round would otherwise
	// reclaim while it is timed.
	unix.Sync()
	dropCaches(t)
}

func mibs(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// snapshot calls CreateSnapshot and returns the snapshot once ready: when
// it is returned not ready yet, ListSnapshots is polled until it is.
func (e *snapBenchEnv) snapshot(t *testing.T, name, volumeID string) *csi.Snapshot {
	t.Helper()
	resp, err := e.c.ctrl.CreateSnapshot(ctxTimeout(t, 5*time.Minute), &csi.CreateSnapshotRequest{Name: name, SourceVolumeId: volumeID})
	if err != nil {
		t.Fatalf("CreateSnapshot %s of %s: %v", name, volumeID, err)
	}
	snap := resp.GetSnapshot()
	if snap.GetReadyToUse() {
		return snap
	}
	waitFor(t, 5*time.Minute, "snapshot "+snap.GetSnapshotId()+" ready", func() (bool, string) {
		l, err := e.c.ctrl.ListSnapshots(ctxTimeout(t, time.Minute), &csi.ListSnapshotsRequest{SnapshotId: snap.GetSnapshotId()})
		if err != nil || len(l.GetEntries()) != 1 {
			return false, fmt.Sprint(l, err)
		}
		snap = l.GetEntries()[0].GetSnapshot()
		return snap.GetReadyToUse(), snap.String()
	})
	return snap
}

// benchVolume is a restored volume, created, then staged and published
// step by step so each step is timed on its own.
type benchVolume struct {
	id, staging, target, nodeID string
	volCtx, pubCtx              map[string]string
	staged, published, gone     bool
}

// restore creates a volume from the snapshot (the timed call) and
// publishes it to the node; teardown (or the test's cleanup) undoes it.
func (e *snapBenchEnv) restore(t *testing.T, name string, size int64, params map[string]string, snapshotID string) *benchVolume {
	t.Helper()
	cv, err := e.c.ctrl.CreateVolume(ctxTimeout(t, 10*time.Minute), &csi.CreateVolumeRequest{
		Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{blockRW}, Parameters: params, VolumeContentSource: fromSnapshot(snapshotID),
	})
	if err != nil {
		t.Fatalf("CreateVolume %s from snapshot %s: %v", name, snapshotID, err)
	}
	v := &benchVolume{id: cv.GetVolume().GetVolumeId(), volCtx: cv.GetVolume().GetVolumeContext(),
		staging: filepath.Join("/run/nvmirror-test/kubelet", name, "staging"),
		target:  filepath.Join("/run/nvmirror-test/kubelet", name, "target")}
	t.Cleanup(func() { v.teardown(t, e.c) })
	info, err := e.c.node.NodeGetInfo(ctxTimeout(t, time.Minute), &csi.NodeGetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	v.nodeID = info.GetNodeId()
	pub, err := e.c.ctrl.ControllerPublishVolume(ctxTimeout(t, 3*time.Minute), &csi.ControllerPublishVolumeRequest{
		VolumeId: v.id, NodeId: v.nodeID, VolumeCapability: blockRW})
	if err != nil {
		t.Fatalf("ControllerPublishVolume %s: %v", v.id, err)
	}
	v.pubCtx = pub.GetPublishContext()
	if err := os.MkdirAll(v.staging, 0o750); err != nil {
		t.Fatal(err)
	}
	return v
}

// stage runs NodeStage and returns how long it took.
func (v *benchVolume) stage(t *testing.T, c csiClients) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := c.node.NodeStageVolume(ctxTimeout(t, 5*time.Minute), &csi.NodeStageVolumeRequest{
		VolumeId: v.id, StagingTargetPath: v.staging, VolumeCapability: blockRW, PublishContext: v.pubCtx, VolumeContext: v.volCtx,
	}); err != nil {
		t.Fatalf("NodeStageVolume %s: %v", v.id, err)
	}
	v.staged = true
	return time.Since(start)
}

func (v *benchVolume) publish(t *testing.T, c csiClients) {
	t.Helper()
	if _, err := c.node.NodePublishVolume(ctxTimeout(t, 3*time.Minute), &csi.NodePublishVolumeRequest{
		VolumeId: v.id, StagingTargetPath: v.staging, TargetPath: v.target, VolumeCapability: blockRW, PublishContext: v.pubCtx, VolumeContext: v.volCtx,
	}); err != nil {
		t.Fatalf("NodePublishVolume %s: %v", v.id, err)
	}
	v.published = true
}

// teardown unpublishes, unstages and deletes the volume, retrying what
// kubelet and the sidecars retry; a second call does nothing.
func (v *benchVolume) teardown(t *testing.T, c csiClients) {
	t.Helper()
	if v.gone {
		return
	}
	v.gone = true
	if v.published {
		nodeCall(t, "NodeUnpublishVolume "+v.id, func() error {
			_, err := c.node.NodeUnpublishVolume(ctxTimeout(t, time.Minute), &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: v.target})
			return err
		})
	}
	if v.staged {
		nodeCall(t, "NodeUnstageVolume "+v.id, func() error {
			_, err := c.node.NodeUnstageVolume(ctxTimeout(t, 2*time.Minute), &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging})
			return err
		})
	}
	nodeCall(t, "ControllerUnpublishVolume "+v.id, func() error {
		_, err := c.ctrl.ControllerUnpublishVolume(ctxTimeout(t, time.Minute), &csi.ControllerUnpublishVolumeRequest{VolumeId: v.id, NodeId: v.nodeID})
		return err
	})
	nodeCall(t, "DeleteVolume "+v.id, func() error {
		_, err := c.ctrl.DeleteVolume(ctxTimeout(t, 2*time.Minute), &csi.DeleteVolumeRequest{VolumeId: v.id})
		return err
	}, codes.FailedPrecondition)
}

// chunkOffset is where chunk i of n lies on a volume of size bytes: evenly
// spaced, the first at 0.
func chunkOffset(size int64, i, n int) int64 { return int64(i) * (size / int64(n)) }

// writeChunks writes n chunks of random bytes, evenly spaced, with
// O_DIRECT, and returns their checksums.
func writeChunks(t *testing.T, dev string, size int64, n, chunk int) []benchChunk {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := alignedBuf(t, chunk)
	out := make([]benchChunk, n)
	for i := range out {
		if _, err := rand.Read(buf); err != nil {
			t.Fatal(err)
		}
		out[i] = benchChunk{off: chunkOffset(size, i, n), n: chunk, sum: sha256.Sum256(buf)}
		if _, err := f.WriteAt(buf, out[i].off); err != nil {
			t.Fatalf("write chunk %d at %d of %s: %v", i, out[i].off, dev, err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return out
}

// verifyChunks reads every chunk back with O_DIRECT and compares its
// checksum, and checks that 4 KiB halfway between chunks read as zeros.
func verifyChunks(t *testing.T, dev string, size int64, chunks []benchChunk) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stride := size / int64(len(chunks))
	zero := make([]byte, 4096)
	gap := alignedBuf(t, 4096)
	bad := 0
	buf := alignedBuf(t, chunks[0].n)
	for i, c := range chunks {
		if _, err := f.ReadAt(buf, c.off); err != nil {
			t.Fatalf("read chunk %d at %d of %s: %v", i, c.off, dev, err)
		}
		if sha256.Sum256(buf) != c.sum {
			bad++
			t.Errorf("chunk %d at %d of %s: checksum differs from what was written", i, c.off, dev)
		}
		if int64(c.n) <= stride/2-4096 {
			off := c.off + stride/2
			if _, err := f.ReadAt(gap, off); err != nil {
				t.Fatalf("read %s at %d: %v", dev, off, err)
			}
			if !bytes.Equal(gap, zero) {
				bad++
				t.Errorf("%s at %d, between chunks %d and %d: not zeros", dev, off, i, i+1)
			}
		}
		if bad > 5 {
			t.Fatalf("%s: too many differences", dev)
		}
	}
}

// mdCheck runs an md check on the array, waits for it with a deadline
// that allows for its size under emulation, and returns mismatch_cnt.
func mdCheck(t *testing.T, md *mdraid.Manager, name string, size int64) int64 {
	t.Helper()
	if err := os.WriteFile(filepath.Join("/sys/block", name, "md", "sync_action"), []byte("check"), 0o200); err != nil {
		t.Fatalf("start check of %s: %v", name, err)
	}
	start := time.Now()
	// At least 10 MiB/s of array under TCG, reading every leg.
	deadline := 3*time.Minute + time.Duration(size/(10<<20))*time.Second
	// Once a second: each look reads sysfs on the busy VM.
	var last time.Time
	var seen string
	waitFor(t, deadline, "md check of "+name, func() (bool, string) {
		if time.Since(last) < time.Second {
			return false, seen
		}
		last = time.Now()
		a, err := md.ReadArray(name)
		if err != nil {
			seen = err.Error()
			return false, seen
		}
		seen = describe(a)
		return a.SyncAction == "idle", seen
	})
	a, err := md.ReadArray(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("md check of %s (%s) in %v: mismatch_cnt = %d", name, bench.SizeLabel(size), time.Since(start).Round(time.Second), a.MismatchCount)
	if a.MismatchCount != 0 {
		t.Errorf("md check of the restored array %s: mismatch_cnt = %d, want 0", name, a.MismatchCount)
	}
	return int64(a.MismatchCount)
}

// fitrim is FITRIM, _IOWR('X', 121, struct fstrim_range).
const fitrim = 0xc0185879

// fstrim discards the filesystem's free blocks: on a loop device over a
// tmpfs file, the file's pages go back to the guest.
func fstrim(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := struct{ start, len, minlen uint64 }{0, math.MaxUint64, 0}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fitrim, uintptr(unsafe.Pointer(&r))); errno != 0 {
		t.Fatalf("FITRIM %s: %v", dir, errno)
	}
}
