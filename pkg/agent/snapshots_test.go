package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/mdraid/superblock"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
)

const kib = 1 << 10

// writeAt writes data into replica id's backing file and fsyncs it.
func (e *env) writeAt(id string, off int64, data []byte) {
	e.t.Helper()
	f, err := os.OpenFile(e.pool.Path(id), os.O_RDWR, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		e.t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		e.t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pattern is n bytes that differ from any other (seed, n) pattern and
// contain no zero 4 KiB block.
func pattern(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.UintN(255) + 1)
	}
	return b
}

// mdSuperblock is an md 1.2 superblock as mdadm writes it for member dev
// of a two-way mirror: a real layout (md_p.h offsets), not the parser's.
func mdSuperblock(events uint64, dev uint32) []byte {
	b := make([]byte, 512)
	le := binary.LittleEndian
	le.PutUint32(b[0:], superblock.Magic)
	le.PutUint32(b[4:], 1)
	copy(b[16:32], []byte{0x8b, 0x29, 0x81, 0x96, 0x48, 0xaa, 0x45, 0x50, 0xd7, 0xd4, 0xd2, 0x0e, 0x9a, 0xf2, 0xa7, 0x85})
	le.PutUint64(b[128:], 8192)
	le.PutUint32(b[160:], dev)
	le.PutUint64(b[200:], events)
	le.PutUint64(b[208:], ^uint64(0)) // resync_offset: clean
	le.PutUint32(b[220:], 2)
	le.PutUint16(b[256:], 0)
	le.PutUint16(b[258:], 1)
	return b
}

// TestSnapshotCopy: the copy reads back identical to the replica at the
// cut, holes stay holes, the superblock is the copy's, and the call is
// idempotent. The host's filesystem decides the path (reflink or sparse
// copy); the test reports which ran and checks Reflinked says so.
func TestSnapshotCopy(t *testing.T) {
	e := newEnv(t)
	const size = 256 * mib
	e.create("rep-1", size, Thin)
	e.writeAt("rep-1", superblock.Offset, mdSuperblock(17, 1))
	written := int64(4 * kib)
	for i, off := range []int64{4 * mib, 100 * mib, 255 * mib} {
		e.writeAt("rep-1", off, pattern(uint64(i), mib))
		written += mib
	}
	ctx := context.Background()
	sn, sb, err := e.svc.CreateSnapshot(ctx, "snap-1", "rep-1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("copy path on this host (%s): reflinked=%v, %d bytes allocated for %d written", e.dir, sn.Reflinked, sn.AllocatedBytes, written)
	if sn.SizeBytes != size || sn.SourceReplicaID != "rep-1" || sn.VolumeID != "vol-1" || sn.Created.IsZero() {
		t.Fatalf("snapshot = %+v", sn)
	}
	if !sn.Reflinked && (sn.AllocatedBytes < written || sn.AllocatedBytes > written+mib) {
		t.Fatalf("sparse copy allocates %d bytes for %d written: holes were not kept", sn.AllocatedBytes, written)
	}
	if sb == nil || sb.Events != 17 || sb.DevNumber != 1 || sb.ArrayUUID != "8b298196:48aa4550:d7d4d20e:9af2a785" || !slices.Equal(sb.DevRoles, []uint16{0, 1}) {
		t.Fatalf("superblock = %+v", sb)
	}
	orig := readFile(t, e.pool.Path("rep-1"))
	if !bytes.Equal(readFile(t, e.pool.SnapshotPath("snap-1")), orig) {
		t.Fatal("snapshot content differs from the replica")
	}
	// Writes after the cut do not reach the snapshot.
	e.writeAt("rep-1", superblock.Offset, mdSuperblock(18, 1))
	e.writeAt("rep-1", 4*mib, pattern(99, mib))
	if !bytes.Equal(readFile(t, e.pool.SnapshotPath("snap-1")), orig) {
		t.Fatal("a write to the replica changed the snapshot")
	}
	// Repeat: the same snapshot and the superblock at the cut.
	again, sb2, err := e.svc.CreateSnapshot(ctx, "snap-1", "rep-1")
	if err != nil || again.Created != sn.Created || sb2.Events != 17 {
		t.Fatalf("repeated CreateSnapshot = %+v, %+v, %v", again, sb2, err)
	}
	if live, err := e.svc.ReadSuperblock("rep-1"); err != nil || live.Events != 18 {
		t.Fatalf("ReadSuperblock = %+v, %v", live, err)
	}
	e.create("rep-2", size, Thin)
	if _, _, err := e.svc.CreateSnapshot(ctx, "snap-1", "rep-2"); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("same ID from another replica: %v, want ErrAlreadyExists", err)
	}
	// A one-replica volume's replica has no md superblock.
	if _, sb, err := e.svc.CreateSnapshot(ctx, "snap-2", "rep-2"); err != nil || sb != nil {
		t.Fatalf("snapshot of a replica without md = %+v, %v", sb, err)
	}
	if sb, err := e.svc.ReadSuperblock("rep-2"); err != nil || sb != nil {
		t.Fatalf("ReadSuperblock of a blank replica = %+v, %v", sb, err)
	}
	list, err := e.svc.ListSnapshots()
	if err != nil || len(list) != 2 || list[0].ID != "snap-1" || list[1].ID != "snap-2" {
		t.Fatalf("ListSnapshots = %v, %v", list, err)
	}
	c, err := e.svc.GetCapacity()
	if err != nil || c.SnapshotCount != 2 || c.SnapshotAllocatedBytes != list[0].AllocatedBytes+list[1].AllocatedBytes {
		t.Fatalf("GetCapacity = %+v, %v", c, err)
	}
	for _, tc := range []struct {
		id, replica string
		want        error
	}{
		{"snap-x", "nope", ErrNotFound},
		{"Bad_ID", "rep-1", ErrInvalidArgument},
		{"snap-x", "", ErrInvalidArgument},
	} {
		if _, _, err := e.svc.CreateSnapshot(ctx, tc.id, tc.replica); !errors.Is(err, tc.want) {
			t.Errorf("CreateSnapshot(%q, %q) = %v, want %v", tc.id, tc.replica, err, tc.want)
		}
	}
	if _, err := e.svc.GetSnapshot("snap-x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetSnapshot of an unknown ID: %v", err)
	}
}

