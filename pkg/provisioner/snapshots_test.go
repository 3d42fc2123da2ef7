package provisioner_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// fakeQuiescer stands in for the node hub: it records freezes and thaws and
// reports in-sync replicas as told.
type fakeQuiescer struct {
	mu      sync.Mutex
	inSync  map[string][]string // volume → replicas md holds in sync; nil: all active
	err     error
	frozen  map[string]bool // node/freeze IDs not thawed yet
	freezes [][]string      // node, volumes... per freeze
	// during runs while the node is frozen (the test writes "after" data
	// here to prove copies are not affected... or checks state).
	store store.Store
}

func (q *fakeQuiescer) Freeze(ctx context.Context, node string, vols []string, thawAfter time.Duration) (string, map[string][]string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return "", nil, q.err
	}
	if thawAfter <= 0 {
		return "", nil, errors.New("no thaw bound")
	}
	id := fmt.Sprintf("%s/f%d", node, len(q.freezes))
	if q.frozen == nil {
		q.frozen = map[string]bool{}
	}
	q.frozen[id] = true
	q.freezes = append(q.freezes, append([]string{node}, vols...))
	out := map[string][]string{}
	for _, vol := range vols {
		if ids, ok := q.inSync[vol]; ok {
			out[vol] = ids
			continue
		}
		v, err := q.store.GetVolume(ctx, vol)
		if err != nil {
			return "", nil, err
		}
		for _, r := range v.Replicas {
			if r.State == store.ReplicaActive {
				out[vol] = append(out[vol], r.ID)
			}
		}
	}
	return id, out, nil
}

func (q *fakeQuiescer) Thaw(ctx context.Context, node, id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.frozen, id)
	return nil
}

func (q *fakeQuiescer) stillFrozen() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.frozen)
}

func newSnapshotEnv(t *testing.T, nodes []node) (*env, *fakeQuiescer) {
	t.Helper()
	q := &fakeQuiescer{}
	e := newEnvOpts(t, nodes, provisioner.Options{Quiescer: q})
	q.store = e.store
	return e, q
}

func fourRacks() []node {
	return append(threeRacks(), node{"sn-4", "z1", "r4", 100})
}

// block returns 4 KiB of a recognisable pattern.
func block(tag byte) []byte { return bytes.Repeat([]byte{tag, 0x5a, tag ^ 0xff, 1}, 1024) }

