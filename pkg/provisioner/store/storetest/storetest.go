// Package storetest is the conformance suite every store.Store
// implementation passes. An implementation's test calls Run with a factory
// that returns a new, empty store whose event retention is Retention.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// Retention is the event retention the factory must configure; small, so
// the trimming is exercised.
const Retention = 10

// Factory returns a new, empty store; the suite closes it.
type Factory func(t *testing.T) store.Store

// Run runs the conformance suite.
func Run(t *testing.T, newStore Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"CreateGet", testCreateGet},
		{"ListVolumesAfter", testListVolumesAfter},
		{"CreateConflicts", testCreateConflicts},
		{"ReturnedCopiesAreIndependent", testCopies},
		{"Update", testUpdate},
		{"ReplicaSyncState", testReplicaSyncState},
		{"ConcurrentUpdatesLoseNothing", testConcurrentUpdates},
		{"ConcurrentCreateSameName", testConcurrentCreateSameName},
		{"DeleteFreesName", testDelete},
		{"DeleteLeavesTombstone", testTombstones},
		{"StorageNodes", testStorageNodes},
		{"Events", testEvents},
		{"EventRetention", testEventRetention},
		{"EventDedupe", testEventDedupe},
		{"Leader", testLeader},
		{"HostCredentials", testHostCredentials},
		{"ConcurrentHostCredentialUpdates", testConcurrentHostCredentials},
		{"Snapshots", testSnapshots},
		{"ConcurrentSnapshotUpdatesLoseNothing", testConcurrentSnapshotUpdates},
		{"SnapshotGroups", testSnapshotGroups},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			defer s.Close()
			tc.fn(t, s)
		})
	}
}

