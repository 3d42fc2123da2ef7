package provisioner_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/boltstore"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// clock is a test clock the Service reads through Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

const (
	testGrace           = 10 * time.Minute
	testCreatingTimeout = 5 * time.Minute
)

func newOrphanEnv(t *testing.T) (*env, *clock) {
	t.Helper()
	clk := newClock()
	return newEnvOpts(t, threeRacks(), provisioner.Options{Now: clk.Now, OrphanGrace: testGrace, CreatingTimeout: testCreatingTimeout}), clk
}

// plant makes node hold a replica, as a CreateReplica call that reached the
// agent (and that the registry may know nothing of) leaves it.
func (e *env) plant(t *testing.T, node, replicaID, volumeID string) {
	t.Helper()
	a, err := e.cluster.Agent(e.ctx, &store.StorageNode{ID: node})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateReplica(e.ctx, provisioner.ReplicaSpec{ReplicaID: replicaID, VolumeID: volumeID, SizeBytes: gib}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) scan(t *testing.T) {
	t.Helper()
	if err := e.svc.ScanOrphans(e.ctx); err != nil {
		t.Fatalf("ScanOrphans: %v", err)
	}
}

func (e *env) holds(node, replicaID string) bool { return e.cluster.Replica(node, replicaID) != nil }

// eventsOf returns the stored events of type typ.
func (e *env) eventsOf(t *testing.T, typ events.Type) []events.Event {
	t.Helper()
	es, err := e.store.ListEvents(e.ctx, events.Filter{Types: []events.Type{typ}})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// orphansListed returns the class of each orphan ListOrphans reports, by
// replica ID.
func (e *env) orphansListed(t *testing.T) (map[string]provisioner.OrphanClass, provisioner.OrphanReport) {
	t.Helper()
	rep, err := e.svc.ListOrphans(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]provisioner.OrphanClass{}
	for _, o := range rep.Orphans {
		out[o.ReplicaID] = o.Class
	}
	return out, rep
}

// recordInterruptedCreate leaves what a provisioner killed in the middle
// of CreateVolume leaves: the volume recorded "creating" with its planned
// replicas, the first created on its agent, the second not.
func (e *env) recordInterruptedCreate(t *testing.T, clk *clock, name string) *store.Volume {
	t.Helper()
	v := &store.Volume{ID: "vol-" + name, Name: name, SizeBytes: gib, State: store.VolumeCreating, CreatedAt: clk.Now(), Parameters: storageclass.Defaults(), MDUUID: "0a1b2c3d:4e5f6071:8293a4b5:c6d7e8f9", MDName: "nvm-" + name,
		Replicas: []store.Replica{{ID: "rep-" + name + "-1", StorageNode: "sn-1", State: store.ReplicaActive}, {ID: "rep-" + name + "-2", StorageNode: "sn-2", State: store.ReplicaActive}}}
	if err := e.store.CreateVolume(e.ctx, v); err != nil {
		t.Fatal(err)
	}
	e.plant(t, "sn-1", v.Replicas[0].ID, v.ID)
	return v
}

func TestRollBackStaleCreate(t *testing.T) {
	e, clk := newOrphanEnv(t)
	v := e.recordInterruptedCreate(t, clk, "pvc-killed")

	clk.Add(testCreatingTimeout - time.Second)
	if n, err := e.svc.RollBackStaleCreates(e.ctx); err != nil || n != 0 {
		t.Fatalf("young create: rolled back %d, %v", n, err)
	}
	if got, err := e.store.GetVolume(e.ctx, v.ID); err != nil || got.State != store.VolumeCreating || !e.holds("sn-1", v.Replicas[0].ID) {
		t.Fatalf("a create younger than the timeout was touched: %+v, %v", got, err)
	}
	// Its replica is owned meanwhile: not an orphan.
	e.scan(t)
	if got, _ := e.orphansListed(t); len(got) != 0 {
		t.Errorf("replicas of a creating volume listed as orphans: %v", got)
	}

	clk.Add(time.Second)
	if n, err := e.svc.RollBackStaleCreates(e.ctx); err != nil || n != 1 {
		t.Fatalf("stale create: rolled back %d, %v", n, err)
	}
	if _, err := e.store.GetVolume(e.ctx, v.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("record of the rolled-back volume: %v", err)
	}
	if e.cluster.TotalReplicas() != 0 {
		t.Errorf("replicas left on agents: %v", e.cluster.ReplicaIDs("sn-1"))
	}
	if es := e.eventsOf(t, events.CreateRolledBack); len(es) != 1 || es[0].Volume != v.ID || len(es[0].Replicas) != 2 {
		t.Errorf("CreateRolledBack events = %+v", es)
	}
	if st := e.svc.OrphanStats(); st.RolledBack != 1 {
		t.Errorf("RolledBack = %d", st.RolledBack)
	}
	tombs, _ := e.store.ListTombstones(e.ctx)
	if len(tombs) != 1 || tombs[0].VolumeID != v.ID {
		t.Errorf("tombstones = %+v", tombs)
	}

	// The claim's retry starts afresh.
	nv := e.create(t, "pvc-killed", gib, nil)
	if nv.ID == v.ID || nv.State != store.VolumeReady || e.cluster.TotalReplicas() != 2 {
		t.Errorf("retried create = %+v, %d replicas on agents", nv, e.cluster.TotalReplicas())
	}
}

func TestRollBackStaleCreateWithAStorageNodeAway(t *testing.T) {
	e, clk := newOrphanEnv(t)
	v := e.recordInterruptedCreate(t, clk, "pvc-away")
	e.cluster.SetDown("sn-1", true)
	clk.Add(testCreatingTimeout)
	if n, err := e.svc.RollBackStaleCreates(e.ctx); err != nil || n != 1 {
		t.Fatalf("rolled back %d, %v", n, err)
	}
	got, err := e.store.GetVolume(e.ctx, v.ID)
	if err != nil || got.State != store.VolumeDeleting {
		t.Fatalf("with sn-1 away the record stays deleting for the sweeper: %+v, %v", got, err)
	}
	_, err = e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-away", SizeBytes: gib})
	wantCode(t, err, provisioner.ErrUnavailable, "being deleted")
	e.cluster.SetDown("sn-1", false)
	if _, err := e.svc.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	if e.holds("sn-1", v.Replicas[0].ID) {
		t.Error("the sweeper did not delete the rolled-back replica")
	}
	if nv := e.create(t, "pvc-away", gib, nil); nv.ID == v.ID {
		t.Error("the retry resumed the rolled-back volume")
	}
}

func TestRollBackNeverBesideARunningCreate(t *testing.T) {
	e, clk := newOrphanEnv(t)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.cluster.SetCreateHook("sn-2", func(provisioner.ReplicaSpec) error {
		once.Do(func() { close(entered) })
		<-release
		return nil
	})
	e.cluster.SetCreateHook("sn-3", func(provisioner.ReplicaSpec) error {
		once.Do(func() { close(entered) })
		<-release
		return nil
	})
	done := make(chan error, 1)
	var created *store.Volume
	go func() {
		v, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "pvc-slow", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "3"}})
		created = v
		done <- err
	}()
	<-entered
	clk.Add(time.Hour)
	if n, err := e.svc.RollBackStaleCreates(e.ctx); err != nil || n != 0 {
		t.Errorf("rolled back %d beside a running create, %v", n, err)
	}
	e.scan(t)
	if got, _ := e.orphansListed(t); len(got) != 0 {
		t.Errorf("replicas of a running create listed as orphans: %v", got)
	}
	close(release)
	if err := <-done; err != nil || created.State != store.VolumeReady {
		t.Fatalf("the create: %+v, %v", created, err)
	}
}