// TestSnapshotCrashLeftovers: every state a crash can leave in the
// snapshot directory is no snapshot, cleaned at start, and a retry makes
// the snapshot.
func TestSnapshotCrashLeftovers(t *testing.T) {
	e := newEnv(t)
	e.create("rep-1", 16*mib, Thin)
	e.writeAt("rep-1", 0, pattern(1, mib))
	if err := e.pool.ensureSnapshotDir(); err != nil {
		t.Fatal(err)
	}
	dir := e.pool.SnapshotDir()
	// (a) crash during the copy: a part file; (b) after the record, before
	// the rename: part and record; (c) a received copy cut off; (d) a
	// temporary record file of atomicfile.
	leftovers := map[string]string{
		".snap-a.part": "partial", ".snap-b.part": "complete data", "snap-b.json": `{"id":"snap-b","sizeBytes":1}`,
		".snap-c.part": "received", ".snap-d.json.tmp-123": "{",
	}
	for name, content := range leftovers {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"snap-a", "snap-b", "snap-c"} {
		if _, err := e.svc.GetSnapshot(id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetSnapshot(%s) of a leftover: %v, want ErrNotFound", id, err)
		}
	}
	if l, err := e.svc.ListSnapshots(); err != nil || len(l) != 0 {
		t.Fatalf("ListSnapshots with leftovers only = %v, %v", l, err)
	}
	// A retry of (b) before any restart overwrites the leftovers.
	if _, _, err := e.svc.CreateSnapshot(context.Background(), "snap-b", "rep-1"); err != nil {
		t.Fatal(err)
	}
	if err := e.restart(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, en := range ents {
		names = append(names, en.Name())
	}
	if !slices.Equal(names, []string{"snap-b.json", "snap-b.snap"}) {
		t.Fatalf("snapshot directory after restart: %v", names)
	}
	if !bytes.Equal(readFile(t, e.pool.SnapshotPath("snap-b")), readFile(t, e.pool.Path("rep-1"))) {
		t.Fatal("retried snapshot differs from the replica")
	}
	// DeleteSnapshot removes a partial receive too, and is idempotent.
	if err := os.WriteFile(e.pool.snapshotPartPath("snap-c"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for _, id := range []string{"snap-b", "snap-c", "never-was"} {
			if err := e.svc.DeleteSnapshot(context.Background(), id); err != nil {
				t.Fatalf("DeleteSnapshot(%s): %v", id, err)
			}
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("snapshot directory after deletes: %v", ents)
	}
}

// TestSnapshotInFlight: calls on a snapshot or on the replica being
// copied while another runs are refused (Aborted), not queued.
func TestSnapshotInFlight(t *testing.T) {
	e := newEnv(t)
	e.create("rep-1", 16*mib, Thin)
	ctx := context.Background()
	e.svc.snapInflight.Insert("snap-1")
	if _, _, err := e.svc.CreateSnapshot(ctx, "snap-1", "rep-1"); !errors.Is(err, ErrInFlight) {
		t.Fatalf("CreateSnapshot during another call on the snapshot: %v", err)
	}
	if err := e.svc.DeleteSnapshot(ctx, "snap-1"); !errors.Is(err, ErrInFlight) {
		t.Fatalf("DeleteSnapshot during another call on the snapshot: %v", err)
	}
	if _, err := e.svc.BeginWrite(WriteHeader{SnapshotID: "snap-1", SizeBytes: mib}); !errors.Is(err, ErrInFlight) {
		t.Fatalf("WriteData during another call on the snapshot: %v", err)
	}
	e.svc.snapInflight.Delete("snap-1")
	e.svc.inflight.Insert("rep-1")
	if _, _, err := e.svc.CreateSnapshot(ctx, "snap-1", "rep-1"); !errors.Is(err, ErrInFlight) {
		t.Fatalf("CreateSnapshot during a call on its replica: %v", err)
	}
	e.svc.inflight.Delete("rep-1")
	if _, _, err := e.svc.CreateSnapshot(ctx, "snap-1", "rep-1"); err != nil {
		t.Fatal(err)
	}
}

// TestReplicaFromSnapshot: a replica made from a snapshot range at a
// target offset reads the range there and zeros elsewhere; it and the
// snapshot are independent (deleting one leaves the other intact).
func TestReplicaFromSnapshot(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.create("rep-1", 32*mib, Thin)
	data := pattern(5, 3*mib)
	e.writeAt("rep-1", 8*mib, data)
	if _, _, err := e.svc.CreateSnapshot(ctx, "snap-1", "rep-1"); err != nil {
		t.Fatal(err)
	}
	snapBytes := readFile(t, e.pool.SnapshotPath("snap-1"))
	// A one-replica volume's data (offset 0) into an md member (4 MiB in).
	src := &SnapshotSource{SnapshotID: "snap-1", SourceOffset: 0, Length: 32 * mib, TargetOffset: 4 * mib}
	req := CreateRequest{ReplicaID: "rep-2", VolumeID: "vol-2", SizeBytes: 36 * mib, Provisioning: Thin, Source: src}
	r, err := e.svc.CreateReplica(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if r.Source == nil || *r.Source != *src {
		t.Fatalf("replica source = %v", r.Source)
	}
	e.checkExported("rep-2")
	got := readFile(t, e.pool.Path("rep-2"))
	if int64(len(got)) != 36*mib || !bytes.Equal(got[4*mib:], snapBytes) || !bytes.Equal(got[:4*mib], make([]byte, 4*mib)) {
		t.Fatal("replica from snapshot does not read back the snapshot at 4 MiB")
	}
	if a := allocatedBytes(t, e.pool.Path("rep-2")); a > 4*mib {
		t.Fatalf("replica from a sparse snapshot allocates %d bytes", a)
	}
	// Idempotent; another source for the same ID is AlreadyExists.
	if _, err := e.svc.CreateReplica(ctx, req); err != nil {
		t.Fatal(err)
	}
	other := req
	other.Source = &SnapshotSource{SnapshotID: "snap-1", Length: 16 * mib}
	if _, err := e.svc.CreateReplica(ctx, other); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("CreateReplica with another source: %v", err)
	}
	// A thick replica from the middle of the snapshot.
	thick := CreateRequest{ReplicaID: "rep-3", VolumeID: "vol-3", SizeBytes: 8 * mib, Provisioning: Thick,
		Source: &SnapshotSource{SnapshotID: "snap-1", SourceOffset: 8 * mib, Length: 4 * mib, TargetOffset: 0}}
	if _, err := e.svc.CreateReplica(ctx, thick); err != nil {
		t.Fatal(err)
	}
	got3 := readFile(t, e.pool.Path("rep-3"))
	if !bytes.Equal(got3[:4*mib], snapBytes[8*mib:12*mib]) || !bytes.Equal(got3[4*mib:], make([]byte, 4*mib)) {
		t.Fatal("thick replica from a snapshot range reads back wrong")
	}
	if a := allocatedBytes(t, e.pool.Path("rep-3")); a < 8*mib {
		t.Fatalf("thick replica from a snapshot allocates %d bytes, want all", a)
	}
	// Deleting the snapshot leaves the replicas; deleting the source
	// replica leaves nothing else.
	if err := e.svc.DeleteSnapshot(ctx, "snap-1"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteReplica(ctx, "rep-1"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, e.pool.Path("rep-2")), got) {
		t.Fatal("deleting the snapshot changed a replica made from it")
	}
	// Invalid sources.
	for _, tc := range []struct {
		src   SnapshotSource
		field string
		want  error
	}{
		{SnapshotSource{SnapshotID: "snap-1", Length: mib}, "", ErrFailedPrecondition}, // deleted
		{SnapshotSource{SnapshotID: "x", Length: 100}, "source.length", ErrInvalidArgument},
		{SnapshotSource{SnapshotID: "x", Length: mib, SourceOffset: -4096}, "source.source_offset", ErrInvalidArgument},
		{SnapshotSource{SnapshotID: "x", Length: mib, TargetOffset: 8 * mib}, "source.target_offset", ErrInvalidArgument},
		{SnapshotSource{SnapshotID: "x"}, "source.length", ErrInvalidArgument},
		{SnapshotSource{SnapshotID: "X!", Length: mib}, "source.snapshot_id", ErrInvalidArgument},
	} {
		_, err := e.svc.CreateReplica(ctx, CreateRequest{ReplicaID: "rep-9", VolumeID: "v", SizeBytes: 8 * mib, Provisioning: Thin, Source: &tc.src})
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("CreateReplica with source %+v: %v, want %v naming %q", tc.src, err, tc.want, tc.field)
		}
	}
	if _, ok := e.svc.get("rep-9"); ok {
		t.Fatal("a refused create from a snapshot left a record")
	}
}

// TestReplicaFromSnapshotCrash: a create from a snapshot interrupted
// before its file was renamed into place (a part file and a creating
// record) is completed by the next start with the right content.
func TestReplicaFromSnapshotCrash(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.create("rep-1", 16*mib, Thin)
	e.writeAt("rep-1", 0, pattern(3, 2*mib))
	if _, _, err := e.svc.CreateSnapshot(ctx, "snap-1", "rep-1"); err != nil {
		t.Fatal(err)
	}
	r := &Replica{ID: "rep-2", VolumeID: "v", SizeBytes: 16 * mib, Provisioning: Thin, State: StateCreating,
		Source: &SnapshotSource{SnapshotID: "snap-1", Length: 16 * mib}}
	if err := e.svc.put(r); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.pool.partPath("rep-2"), []byte("torn copy"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.restart(); err != nil {
		t.Fatal(err)
	}
	got, ok := e.svc.get("rep-2")
	if !ok || got.State != StateReady {
		t.Fatalf("replica after restart = %+v", got)
	}
	if !bytes.Equal(readFile(t, e.pool.Path("rep-2")), readFile(t, e.pool.SnapshotPath("snap-1"))) {
		t.Fatal("completed replica differs from the snapshot")
	}
	if _, err := os.Stat(e.pool.partPath("rep-2")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("part file left: %v", err)
	}
}

// collect runs ReadData and returns the chunks, checking each is at most
// 1 MiB and in ascending order.
func collect(t *testing.T, svc *Service, src DataSource, off, n int64) (map[int64][]byte, int64) {
	t.Helper()
	chunks := map[int64][]byte{}
	var total, last int64 = 0, -1
	err := svc.ReadData(context.Background(), src, off, n, func(o int64, d []byte) error {
		if len(d) == 0 || len(d) > chunkMax || o <= last {
			t.Fatalf("chunk at %d of %d bytes after %d", o, len(d), last)
		}
		last = o
		chunks[o] = bytes.Clone(d)
		total += int64(len(d))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return chunks, total
}

// TestReadWriteDataRoundTrip: what ReadData streams, written into a new
// snapshot with WriteData, is the same file, with holes kept; a repeat of
// a complete receive succeeds and ignores the data.
func TestReadWriteDataRoundTrip(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const size = 64 * mib
	e.create("rep-1", size, Thin)
	e.writeAt("rep-1", 4*kib, mdSuperblock(3, 0))
	e.writeAt("rep-1", 10*mib+512*kib, pattern(1, 3*mib)) // crosses chunk boundaries
	e.writeAt("rep-1", 40*mib, make([]byte, mib))         // allocated zeros
	e.writeAt("rep-1", size-8*kib, pattern(2, 8*kib))
	if _, _, err := e.svc.CreateSnapshot(ctx, "snap-1", "rep-1"); err != nil {
		t.Fatal(err)
	}
	chunks, total := collect(t, e.svc, DataSource{SnapshotID: "snap-1"}, 0, 0)
	if want := int64(4*kib + 3*mib + 8*kib); total != want {
		t.Fatalf("ReadData sent %d bytes, want the %d non-zero bytes", total, want)
	}
	w, err := e.svc.BeginWrite(WriteHeader{SnapshotID: "copy-1", SizeBytes: size, VolumeID: "vol-1"})
	if err != nil {
		t.Fatal(err)
	}
	for off, d := range chunks {
		if err := w.Write(off, d); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.svc.GetSnapshot("copy-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetSnapshot of a copy being received: %v", err)
	}
	n, sn, err := w.Commit()
	w.Close()
	if err != nil || n != total || sn.SizeBytes != size || sn.SourceReplicaID != "" || sn.VolumeID != "vol-1" {
		t.Fatalf("Commit = %d, %+v, %v", n, sn, err)
	}
	if !bytes.Equal(readFile(t, e.pool.SnapshotPath("copy-1")), readFile(t, e.pool.SnapshotPath("snap-1"))) {
		t.Fatal("received copy differs")
	}
	if sn.AllocatedBytes > total+mib {
		t.Fatalf("received copy allocates %d bytes for %d received", sn.AllocatedBytes, total)
	}
	// Again: complete, data ignored.
	w, err = e.svc.BeginWrite(WriteHeader{SnapshotID: "copy-1", SizeBytes: size})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(0, pattern(9, 4*kib)); err != nil {
		t.Fatal(err)
	}
	if n, sn2, err := w.Commit(); err != nil || n != 0 || !sn2.Created.Equal(sn.Created) {
		t.Fatalf("repeated receive = %d, %+v, %v", n, sn2, err)
	}
	w.Close()
	if _, err := e.svc.BeginWrite(WriteHeader{SnapshotID: "copy-1", SizeBytes: 2 * size}); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("receive of another size over a complete copy: %v", err)
	}
	// A window: only what lies in it.
	part, ptotal := collect(t, e.svc, DataSource{SnapshotID: "snap-1"}, 11*mib, mib)
	if ptotal != mib || !bytes.Equal(part[11*mib], readFile(t, e.pool.SnapshotPath("snap-1"))[11*mib:12*mib]) {
		t.Fatalf("windowed ReadData sent %d bytes in %d chunks", ptotal, len(part))
	}
	// Into a replica no host is allowed on; one with a host is refused.
	e.create("rep-2", size, Thin)
	w, err = e.svc.BeginWrite(WriteHeader{ReplicaID: "rep-2"})
	if err != nil {
		t.Fatal(err)
	}
	for off, d := range chunks {
		if err := w.Write(off, d); err != nil {
			t.Fatal(err)
		}
	}
	if n, sn, err := w.Commit(); err != nil || n != total || sn != nil {
		t.Fatalf("Commit into a replica = %d, %v, %v", n, sn, err)
	}
	w.Close()
	if !bytes.Equal(readFile(t, e.pool.Path("rep-2")), readFile(t, e.pool.SnapshotPath("snap-1"))) {
		t.Fatal("replica written by WriteData differs")
	}
	if _, err := e.svc.BeginWrite(WriteHeader{ReplicaID: "rep-1"}); err != nil {
		t.Fatalf("rep-1 has no hosts: %v", err)
	}
	e.create("rep-3", size, Thin, hostA)
	if _, err := e.svc.BeginWrite(WriteHeader{ReplicaID: "rep-3"}); !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("WriteData into a replica with a host: %v", err)
	}
}

func TestDataValidation(t *testing.T) {
	e := newEnv(t)
	e.create("rep-1", 8*mib, Thin)
	ctx := context.Background()
	nop := func(int64, []byte) error { return nil }
	for _, tc := range []struct {
		src       DataSource
		off, n    int64
		field     string
		wantError error
	}{
		{DataSource{}, 0, 0, "source", ErrInvalidArgument},
		{DataSource{ReplicaID: "rep-1", SnapshotID: "s"}, 0, 0, "source", ErrInvalidArgument},
		{DataSource{ReplicaID: "rep-1"}, -1, 0, "offset", ErrInvalidArgument},
		{DataSource{ReplicaID: "rep-1"}, 9 * mib, 0, "offset", ErrInvalidArgument},
		{DataSource{ReplicaID: "rep-1"}, mib, 8 * mib, "length", ErrInvalidArgument},
		{DataSource{ReplicaID: "rep-1"}, 0, -5, "length", ErrInvalidArgument},
		{DataSource{ReplicaID: "nope"}, 0, 0, "", ErrNotFound},
		{DataSource{SnapshotID: "nope"}, 0, 0, "", ErrNotFound},
	} {
		err := e.svc.ReadData(ctx, tc.src, tc.off, tc.n, nop)
		if !errors.Is(err, tc.wantError) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("ReadData(%+v, %d, %d) = %v, want %v naming %q", tc.src, tc.off, tc.n, err, tc.wantError, tc.field)
		}
	}
	w, err := e.svc.BeginWrite(WriteHeader{SnapshotID: "s-1", SizeBytes: 8 * mib})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, tc := range []struct {
		off   int64
		n     int
		field string
	}{{-1, 1, "chunk.offset"}, {8*mib - 10, 11, "chunk.offset"}, {0, chunkMax + 1, "chunk.data"}} {
		if err := w.Write(tc.off, make([]byte, tc.n)); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Write(%d, %d bytes) = %v, want InvalidArgument naming %s", tc.off, tc.n, err, tc.field)
		}
	}
	for _, h := range []WriteHeader{{}, {SnapshotID: "s-2"}, {SnapshotID: "s-2", SizeBytes: 100}, {ReplicaID: "rep-1", SizeBytes: mib}, {SnapshotID: "a", ReplicaID: "b"}} {
		if _, err := e.svc.BeginWrite(h); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "header.") {
			t.Errorf("BeginWrite(%+v) = %v, want InvalidArgument naming a header field", h, err)
		}
	}
}