// NewVolume returns a plausible volume record for tests.
func NewVolume(id, name string) *store.Volume {
	return &store.Volume{
		ID: id, Name: name, SizeBytes: 1 << 30, Parameters: storageclass.Defaults(), State: store.VolumeReady,
		MDUUID: "0a1b2c3d:4e5f6071:8293a4b5:c6d7e8f9", MDName: "nvmirror-" + id,
		Replicas: []store.Replica{
			{ID: id + "-r0", StorageNode: "sn-0", NQN: "nqn.2024-01.io.nvmirror:" + id + "-r0", Addresses: []store.Endpoint{{Transport: "tcp", Family: "ipv4", Address: "10.0.0.1", ServiceID: "4420"}}, State: store.ReplicaActive},
			{ID: id + "-r1", StorageNode: "sn-1", NQN: "nqn.2024-01.io.nvmirror:" + id + "-r1", Addresses: []store.Endpoint{{Transport: "tcp", Family: "ipv4", Address: "10.0.0.2", ServiceID: "4420"}}, State: store.ReplicaActive},
		},
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func testCreateGet(t *testing.T, s store.Store) {
	c := ctx(t)
	v := NewVolume("v1", "pvc-1")
	v.Parameters.Zones = []string{"z1"}
	v.PublishedHostNQN = "nqn.2014-08.org.nvmexpress:uuid:host-a"
	// The claim the external-provisioner passed (--extra-create-metadata),
	// typed and as the API shows it: Kubernetes events and kubectl-nvmirror
	// find the PV and PVC by it, so it must come back as stored.
	v.Parameters.Metadata = storageclass.Metadata{PVName: "pvc-1", PVCName: "data-db-0", PVCNamespace: "app"}
	v.Metadata = map[string]string{storageclass.KeyPVName: "pvc-1", storageclass.KeyPVCName: "data-db-0", storageclass.KeyPVCNamespace: "app"}
	if err := s.CreateVolume(c, v); err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	got, err := s.GetVolume(c, "v1")
	if err != nil {
		t.Fatalf("GetVolume: %v", err)
	}
	if got.CreatedAt.IsZero() || got.UpdatedAt.IsZero() {
		t.Errorf("timestamps not set: %+v", got)
	}
	want := v.Clone()
	want.CreatedAt, want.UpdatedAt = got.CreatedAt, got.UpdatedAt
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GetVolume\n got %+v\nwant %+v", got, want)
	}
	byName, err := s.GetVolumeByName(c, "pvc-1")
	if err != nil || byName.ID != "v1" {
		t.Errorf("GetVolumeByName = %v, %v", byName, err)
	}
	if _, err := s.GetVolume(c, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetVolume(missing) err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetVolumeByName(c, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetVolumeByName(missing) err = %v, want ErrNotFound", err)
	}
	if err := s.CreateVolume(c, NewVolume("v0", "pvc-0")); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListVolumes(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != "v0" || list[1].ID != "v1" {
		t.Errorf("ListVolumes = %v, want v0, v1 in order", volumeIDs(list))
	}
}

// ListVolumesAfter reads a page of volumes after an ID, whether or not a
// volume of that ID exists.
func testListVolumesAfter(t *testing.T, s store.Store) {
	c := ctx(t)
	for _, id := range []string{"v3", "v1", "v4", "v2", "v0"} {
		if err := s.CreateVolume(c, NewVolume(id, "pvc-"+id)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		after string
		limit int
		want  []string
	}{
		{"", 2, []string{"v0", "v1"}},
		{"", 10, []string{"v0", "v1", "v2", "v3", "v4"}},
		{"v1", 2, []string{"v2", "v3"}},
		{"v1a", 10, []string{"v2", "v3", "v4"}}, // between v1 and v2: no such volume
		{"v3", 5, []string{"v4"}},
		{"v4", 1, nil},
		{"w", 1, nil},
	} {
		got, err := s.ListVolumesAfter(c, tc.after, tc.limit)
		if err != nil || !reflect.DeepEqual(volumeIDs(got), tc.want) {
			t.Errorf("ListVolumesAfter(%q, %d) = %v, %v; want %v", tc.after, tc.limit, volumeIDs(got), err, tc.want)
		}
	}
	if _, err := s.ListVolumesAfter(c, "", 0); err == nil {
		t.Error("ListVolumesAfter with no limit accepted")
	}
}

func volumeIDs(vs []*store.Volume) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.ID)
	}
	return out
}

func testCreateConflicts(t *testing.T, s store.Store) {
	c := ctx(t)
	if err := s.CreateVolume(c, NewVolume("v1", "pvc-1")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateVolume(c, NewVolume("v1", "pvc-other")); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("same id: err = %v, want ErrAlreadyExists", err)
	}
	if err := s.CreateVolume(c, NewVolume("v2", "pvc-1")); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("same name: err = %v, want ErrAlreadyExists", err)
	}
	// The failed creates left nothing behind.
	if _, err := s.GetVolumeByName(c, "pvc-other"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("name of failed create was recorded: %v", err)
	}
	if _, err := s.GetVolume(c, "v2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("id of failed create was recorded: %v", err)
	}
	if err := s.CreateVolume(c, &store.Volume{ID: "x"}); err == nil {
		t.Error("volume without name accepted")
	}
}

func testCopies(t *testing.T, s store.Store) {
	c := ctx(t)
	v := NewVolume("v1", "pvc-1")
	if err := s.CreateVolume(c, v); err != nil {
		t.Fatal(err)
	}
	v.Replicas[0].State = store.ReplicaDeleting // caller's copy, after create
	got, _ := s.GetVolume(c, "v1")
	got.Replicas[1].Addresses[0].Address = "mutated"
	again, _ := s.GetVolume(c, "v1")
	if again.Replicas[0].State != store.ReplicaActive || again.Replicas[1].Addresses[0].Address != "10.0.0.2" {
		t.Errorf("store aliased a caller's value: %+v", again.Replicas)
	}
}