// lateReplicaOfDeletedVolume creates a volume and deletes it, then lets
// the storage node of its first replica hold that replica again, as a
// CreateReplica that timed out on the provisioner's side and landed after
// the deletion leaves it. It returns that replica's record.
func (e *env) lateReplicaOfDeletedVolume(t *testing.T) store.Replica {
	t.Helper()
	v := e.create(t, "pvc-deleted", gib, nil)
	if err := e.svc.DeleteVolume(e.ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	late := v.Replicas[0]
	e.plant(t, late.StorageNode, late.ID, v.ID)
	return late
}

func TestOrphanOfADeletedVolumeReclaimedAfterGrace(t *testing.T) {
	e, clk := newOrphanEnv(t)
	keep := e.create(t, "pvc-keep", gib, nil)
	late := e.lateReplicaOfDeletedVolume(t)
	volumeID := e.cluster.Replica(late.StorageNode, late.ID).VolumeID

	e.scan(t)
	if !e.holds(late.StorageNode, late.ID) {
		t.Fatal("orphan deleted at first sight")
	}
	got, _ := e.orphansListed(t)
	if len(got) != 1 || got[late.ID] != provisioner.OrphanReleased {
		t.Fatalf("orphans = %v, want %s released", got, late.ID)
	}
	found := e.eventsOf(t, events.OrphanFound)
	if len(found) != 1 || found[0].Replica != late.ID || found[0].Volume != volumeID || found[0].StorageNode != late.StorageNode {
		t.Errorf("OrphanFound events = %+v", found)
	}

	clk.Add(testGrace - time.Second)
	e.scan(t)
	if !e.holds(late.StorageNode, late.ID) {
		t.Fatal("orphan deleted before its grace")
	}
	if n := len(e.eventsOf(t, events.OrphanFound)); n != 1 {
		t.Errorf("OrphanFound reported %d times, want once", n)
	}

	clk.Add(time.Second)
	e.scan(t)
	if e.holds(late.StorageNode, late.ID) {
		t.Fatal("orphan kept after its grace")
	}
	for _, r := range keep.Replicas {
		if !e.holds(r.StorageNode, r.ID) {
			t.Errorf("replica %s of a live volume deleted", r.ID)
		}
	}
	rec := e.eventsOf(t, events.OrphanReclaimed)
	if len(rec) != 1 || rec[0].Replica != late.ID {
		t.Errorf("OrphanReclaimed events = %+v", rec)
	}
	st := e.svc.OrphanStats()
	if st.Found[provisioner.OrphanReleased] != 1 || st.ReclaimedAutomatic != 1 || st.Known[provisioner.OrphanReleased] != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestOrphanOfAReplacedReplicaReclaimed(t *testing.T) {
	e, clk := newOrphanEnv(t)
	v := e.create(t, "pvc-1", gib, nil)
	old := v.Replicas[0]
	e.cluster.SetDown(old.StorageNode, true)
	if _, err := e.svc.ReplaceReplica(e.ctx, v.ID, old.ID); err != nil {
		t.Fatal(err)
	}
	e.cluster.SetDown(old.StorageNode, false)
	if _, err := e.svc.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.plant(t, old.StorageNode, old.ID, v.ID) // resurrected by a late call
	e.scan(t)
	clk.Add(testGrace)
	e.scan(t)
	if e.holds(old.StorageNode, old.ID) {
		t.Error("replaced replica held again not reclaimed")
	}
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	for _, r := range cur.Replicas {
		if r.State == store.ReplicaActive && !e.holds(r.StorageNode, r.ID) {
			t.Errorf("active replica %s deleted", r.ID)
		}
	}
}

// copyFile copies a bolt registry file (a backup taken while no write
// runs).
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err == nil {
		err = os.WriteFile(to, b, 0o600)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestRestoredRegistryReportsUnknownReplicasAndKeepsThem(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "registry.db")
	st, err := boltstore.Open(live, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	e := newEnvWithStore(t, st, threeRacks(), provisioner.Options{Now: clk.Now, OrphanGrace: testGrace})
	before := e.create(t, "pvc-before", gib, nil)
	backup := filepath.Join(dir, "backup.db")
	copyFile(t, live, backup)
	after := e.create(t, "pvc-after", gib, nil) // created after the backup
	st.Close()

	restored, err := boltstore.Open(backup, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	svc, err := provisioner.New(provisioner.Options{Store: restored, Agents: e.cluster, Now: clk.Now, OrphanGrace: testGrace})
	if err != nil {
		t.Fatal(err)
	}
	r := &env{svc: svc, store: restored, cluster: e.cluster, ctx: e.ctx}
	for i := 0; i < 3; i++ {
		r.scan(t)
		clk.Add(10 * testGrace)
	}
	for _, rep := range append(before.Replicas, after.Replicas...) {
		if !r.holds(rep.StorageNode, rep.ID) {
			t.Errorf("replica %s deleted after a registry restore", rep.ID)
		}
	}
	got, report := r.orphansListed(t)
	if len(got) != 2 || got[after.Replicas[0].ID] != provisioner.OrphanUnknown || got[after.Replicas[1].ID] != provisioner.OrphanUnknown {
		t.Errorf("orphans = %v, want the 2 replicas of %s unknown", got, after.ID)
	}
	if report.ScannedAt.IsZero() || len(report.Unreachable) != 0 {
		t.Errorf("report = %+v", report)
	}
	if found := r.eventsOf(t, events.OrphanFound); len(found) != 2 {
		t.Errorf("OrphanFound events = %+v, want one per replica", found)
	}
	if st := svc.OrphanStats(); st.Known[provisioner.OrphanUnknown] != 2 || st.ReclaimedAutomatic != 0 {
		t.Errorf("stats = %+v", st)
	}

	// The administrator decides: one is reclaimed on command, and the
	// command's retry succeeds.
	id := after.Replicas[0].ID
	if _, err := svc.ReclaimOrphan(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	if r.holds(after.Replicas[0].StorageNode, id) || !r.holds(after.Replicas[1].StorageNode, after.Replicas[1].ID) {
		t.Error("the administrator's reclaim deleted the wrong replicas")
	}
	if _, err := svc.ReclaimOrphan(e.ctx, id); err != nil {
		t.Errorf("retried reclaim: %v", err)
	}
	_, err = svc.ReclaimOrphan(e.ctx, before.Replicas[0].ID)
	wantCode(t, err, provisioner.ErrNotFound, "not among the orphans")
	if st := svc.OrphanStats(); st.ReclaimedAdmin != 1 {
		t.Errorf("ReclaimedAdmin = %d", st.ReclaimedAdmin)
	}
}

func TestOrphanScanStorageNodeDown(t *testing.T) {
	e, clk := newOrphanEnv(t)
	e.plant(t, "sn-1", "rep-late", "vol-gone")
	if err := e.store.CreateVolume(e.ctx, &store.Volume{ID: "vol-gone", Name: "pvc-gone", State: store.VolumeDeleting,
		Replicas: []store.Replica{{ID: "rep-late", StorageNode: "sn-1", State: store.ReplicaDeleted}}}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.DeleteVolume(e.ctx, "vol-gone"); err != nil {
		t.Fatal(err)
	}

	// Down at the first scan: nothing is seen, nothing decided.
	e.cluster.SetDown("sn-1", true)
	e.scan(t)
	got, report := e.orphansListed(t)
	if len(got) != 0 || len(report.Unreachable) != 1 || report.Unreachable[0] != "sn-1" {
		t.Errorf("orphans %v, unreachable %v", got, report.Unreachable)
	}
	if n := len(e.eventsOf(t, events.OrphanFound)); n != 0 {
		t.Errorf("%d OrphanFound events for a node that did not answer", n)
	}

	// Back: first sight now, the grace starts now, not at the scan it missed.
	clk.Add(2 * testGrace)
	e.cluster.SetDown("sn-1", false)
	e.scan(t)
	if !e.holds("sn-1", "rep-late") {
		t.Fatal("reclaimed at first sight after the node returned")
	}
	// Down again when the grace has passed: kept, listed, nothing decided.
	clk.Add(testGrace)
	e.cluster.SetListHook("sn-1", func() error { return fmt.Errorf("listing timed out: %w", provisioner.ErrUnavailable) })
	e.scan(t)
	if got, _ := e.orphansListed(t); got["rep-late"] != provisioner.OrphanReleased {
		t.Errorf("orphan of a node that did not answer forgotten: %v", got)
	}
	if !e.holds("sn-1", "rep-late") {
		t.Fatal("reclaimed from a scan its node did not answer")
	}
	e.cluster.SetListHook("sn-1", nil)
	e.scan(t)
	if e.holds("sn-1", "rep-late") {
		t.Error("not reclaimed once the node answered again")
	}
}

// dueOrphan returns an env whose scan first saw the late replica of a
// deleted volume a grace ago: the next scan reclaims it.
func dueOrphan(t *testing.T) (*env, store.Replica) {
	t.Helper()
	e, clk := newOrphanEnv(t)
	late := e.lateReplicaOfDeletedVolume(t)
	e.scan(t)
	clk.Add(testGrace)
	return e, late
}

// beforeReclaimLookup runs change on node's agent when the reclaim asks it
// for the replica (the listing after the scan's own), and returns the
// count of listing calls.
func (e *env) beforeReclaimLookup(node string, change func(provisioner.AgentClient) error) *int {
	calls := 0
	e.cluster.SetListHook(node, func() error {
		if calls++; calls == 2 {
			a, _ := e.cluster.Agent(e.ctx, &store.StorageNode{ID: node})
			return change(a)
		}
		return nil
	})
	return &calls
}

func TestOrphanReclaimFailureRetriedNextScan(t *testing.T) {
	e, late := dueOrphan(t)
	e.cluster.SetDeleteHook(late.StorageNode, func(string) error { return fmt.Errorf("pool busy: %w", provisioner.ErrUnavailable) })
	e.scan(t)
	if !e.holds(late.StorageNode, late.ID) {
		t.Fatal("delete hook not in the way")
	}
	if st := e.svc.OrphanStats(); st.ReclaimFailures != 1 || st.ReclaimedAutomatic != 0 {
		t.Errorf("stats = %+v", st)
	}
	if n := len(e.eventsOf(t, events.OrphanReclaimed)); n != 0 {
		t.Errorf("%d OrphanReclaimed events for a failed delete", n)
	}
	e.cluster.SetDeleteHook(late.StorageNode, nil)
	e.scan(t)
	if e.holds(late.StorageNode, late.ID) {
		t.Error("not reclaimed by the next scan")
	}
}

func TestOrphanIdentityCheckedBeforeDeleting(t *testing.T) {
	e, late := dueOrphan(t)
	// Between the scan's listing and the deletion, the agent comes to hold
	// a replica of that ID for another volume.
	calls := e.beforeReclaimLookup(late.StorageNode, func(a provisioner.AgentClient) error {
		if err := a.DeleteReplica(e.ctx, late.ID); err != nil {
			return err
		}
		_, err := a.CreateReplica(e.ctx, provisioner.ReplicaSpec{ReplicaID: late.ID, VolumeID: "vol-other", SizeBytes: gib})
		return err
	})
	e.scan(t)
	if *calls != 2 {
		t.Fatalf("list hook called %d times", *calls)
	}
	held := e.cluster.Replica(late.StorageNode, late.ID)
	if held == nil || held.VolumeID != "vol-other" {
		t.Fatalf("the replica of another volume was deleted: %+v", held)
	}
	if st := e.svc.OrphanStats(); st.ReclaimFailures != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestOrphanScanLeaderOnly(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "r.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e := newEnvWithStore(t, notLeader{st}, threeRacks(), provisioner.Options{})
	e.plant(t, "sn-1", "rep-x", "vol-x")
	wantCode(t, e.svc.ScanOrphans(e.ctx), store.ErrNotLeader)
	_, err = e.svc.RollBackStaleCreates(e.ctx)
	wantCode(t, err, store.ErrNotLeader)
	_, err = e.svc.ReclaimOrphan(e.ctx, "rep-x")
	wantCode(t, err, store.ErrNotLeader)
	if !e.holds("sn-1", "rep-x") {
		t.Error("a follower deleted a replica")
	}
}

func TestServerOrphans(t *testing.T) {
	e, clk := newOrphanEnv(t)
	srv := provisioner.NewServer(e.svc)
	e.plant(t, "sn-2", "rep-unknown", "vol-unknown")
	if err := e.store.CreateVolume(e.ctx, &store.Volume{ID: "vol-gone", Name: "pvc-gone", State: store.VolumeDeleting,
		Replicas: []store.Replica{{ID: "rep-gone", StorageNode: "sn-1", State: store.ReplicaDeleted}}}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.DeleteVolume(e.ctx, "vol-gone"); err != nil {
		t.Fatal(err)
	}
	e.plant(t, "sn-1", "rep-gone", "vol-gone")
	e.cluster.SetDown("sn-3", true)
	t0 := clk.Now()
	e.scan(t)

	resp, err := srv.ListOrphans(e.ctx, &provisionerapi.ListOrphansRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetOrphans()) != 2 || resp.GetScannedAt() == nil || len(resp.GetUnreachableStorageNodes()) != 1 || resp.GetUnreachableStorageNodes()[0] != "sn-3" {
		t.Fatalf("ListOrphans = %v", resp)
	}
	released, unknown := resp.GetOrphans()[0], resp.GetOrphans()[1]
	if released.GetReplicaId() != "rep-gone" || released.GetVolumeId() != "vol-gone" || released.GetStorageNode() != "sn-1" || released.GetClass() != "released" ||
		released.GetSizeBytes() != gib || !released.GetFirstSeen().AsTime().Equal(t0) || !released.GetReclaimAfter().AsTime().Equal(t0.Add(testGrace)) ||
		!strings.Contains(released.GetReason(), "pvc-gone") {
		t.Errorf("released orphan = %v", released)
	}
	if unknown.GetReplicaId() != "rep-unknown" || unknown.GetClass() != "unknown" || unknown.GetReclaimAfter() != nil {
		t.Errorf("unknown orphan = %v (an unknown orphan is never reclaimed by the scan)", unknown)
	}

	if _, err := srv.ReclaimOrphan(e.ctx, &provisionerapi.ReclaimOrphanRequest{}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "replica_id") {
		t.Errorf("reclaim without replica_id: %v", err)
	}
	if _, err := srv.ReclaimOrphan(e.ctx, &provisionerapi.ReclaimOrphanRequest{ReplicaId: "rep-nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("reclaim of no orphan: %v", err)
	}
	got, err := srv.ReclaimOrphan(e.ctx, &provisionerapi.ReclaimOrphanRequest{ReplicaId: "rep-unknown"})
	if err != nil || got.GetOrphan().GetStorageNode() != "sn-2" || e.holds("sn-2", "rep-unknown") {
		t.Errorf("reclaim: %v, %v; still held: %v", got, err, e.holds("sn-2", "rep-unknown"))
	}
}

func TestOrphanMetrics(t *testing.T) {
	e, clk := newOrphanEnv(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(provisioner.NewOrphanCollector(e.svc.OrphanStats))
	e.recordInterruptedCreate(t, clk, "pvc-killed")
	e.plant(t, "sn-3", "rep-unknown", "vol-unknown")
	clk.Add(testCreatingTimeout)
	if _, err := e.svc.RollBackStaleCreates(e.ctx); err != nil {
		t.Fatal(err)
	}
	// The rolled-back create's late replica on sn-2 arrives afterwards.
	e.plant(t, "sn-2", "rep-pvc-killed-2", "vol-pvc-killed")
	e.scan(t)
	wantSamples(t, gathered(t, reg), map[string]float64{
		`nvmirror_provisioner_orphans{class="released"}`:                1,
		`nvmirror_provisioner_orphans{class="unknown"}`:                 1,
		`nvmirror_provisioner_orphans{class="conflict"}`:                0,
		`nvmirror_provisioner_orphans_found_total{class="released"}`:    1,
		`nvmirror_provisioner_orphans_found_total{class="unknown"}`:     1,
		`nvmirror_provisioner_orphans_reclaimed_total{trigger="grace"}`: 0,
		`nvmirror_provisioner_creates_rolled_back_total`:                1,
	})
	clk.Add(testGrace)
	e.scan(t)
	if _, err := e.svc.ReclaimOrphan(e.ctx, "rep-unknown"); err != nil {
		t.Fatal(err)
	}
	wantSamples(t, gathered(t, reg), map[string]float64{
		`nvmirror_provisioner_orphans{class="released"}`:                0,
		`nvmirror_provisioner_orphans{class="unknown"}`:                 0,
		`nvmirror_provisioner_orphans_found_total{class="released"}`:    1,
		`nvmirror_provisioner_orphans_reclaimed_total{trigger="grace"}`: 1,
		`nvmirror_provisioner_orphans_reclaimed_total{trigger="admin"}`: 1,
		`nvmirror_provisioner_orphan_reclaim_failures_total`:            0,
	})
	if e.cluster.TotalReplicas() != 0 {
		t.Errorf("replicas left: %d", e.cluster.TotalReplicas())
	}
}

// switchingLeader is a store whose leadership the test sets.
type switchingLeader struct {
	store.Store
	leader atomic.Bool
}

func (s *switchingLeader) IsLeader() bool { return s.leader.Load() }

// TestOrphanGraceRestartsAfterLeadershipLoss: first sights are the
// leader's; a provisioner that stopped leading forgets them, so when it
// leads again the grace runs anew from its next sight.
func TestOrphanGraceRestartsAfterLeadershipLoss(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "r.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sw := &switchingLeader{Store: st}
	sw.leader.Store(true)
	clk := newClock()
	e := newEnvWithStore(t, sw, threeRacks(), provisioner.Options{Now: clk.Now, OrphanGrace: testGrace})
	late := e.lateReplicaOfDeletedVolume(t)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.svc.RunOrphanScanner(ctx, 5*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	known := func() int { return e.svc.OrphanStats().Known[provisioner.OrphanReleased] }

	waitFor("the first sight", func() bool { return known() == 1 })
	sw.leader.Store(false)
	waitFor("a follower to forget its first sights", func() bool { return known() == 0 })
	clk.Add(testGrace) // the grace from the first sight has passed meanwhile
	sw.leader.Store(true)
	waitFor("the sight after leading again", func() bool { return known() == 1 })
	time.Sleep(50 * time.Millisecond) // several scans
	if !e.holds(late.StorageNode, late.ID) {
		t.Fatal("reclaimed on a grace measured before leadership was lost")
	}
	clk.Add(testGrace)
	waitFor("the reclaim after a full grace as leader", func() bool { return !e.holds(late.StorageNode, late.ID) })
}

func TestOrphanGoneBeforeItsReclaim(t *testing.T) {
	e, late := dueOrphan(t)
	// Someone deletes it between the scan's listing and the deletion.
	e.beforeReclaimLookup(late.StorageNode, func(a provisioner.AgentClient) error { return a.DeleteReplica(e.ctx, late.ID) })
	e.scan(t)
	st := e.svc.OrphanStats()
	if st.ReclaimedAutomatic != 0 || st.ReclaimFailures != 0 || st.Known[provisioner.OrphanReleased] != 0 {
		t.Errorf("stats = %+v: a replica gone by itself is neither reclaimed nor a failure, and no longer an orphan", st)
	}
	if n := len(e.eventsOf(t, events.OrphanReclaimed)); n != 0 {
		t.Errorf("%d OrphanReclaimed events for a replica the scan did not delete", n)
	}
}
