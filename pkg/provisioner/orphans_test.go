package provisioner

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

func TestDecideOrphans(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	grace := 10 * time.Minute
	vol := func(id string, state store.VolumeState, rs ...store.Replica) *store.Volume {
		return &store.Volume{ID: id, Name: "pvc-" + id, State: state, Replicas: rs}
	}
	rep := func(id, node string, state store.ReplicaState, pending bool) store.Replica {
		return store.Replica{ID: id, StorageNode: node, State: state, PendingDelete: pending}
	}
	registry := indexRegistry(
		[]*store.Volume{
			vol("vol-ready", store.VolumeReady,
				rep("rep-active", "sn-1", store.ReplicaActive, false),
				rep("rep-replaced", "sn-2", store.ReplicaRemoved, false),       // replaced, deleted from sn-2
				rep("rep-pending", "sn-3", store.ReplicaRemoved, true),         // the sweeper's
				rep("rep-admin-deleted", "sn-1", store.ReplicaDeleted, false)), // DeleteReplica, done
			vol("vol-creating", store.VolumeCreating, rep("rep-creating", "sn-2", store.ReplicaActive, false)),
			vol("vol-deleting", store.VolumeDeleting,
				rep("rep-deleting", "sn-1", store.ReplicaDeleting, true),
				rep("rep-deleted-early", "sn-2", store.ReplicaDeleted, false)), // a rollback's late create
		},
		[]*store.Tombstone{{VolumeID: "vol-gone", Name: "pvc-gone", DeletedAt: t0.Add(-time.Hour),
			Replicas: []store.TombstoneReplica{{ID: "rep-gone-1", StorageNode: "sn-1"}, {ID: "rep-gone-2", StorageNode: "sn-2"}}}},
	)
	held := func(id, vol string) HeldReplica { return HeldReplica{ID: id, VolumeID: vol, SizeBytes: 1 << 30} }
	orphan := func(node, id, vol string, class OrphanClass, first time.Time) Orphan {
		return Orphan{StorageNode: node, ReplicaID: id, VolumeID: vol, SizeBytes: 1 << 30, Class: class, FirstSeen: first}
	}

	tests := []struct {
		name                 string
		held                 map[string][]HeldReplica
		prev                 []Orphan
		now                  time.Time
		wantKnown, wantFound []Orphan
		wantReclaim          []string // replica IDs
		wantReasonContains   map[string]string
	}{
		{
			name: "owned replicas are no orphans: active, pending deletion, of a volume being created or deleted",
			held: map[string][]HeldReplica{"sn-1": {held("rep-active", "vol-ready"), held("rep-deleting", "vol-deleting")},
				"sn-2": {held("rep-creating", "vol-creating")}, "sn-3": {held("rep-pending", "vol-ready")}},
			now: t0,
		},
		{
			name:               "first sight: recorded with its grace starting, never reclaimed",
			held:               map[string][]HeldReplica{"sn-1": {held("rep-gone-1", "vol-gone")}, "sn-2": {held("rep-replaced", "vol-ready")}},
			now:                t0,
			wantKnown:          []Orphan{orphan("sn-1", "rep-gone-1", "vol-gone", OrphanReleased, t0), orphan("sn-2", "rep-replaced", "vol-ready", OrphanReleased, t0)},
			wantFound:          []Orphan{orphan("sn-1", "rep-gone-1", "vol-gone", OrphanReleased, t0), orphan("sn-2", "rep-replaced", "vol-ready", OrphanReleased, t0)},
			wantReasonContains: map[string]string{"rep-gone-1": "volume vol-gone (pvc-gone) was deleted", "rep-replaced": "records the replica removed"},
		},
		{
			name:      "released, within the grace: kept waiting",
			held:      map[string][]HeldReplica{"sn-1": {held("rep-gone-1", "vol-gone")}},
			prev:      []Orphan{orphan("sn-1", "rep-gone-1", "vol-gone", OrphanReleased, t0)},
			now:       t0.Add(grace - time.Second),
			wantKnown: []Orphan{orphan("sn-1", "rep-gone-1", "vol-gone", OrphanReleased, t0)},
		},
		{
			name: "released, past the grace from first sight: reclaimed (deleted volume, replaced replica, admin-deleted replica, a rollback's late create)",
			held: map[string][]HeldReplica{"sn-1": {held("rep-gone-1", "vol-gone"), held("rep-admin-deleted", "vol-ready")},
				"sn-2": {held("rep-replaced", "vol-ready"), held("rep-deleted-early", "vol-deleting")}},
			prev: []Orphan{orphan("sn-1", "rep-gone-1", "vol-gone", OrphanReleased, t0), orphan("sn-1", "rep-admin-deleted", "vol-ready", OrphanReleased, t0),
				orphan("sn-2", "rep-replaced", "vol-ready", OrphanReleased, t0), orphan("sn-2", "rep-deleted-early", "vol-deleting", OrphanReleased, t0)},
			now: t0.Add(grace),
			wantKnown: []Orphan{orphan("sn-1", "rep-gone-1", "vol-gone", OrphanReleased, t0), orphan("sn-1", "rep-admin-deleted", "vol-ready", OrphanReleased, t0),
				orphan("sn-2", "rep-replaced", "vol-ready", OrphanReleased, t0), orphan("sn-2", "rep-deleted-early", "vol-deleting", OrphanReleased, t0)},
			wantReclaim: []string{"rep-admin-deleted", "rep-gone-1", "rep-deleted-early", "rep-replaced"},
		},
		{
			name:               "unknown (a restored registry): reported, never reclaimed however long",
			held:               map[string][]HeldReplica{"sn-1": {held("rep-new", "vol-new"), held("rep-new-of-known", "vol-ready")}},
			prev:               []Orphan{orphan("sn-1", "rep-new", "vol-new", OrphanUnknown, t0), orphan("sn-1", "rep-new-of-known", "vol-ready", OrphanUnknown, t0)},
			now:                t0.Add(1000 * grace),
			wantKnown:          []Orphan{orphan("sn-1", "rep-new", "vol-new", OrphanUnknown, t0), orphan("sn-1", "rep-new-of-known", "vol-ready", OrphanUnknown, t0)},
			wantReasonContains: map[string]string{"rep-new": "no record of replica rep-new"},
		},
		{
			name:               "conflict: a recorded ID on another node or for another volume is never reclaimed",
			held:               map[string][]HeldReplica{"sn-2": {held("rep-gone-1", "vol-gone")}, "sn-3": {held("rep-replaced", "vol-other")}},
			prev:               []Orphan{orphan("sn-2", "rep-gone-1", "vol-gone", OrphanConflict, t0), orphan("sn-3", "rep-replaced", "vol-other", OrphanConflict, t0)},
			now:                t0.Add(1000 * grace),
			wantKnown:          []Orphan{orphan("sn-2", "rep-gone-1", "vol-gone", OrphanConflict, t0), orphan("sn-3", "rep-replaced", "vol-other", OrphanConflict, t0)},
			wantReasonContains: map[string]string{"rep-gone-1": "on storage node sn-1, the agent reports it for volume vol-gone on sn-2"},
		},
		{
			name:      "a node that did not answer: its orphans carried over, nothing reclaimed, its grace not advanced to a decision",
			held:      map[string][]HeldReplica{"sn-2": {}},
			prev:      []Orphan{orphan("sn-1", "rep-gone-1", "vol-gone", OrphanReleased, t0), orphan("sn-2", "rep-replaced", "vol-ready", OrphanReleased, t0)},
			now:       t0.Add(2 * grace),
			wantKnown: []Orphan{orphan("sn-1", "rep-gone-1", "vol-gone", OrphanReleased, t0)},
		},
		{
			name: "an orphan gone from its node (or owned again) is forgotten",
			held: map[string][]HeldReplica{"sn-1": {held("rep-active", "vol-ready")}},
			prev: []Orphan{orphan("sn-1", "rep-active", "vol-ready", OrphanUnknown, t0), orphan("sn-1", "rep-gone-1", "vol-gone", OrphanReleased, t0)},
			now:  t0.Add(grace),
		},
		{
			name:      "same replica ID now reported for another volume: a new orphan, its grace restarts",
			held:      map[string][]HeldReplica{"sn-1": {held("rep-gone-1", "vol-gone")}},
			prev:      []Orphan{orphan("sn-1", "rep-gone-1", "vol-else", OrphanConflict, t0)},
			now:       t0.Add(grace),
			wantKnown: []Orphan{orphan("sn-1", "rep-gone-1", "vol-gone", OrphanReleased, t0.Add(grace))},
			wantFound: []Orphan{orphan("sn-1", "rep-gone-1", "vol-gone", OrphanReleased, t0.Add(grace))},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prev := map[orphanKey]Orphan{}
			for _, o := range tc.prev {
				prev[o.key()] = o
			}
			d := decideOrphans(orphanScan{held: tc.held, index: registry, prev: prev, now: tc.now, grace: grace})
			var known []Orphan
			for _, o := range d.known {
				known = append(known, o)
			}
			sortOrphans(known)
			sortOrphans(tc.wantKnown)
			sortOrphans(tc.wantFound)
			if got, want := strip(known), strip(tc.wantKnown); !reflect.DeepEqual(got, want) {
				t.Errorf("known =\n%+v\nwant\n%+v", got, want)
			}
			if got, want := strip(d.found), strip(tc.wantFound); !reflect.DeepEqual(got, want) {
				t.Errorf("found =\n%+v\nwant\n%+v", got, want)
			}
			var reclaim []string
			for _, o := range d.reclaim {
				reclaim = append(reclaim, o.ReplicaID)
			}
			if !reflect.DeepEqual(reclaim, tc.wantReclaim) {
				t.Errorf("reclaim = %v, want %v", reclaim, tc.wantReclaim)
			}
			for id, want := range tc.wantReasonContains {
				found := false
				for _, o := range d.known {
					if o.ReplicaID == id {
						found = true
						if !strings.Contains(o.Reason, want) {
							t.Errorf("%s reason %q does not say %q", id, o.Reason, want)
						}
					}
				}
				if !found {
					t.Errorf("%s not known", id)
				}
			}
		})
	}
}

// strip drops the reasons (checked separately) so orphans compare by what
// decides.
func strip(os []Orphan) []Orphan {
	out := make([]Orphan, 0, len(os))
	for _, o := range os {
		o.Reason = ""
		out = append(out, o)
	}
	return out
}

func TestIndexRegistryLiveRecordWinsOverTombstone(t *testing.T) {
	// A tombstone naming a replica ID a live volume also records (a
	// registry whose backup was restored over newer tombstones): the live
	// record decides, so the replica stays owned.
	idx := indexRegistry(
		[]*store.Volume{{ID: "vol-a", State: store.VolumeReady, Replicas: []store.Replica{{ID: "rep-1", StorageNode: "sn-1", State: store.ReplicaActive}}}},
		[]*store.Tombstone{{VolumeID: "vol-a", Replicas: []store.TombstoneReplica{{ID: "rep-1", StorageNode: "sn-1"}}}},
	)
	if owned, class, _ := idx.classify("sn-1", HeldReplica{ID: "rep-1", VolumeID: "vol-a"}); !owned {
		t.Errorf("replica of a live volume classified %s", class)
	}
}