// rangesOf pages through SnapshotRanges max at a time.
func rangesOf(t *testing.T, svc *Service, id, base string, max int) []extent {
	t.Helper()
	var all []extent
	off := int64(0)
	for pages := 0; ; pages++ {
		rs, next, err := svc.SnapshotRanges(context.Background(), RangesRequest{SnapshotID: id, BaseSnapshotID: base, Offset: off, MaxRanges: max})
		if err != nil {
			t.Fatal(err)
		}
		if max > 0 && len(rs) > max {
			t.Fatalf("%d ranges in a page of %d", len(rs), max)
		}
		all = unionExtents(0, 1<<62, all, rs)
		if next == 0 {
			return all
		}
		if next <= off || pages > 10000 {
			t.Fatalf("next_offset %d after %d", next, off)
		}
		off = next
	}
}

// TestSnapshotRangesExact: between two snapshots, exactly the 4 KiB
// blocks whose bytes changed are reported (rewrites of the same bytes,
// allocated zeros over holes and untouched data are not), merged, with
// any page size; without a base, the allocated ranges.
func TestSnapshotRangesExact(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const size = 64 * mib
	e.create("rep-1", size, Thin)
	e.writeAt("rep-1", 0, pattern(1, 8*mib))
	e.writeAt("rep-1", 20*mib, pattern(2, mib))
	if _, _, err := e.svc.CreateSnapshot(ctx, "s1", "rep-1"); err != nil {
		t.Fatal(err)
	}
	if got, want := rangesOf(t, e.svc, "s1", "", 0), []extent{{0, 8 * mib}, {20 * mib, mib}}; !slices.Equal(got, want) {
		t.Fatalf("allocated ranges = %v, want %v", got, want)
	}
	base := readFile(t, e.pool.SnapshotPath("s1"))
	changes := []extent{
		{4 * kib, 4 * kib},          // one block in written data
		{1 * mib, 12 * kib},         // three blocks
		{1*mib + 12*kib, 4 * kib},   // adjacent: merges with the one before
		{7*mib + 1020*kib, 8 * kib}, // across the end of written data
		{30 * mib, 2 * mib},         // over a hole
		{size - 4*kib, 4 * kib},     // the last block
	}
	for i, c := range changes {
		e.writeAt("rep-1", c.Off, pattern(uint64(100+i), int(c.Len)))
	}
	e.writeAt("rep-1", 20*mib, base[20*mib:21*mib])  // same bytes rewritten
	e.writeAt("rep-1", 40*mib, make([]byte, mib))    // zeros over a hole
	e.writeAt("rep-1", 2*mib, base[2*mib:2*mib+kib]) // a partial same-bytes block
	if _, _, err := e.svc.CreateSnapshot(ctx, "s2", "rep-1"); err != nil {
		t.Fatal(err)
	}
	want := unionExtents(0, size, changes)
	for _, max := range []int{0, 1, 2, 3} {
		if got := rangesOf(t, e.svc, "s2", "s1", max); !slices.Equal(got, want) {
			t.Fatalf("changed ranges (max %d) = %v, want %v", max, got, want)
		}
	}
	// A window: only the part of the changes inside it.
	rs, next, err := e.svc.SnapshotRanges(ctx, RangesRequest{SnapshotID: "s2", BaseSnapshotID: "s1", Offset: 1 * mib, Length: 8 * kib})
	if err != nil || next != 0 || !slices.Equal(rs, []extent{{1 * mib, 8 * kib}}) {
		t.Fatalf("windowed ranges = %v, %d, %v", rs, next, err)
	}
	// Against itself: nothing.
	if got := rangesOf(t, e.svc, "s2", "s2", 0); len(got) != 0 {
		t.Fatalf("ranges against itself = %v", got)
	}
	// A base larger than the snapshot is refused; beyond a smaller base's
	// end everything allocated counts.
	e.create("rep-small", 16*mib, Thin)
	e.writeAt("rep-small", 0, base[:8*mib])
	if _, _, err := e.svc.CreateSnapshot(ctx, "small", "rep-small"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.SnapshotRanges(ctx, RangesRequest{SnapshotID: "small", BaseSnapshotID: "s1"}); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "base_snapshot_id") {
		t.Fatalf("larger base: %v", err)
	}
	if got, want := rangesOf(t, e.svc, "s1", "small", 0), []extent{{20 * mib, mib}}; !slices.Equal(got, want) {
		t.Fatalf("ranges over a smaller base = %v, want %v", got, want)
	}
	if _, _, err := e.svc.SnapshotRanges(ctx, RangesRequest{SnapshotID: "s1", MaxRanges: -1}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("negative max_ranges: %v", err)
	}
}