// writeVolume writes data at volume offset off into every active replica
// (what md does for a host's write).
func writeVolume(t *testing.T, e *env, id string, off int64, data []byte) {
	t.Helper()
	v, err := e.store.GetVolume(e.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range v.Replicas {
		if r.State == store.ReplicaActive {
			e.cluster.WriteReplica(r.StorageNode, r.ID, dataOff(v)+off, data)
		}
	}
}

func dataOff(v *store.Volume) int64 {
	if v.Parameters.NumReplicas >= 2 {
		return layout.MetadataReserve
	}
	return 0
}

// readReplicas returns [off, off+n) of the volume as each active replica
// holds it.
func readReplicas(t *testing.T, e *env, id string, off, n int64) map[string][]byte {
	t.Helper()
	v, err := e.store.GetVolume(e.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, r := range v.Replicas {
		if r.State == store.ReplicaActive {
			out[r.ID] = e.cluster.ReadReplica(r.StorageNode, r.ID, dataOff(v)+off, n)
		}
	}
	return out
}

func copyNodesOf(snap *store.Snapshot) []string {
	var out []string
	for _, c := range snap.Copies {
		if c.State == store.CopyReady {
			out = append(out, c.StorageNode)
		}
	}
	sort.Strings(out)
	return out
}

func TestSnapshotOfUnpublishedVolume(t *testing.T) {
	e, q := newSnapshotEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
	writeVolume(t, e, v.ID, 0, block(1))
	writeVolume(t, e, v.ID, 100<<20, block(2))

	snap, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-1", SourceVolumeID: v.ID})
	if err != nil {
		t.Fatalf("CreateSnapshot: %v", err)
	}
	if snap.State != store.SnapshotReady || snap.SizeBytes != gib || snap.DataOffset != layout.MetadataReserve || snap.WantCopies != 3 || snap.CutAt.IsZero() {
		t.Errorf("snapshot = %+v", snap)
	}
	if got := copyNodesOf(snap); !slices.Equal(got, []string{"sn-1", "sn-2", "sn-3"}) {
		t.Errorf("copies on %v, want every replica's node", got)
	}
	if len(q.freezes) != 0 {
		t.Errorf("an unpublished volume was frozen: %v", q.freezes)
	}
	for _, n := range []string{"sn-1", "sn-2", "sn-3"} {
		if got := e.cluster.ReadSnapshot(n, snap.ID, layout.MetadataReserve+100<<20, 4096); !bytes.Equal(got, block(2)) {
			t.Errorf("copy on %s does not hold the volume's data", n)
		}
	}
	// Writes after the cut are not in it.
	writeVolume(t, e, v.ID, 0, block(9))
	if got := e.cluster.ReadSnapshot("sn-1", snap.ID, layout.MetadataReserve, 4096); !bytes.Equal(got, block(1)) {
		t.Error("a write after the snapshot changed it")
	}

	again, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-1", SourceVolumeID: v.ID})
	if err != nil || again.ID != snap.ID {
		t.Errorf("retry = %v, %v; want the same snapshot", again, err)
	}
	other := e.create(t, "pvc-2", gib, map[string]string{"numReplicas": "2"})
	_, err = e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-1", SourceVolumeID: other.ID})
	wantCode(t, err, provisioner.ErrAlreadyExists, v.ID)
	_, err = e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-x", SourceVolumeID: "vol-nope"})
	wantCode(t, err, provisioner.ErrNotFound, "vol-nope")
	_, err = e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-y"})
	wantCode(t, err, provisioner.ErrInvalidArgument, "source_volume_id")

	es, err := e.svc.ListEvents(e.ctx, events.Filter{Types: []events.Type{events.SnapshotTaken}})
	if err != nil || len(es) != 1 || es[0].Volume != v.ID {
		t.Errorf("SnapshotTaken events = %v, %v", es, err)
	}
}

func TestSnapshotOfPublishedVolumeFreezesItsNode(t *testing.T) {
	e, q := newSnapshotEnv(t, fourRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-x"); err != nil {
		t.Fatal(err)
	}
	writeVolume(t, e, v.ID, 0, block(1))
	// md on the host holds only two legs in sync: the third missed writes.
	stale := v.Replicas[2]
	e.cluster.WriteReplica(stale.StorageNode, stale.ID, layout.MetadataReserve, block(7))
	q.inSync = map[string][]string{v.ID: {v.Replicas[0].ID, v.Replicas[1].ID}}

	snap, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-1", SourceVolumeID: v.ID})
	if err != nil {
		t.Fatalf("CreateSnapshot: %v", err)
	}
	if len(q.freezes) != 1 || q.freezes[0][0] != "node-x" || q.freezes[0][1] != v.ID {
		t.Errorf("freezes = %v, want node-x holding %s", q.freezes, v.ID)
	}
	if n := q.stillFrozen(); n != 0 {
		t.Errorf("%d freezes never thawed", n)
	}
	// Three copies: the two in-sync legs, and one made from them on a node
	// without the stale leg's data.
	nodes := copyNodesOf(snap)
	if len(nodes) != 3 || slices.Contains(nodes, stale.StorageNode) && e.cluster.ReadSnapshot(stale.StorageNode, snap.ID, layout.MetadataReserve, 4096)[0] == 7 {
		t.Fatalf("copies on %v", nodes)
	}
	for _, n := range nodes {
		if got := e.cluster.ReadSnapshot(n, snap.ID, layout.MetadataReserve, 4096); !bytes.Equal(got, block(1)) {
			t.Errorf("copy on %s holds the stale leg's data", n)
		}
	}
}

func TestSnapshotFailsCleanlyAndRetries(t *testing.T) {
	e, q := newSnapshotEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-x"); err != nil {
		t.Fatal(err)
	}
	q.err = fmt.Errorf("node-x is not connected: %w", provisioner.ErrUnavailable)
	_, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-1", SourceVolumeID: v.ID})
	wantCode(t, err, provisioner.ErrUnavailable, "node-x")
	for _, n := range []string{"sn-1", "sn-2", "sn-3"} {
		if ids := e.cluster.SnapshotIDs(n); len(ids) != 0 {
			t.Errorf("a failed snapshot left copies on %s: %v", n, ids)
		}
	}
	rec, err := e.store.GetSnapshotByName(e.ctx, "snap-1")
	if err != nil || rec.State != store.SnapshotCreating {
		t.Fatalf("record after failure = %+v, %v; want creating (a retry takes it)", rec, err)
	}

	// A copy that fails half way: the other copies are deleted too.
	q.err = nil
	e.cluster.SetSnapshotHook("sn-2", func(string) error { return fmt.Errorf("disk on fire: %w", provisioner.ErrUnavailable) })
	e.cluster.SetSnapshotHook("sn-1", func(string) error { return fmt.Errorf("disk on fire: %w", provisioner.ErrUnavailable) })
	_, err = e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-1", SourceVolumeID: v.ID})
	wantCode(t, err, provisioner.ErrUnavailable, "disk on fire")
	e.cluster.SetSnapshotHook("sn-1", nil)
	e.cluster.SetSnapshotHook("sn-2", nil)
	snap, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-1", SourceVolumeID: v.ID})
	if err != nil || snap.ID != rec.ID || snap.State != store.SnapshotReady || len(copyNodesOf(snap)) != 2 {
		t.Fatalf("retry = %+v, %v", snap, err)
	}

	// Without a node channel a published volume cannot be frozen.
	noChannel := newEnv(t, threeRacks())
	w := noChannel.create(t, "pvc-2", gib, map[string]string{"numReplicas": "2"})
	if _, err := noChannel.svc.PublishVolume(noChannel.ctx, w.ID, hostA, "node-x"); err != nil {
		t.Fatal(err)
	}
	_, err = noChannel.svc.CreateSnapshot(noChannel.ctx, provisioner.SnapshotRequest{Name: "snap-2", SourceVolumeID: w.ID})
	wantCode(t, err, provisioner.ErrUnavailable, "node channel")
}

func TestSnapshotOfUncleanUnpublishedVolumeKeepsOneLeg(t *testing.T) {
	e, _ := newSnapshotEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
	// The host crashed: md never stopped cleanly, and the legs differ in a
	// write no one was told had completed.
	for i, r := range v.Replicas {
		e.cluster.SetSuperblock(r.StorageNode, r.ID, provisioner.Superblock{Present: true, ArrayUUID: v.MDUUID, Events: 10, DevNumber: uint32(i), DevRoles: []uint16{0, 1, 2}})
		e.cluster.WriteReplica(r.StorageNode, r.ID, layout.MetadataReserve, block(byte(10+i)))
	}
	snap, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-1", SourceVolumeID: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	nodes := copyNodesOf(snap)
	if len(nodes) != 3 {
		t.Fatalf("copies on %v, want 3", nodes)
	}
	first := e.cluster.ReadSnapshot(nodes[0], snap.ID, layout.MetadataReserve, 4096)
	for _, n := range nodes[1:] {
		if got := e.cluster.ReadSnapshot(n, snap.ID, layout.MetadataReserve, 4096); !bytes.Equal(got, first) {
			t.Errorf("copies differ: %s holds %d, %s holds %d", nodes[0], first[0], n, got[0])
		}
	}

	// Stopped cleanly at one event count: every leg is kept as it is.
	w := e.create(t, "pvc-2", gib, map[string]string{"numReplicas": "2"})
	for i, r := range w.Replicas {
		e.cluster.SetSuperblock(r.StorageNode, r.ID, provisioner.Superblock{Present: true, ArrayUUID: w.MDUUID, Events: 12, DevNumber: uint32(i), DevRoles: []uint16{0, 1}, Clean: true})
	}
	snap2, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-2", SourceVolumeID: w.ID})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range snap2.Copies {
		if c.State != store.CopyReady {
			t.Errorf("copy %+v", c)
		}
	}
}

