package provisioner_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// divergedIDs returns the IDs of the volume's replicas marked diverged.
func divergedIDs(t *testing.T, e *env, volumeID string) []string {
	t.Helper()
	v, err := e.store.GetVolume(e.ctx, volumeID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range v.Replicas {
		if r.Diverged() {
			if r.InSync() {
				t.Errorf("diverged replica %s is recorded in sync", r.ID)
			}
			out = append(out, r.ID)
		}
	}
	slices.Sort(out)
	return out
}

// A promotion forks the volume's history at the promoted replicas' newest
// point: every replica that may hold writes past it is given up.
func TestPromoteReplicasGivesUpDivergedReplicas(t *testing.T) {
	sorted := func(ids ...string) []string { slices.Sort(ids); return ids }
	for _, tc := range []struct {
		name string
		// stale: replica index → md events when it fell out (0 unknown).
		stale    map[int]uint64
		promote  []int
		diverged []int
	}{
		{"the in-sync replica and one that fell out later are given up; one that fell out earlier is an ordinary stale one",
			map[int]uint64{0: 100, 1: 120, 3: 130}, []int{1}, []int{2, 3}},
		{"a replica that fell out at the same point is given up (it cannot be shown to precede)",
			map[int]uint64{0: 120, 1: 120}, []int{1}, []int{0, 2, 3}},
		{"unknown event count of the promoted replica: every other is given up",
			map[int]uint64{0: 100, 1: 0}, []int{1}, []int{0, 2, 3}},
		{"unknown event count of another replica: given up",
			map[int]uint64{0: 0, 1: 120}, []int{1}, []int{0, 2, 3}},
		{"promoting along an in-sync replica gives nothing up: the history goes on from it",
			map[int]uint64{0: 100}, []int{0, 2}, nil},
		{"two promoted replicas fork at the newer one",
			map[int]uint64{0: 100, 1: 120, 3: 110}, []int{0, 3}, []int{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, threeRacks())
			v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
			// A fourth replica, as a replacement in flight would add.
			if _, err := e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error {
				v.Replicas = append(v.Replicas, store.Replica{ID: "rep-fourth", StorageNode: "sn-4", NQN: "nqn.x:fourth", State: store.ReplicaActive})
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			v, _ = e.store.GetVolume(e.ctx, v.ID)
			id := func(i int) string { return v.Replicas[i].ID }
			for i, ev := range tc.stale {
				stale(t, e, v.ID, id(i), t0.Add(time.Duration(i)*time.Minute), ev)
			}
			var promote, want []string
			for _, i := range tc.promote {
				promote = append(promote, id(i))
			}
			for _, i := range tc.diverged {
				want = append(want, id(i))
			}
			want = sorted(want...)
			if _, err := e.svc.PromoteReplicas(e.ctx, v.ID, promote, true, "test"); err != nil {
				t.Fatalf("PromoteReplicas: %v", err)
			}
			if got := divergedIDs(t, e, v.ID); !slices.Equal(got, want) {
				t.Errorf("diverged %v, want %v", got, want)
			}
			for _, p := range promote {
				wantSync(t, e, v.ID, p, time.Time{}, 0)
			}
			if len(want) > 0 {
				as := audits(t, e, v.ID)
				if len(as) != 1 || !strings.Contains(as[0].Message, "given up") || !strings.Contains(as[0].Message, want[0]) {
					t.Errorf("audit does not name the replicas given up %v: %+v", want, as)
				}
			}
		})
	}
}

func TestDivergedReplicaStaysOutOfSync(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	a, b := v.Replicas[0], v.Replicas[1]
	stale(t, e, v.ID, b.ID, t0, 50)
	if _, err := e.svc.PromoteReplicas(e.ctx, v.ID, []string{b.ID}, true, "sn of a lost"); err != nil {
		t.Fatal(err)
	}
	if got := divergedIDs(t, e, v.ID); !slices.Equal(got, []string{a.ID}) {
		t.Fatalf("diverged %v, want [%s]", got, a.ID)
	}
	before, _ := e.store.GetVolume(e.ctx, v.ID)
	since := before.Replica(a.ID).OutOfSyncSince

	// A node that still runs the old history reports it in sync: refused.
	_, err := e.svc.ReportReplicaSync(e.ctx, inSync(v, a.ID, 9999))
	if !errors.Is(err, provisioner.ErrFailedPrecondition) || !strings.Contains(err.Error(), "given up by a promotion") {
		t.Errorf("in-sync report of a diverged replica: %v, want FailedPrecondition naming the promotion", err)
	}
	// An out-of-sync report changes nothing.
	if _, err := e.svc.ReportReplicaSync(e.ctx, outOfSync(v, a.ID, t0.Add(-time.Hour), 1)); err != nil {
		t.Errorf("out-of-sync report of a diverged replica: %v", err)
	}
	wantSync(t, e, v.ID, a.ID, since, 0)
	if got := divergedIDs(t, e, v.ID); !slices.Equal(got, []string{a.ID}) {
		t.Errorf("diverged %v after reports, want [%s]", got, a.ID)
	}

	// The admin changes their mind: promoting the diverged replica takes its
	// mark away and gives up the one promoted before.
	if _, err := e.svc.PromoteReplicas(e.ctx, v.ID, []string{a.ID}, true, "a is back after all"); err != nil {
		t.Fatal(err)
	}
	if got := divergedIDs(t, e, v.ID); !slices.Equal(got, []string{b.ID}) {
		t.Errorf("diverged %v after promoting it back, want [%s]", got, b.ID)
	}
	wantSync(t, e, v.ID, a.ID, time.Time{}, 0)
}

// Offline repair never brings a diverged replica up to date (md would
// re-add it by bitmap, keeping the given-up writes on that leg): reachable
// or not, it is replaced after maxReplicaDownTime.
func TestOfflineRepairReplacesADivergedReplica(t *testing.T) {
	e := newEnvOpts(t, threeRacks(), provisioner.Options{HealTimeUnit: time.Millisecond})
	v := e.create(t, "pvc-promoted", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2,sn-3", "maxReplicaDownTime": "50"})
	gaveUp, promoted := v.Replicas[0], v.Replicas[1]
	stale(t, e, v.ID, promoted.ID, t0, 40)
	if _, err := e.svc.PromoteReplicas(e.ctx, v.ID, []string{promoted.ID}, true, "sn lost"); err != nil {
		t.Fatal(err)
	}
	// Both storage nodes answer; the given-up replica is back.
	if n := repairOnce(t, e); n != 0 {
		t.Fatalf("first pass started %d repairs; want none (nothing may be re-added)", n)
	}
	cur, _ := e.store.GetVolume(e.ctx, v.ID)
	if cur.DegradedSince.IsZero() || cur.Repair != nil {
		t.Fatalf("first pass: degraded since %v, repair %+v; want degraded and no repair", cur.DegradedSince, cur.Repair)
	}
	if evs := volumeEvents(t, e, v.ID, "VolumeDegraded"); len(evs) != 1 {
		t.Errorf("%d VolumeDegraded events, want 1", len(evs))
	}
	time.Sleep(60 * time.Millisecond)
	if n := repairOnce(t, e); n != 1 {
		t.Fatalf("pass after maxReplicaDownTime: %d repairs, want the replacement's", n)
	}
	cur, _ = e.store.GetVolume(e.ctx, v.ID)
	old := cur.Replica(gaveUp.ID)
	if old.State != store.ReplicaRemoved || old.ReplacedBy == "" {
		t.Fatalf("diverged replica %+v: want removed and replaced", old)
	}
	if cur.Repair == nil || slices.Contains(cur.Repair.Replicas, gaveUp.ID) || !slices.Contains(cur.Repair.Replicas, old.ReplacedBy) {
		t.Fatalf("repair %+v: want the replacement filled, never the diverged replica", cur.Repair)
	}
	fr := e.cluster.Repair(cur.Repair.StorageNode, cur.Repair.ID)
	for _, m := range fr.Request.Members {
		if m.ID == gaveUp.ID {
			t.Errorf("repair request names the diverged replica: %+v", fr.Request)
		}
	}
}