// TestSharedExtents: extents both files map to the same blocks at the same
// offset are shared; another physical place, another file offset, or an
// extent without a physical identity (delalloc, inline) is not.
func TestSharedExtents(t *testing.T) {
	a := []physExtent{
		{Logical: 0, Physical: 1 << 30, Len: 8 * mib},
		{Logical: 8 * mib, Physical: 2 << 30, Len: 4 * mib},
		{Logical: 16 * mib, Physical: 3 << 30, Len: 4 * mib, Flags: fiemapExtentDelalloc},
		{Logical: 24 * mib, Physical: 4 << 30, Len: 4 * mib},
	}
	b := []physExtent{
		{Logical: 0, Physical: 1 << 30, Len: 2 * mib},              // shared
		{Logical: 2 * mib, Physical: 9 << 30, Len: mib},            // rewritten (CoW)
		{Logical: 3 * mib, Physical: 1<<30 + 3*mib, Len: 9 * mib},  // shared to 8 MiB, then not
		{Logical: 16 * mib, Physical: 3 << 30, Len: 4 * mib},       // a's is delalloc
		{Logical: 28 * mib, Physical: 4<<30 + 4*mib, Len: 4 * mib}, // same blocks, other offset
	}
	got := sharedExtents(a, b, 0, 64*mib)
	want := []extent{{0, 2 * mib}, {3 * mib, 5 * mib}}
	if !slices.Equal(got, want) {
		t.Fatalf("sharedExtents = %v, want %v", got, want)
	}
	if got := sharedExtents(a, b, mib, 4*mib); !slices.Equal(got, []extent{{mib, mib}, {3 * mib, mib}}) {
		t.Fatalf("clipped sharedExtents = %v", got)
	}
	cand := subtractExtents(unionExtents(0, 64*mib, physExtentsToExtents(a), physExtentsToExtents(b)), want)
	if wantC := []extent{{2 * mib, mib}, {8 * mib, 4 * mib}, {16 * mib, 4 * mib}, {24 * mib, 8 * mib}}; !slices.Equal(cand, wantC) {
		t.Fatalf("candidates = %v, want %v", cand, wantC)
	}
}