func TestRestoreAndClone(t *testing.T) {
	e, _ := newSnapshotEnv(t, fourRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
	writeVolume(t, e, v.ID, 0, block(1))
	writeVolume(t, e, v.ID, gib-4096, block(2))
	snap, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-1", SourceVolumeID: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	writeVolume(t, e, v.ID, 0, block(3)) // after the snapshot

	check := func(t *testing.T, id string, want0 byte) {
		t.Helper()
		for rid, got := range readReplicas(t, e, id, 0, 4096) {
			if got[0] != want0 {
				t.Errorf("replica %s starts with %d, want %d", rid, got[0], want0)
			}
		}
		for rid, got := range readReplicas(t, e, id, gib-4096, 4096) {
			if !bytes.Equal(got, block(2)) {
				t.Errorf("replica %s lacks the last block", rid)
			}
		}
	}

	// Into a larger, one-replica volume: data at offset 0.
	r1, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-single", SizeBytes: 2 * gib, Parameters: map[string]string{"numReplicas": "1"}, SourceSnapshotID: snap.ID})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if r1.Source == nil || r1.Source.SnapshotID != snap.ID {
		t.Errorf("restored volume source = %+v", r1.Source)
	}
	check(t, r1.ID, 1)

	// Cordon one copy holder: one replica lands on sn-4 and is streamed.
	if _, err := e.svc.CordonStorageNode(e.ctx, "sn-3", true); err != nil {
		t.Fatal(err)
	}
	r3, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-three", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "3"}, SourceSnapshotID: snap.ID})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if !slices.ContainsFunc(r3.Replicas, func(r store.Replica) bool { return r.StorageNode == "sn-4" }) {
		t.Errorf("replicas on %v, want one on sn-4", r3.Replicas)
	}
	check(t, r3.ID, 1)
	if _, err := e.svc.CordonStorageNode(e.ctx, "sn-3", false); err != nil {
		t.Fatal(err)
	}

	_, err = e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-small", SizeBytes: gib / 2, SourceSnapshotID: snap.ID})
	wantCode(t, err, provisioner.ErrOutOfRange, "capacity_range")
	_, err = e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-nope", SizeBytes: gib, SourceSnapshotID: "snap-nope"})
	wantCode(t, err, provisioner.ErrNotFound, "snap-nope")
	_, err = e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-three", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "3"}})
	wantCode(t, err, provisioner.ErrAlreadyExists, "content source")

	// A clone holds the volume as it is now; its internal snapshot goes.
	c, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-clone", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "2"}, SourceVolumeID: v.ID})
	if err != nil {
		t.Fatalf("clone: %v", err)
	}
	check(t, c.ID, 3)
	all, _ := e.store.ListSnapshots(e.ctx)
	if len(all) != 1 || all[0].ID != snap.ID {
		t.Errorf("snapshots after the clone: %v, want only %s", all, snap.ID)
	}

	// Deleting the source volume leaves the snapshot restorable; deleting
	// the snapshot leaves the restored volumes alone.
	if err := e.svc.DeleteVolume(e.ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	r4, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-after", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "2"}, SourceSnapshotID: snap.ID})
	if err != nil {
		t.Fatalf("restore after the source's deletion: %v", err)
	}
	check(t, r4.ID, 1)
	if err := e.svc.DeleteSnapshot(e.ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	check(t, r3.ID, 1)
	if _, err := e.store.GetSnapshot(e.ctx, snap.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted snapshot still recorded: %v", err)
	}
	for _, n := range []string{"sn-1", "sn-2", "sn-3", "sn-4"} {
		if ids := e.cluster.SnapshotIDs(n); len(ids) != 0 {
			t.Errorf("%s still holds %v", n, ids)
		}
	}
}

func TestDeleteSnapshotWithStorageNodeAway(t *testing.T) {
	e, _ := newSnapshotEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	snap, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-1", SourceVolumeID: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	away := copyNodesOf(snap)[0]
	e.cluster.SetDown(away, true)
	if err := e.svc.DeleteSnapshot(e.ctx, snap.ID); err != nil {
		t.Fatalf("DeleteSnapshot with a node away: %v", err)
	}
	rec, err := e.store.GetSnapshot(e.ctx, snap.ID)
	if err != nil || rec.State != store.SnapshotDeleting || len(rec.Copies) != 1 || rec.Copies[0].StorageNode != away {
		t.Fatalf("record = %+v, %v; want deleting with the away node's copy", rec, err)
	}
	e.cluster.SetDown(away, false)
	if _, err := e.svc.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.GetSnapshot(e.ctx, snap.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("record after the sweep: %v", err)
	}
	if ids := e.cluster.SnapshotIDs(away); len(ids) != 0 {
		t.Errorf("%s still holds %v", away, ids)
	}
	es, _ := e.svc.ListEvents(e.ctx, events.Filter{Types: []events.Type{events.SnapshotDeleted}})
	if len(es) != 1 {
		t.Errorf("SnapshotDeleted events: %v", es)
	}
}

func TestSweeperRollsBackStaleSnapshotCreates(t *testing.T) {
	clk := newClock()
	q := &fakeQuiescer{}
	e := newEnvOpts(t, threeRacks(), provisioner.Options{Quiescer: q, Now: clk.Now, CreatingTimeout: testCreatingTimeout})
	q.store = e.store
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	// A provisioner died after recording the snapshot and one copy.
	snap := &store.Snapshot{ID: "snap-dead", Name: "snap-dead", SourceVolumeID: v.ID, SizeBytes: gib, State: store.SnapshotCreating,
		Copies: []store.SnapshotCopy{{StorageNode: v.Replicas[0].StorageNode, State: store.CopyCutting}}, CreatedAt: clk.Now()}
	if err := e.store.CreateSnapshot(e.ctx, snap); err != nil {
		t.Fatal(err)
	}
	a, _ := e.cluster.Agent(e.ctx, &store.StorageNode{ID: v.Replicas[0].StorageNode})
	if _, _, err := a.CreateSnapshot(e.ctx, snap.ID, v.Replicas[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.GetSnapshot(e.ctx, snap.ID); err != nil {
		t.Fatalf("a young create was rolled back: %v", err)
	}
	clk.Add(testCreatingTimeout + time.Minute)
	if _, err := e.svc.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.GetSnapshot(e.ctx, snap.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("stale create not rolled back: %v", err)
	}
	if ids := e.cluster.SnapshotIDs(v.Replicas[0].StorageNode); len(ids) != 0 {
		t.Errorf("its copy is still there: %v", ids)
	}
}

func TestGroupSnapshotIsOneCut(t *testing.T) {
	e, q := newSnapshotEnv(t, threeRacks())
	data := e.create(t, "pvc-data", gib, map[string]string{"numReplicas": "2"})
	logv := e.create(t, "pvc-log", gib, map[string]string{"numReplicas": "3"})
	idle := e.create(t, "pvc-idle", gib, map[string]string{"numReplicas": "2"})
	for _, v := range []*store.Volume{data, logv} {
		if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-x"); err != nil {
			t.Fatal(err)
		}
	}
	g, snaps, err := e.svc.CreateSnapshotGroup(e.ctx, provisioner.GroupRequest{Name: "vgs-1", VolumeIDs: []string{logv.ID, data.ID, idle.ID}})
	if err != nil {
		t.Fatalf("CreateSnapshotGroup: %v", err)
	}
	if g.State != store.SnapshotReady || len(snaps) != 3 || len(g.SnapshotIDs) != 3 {
		t.Fatalf("group %+v, %d snapshots", g, len(snaps))
	}
	if len(q.freezes) != 1 || len(q.freezes[0]) != 3 {
		t.Errorf("freezes = %v, want one of node-x holding both published volumes", q.freezes)
	}
	for _, snap := range snaps {
		if !snap.CutAt.Equal(g.CutAt) || snap.GroupID != g.ID || snap.State != store.SnapshotReady {
			t.Errorf("member %+v not cut with the group at %v", snap, g.CutAt)
		}
	}
	again, _, err := e.svc.CreateSnapshotGroup(e.ctx, provisioner.GroupRequest{Name: "vgs-1", VolumeIDs: []string{data.ID, idle.ID, logv.ID}})
	if err != nil || again.ID != g.ID {
		t.Errorf("retry = %v, %v", again, err)
	}
	_, _, err = e.svc.CreateSnapshotGroup(e.ctx, provisioner.GroupRequest{Name: "vgs-1", VolumeIDs: []string{data.ID}})
	wantCode(t, err, provisioner.ErrAlreadyExists)
	_, _, err = e.svc.CreateSnapshotGroup(e.ctx, provisioner.GroupRequest{Name: "vgs-2", VolumeIDs: []string{data.ID, data.ID}})
	wantCode(t, err, provisioner.ErrInvalidArgument, "source_volume_ids")
	_, _, err = e.svc.CreateSnapshotGroup(e.ctx, provisioner.GroupRequest{Name: "vgs-3"})
	wantCode(t, err, provisioner.ErrInvalidArgument, "source_volume_ids")

	if err := e.svc.DeleteSnapshotGroup(e.ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	if all, _ := e.store.ListSnapshots(e.ctx); len(all) != 0 {
		t.Errorf("snapshots left after the group's deletion: %d", len(all))
	}
	if err := e.svc.DeleteSnapshotGroup(e.ctx, g.ID); err != nil {
		t.Errorf("second delete: %v", err)
	}
}

func TestSnapshotRanges(t *testing.T) {
	e, _ := newSnapshotEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	writeVolume(t, e, v.ID, 0, block(1))
	writeVolume(t, e, v.ID, 1<<20, bytes.Repeat(block(2), 4))
	base, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-1", SourceVolumeID: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	writeVolume(t, e, v.ID, 1<<20+4096, block(3))               // changes one block
	writeVolume(t, e, v.ID, 512<<20, bytes.Repeat(block(4), 2)) // new data
	writeVolume(t, e, v.ID, 0, block(1))                        // same content again: no change
	target, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-2", SourceVolumeID: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	got, size, next, err := e.svc.SnapshotRanges(e.ctx, provisioner.RangesRequest{SnapshotID: target.ID, Base: base.ID})
	if err != nil {
		t.Fatal(err)
	}
	want := []provisioner.ByteRange{{Offset: 1<<20 + 4096, Length: 4096}, {Offset: 512 << 20, Length: 8192}}
	if size != gib || next != 0 || !slices.Equal(got, want) {
		t.Errorf("delta = %v (size %d, next %d), want %v", got, size, next, want)
	}
	alloc, _, _, err := e.svc.SnapshotRanges(e.ctx, provisioner.RangesRequest{SnapshotID: base.ID})
	if wantA := []provisioner.ByteRange{{Offset: 0, Length: 4096}, {Offset: 1 << 20, Length: 4 * 4096}}; err != nil || !slices.Equal(alloc, wantA) {
		t.Errorf("allocated = %v, %v; want %v", alloc, err, wantA)
	}
	page, _, next, err := e.svc.SnapshotRanges(e.ctx, provisioner.RangesRequest{SnapshotID: target.ID, Base: base.ID, Max: 1})
	if err != nil || len(page) != 1 || next != 512<<20 {
		t.Errorf("first page = %v next %d, %v", page, next, err)
	}
	other := e.create(t, "pvc-2", gib, map[string]string{"numReplicas": "2"})
	osnap, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-3", SourceVolumeID: other.ID})
	if err != nil {
		t.Fatal(err)
	}
	_, _, _, err = e.svc.SnapshotRanges(e.ctx, provisioner.RangesRequest{SnapshotID: target.ID, Base: osnap.ID})
	wantCode(t, err, provisioner.ErrInvalidArgument, "base_snapshot_id")
	_, _, _, err = e.svc.SnapshotRanges(e.ctx, provisioner.RangesRequest{SnapshotID: target.ID, Start: 2 * gib})
	wantCode(t, err, provisioner.ErrOutOfRange, "starting_offset")
}

func TestSnapshotCutOutlastingTheFreezeFails(t *testing.T) {
	clk := newClock()
	q := &fakeQuiescer{}
	e := newEnvOpts(t, threeRacks(), provisioner.Options{Quiescer: q, FreezeTimeout: 10 * time.Second, Now: clk.Now})
	q.store = e.store
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-x"); err != nil {
		t.Fatal(err)
	}
	slow := v.Replicas[0].StorageNode
	// A copy that takes longer than the freeze: the node may have let
	// writes through before the other legs were copied.
	e.cluster.SetSnapshotHook(slow, func(string) error { clk.Add(11 * time.Second); return nil })
	_, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-1", SourceVolumeID: v.ID})
	wantCode(t, err, provisioner.ErrUnavailable, "--freeze-timeout")
	for _, n := range []string{"sn-1", "sn-2", "sn-3"} {
		if ids := e.cluster.SnapshotIDs(n); len(ids) != 0 {
			t.Errorf("copies of the failed cut left on %s: %v", n, ids)
		}
	}
	e.cluster.SetSnapshotHook(slow, func(string) error { clk.Add(9 * time.Second); return nil })
	if snap, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-1", SourceVolumeID: v.ID}); err != nil || snap.State != store.SnapshotReady {
		t.Errorf("retry within the freeze = %v, %v", snap, err)
	}
}

// snapshotInProgress starts a snapshot of volumeID whose copies wait, and
// returns once they do: the volume is busy with a cut. release lets the
// cut finish, waits for the snapshot and removes the wait.
func snapshotInProgress(t *testing.T, e *env, volumeID string) (release func()) {
	t.Helper()
	entered, proceed := make(chan struct{}), make(chan struct{})
	for _, n := range []string{"sn-1", "sn-2", "sn-3"} {
		e.cluster.SetSnapshotHook(n, func(string) error {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-proceed
			return nil
		})
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-busy", SourceVolumeID: volumeID})
		done <- err
	}()
	<-entered
	return func() {
		t.Helper()
		close(proceed)
		if err := <-done; err != nil {
			t.Fatalf("the snapshot holding the volume: %v", err)
		}
		for _, n := range []string{"sn-1", "sn-2", "sn-3"} {
			e.cluster.SetSnapshotHook(n, nil)
		}
	}
}

// A group snapshot naming a volume another snapshot is cutting is Aborted,
// and lets go of the volumes it had claimed (it once dereferenced a volume
// not loaded yet while letting go).
func TestGroupSnapshotOfABusyVolumeIsAborted(t *testing.T) {
	e, _ := newSnapshotEnv(t, threeRacks())
	a := e.create(t, "pvc-a", gib, map[string]string{"numReplicas": "2"})
	b := e.create(t, "pvc-b", gib, map[string]string{"numReplicas": "2"})
	ids := []string{a.ID, b.ID}
	sort.Strings(ids)
	busy := ids[1] // claimed second: the first is let go again
	release := snapshotInProgress(t, e, busy)
	_, _, err := e.svc.CreateSnapshotGroup(e.ctx, provisioner.GroupRequest{Name: "vgs-1", VolumeIDs: ids})
	wantCode(t, err, provisioner.ErrAborted, busy)
	release()
	if _, _, err := e.svc.CreateSnapshotGroup(e.ctx, provisioner.GroupRequest{Name: "vgs-1", VolumeIDs: ids}); err != nil {
		t.Errorf("the group once the volume is free: %v", err)
	}
}

// A group's deletion that fails part way (a member's volume busy with
// another snapshot: two group snapshots of the same volumes deleted at
// once) leaves the group listing every member it was taken with, so that
// the CO's retry, which names them all, is the group's; the retry finishes
// the deletion.
func TestGroupSnapshotDeletionInterruptedIsRetried(t *testing.T) {
	e, _ := newSnapshotEnv(t, threeRacks())
	a := e.create(t, "pvc-a", gib, map[string]string{"numReplicas": "2"})
	b := e.create(t, "pvc-b", gib, map[string]string{"numReplicas": "2"})
	ids := []string{a.ID, b.ID}
	sort.Strings(ids)
	g, _, err := e.svc.CreateSnapshotGroup(e.ctx, provisioner.GroupRequest{Name: "vgs-1", VolumeIDs: ids})
	if err != nil {
		t.Fatal(err)
	}
	busy := ids[1] // its member is deleted second
	release := snapshotInProgress(t, e, busy)
	err = e.svc.DeleteSnapshotGroup(e.ctx, g.ID)
	wantCode(t, err, provisioner.ErrAborted, busy)
	release()
	left, snaps, err := e.svc.GetSnapshotGroup(e.ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	p := provisioner.GroupToProto(left, snaps)
	if len(p.GetSnapshots()) != 1 || !slices.Equal(p.GetMemberSnapshotIds(), g.SnapshotIDs) {
		t.Errorf("after the failed deletion: %d snapshots, members %v; want 1 and %v", len(p.GetSnapshots()), p.GetMemberSnapshotIds(), g.SnapshotIDs)
	}
	if err := e.svc.DeleteSnapshotGroup(e.ctx, g.ID); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if _, _, err := e.svc.GetSnapshotGroup(e.ctx, g.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("group after the retry: %v", err)
	}
	for _, id := range g.SnapshotIDs {
		if _, err := e.store.GetSnapshot(e.ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("member %s after the retry: %v", id, err)
		}
	}
}

func TestListSnapshotsPages(t *testing.T) {
	e, _ := newSnapshotEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	w := e.create(t, "pvc-2", gib, map[string]string{"numReplicas": "2"})
	var ids []string
	for i, src := range []string{v.ID, v.ID, w.ID} {
		snap, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: fmt.Sprintf("snap-%d", i), SourceVolumeID: src})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, snap.ID)
	}
	// A clone's internal snapshot is never listed.
	if _, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-clone", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "2"}, SourceVolumeID: v.ID}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(ids)
	page, next, err := e.svc.ListSnapshots(e.ctx, provisioner.SnapshotFilter{}, "", 2)
	if err != nil || len(page) != 2 || page[0].ID != ids[0] || page[1].ID != ids[1] || next == "" {
		t.Fatalf("first page = %v, %q, %v", page, next, err)
	}
	// Before any deletion: ids[1], deleted below, is w's snapshot one time
	// in three (the IDs are random).
	of, _, err := e.svc.ListSnapshots(e.ctx, provisioner.SnapshotFilter{SourceVolumeID: w.ID}, "", 0)
	if err != nil || len(of) != 1 || of[0].SourceVolumeID != w.ID {
		t.Errorf("snapshots of %s = %v, %v", w.ID, of, err)
	}
	// The token stays valid when the snapshot it names is deleted.
	if err := e.svc.DeleteSnapshot(e.ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	page, next, err = e.svc.ListSnapshots(e.ctx, provisioner.SnapshotFilter{}, next, 2)
	if err != nil || len(page) != 1 || page[0].ID != ids[2] || next != "" {
		t.Fatalf("second page = %v, %q, %v", page, next, err)
	}
	_, _, err = e.svc.ListSnapshots(e.ctx, provisioner.SnapshotFilter{}, "not-a-token", 0)
	wantCode(t, err, provisioner.ErrInvalidArgument, "not issued")
}