func testUpdate(t *testing.T, s store.Store) {
	c := ctx(t)
	if err := s.CreateVolume(c, NewVolume("v1", "pvc-1")); err != nil {
		t.Fatal(err)
	}
	before, _ := s.GetVolume(c, "v1")
	out, err := s.UpdateVolume(c, "v1", func(v *store.Volume) error {
		v.PublishedHostNQN = "nqn.host-a"
		v.Replicas[1].State = store.ReplicaDeleting
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateVolume: %v", err)
	}
	got, _ := s.GetVolume(c, "v1")
	if got.PublishedHostNQN != "nqn.host-a" || got.Replicas[1].State != store.ReplicaDeleting {
		t.Errorf("update not stored: %+v", got)
	}
	if !reflect.DeepEqual(out, got) {
		t.Errorf("UpdateVolume returned %+v, stored %+v", out, got)
	}
	if got.UpdatedAt.Before(before.UpdatedAt) || !got.CreatedAt.Equal(before.CreatedAt) {
		t.Errorf("timestamps: before %v/%v after %v/%v", before.CreatedAt, before.UpdatedAt, got.CreatedAt, got.UpdatedAt)
	}

	boom := errors.New("boom")
	if _, err := s.UpdateVolume(c, "v1", func(v *store.Volume) error {
		v.SizeBytes = 1
		return boom
	}); !errors.Is(err, boom) {
		t.Errorf("fn error: got %v, want boom", err)
	}
	if got, _ := s.GetVolume(c, "v1"); got.SizeBytes != 1<<30 {
		t.Errorf("failed update was stored: size %d", got.SizeBytes)
	}
	if _, err := s.UpdateVolume(c, "v1", func(v *store.Volume) error { v.Name = "renamed"; return nil }); err == nil {
		t.Error("rename accepted")
	}
	if _, err := s.UpdateVolume(c, "nope", func(*store.Volume) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("update of missing: %v, want ErrNotFound", err)
	}
}

// testReplicaSyncState: a replica's sync state survives create, get, list
// and update, and clearing it is stored too (a store that copied replicas
// field by field, or dropped zero values on update, would lose it: the node
// would then start a volume from stale data).
func testReplicaSyncState(t *testing.T, s store.Store) {
	c := ctx(t)
	since := time.Date(2026, 3, 4, 5, 6, 7, 8000, time.UTC)
	v := NewVolume("v1", "pvc-1")
	v.Replicas[1].OutOfSyncSince, v.Replicas[1].OutOfSyncAtEvents = since, 4711
	if err := s.CreateVolume(c, v); err != nil {
		t.Fatal(err)
	}
	check := func(what string, got *store.Volume, r0Since time.Time, r0Events uint64, r1Since time.Time, r1Events uint64) {
		t.Helper()
		for i, want := range []struct {
			since  time.Time
			events uint64
		}{{r0Since, r0Events}, {r1Since, r1Events}} {
			r := got.Replicas[i]
			if !r.OutOfSyncSince.Equal(want.since) || r.OutOfSyncAtEvents != want.events || r.InSync() != want.since.IsZero() {
				t.Errorf("%s: replica %s out of sync since %v at events %d, want %v at %d", what, r.ID, r.OutOfSyncSince, r.OutOfSyncAtEvents, want.since, want.events)
			}
		}
	}
	got, err := s.GetVolume(c, "v1")
	if err != nil {
		t.Fatal(err)
	}
	check("GetVolume", got, time.Time{}, 0, since, 4711)
	list, err := s.ListVolumes(c)
	if err != nil || len(list) != 1 {
		t.Fatalf("ListVolumes = %v, %v", volumeIDs(list), err)
	}
	check("ListVolumes", list[0], time.Time{}, 0, since, 4711)

	later := since.Add(time.Hour)
	out, err := s.UpdateVolume(c, "v1", func(v *store.Volume) error {
		v.Replicas[0].OutOfSyncSince, v.Replicas[0].OutOfSyncAtEvents = later, 9000
		v.Replicas[1].OutOfSyncSince, v.Replicas[1].OutOfSyncAtEvents = time.Time{}, 0
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateVolume: %v", err)
	}
	check("UpdateVolume's answer", out, later, 9000, time.Time{}, 0)
	got, _ = s.GetVolume(c, "v1")
	check("GetVolume after update", got, later, 9000, time.Time{}, 0)
	byName, _ := s.GetVolumeByName(c, "pvc-1")
	check("GetVolumeByName after update", byName, later, 9000, time.Time{}, 0)

	// The mark of a replica a promotion gave up is kept, and so is its removal.
	if _, err := s.UpdateVolume(c, "v1", func(v *store.Volume) error {
		v.Replicas[1].OutOfSyncSince, v.Replicas[1].DivergedSince = later, later
		return nil
	}); err != nil {
		t.Fatalf("UpdateVolume: %v", err)
	}
	if got, _ = s.GetVolume(c, "v1"); !got.Replicas[1].Diverged() || !got.Replicas[1].DivergedSince.Equal(later) || got.Replicas[0].Diverged() {
		t.Errorf("diverged marks after update: %v, %v; want only replica 1's, at %v", got.Replicas[0].DivergedSince, got.Replicas[1].DivergedSince, later)
	}
	if _, err := s.UpdateVolume(c, "v1", func(v *store.Volume) error {
		v.Replicas[1].DivergedSince = time.Time{}
		return nil
	}); err != nil {
		t.Fatalf("UpdateVolume: %v", err)
	}
	if got, _ = s.GetVolume(c, "v1"); got.Replicas[1].Diverged() {
		t.Errorf("diverged mark kept after clearing: %v", got.Replicas[1].DivergedSince)
	}
}

func testConcurrentUpdates(t *testing.T, s store.Store) {
	c := ctx(t)
	if err := s.CreateVolume(c, NewVolume("v1", "pvc-1")); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				_, err := s.UpdateVolume(c, "v1", func(v *store.Volume) error {
					v.SizeBytes++
					v.Replicas = append(v.Replicas, store.Replica{ID: fmt.Sprintf("w%d-%d", w, i), State: store.ReplicaActive})
					return nil
				})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("UpdateVolume: %v", err)
	}
	got, _ := s.GetVolume(c, "v1")
	if got.SizeBytes != 1<<30+workers*each || len(got.Replicas) != 2+workers*each {
		t.Errorf("lost updates: size +%d, replicas %d; want +%d and %d", got.SizeBytes-1<<30, len(got.Replicas), workers*each, 2+workers*each)
	}
}

func testConcurrentCreateSameName(t *testing.T, s store.Store) {
	c := ctx(t)
	const n = 8
	var wg sync.WaitGroup
	results := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = s.CreateVolume(c, NewVolume(fmt.Sprintf("v%d", i), "pvc-race"))
		}()
	}
	wg.Wait()
	ok := 0
	for i, err := range results {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrAlreadyExists):
			t.Errorf("create %d: %v", i, err)
		}
	}
	list, _ := s.ListVolumes(c)
	if ok != 1 || len(list) != 1 {
		t.Errorf("%d creates of one name succeeded, %d volumes stored; want 1 and 1", ok, len(list))
	}
}