// TestFiemapMapsData: FIEMAP on this host's filesystem (when it has one)
// maps the written ranges and a copy made by the sparse path shares
// nothing with its source.
func TestFiemapMapsData(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(16 * mib); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(pattern(1, mib), 4*mib); err != nil {
		t.Fatal(err)
	}
	m, err := fiemap(f, 0, 16*mib)
	if errors.Is(err, errFiemapUnsupported) {
		t.Skipf("no FIEMAP here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := unionExtents(0, 16*mib, physExtentsToExtents(m)); !slices.Equal(got, []extent{{4 * mib, mib}}) {
		t.Fatalf("FIEMAP maps %v (%+v)", got, m)
	}
	g, err := os.Create(filepath.Join(dir, "g"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	method, err := copyFile(g, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("copy method on this host: %s", method)
	gm, err := fiemap(g, 0, 16*mib)
	if err != nil {
		t.Fatal(err)
	}
	shared := sharedExtents(m, gm, 0, 16*mib)
	if method == copySparse && len(shared) != 0 {
		t.Fatalf("a sparse copy shares %v with its source", shared)
	}
	if method == copyReflink && !slices.Equal(shared, []extent{{4 * mib, mib}}) {
		t.Fatalf("a reflink copy shares %v with its source", shared)
	}
}

// TestSnapshotGRPC: the RPCs through the real server: streams included,
// codes and field names on errors.
func TestSnapshotGRPC(t *testing.T) {
	e := newEnv(t)
	c := serve(t, e.svc, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.create("rep-1", 16*mib, Thin)
	e.writeAt("rep-1", superblock.Offset, mdSuperblock(5, 0))
	e.writeAt("rep-1", 4*mib, pattern(1, 2*mib+4*kib))
	cs, err := c.CreateSnapshot(ctx, &agentapi.CreateSnapshotRequest{SnapshotId: "s1", ReplicaId: "rep-1"})
	if err != nil || !cs.GetSuperblock().GetPresent() || cs.GetSuperblock().GetEvents() != 5 || cs.GetSnapshot().GetSizeBytes() != 16*mib ||
		cs.GetSuperblock().GetDataOffsetSectors() != 8192 || !cs.GetSuperblock().GetClean() || !slices.Equal(cs.GetSuperblock().GetDevRoles(), []uint32{0, 1}) {
		t.Fatalf("CreateSnapshot = %v, %v", cs, err)
	}
	rs, err := c.ReadSuperblock(ctx, &agentapi.ReadSuperblockRequest{ReplicaId: "rep-1"})
	if err != nil || rs.GetSuperblock().GetArrayUuid() != "8b298196:48aa4550:d7d4d20e:9af2a785" {
		t.Fatalf("ReadSuperblock = %v, %v", rs, err)
	}
	rd, err := c.ReadData(ctx, &agentapi.ReadDataRequest{Source: &agentapi.ReadDataRequest_SnapshotId{SnapshotId: "s1"}})
	if err != nil {
		t.Fatal(err)
	}
	wd, err := c.WriteData(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := wd.Send(&agentapi.WriteDataRequest{Message: &agentapi.WriteDataRequest_Header{Header: &agentapi.WriteDataHeader{
		Target: &agentapi.WriteDataHeader_SnapshotId{SnapshotId: "s1-copy"}, SizeBytes: 16 * mib}}}); err != nil {
		t.Fatal(err)
	}
	chunks := 0
	for {
		ch, err := rd.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(ch.GetData()) > chunkMax {
			t.Fatalf("chunk of %d bytes", len(ch.GetData()))
		}
		chunks++
		if err := wd.Send(&agentapi.WriteDataRequest{Message: &agentapi.WriteDataRequest_Chunk{Chunk: ch}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := wd.Send(&agentapi.WriteDataRequest{Message: &agentapi.WriteDataRequest_Commit{Commit: true}}); err != nil {
		t.Fatal(err)
	}
	wr, err := wd.CloseAndRecv()
	if err != nil || wr.GetBytesWritten() != 2*mib+8*kib || wr.GetSnapshot().GetSnapshotId() != "s1-copy" || chunks < 3 {
		t.Fatalf("WriteData = %v, %v after %d chunks", wr, err, chunks)
	}
	if !bytes.Equal(readFile(t, e.pool.SnapshotPath("s1-copy")), readFile(t, e.pool.SnapshotPath("s1"))) {
		t.Fatal("copy through gRPC differs")
	}
	sr, err := c.SnapshotRanges(ctx, &agentapi.SnapshotRangesRequest{SnapshotId: "s1-copy", BaseSnapshotId: "s1"})
	if err != nil || len(sr.GetRanges()) != 0 || sr.GetNextOffset() != 0 {
		t.Fatalf("SnapshotRanges of identical copies = %v, %v", sr, err)
	}
	sr, err = c.SnapshotRanges(ctx, &agentapi.SnapshotRangesRequest{SnapshotId: "s1"})
	if err != nil || len(sr.GetRanges()) != 2 || sr.GetRanges()[0].GetOffset() != 4*kib {
		t.Fatalf("SnapshotRanges = %v, %v", sr, err)
	}
	capr, err := c.GetCapacity(ctx, &agentapi.GetCapacityRequest{})
	if err != nil || capr.GetSnapshotCount() != 2 || capr.GetSnapshotAllocatedBytes() < 2*(2*mib+8*kib) {
		t.Fatalf("GetCapacity = %v, %v", capr, err)
	}
	// Errors: a chunk out of range names its field; no commit fails.
	wd, err = c.WriteData(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = wd.Send(&agentapi.WriteDataRequest{Message: &agentapi.WriteDataRequest_Header{Header: &agentapi.WriteDataHeader{
		Target: &agentapi.WriteDataHeader_SnapshotId{SnapshotId: "s2"}, SizeBytes: mib}}})
	_ = wd.Send(&agentapi.WriteDataRequest{Message: &agentapi.WriteDataRequest_Chunk{Chunk: &agentapi.DataChunk{Offset: mib, Data: []byte{1}}}})
	if _, err := wd.CloseAndRecv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "chunk.offset") {
		t.Fatalf("WriteData out of range: %v", err)
	}
	wd, _ = c.WriteData(ctx)
	_ = wd.Send(&agentapi.WriteDataRequest{Message: &agentapi.WriteDataRequest_Header{Header: &agentapi.WriteDataHeader{
		Target: &agentapi.WriteDataHeader_SnapshotId{SnapshotId: "s2"}, SizeBytes: mib}}})
	if _, err := wd.CloseAndRecv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "commit") {
		t.Fatalf("WriteData without commit: %v", err)
	}
	if _, err := c.GetSnapshot(ctx, &agentapi.GetSnapshotRequest{SnapshotId: "s2"}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetSnapshot of an uncommitted receive: %v", err)
	}
	rd, _ = c.ReadData(ctx, &agentapi.ReadDataRequest{Source: &agentapi.ReadDataRequest_ReplicaId{ReplicaId: "rep-1"}, Offset: 17 * mib})
	if _, err := rd.Recv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "offset") {
		t.Fatalf("ReadData beyond the end: %v", err)
	}
	e.svc.snapInflight.Insert("s1")
	if _, err := c.DeleteSnapshot(ctx, &agentapi.DeleteSnapshotRequest{SnapshotId: "s1"}); status.Code(err) != codes.Aborted {
		t.Fatalf("DeleteSnapshot in flight: %v", err)
	}
	e.svc.snapInflight.Delete("s1")
	if _, err := c.CreateSnapshot(ctx, &agentapi.CreateSnapshotRequest{SnapshotId: "s1", ReplicaId: "rep-x"}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("CreateSnapshot of an existing ID from another replica: %v", err)
	}
	ls, err := c.ListSnapshots(ctx, &agentapi.ListSnapshotsRequest{})
	if err != nil || len(ls.GetSnapshots()) != 2 {
		t.Fatalf("ListSnapshots = %v, %v", ls, err)
	}
	cr, err := c.CreateReplica(ctx, &agentapi.CreateReplicaRequest{ReplicaId: "rep-2", VolumeId: "v", SizeBytes: 20 * mib,
		ProvisioningType: agentapi.ProvisioningType_PROVISIONING_TYPE_THIN,
		Source:           &agentapi.SnapshotSource{SnapshotId: "s1", Length: 16 * mib, TargetOffset: 4 * mib}})
	if err != nil || cr.GetReplica().GetState() != agentapi.ReplicaState_REPLICA_STATE_READY {
		t.Fatalf("CreateReplica from a snapshot = %v, %v", cr, err)
	}
	if got := readFile(t, e.pool.Path("rep-2")); !bytes.Equal(got[4*mib:], readFile(t, e.pool.SnapshotPath("s1"))) {
		t.Fatal("replica from a snapshot through gRPC reads back wrong")
	}
}

// TestAuthorizerCoversAPI: every method and stream of the agent API is in
// the table, for the provisioner only.
func TestAuthorizerCoversAPI(t *testing.T) {
	p, ok := Authorizer().(rpcauth.Policy)
	if !ok {
		t.Fatalf("Authorizer is %T", Authorizer())
	}
	var names []string
	for _, m := range agentapi.Target_ServiceDesc.Methods {
		names = append(names, m.MethodName)
	}
	for _, s := range agentapi.Target_ServiceDesc.Streams {
		names = append(names, s.StreamName)
	}
	for _, n := range append(names, "ReadData", "WriteData", "SnapshotRanges") {
		r, ok := p["/"+agentapi.Target_ServiceDesc.ServiceName+"/"+n]
		if !ok || !slices.Equal(r.Roles, []rpcauth.Role{rpcauth.RoleProvisioner}) {
			t.Errorf("%s: rule %+v, %v; want the provisioner's only", n, r, ok)
		}
	}
	if len(p) != len(names) {
		t.Errorf("table has %d entries for %d calls", len(p), len(names))
	}
}
