//go:build vmguest

package kernel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	utilexec "k8s.io/utils/exec"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nodecmd"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/fakeagent"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/boltstore"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
)

// TestSnapshotFreeze: the freeze a snapshot takes, end to end on the real
// kernel. A RAID1 over three nvmet-tcp namespaces backed by files takes
// continuous O_DIRECT writes; the provisioner's NodeHub (the real Service
// and Server) freezes the volume through the node's command loop (the real
// nodecmd.Loop with the driver's lock and replica mapping, md through
// sysfs). While frozen: the writer makes no progress, a write issued then
// does not complete, md's write counter stands still, the three backing
// files are byte-identical over the data region and stay so, and they hold
// exactly the writes the writer saw complete (the one it has in flight on
// none). Thawed, the writes resume without an I/O error; a freeze nobody
// thaws ends by itself at thaw_after; md's check finds no mismatch.
func TestSnapshotFreeze(t *testing.T) {
	const replicaSize = 64 << 20
	tgt := nvmet.NewTarget("")
	ini := host.NewInitiator("")
	md := mdraid.NewManager(utilexec.New(), "")
	hostIdent := newHostIdentity(t, 7)
	nodes := startStorageNodesAt(t, tgt, "frz", 3, replicaSize, hostIdent, 91, 40)
	devs := make([]host.Device, len(nodes))
	for i, n := range nodes {
		if _, err := ini.Connect(ctxTimeout(t, 30*time.Second), n.connectOptions(hostIdent)); err != nil {
			t.Fatalf("connect %s: %v", n.nqn, err)
		}
		var err error
		if devs[i], err = ini.WaitForDevice(ctxTimeout(t, 30*time.Second), n.nqn, n.nsUUID); err != nil {
			t.Fatalf("device of %s: %v", n.nqn, err)
		}
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if err := ini.DisconnectNQN(ctxTimeout(t, 30*time.Second), n.nqn); err != nil {
				t.Errorf("disconnect %s: %v", n.nqn, err)
			}
		}
	})
	mdDev, err := md.NextFreeDevice()
	if err != nil {
		t.Fatal(err)
	}
	if err := md.Create(ctxTimeout(t, time.Minute), mdraid.CreateOptions{Device: mdDev, Name: "vol-frz",
		Devices: []string{devs[0].Path, devs[1].Path, devs[2].Path}, BitmapChunk: bitmapChunk, AssumeClean: true}); err != nil {
		t.Fatalf("create %s: %v", mdDev, err)
	}
	mdName := filepath.Base(mdDev)
	t.Cleanup(func() { _ = md.Stop(ctxTimeout(t, time.Minute), mdDev) })
	arraySectors := readSysUint(t, filepath.Join("/sys/block", mdName, "size"))
	// Where each member's data starts in its backing file.
	var legs []mdLeg
	for i, d := range devs {
		off := readSysUint(t, filepath.Join("/sys/block", mdName, "md", "dev-"+d.Name, "offset"))
		legs = append(legs, mdLeg{file: nodes[i].backing, dataOffset: int64(off) * 512})
	}
	dataBytes := int64(arraySectors) * 512
	t.Logf("array %s: %d MiB of data, members %s %s %s at data offset %d KiB", mdDev, dataBytes>>20, devs[0].Name, devs[1].Name, devs[2].Name, legs[0].dataOffset>>10)

	// The provisioner: the real service and gRPC server (bolt registry,
	// fake agents: no storage node is asked anything here), without TLS.
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "registry.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, err := provisioner.New(provisioner.Options{Store: st, Agents: fakeagent.New()})
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	provisionerapi.RegisterProvisionerServer(srv, provisioner.NewServer(svc))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///provisioner", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	prov := provisionerclient.New(conn)

	// The node: the driver's volume lock and replica mapping, the volume
	// recorded staged, the command loop.
	stateDir := t.TempDir()
	opts := driver.DefaultOptions()
	opts.Mode, opts.NodeName, opts.HostRoot, opts.StateDir = driver.NodeMode, "vm-node", "/", stateDir
	d, err := driver.NewDriver(opts, prov, driver.NodeDeps{Host: driver.HostIdentity{NQN: hostIdent.nqn, ID: hostIdent.id},
		Initiator: ini, Raid: md, Mounter: driver.NewSafeFormatAndMount(utilexec.New())})
	if err != nil {
		t.Fatal(err)
	}
	const volID = "vol-frz"
	staged := &stagestate.State{Version: 1, VolumeID: volID, Phase: stagestate.Staged, StagingPath: filepath.Join(stateDir, "pv", "globalmount"),
		Block: true, HostNQN: hostIdent.nqn, MDDevice: mdDev, Device: mdDev}
	var replicaIDs []string
	for i, n := range nodes {
		id := fmt.Sprintf("frz-r%d", i)
		replicaIDs = append(replicaIDs, id)
		staged.Replicas = append(staged.Replicas, stagestate.Replica{ID: id, NQN: n.nqn, NamespaceUUID: n.nsUUID})
	}
	if err := stagestate.New(stateDir).Save(staged); err != nil {
		t.Fatal(err)
	}
	loop, err := nodecmd.New(nodecmd.Config{NodeID: d.NodeID(), HostNQN: hostIdent.nqn, Client: prov.API(),
		Staged: func() ([]stagestate.Volume, error) { return stagestate.ListVolumes(stateDir) },
		Lock:   d.TryLockVolume, Arrays: md, InSync: d.StagedInSyncReplicas, MaxHold: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	loopCtx, stopLoop := context.WithCancel(context.Background())
	loopDone := make(chan struct{})
	go func() { _ = loop.Run(loopCtx); close(loopDone) }()
	t.Cleanup(func() { stopLoop(); <-loopDone })
	nodeID := d.NodeID()
	waitFor(t, 30*time.Second, "the node's command stream", func() (bool, string) { return svc.Nodes().Connected(nodeID), "not connected" })
	hub := svc.Nodes()

	// Continuous O_DIRECT writes over the first 16 MiB; the last 64 KiB
	// block of the array is the probe's.
	const block = 64 << 10
	ringBlocks := min(dataBytes/block-1, 256)
	w := startFreezeWriter(t, mdDev, ringBlocks, block)
	waitFor(t, time.Minute, "the writer to get going", func() (bool, string) {
		n := w.completed()
		return n >= 50, fmt.Sprintf("%d writes", n)
	})

	// All or nothing: a freeze naming a volume not staged here fails and
	// holds nothing.
	if _, _, err := hub.Freeze(ctxTimeout(t, 30*time.Second), nodeID, []string{volID, "vol-elsewhere"}, 10*time.Second); err == nil ||
		!strings.Contains(err.Error(), "vol-elsewhere not staged") {
		t.Fatalf("freeze naming a volume not staged here: %v", err)
	}
	if held, err := md.WritesSuspended(mdName); err != nil || held {
		t.Fatalf("after a refused freeze md holds writes: %v %v", held, err)
	}
	n0 := w.completed()
	waitFor(t, 30*time.Second, "writes to go on after the refused freeze", func() (bool, string) {
		return w.completed() > n0+10, fmt.Sprintf("%d writes", w.completed())
	})

	// Freeze.
	start := time.Now()
	freezeID, inSync, err := hub.Freeze(ctxTimeout(t, 60*time.Second), nodeID, []string{volID}, 50*time.Second)
	if err != nil {
		t.Fatalf("freeze: %v", err)
	}
	t.Logf("froze %s in %v (freeze %s)", volID, time.Since(start).Round(time.Millisecond), freezeID)
	got := slices.Clone(inSync[volID])
	slices.Sort(got)
	if !slices.Equal(got, replicaIDs) {
		t.Fatalf("in-sync replicas %v, want %v", got, replicaIDs)
	}
	if held, err := md.WritesSuspended(mdName); err != nil || !held {
		t.Fatalf("frozen md holds no writes: %v %v", held, err)
	}
	if unlock, ok := d.TryLockVolume(volID); ok {
		unlock()
		t.Fatal("a frozen volume's node operation lock was free: NodeUnstage would run")
	}
	probe := make(chan error, 1)
	go func() { probe <- freezeProbeWrite(mdDev, (dataBytes/block-1)*block, block, 0xAB) }()
	mdWrites0 := statWriteSectors(t, mdName)
	memberWrites := func() (n uint64) {
		for _, d := range devs {
			n += writeSectors(t, d.Name)
		}
		return n
	}
	memberWrites0 := memberWrites()
	writes0 := w.completed()
	// The window: two full comparisons of the members' data regions. Each
	// must find the three files identical, and the second the same bytes
	// as the first: nothing reached a member meanwhile.
	sum1 := compareLegs(t, legs, dataBytes)
	sum2 := compareLegs(t, legs, dataBytes)
	if sum1 != sum2 {
		t.Fatal("the members' data changed while frozen")
	}
	if n := w.completed(); n != writes0 {
		t.Fatalf("the writer completed %d writes while frozen", n-writes0)
	}
	if m := statWriteSectors(t, mdName); m != mdWrites0 {
		t.Fatalf("md wrote %d sectors while frozen", m-mdWrites0)
	}
	// md's own metadata (superblock, bitmap) may still be written to the
	// members; the data regions above did not change.
	t.Logf("members written while frozen: %d sectors (metadata only: the data regions did not change)", memberWrites()-memberWrites0)
	select {
	case err := <-probe:
		t.Fatalf("a write issued while frozen completed (err %v)", err)
	default:
	}
	// Every write the writer saw complete is on every member, and the one
	// it has in flight on none.
	recs, issued := w.snapshot()
	checkLegsHold(t, legs, recs, ringBlocks, block)
	t.Logf("frozen: %d writes completed before, write #%d held; members identical over %d MiB", len(recs), issued, dataBytes>>20)

	// Thaw: the held writes complete, without an error.
	thawStart := time.Now()
	if err := hub.Thaw(ctxTimeout(t, 30*time.Second), nodeID, freezeID); err != nil {
		t.Fatalf("thaw: %v", err)
	}
	if err := <-probe; err != nil {
		t.Fatalf("the write held by the freeze failed: %v", err)
	}
	waitFor(t, 30*time.Second, "writes to resume", func() (bool, string) {
		return w.completed() > writes0+10, fmt.Sprintf("%d writes", w.completed())
	})
	t.Logf("thawed in %v; writes resumed", time.Since(thawStart).Round(time.Millisecond))
	if held, err := md.WritesSuspended(mdName); err != nil || held {
		t.Fatalf("after the thaw md holds writes: %v %v", held, err)
	}
	if err := hub.Thaw(ctxTimeout(t, 30*time.Second), nodeID, freezeID); err != nil {
		t.Fatalf("second thaw: %v", err)
	}

	// A freeze nobody thaws ends by itself at thaw_after.
	start = time.Now()
	if _, _, err := hub.Freeze(ctxTimeout(t, 60*time.Second), nodeID, []string{volID}, 2*time.Second); err != nil {
		t.Fatalf("freeze: %v", err)
	}
	writes1 := w.completed()
	waitFor(t, 60*time.Second, "the freeze to end by itself", func() (bool, string) {
		return w.completed() > writes1, fmt.Sprintf("%d writes", w.completed())
	})
	if held := time.Since(start); held < 2*time.Second {
		t.Fatalf("writes resumed %v after the freeze, before its thaw_after", held)
	}
	t.Logf("auto-thaw: writes resumed %v after the freeze (thaw_after 2s)", time.Since(start).Round(time.Millisecond))
	waitFor(t, 30*time.Second, "the volume's lock to be free again", func() (bool, string) {
		unlock, ok := d.TryLockVolume(volID)
		if ok {
			unlock()
		}
		return ok, "locked"
	})

	if err := w.stop(); err != nil {
		t.Fatalf("writer: %v", err)
	}
	t.Logf("writer: %d writes, no I/O error", w.completed())
	checkMirrors(t, md, mdName)
}

type mdLeg struct {
	file       string
	dataOffset int64
}

func readSysUint(t *testing.T, p string) uint64 {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return v
}

// compareLegs reads the data region of every member's backing file in
// step, fails at the first byte that differs, and returns its SHA-256.
func compareLegs(t *testing.T, legs []mdLeg, n int64) [32]byte {
	t.Helper()
	var readers []io.Reader
	for _, l := range legs {
		f, err := os.Open(l.file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		readers = append(readers, io.NewSectionReader(f, l.dataOffset, n))
	}
	h := sha256.New()
	bufs := make([][]byte, len(legs))
	for i := range bufs {
		bufs[i] = make([]byte, 1<<20)
	}
	for done := int64(0); done < n; {
		k := int(min(int64(len(bufs[0])), n-done))
		for i, r := range readers {
			if _, err := io.ReadFull(r, bufs[i][:k]); err != nil {
				t.Fatalf("read %s: %v", legs[i].file, err)
			}
		}
		for i := 1; i < len(legs); i++ {
			if !bytes.Equal(bufs[0][:k], bufs[i][:k]) {
				j := 0
				for bufs[0][j] == bufs[i][j] {
					j++
				}
				t.Fatalf("%s and %s differ at data byte %d", legs[0].file, legs[i].file, done+int64(j))
			}
		}
		h.Write(bufs[0][:k])
		done += int64(k)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// checkLegsHold: each ring block of every member holds the last write the
// writer saw complete there (none: zeros).
func checkLegsHold(t *testing.T, legs []mdLeg, recs []writeRec, ringBlocks, block int64) {
	t.Helper()
	latest := map[int64]uint64{}
	for _, r := range recs {
		latest[r.off] = r.seq
	}
	head := make([]byte, 16)
	for _, l := range legs {
		f, err := os.Open(l.file)
		if err != nil {
			t.Fatal(err)
		}
		for b := int64(0); b < ringBlocks; b++ {
			off := b * block
			if _, err := f.ReadAt(head, l.dataOffset+off); err != nil {
				t.Fatal(err)
			}
			var seq uint64
			if binary.LittleEndian.Uint64(head[0:8]) == writeMagic {
				seq = binary.LittleEndian.Uint64(head[8:16])
			}
			if seq != latest[off] {
				f.Close()
				t.Fatalf("%s: block at %d holds write #%d, want #%d, the last one completed there", l.file, off, seq, latest[off])
			}
		}
		f.Close()
	}
}

const writeMagic = 0x7a657266726d766e // "nvmrfrez"

type writeRec struct {
	off int64
	seq uint64
}

// writer writes 64 KiB blocks round a ring with O_DIRECT, one at a time,
// each stamped with its sequence number, and records each completion.
type freezeWriter struct {
	mu     sync.Mutex
	recs   []writeRec
	issued atomic.Uint64
	quit   atomic.Bool
	done   chan error
}

func startFreezeWriter(t *testing.T, dev string, ringBlocks, block int64) *freezeWriter {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf, err := unix.Mmap(-1, 0, int(block), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	w := &freezeWriter{done: make(chan error, 1)}
	go func() {
		defer f.Close()
		defer unix.Munmap(buf)
		for seq := uint64(1); !w.quit.Load(); seq++ {
			off := int64(seq-1) % ringBlocks * block
			for i := range buf {
				buf[i] = byte(seq)
			}
			binary.LittleEndian.PutUint64(buf[0:8], writeMagic)
			binary.LittleEndian.PutUint64(buf[8:16], seq)
			w.issued.Store(seq)
			if _, err := f.WriteAt(buf, off); err != nil {
				w.done <- fmt.Errorf("write #%d at %d: %w", seq, off, err)
				return
			}
			w.mu.Lock()
			w.recs = append(w.recs, writeRec{off, seq})
			w.mu.Unlock()
		}
		w.done <- nil
	}()
	t.Cleanup(func() { w.quit.Store(true) })
	return w
}

func (w *freezeWriter) completed() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.recs)
}

func (w *freezeWriter) snapshot() ([]writeRec, uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.recs), w.issued.Load()
}

func (w *freezeWriter) stop() error {
	w.quit.Store(true)
	select {
	case err := <-w.done:
		return err
	case <-time.After(time.Minute):
		return errors.New("the writer did not stop")
	}
}

// freezeProbeWrite writes one block of b at off with O_DIRECT.
func freezeProbeWrite(dev string, off, n int64, b byte) error {
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf, err := unix.Mmap(-1, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	for i := range buf {
		buf[i] = b
	}
	_, err = f.WriteAt(buf, off)
	return err
}