func testDelete(t *testing.T, s store.Store) {
	c := ctx(t)
	if err := s.CreateVolume(c, NewVolume("v1", "pvc-1")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVolume(c, "v1"); err != nil {
		t.Fatalf("DeleteVolume: %v", err)
	}
	if _, err := s.GetVolume(c, "v1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted volume still there: %v", err)
	}
	if err := s.DeleteVolume(c, "v1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	if err := s.CreateVolume(c, NewVolume("v2", "pvc-1")); err != nil {
		t.Errorf("name not freed by delete: %v", err)
	}
	if got, err := s.GetVolumeByName(c, "pvc-1"); err != nil || got.ID != "v2" {
		t.Errorf("GetVolumeByName after re-create = %v, %v", got, err)
	}
}

func testTombstones(t *testing.T, s store.Store) {
	c := ctx(t)
	if ts, err := s.ListTombstones(c); err != nil || len(ts) != 0 {
		t.Fatalf("ListTombstones of an empty store = %v, %v", ts, err)
	}
	for _, id := range []string{"v2", "v1", "v3"} {
		v := NewVolume(id, "pvc-"+id)
		v.Replicas[1].State = store.ReplicaRemoved
		if err := s.CreateVolume(c, v); err != nil {
			t.Fatal(err)
		}
	}
	before := time.Now().Add(-time.Second)
	for _, id := range []string{"v2", "v1"} {
		if err := s.DeleteVolume(c, id); err != nil {
			t.Fatal(err)
		}
	}
	ts, err := s.ListTombstones(c)
	if err != nil || len(ts) != 2 || ts[0].VolumeID != "v1" || ts[1].VolumeID != "v2" {
		t.Fatalf("ListTombstones = %v, %v; want v1, v2 (v3 is not deleted)", ts, err)
	}
	got := ts[0]
	want := []store.TombstoneReplica{{ID: "v1-r0", StorageNode: "sn-0"}, {ID: "v1-r1", StorageNode: "sn-1"}}
	if got.Name != "pvc-v1" || !reflect.DeepEqual(got.Replicas, want) {
		t.Errorf("tombstone = %+v; want name pvc-v1 and replicas %v (removed ones too)", got, want)
	}
	if got.DeletedAt.Before(before) || got.DeletedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("DeletedAt = %v, not the time of the deletion", got.DeletedAt)
	}
	if err := s.DeleteTombstone(c, "v1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTombstone(c, "v1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteTombstone: %v, want ErrNotFound", err)
	}
	if ts, _ := s.ListTombstones(c); len(ts) != 1 || ts[0].VolumeID != "v2" {
		t.Errorf("after DeleteTombstone(v1): %v", ts)
	}
}

