package healer

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// The registry's sync state follows md, before any repair: a replica md
// runs without is recorded out of sync, one it holds in sync again in sync;
// only against a fresh record, and never when md has no in-sync member.
func TestDecideRecordsSync(t *testing.T) {
	c := testConfig()
	outOfSync := func(ids ...string) func() *volume.Volume {
		return func() *volume.Volume {
			v := volCfg("vol-1", "60", "r1", "r2", "r3")
			for i := range v.Replicas {
				if slices.Contains(ids, v.Replicas[i].ID) {
					v.Replicas[i].OutOfSyncSince = t0.Add(-time.Hour)
				}
			}
			return v
		}
	}
	for _, tc := range []struct {
		name   string
		cfg    func() *volume.Volume
		fresh  bool
		states map[string]rs
		want   []string // record-sync actions, "r2-" out of sync, "r2+" in sync
		first  bool     // the record comes before every repair
	}{
		{"failed member", outOfSync(), true, map[string]rs{"r2": {"live", "F"}}, []string{"r2-"}, true},
		{"member gone from md", outOfSync(), true, map[string]rs{"r2": {"gone", "-"}}, []string{"r2-"}, true},
		{"lost leg md still counts in sync: recorded before it is failed", outOfSync(), true, map[string]rs{"r2": {"gone", "U"}}, []string{"r2-"}, true},
		{"recovering member stays out of sync", outOfSync("r2"), true, map[string]rs{"r2": {"live", "S"}}, nil, false},
		{"back in sync", outOfSync("r2"), true, nil, []string{"r2+"}, true},
		{"recorded already", outOfSync("r2"), true, map[string]rs{"r2": {"live", "F"}}, nil, false},
		{"cached record: nothing", outOfSync(), false, map[string]rs{"r2": {"live", "F"}}, nil, false},
		{"whole and recorded so", outOfSync(), true, nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acts, _, _ := Decide(obsOf(observeVol(tc.cfg(), tc.fresh, tc.states)), c, Memory{}, t0)
			var got []string
			for _, a := range acts {
				if a.Kind != ActRecordSync {
					continue
				}
				mark := "-"
				if a.InSync {
					mark = "+"
				}
				got = append(got, a.Replica.ID+mark)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("records %v, want %v (actions %v)", got, tc.want, kinds(acts))
			}
			if tc.first && acts[0].Kind != ActRecordSync {
				t.Errorf("actions %v: the record must come first", kinds(acts))
			}
		})
	}
}

// The actor records with the array's md event count, read from an in-sync
// member's superblock, and names this node.
func TestActRecordSync(t *testing.T) {
	raid, _, prov, a, _ := actFixture()
	a.NodeID = "node-a/nqn.host"
	a.Now = func() time.Time { return t0 }
	raid.sbs["/dev/nvme1n1"] = mdraid.Superblock{UUID: actUUID, Events: 812}
	out := a.Do(context.Background(), Action{Kind: ActRecordSync, VolumeID: "vol-1", MDDevice: "/dev/md127", MDUUID: actUUID,
		Replica: replicaOf("r2"), Member: "nvme2n1"})
	if out.Err != nil {
		t.Fatal(out.Err)
	}
	if want := []string{"vol-1/r2 in-sync=false events=812 node=node-a/nqn.host"}; !slices.Equal(prov.syncs, want) {
		t.Fatalf("reports %v, want %v", prov.syncs, want)
	}
	r := prov.vols["vol-1"].Replicas[1]
	if r.InSync() || !r.OutOfSyncSince.Equal(t0) || r.OutOfSyncAtEvents != 812 {
		t.Errorf("recorded %+v", r)
	}
	out = a.Do(context.Background(), Action{Kind: ActRecordSync, VolumeID: "vol-1", MDDevice: "/dev/md127", MDUUID: actUUID,
		Replica: replicaOf("r2"), InSync: true})
	if out.Err != nil || !prov.vols["vol-1"].Replicas[1].InSync() {
		t.Fatalf("in sync again: %v %+v", out.Err, prov.vols["vol-1"].Replicas[1])
	}
	prov.down = true
	if out := a.Do(context.Background(), Action{Kind: ActRecordSync, VolumeID: "vol-1", MDDevice: "/dev/md127", MDUUID: actUUID, Replica: replicaOf("r2")}); out.Err == nil {
		t.Error("a record the provisioner did not take reported success")
	}
}

// A volume whose replica drops out of md and is brought back by a resync
// over many cycles (md signals every step of sync_completed, about every
// 130 ms on the real kernel) reports each distinct sync state once: out of
// sync when md fails it, in sync when md holds it in sync again. The
// provisioner's answer is what the next cycles compare with, not the copy
// of the record read before the report.
func TestHealerReportsEachSyncStateOnce(t *testing.T) {
	h := newHarness(t, 1)
	hl, _ := h.healer(t)
	ctx := context.Background()
	cycle := func() {
		t.Helper()
		h.clk.Step(130 * time.Millisecond) // well within the record's ConfigMaxAge
		if err := hl.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cycle()
	h.tr.memberState(0, 1, "faulty,failfast") // md failed r2's leg
	hl.deps.Observer.ArraysChanged("md0")
	for i := 0; i < 3; i++ {
		cycle()
	}
	h.tr.memberState(0, 1, "spare,failfast") // re-added: md recovers onto it
	h.tr.write("sys/block/md0/md/sync_action", "recover")
	for i := 0; i < 5; i++ {
		h.tr.write("sys/block/md0/md/sync_completed", fmt.Sprintf("%d / 79872", 10000*(i+1)))
		hl.deps.Observer.ArraysChanged("md0")
		cycle()
	}
	h.tr.memberState(0, 1, "in_sync,failfast")
	h.tr.write("sys/block/md0/md/sync_action", "idle")
	h.tr.write("sys/block/md0/md/sync_completed", "none")
	for i := 0; i < 3; i++ {
		hl.deps.Observer.ArraysChanged("md0")
		cycle()
	}
	want := []string{"vol-0000/vol-0000-r2 in-sync=false events=0 node=", "vol-0000/vol-0000-r2 in-sync=true events=0 node="}
	h.prov.mu.Lock()
	got := slices.Clone(h.prov.syncs)
	h.prov.mu.Unlock()
	if !slices.Equal(got, want) {
		t.Fatalf("sync reports %q, want each state once: %q", got, want)
	}
}
