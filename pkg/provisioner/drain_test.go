package provisioner_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

func drainAudits(t *testing.T, e *env, node string) []events.Event {
	t.Helper()
	es, err := e.svc.ListEvents(e.ctx, events.Filter{Types: []events.Type{events.Audit}})
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Event
	for _, a := range es {
		if a.Method == provisioner.DrainMethod && a.StorageNode == node {
			out = append(out, a)
		}
	}
	return out
}

// replicaOn returns v's active replica on node.
func replicaOnNode(t *testing.T, e *env, volumeID, node string) *store.Replica {
	t.Helper()
	v, err := e.store.GetVolume(e.ctx, volumeID)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range v.Replicas {
		if r.StorageNode == node && r.State == store.ReplicaActive {
			return &v.Replicas[i]
		}
	}
	return nil
}

// A drain moves every replica off the node, paced, one change per volume,
// resumes in a new provisioner, and leaves (and reports) a replica the rules
// give nowhere to go.
func TestDrainStorageNode(t *testing.T) {
	nodes := []node{{"sn-1", "z1", "r1", 100}, {"sn-2", "z1", "r2", 100}, {"sn-3", "z1", "r3", 100}, {"sn-4", "z1", "r4", 100}}
	e := newEnvOpts(t, nodes, provisioner.Options{MaxConcurrentMoves: 1})
	movable := e.create(t, "pvc-a", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2,sn-3"})
	pinned := e.create(t, "pvc-pinned", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2"})
	for _, v := range []*store.Volume{movable, pinned} {
		if replicaOnNode(t, e, v.ID, "sn-1") == nil {
			t.Fatalf("volume %s has no replica on sn-1: %+v", v.Name, v.Replicas)
		}
	}

	st, err := e.svc.DrainStorageNode(e.ctx, "sn-1", true)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Node.Cordoned || !st.Node.Draining || st.ReplicasLeft != 2 {
		t.Fatalf("drain started: %+v", st)
	}
	// Passes until the movable volume's move is under way (one at a time).
	for range 2 {
		if err := e.svc.DrainOnce(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	old := replicaOnNode(t, e, movable.ID, "sn-1")
	if old == nil || old.ReplacedBy == "" {
		t.Fatalf("movable volume's replica on sn-1: %+v; want a move in flight", old)
	}
	cur, _ := e.store.GetVolume(e.ctx, movable.ID)
	nr := cur.Replica(old.ReplacedBy)
	if nr.StorageNode != "sn-3" {
		t.Errorf("moved to %s, want sn-3 (the only node its rules leave)", nr.StorageNode)
	}
	if st, _ = e.svc.DrainStatusOf(e.ctx, st.Node); st.MovesInFlight != 1 {
		t.Errorf("moves in flight %d, want 1", st.MovesInFlight)
	}

	// A new provisioner (a restart, a new leader) goes on from the registry.
	e.svc, err = provisioner.New(provisioner.Options{Store: e.store, Agents: e.cluster, MaxConcurrentMoves: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.ReportReplicaSync(e.ctx, inSync(movable, nr.ID, 50)); err != nil {
		t.Fatal(err)
	}
	stuckEvents := func() int {
		n := 0
		for _, a := range drainAudits(t, e, "sn-1") {
			if strings.Contains(a.Message, "cannot move") {
				n++
			}
		}
		return n
	}
	// Reported once per provisioner process (the first one may have told
	// already, depending on which volume it looked at first).
	stuckBefore := stuckEvents()
	for range 3 {
		if err := e.svc.DrainOnce(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if r := replicaOnNode(t, e, movable.ID, "sn-1"); r != nil {
		t.Errorf("movable volume still has %+v on sn-1", r)
	}
	st, err = e.svc.DrainStorageNode(e.ctx, "sn-1", true) // again: progress only
	if err != nil {
		t.Fatal(err)
	}
	if st.ReplicasLeft != 1 || st.Stuck[pinned.ID] == "" || !strings.Contains(st.Stuck[pinned.ID], "storageNodes") {
		t.Fatalf("status %+v: want the pinned volume left, stuck naming its storageNodes rule", st)
	}
	if r := replicaOnNode(t, e, pinned.ID, "sn-1"); r == nil || r.ReplacedBy != "" {
		t.Errorf("pinned volume's replica %+v: want left untouched", r)
	}
	if n := stuckEvents() - stuckBefore; n != 1 {
		t.Errorf("%d 'cannot move' events over three passes, want 1", n)
	}

	// With room for it, the pinned volume's replica moves too, and the drain
	// ends.
	if _, err := e.svc.DrainStorageNode(e.ctx, "sn-1", false); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DrainOnce(e.ctx); err != nil {
		t.Fatal(err)
	}
	if r := replicaOnNode(t, e, pinned.ID, "sn-1"); r == nil || r.ReplacedBy != "" {
		t.Errorf("a stopped drain moved %+v", r)
	}
	n, err := e.svc.CordonStorageNode(e.ctx, "sn-1", false)
	if err != nil || n.Cordoned || n.Draining {
		t.Fatalf("uncordon: %+v, %v; want neither cordoned nor draining", n, err)
	}
}

func TestDrainOfAnEmptyNodeIsDoneAtOnce(t *testing.T) {
	e := newEnv(t, threeRacks())
	st, err := e.svc.DrainStorageNode(e.ctx, "sn-3", true)
	if err != nil || st.ReplicasLeft != 0 {
		t.Fatalf("drain: %+v, %v", st, err)
	}
	for range 2 {
		if err := e.svc.DrainOnce(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	var done int
	for _, a := range drainAudits(t, e, "sn-3") {
		if strings.Contains(a.Message, "drained") {
			done++
		}
	}
	if done != 1 {
		t.Errorf("%d 'drained' events, want 1", done)
	}
	_, err = e.svc.DrainStorageNode(e.ctx, "sn-9", true)
	wantCode(t, err, provisioner.ErrNotFound)
}

// A provisioner killed between recording a move and creating its replica
// leaves a reservation without NQN; the next sweep finishes it (found on the
// real kernel: a drain otherwise waited on that volume for good), whether a
// drain or an admin started the move.
func TestSweepFinishesAHalfMadeMove(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-half", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2,sn-3"})
	old := v.Replicas[0]
	free := map[string]bool{"sn-1": true, "sn-2": true, "sn-3": true}
	for _, r := range v.Replicas {
		delete(free, r.StorageNode)
	}
	var target string
	for n := range free {
		target = n
	}
	if _, err := e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error {
		v.Replica(old.ID).ReplacedBy = "rep-half"
		v.Replicas = append(v.Replicas, store.Replica{ID: "rep-half", StorageNode: target, State: store.ReplicaActive, Replaces: old.ID, Move: true, OutOfSyncSince: time.Now()})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// No node is draining: an admin's move left half made is the
	// sweeper's to finish, not the drainer's.
	if n, err := e.svc.Sweep(e.ctx); err != nil || n != 0 {
		t.Fatalf("Sweep = %d, %v; want 0 volumes left with work", n, err)
	}
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	if r := cur.Replica("rep-half"); r.NQN == "" || e.cluster.Replica(target, "rep-half") == nil {
		t.Fatalf("half-made move %+v: want its replica created on %s", r, target)
	}
	if r := cur.Replica(old.ID); r.State != store.ReplicaActive || r.ReplacedBy != "rep-half" {
		t.Errorf("moved replica %+v: want still active until the new one is in sync", r)
	}
}

// The drainer starts the next move as soon as one finishes, not an interval
// later: with an interval of an hour, only that wake-up can start it.
func TestDrainerStartsTheNextMoveWhenOneFinishes(t *testing.T) {
	nodes := []node{{"sn-1", "z1", "r1", 100}, {"sn-2", "z1", "r2", 100}, {"sn-3", "z1", "r3", 100}}
	e := newEnvOpts(t, nodes, provisioner.Options{MaxConcurrentMoves: 1})
	// Both volumes on sn-1 and sn-2: sn-3 cordoned while they are made.
	if _, err := e.svc.CordonStorageNode(e.ctx, "sn-3", true); err != nil {
		t.Fatal(err)
	}
	a := e.create(t, "pvc-a", gib, map[string]string{"numReplicas": "2"})
	b := e.create(t, "pvc-b", gib, map[string]string{"numReplicas": "2"})
	if _, err := e.svc.CordonStorageNode(e.ctx, "sn-3", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.DrainStorageNode(e.ctx, "sn-1", true); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.svc.RunDrainer(ctx, time.Hour) }()
	t.Cleanup(func() { cancel(); <-done })

	moving := func() (vol *store.Volume, newID string) {
		for _, v := range []*store.Volume{a, b} {
			if r := replicaOnNode(t, e, v.ID, "sn-1"); r != nil && r.ReplacedBy != "" {
				return v, r.ReplacedBy
			}
		}
		return nil, ""
	}
	var first *store.Volume
	var firstNew string
	waitCond(t, "the first move to start", func() bool { first, firstNew = moving(); return first != nil })
	if _, err := e.svc.ReportReplicaSync(e.ctx, inSync(first, firstNew, 50)); err != nil {
		t.Fatal(err)
	}
	waitCond(t, "the second move to start after the first finished", func() bool {
		v, _ := moving()
		return v != nil && v.ID != first.ID
	})
}