func testStorageNodes(t *testing.T, s store.Store) {
	c := ctx(t)
	seen := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	n := &store.StorageNode{ID: "sn-1", Address: "10.0.0.1:7070", Labels: map[string]string{"zone": "z1", "rack": "r1"}, LastSeen: seen}
	if err := s.PutStorageNode(c, n); err != nil {
		t.Fatal(err)
	}
	if err := s.PutStorageNode(c, &store.StorageNode{ID: "sn-0", Address: "10.0.0.0:7070"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetStorageNode(c, "sn-1")
	if err != nil || !reflect.DeepEqual(got, n) {
		t.Errorf("GetStorageNode = %+v, %v; want %+v", got, err, n)
	}
	n.LastSeen = seen.Add(time.Minute)
	if err := s.PutStorageNode(c, n); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetStorageNode(c, "sn-1"); !got.LastSeen.Equal(n.LastSeen) {
		t.Errorf("put did not replace: %v", got.LastSeen)
	}
	list, err := s.ListStorageNodes(c)
	if err != nil || len(list) != 2 || list[0].ID != "sn-0" || list[1].ID != "sn-1" {
		t.Errorf("ListStorageNodes = %v, %v", list, err)
	}
	if err := s.DeleteStorageNode(c, "sn-0"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetStorageNode(c, "sn-0"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted node: %v", err)
	}
	if err := s.DeleteStorageNode(c, "sn-0"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
}

func testEvents(t *testing.T, s store.Store) {
	c := ctx(t)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	in := []events.Event{
		{Time: t0, Type: events.HostDisconnected, Node: "node-a", StorageNode: "sn-1"},
		{Time: t0.Add(time.Minute), Type: events.VolumeDegraded, Volume: "v1", Node: "node-a", Replicas: []string{"v1-r1", "v1-r2"}},
		{Time: t0.Add(2 * time.Minute), Type: events.Audit, Volume: "v2", Node: "node-b", Method: "CreateVolume", Outcome: "OK"},
		{Time: t0.Add(3 * time.Minute), Type: events.VolumeHealed, Volume: "v1", Node: "node-a"},
	}
	var last uint64
	for _, e := range in {
		got, added, err := s.AppendEvent(c, e)
		if err != nil || !added {
			t.Fatalf("AppendEvent = %v, %v", added, err)
		}
		if got.Seq <= last {
			t.Errorf("seq %d after %d: not increasing", got.Seq, last)
		}
		last = got.Seq
	}
	if _, _, err := s.AppendEvent(c, events.Event{Time: t0, Type: "Bogus"}); !errors.Is(err, events.ErrInvalidEvent) {
		t.Errorf("bogus event: %v, want ErrInvalidEvent", err)
	}
	tests := []struct {
		name string
		f    events.Filter
		want []events.Type
	}{
		{"all", events.Filter{}, []events.Type{events.HostDisconnected, events.VolumeDegraded, events.Audit, events.VolumeHealed}},
		{"volume", events.Filter{Volume: "v1"}, []events.Type{events.VolumeDegraded, events.VolumeHealed}},
		{"node matches storage node", events.Filter{Node: "sn-1"}, []events.Type{events.HostDisconnected}},
		{"node", events.Filter{Node: "node-b"}, []events.Type{events.Audit}},
		{"types", events.Filter{Types: []events.Type{events.Audit, events.VolumeHealed}}, []events.Type{events.Audit, events.VolumeHealed}},
		{"time window", events.Filter{Since: t0.Add(time.Minute), Until: t0.Add(3 * time.Minute)}, []events.Type{events.VolumeDegraded, events.Audit}},
		{"limit", events.Filter{Limit: 2}, []events.Type{events.HostDisconnected, events.VolumeDegraded}},
		{"after seq", events.Filter{AfterSeq: last - 1}, []events.Type{events.VolumeHealed}},
	}
	for _, tc := range tests {
		got, err := s.ListEvents(c, tc.f)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var types []events.Type
		for _, e := range got {
			types = append(types, e.Type)
		}
		if !reflect.DeepEqual(types, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, types, tc.want)
		}
	}
	all, _ := s.ListEvents(c, events.Filter{Volume: "v1", Types: []events.Type{events.VolumeDegraded}})
	if len(all) != 1 || !reflect.DeepEqual(all[0].Replicas, []string{"v1-r1", "v1-r2"}) || !all[0].Time.Equal(t0.Add(time.Minute)) {
		t.Errorf("stored event lost fields: %+v", all)
	}
}

func testEventRetention(t *testing.T, s store.Store) {
	c := ctx(t)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const total = Retention*2 + 5
	for i := 0; i < total; i++ {
		// Every event has an ID, so the ID index is trimmed with them:
		// the first IDs are recorded again as new events afterwards.
		if _, _, err := s.AppendEvent(c, events.Event{ID: fmt.Sprintf("id-%d", i), Time: t0.Add(time.Duration(i) * time.Second), Type: events.Audit, Method: fmt.Sprintf("m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ListEvents(c, events.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != Retention {
		t.Fatalf("kept %d events, want %d", len(got), Retention)
	}
	if got[0].Method != fmt.Sprintf("m%d", total-Retention) || got[len(got)-1].Method != fmt.Sprintf("m%d", total-1) {
		t.Errorf("kept %s..%s, want the newest", got[0].Method, got[len(got)-1].Method)
	}
	if _, added, err := s.AppendEvent(c, events.Event{ID: "id-0", Time: t0, Type: events.Audit, Method: "again"}); err != nil || !added {
		t.Errorf("ID of a trimmed event: added=%v, %v; want recorded afresh", added, err)
	}
	if _, added, err := s.AppendEvent(c, events.Event{ID: fmt.Sprintf("id-%d", total-1), Time: t0, Type: events.Audit, Method: "again"}); err != nil || added {
		t.Errorf("ID of a retained event: added=%v, %v; want deduplicated", added, err)
	}
}

func testEventDedupe(t *testing.T, s store.Store) {
	c := ctx(t)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e := events.Event{ID: "node-a/42", Time: t0, Type: events.VolumeDegraded, Volume: "v1"}
	first, added, err := s.AppendEvent(c, e)
	if err != nil || !added {
		t.Fatalf("first AppendEvent = %v, %v", added, err)
	}
	e.Message = "resent with another message"
	again, added, err := s.AppendEvent(c, e)
	if err != nil || added || again.Seq != first.Seq || again.Message != "" {
		t.Fatalf("resend = %+v, added=%v, %v; want the stored event, not added", again, added, err)
	}
	// Events without ID are never deduplicated.
	for range 2 {
		if _, added, err := s.AppendEvent(c, events.Event{Time: t0, Type: events.VolumeHealed, Volume: "v1"}); err != nil || !added {
			t.Fatalf("event without ID: added=%v, %v", added, err)
		}
	}
	got, err := s.ListEvents(c, events.Filter{Volume: "v1"})
	if err != nil || len(got) != 3 {
		t.Fatalf("ListEvents = %d events, %v; want 3", len(got), err)
	}
	if got[0].ID != "node-a/42" {
		t.Errorf("stored ID %q", got[0].ID)
	}
}

func testLeader(t *testing.T, s store.Store) {
	c, cancel := context.WithCancel(ctx(t))
	ch, err := s.Leader(c, "provisioner-a")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-ch:
		if !v {
			t.Fatal("first leadership report is false")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("not leader after 20 s with no competitor")
	}
	if !s.IsLeader() {
		t.Error("IsLeader false after elected")
	}
	cancel()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("leadership channel not closed after cancel")
		}
	}
}

func testHostCredentials(t *testing.T, s store.Store) {
	c := ctx(t)
	const host = "nqn.2014-08.org.nvmexpress:uuid:0f8e2c4a-1b3d-4e5f-8a9b-0c1d2e3f4a5b"
	if _, err := s.GetHostCredentials(c, host); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetHostCredentials of an unknown host: %v, want ErrNotFound", err)
	}
	sec := store.Secrets{Secret: "DHHC-1:00:a:", CtrlSecret: "DHHC-1:00:b:", Generation: 1, CreatedAt: time.Now().UTC().Truncate(time.Second)}
	got, err := s.UpdateHostCredentials(c, host, func(hc *store.HostCredentials) error {
		if hc.HostNQN != host || len(hc.Pairs) != 0 {
			return fmt.Errorf("first update sees %+v, want an empty record for the host", hc)
		}
		hc.Pairs = map[string]store.PairCredentials{"sn-1": {Applied: sec}}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Pairs["sn-1"].Applied != sec || got.UpdatedAt.IsZero() {
		t.Errorf("UpdateHostCredentials returned %+v", got)
	}
	read, err := s.GetHostCredentials(c, host)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(read.Pairs, got.Pairs) {
		t.Errorf("read back %+v, stored %+v", read.Pairs, got.Pairs)
	}
	// Returned copies are independent of the store.
	read.Pairs["sn-2"] = store.PairCredentials{}
	again, _ := s.GetHostCredentials(c, host)
	if _, leaked := again.Pairs["sn-2"]; leaked {
		t.Error("mutating a returned record changed the store")
	}
	// An error from fn stores nothing; the host NQN is immutable.
	boom := errors.New("boom")
	if _, err := s.UpdateHostCredentials(c, host, func(hc *store.HostCredentials) error {
		hc.Pairs = nil
		return boom
	}); !errors.Is(err, boom) {
		t.Errorf("fn error: got %v", err)
	}
	if _, err := s.UpdateHostCredentials(c, host, func(hc *store.HostCredentials) error {
		hc.HostNQN = "other"
		return nil
	}); err == nil {
		t.Error("changing the host NQN succeeded")
	}
	if again, _ := s.GetHostCredentials(c, host); again.Pairs["sn-1"].Applied != sec {
		t.Errorf("failed updates changed the record: %+v", again)
	}
}

func testConcurrentHostCredentials(t *testing.T, s store.Store) {
	c := ctx(t)
	const host, workers = "nqn.2026-11.io.nvmirror:host:a", 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.UpdateHostCredentials(c, host, func(hc *store.HostCredentials) error {
				if hc.Pairs == nil {
					hc.Pairs = map[string]store.PairCredentials{}
				}
				hc.Pairs[fmt.Sprintf("sn-%d", w)] = store.PairCredentials{Applied: store.Secrets{Secret: "s", Generation: 1}}
				return nil
			})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("UpdateHostCredentials: %v", err)
		}
	}
	got, err := s.GetHostCredentials(c, host)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Pairs) != workers {
		t.Errorf("lost updates: %d pairs, want %d", len(got.Pairs), workers)
	}
}
