package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// NewSnapshot returns a plausible snapshot record for tests.
func NewSnapshot(id, name, volumeID string) *store.Snapshot {
	return &store.Snapshot{
		ID: id, Name: name, SourceVolumeID: volumeID, SizeBytes: 1 << 30, DataOffset: 4 << 20, WantCopies: 2,
		Copies: []store.SnapshotCopy{
			{StorageNode: "sn-0", State: store.CopyReady, AllocatedBytes: 64 << 20, Reflinked: true},
			{StorageNode: "sn-1", State: store.CopyCutting},
		},
		State: store.SnapshotCreating, Parameters: map[string]string{"k": "v"},
		SourceParameters: storageclass.Defaults(), CutAt: time.Date(2026, 12, 5, 1, 2, 3, 0, time.UTC),
	}
}

func testSnapshots(t *testing.T, s store.Store) {
	c := ctx(t)
	in := NewSnapshot("snap-1", "snapshot-1", "v1")
	if err := s.CreateSnapshot(c, in); err != nil {
		t.Fatalf("CreateSnapshot: %v", err)
	}
	got, err := s.GetSnapshot(c, "snap-1")
	if err != nil {
		t.Fatalf("GetSnapshot: %v", err)
	}
	if got.CreatedAt.IsZero() || got.UpdatedAt.IsZero() {
		t.Errorf("timestamps not set: %+v", got)
	}
	want := in.Clone()
	want.CreatedAt, want.UpdatedAt = got.CreatedAt, got.UpdatedAt
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GetSnapshot = %+v, want %+v", got, want)
	}
	// Returned records are copies.
	got.Copies[0].State = store.CopyDeleting
	got.Parameters["k"] = "changed"
	again, _ := s.GetSnapshot(c, "snap-1")
	if again.Copies[0].State != store.CopyReady || again.Parameters["k"] != "v" {
		t.Errorf("mutating a returned snapshot changed the store: %+v", again)
	}
	byName, err := s.GetSnapshotByName(c, "snapshot-1")
	if err != nil || byName.ID != "snap-1" {
		t.Errorf("GetSnapshotByName = %v, %v", byName, err)
	}
	for _, dup := range []*store.Snapshot{NewSnapshot("snap-1", "other", "v1"), NewSnapshot("snap-2", "snapshot-1", "v1")} {
		if err := s.CreateSnapshot(c, dup); !errors.Is(err, store.ErrAlreadyExists) {
			t.Errorf("CreateSnapshot(%s, %s) = %v, want ErrAlreadyExists", dup.ID, dup.Name, err)
		}
	}
	if _, err := s.GetSnapshot(c, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetSnapshot(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := s.GetSnapshotByName(c, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetSnapshotByName(unknown) = %v, want ErrNotFound", err)
	}

	up, err := s.UpdateSnapshot(c, "snap-1", func(sn *store.Snapshot) error {
		sn.Copy("sn-1").State = store.CopyReady
		sn.State = store.SnapshotReady
		return nil
	})
	if err != nil || up.State != store.SnapshotReady || up.Copy("sn-1").State != store.CopyReady {
		t.Fatalf("UpdateSnapshot = %+v, %v", up, err)
	}
	if _, err := s.UpdateSnapshot(c, "snap-1", func(sn *store.Snapshot) error { sn.Name = "renamed"; return nil }); err == nil {
		t.Error("UpdateSnapshot renamed a snapshot")
	}
	boom := errors.New("boom")
	if _, err := s.UpdateSnapshot(c, "snap-1", func(sn *store.Snapshot) error { sn.State = store.SnapshotDeleting; return boom }); !errors.Is(err, boom) {
		t.Errorf("UpdateSnapshot fn error = %v", err)
	}
	if cur, _ := s.GetSnapshot(c, "snap-1"); cur.State != store.SnapshotReady {
		t.Errorf("a failed update was stored: %s", cur.State)
	}
	if _, err := s.UpdateSnapshot(c, "nope", func(*store.Snapshot) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateSnapshot(unknown) = %v", err)
	}

	if err := s.CreateSnapshot(c, NewSnapshot("snap-0", "snapshot-0", "v2")); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListSnapshots(c)
	if err != nil || len(list) != 2 || list[0].ID != "snap-0" || list[1].ID != "snap-1" {
		t.Errorf("ListSnapshots = %v, %v; want snap-0, snap-1", list, err)
	}

	if err := s.DeleteSnapshot(c, "snap-1"); err != nil {
		t.Fatalf("DeleteSnapshot: %v", err)
	}
	if err := s.DeleteSnapshot(c, "snap-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteSnapshot = %v, want ErrNotFound", err)
	}
	if err := s.CreateSnapshot(c, NewSnapshot("snap-3", "snapshot-1", "v1")); err != nil {
		t.Errorf("name not freed by delete: %v", err)
	}
	// Snapshots and volumes are separate namespaces.
	if err := s.CreateVolume(c, NewVolume("snap-0", "snapshot-0")); err != nil {
		t.Errorf("a volume with a snapshot's ID and name: %v", err)
	}
}

func testConcurrentSnapshotUpdates(t *testing.T, s store.Store) {
	c := ctx(t)
	if err := s.CreateSnapshot(c, NewSnapshot("snap-1", "snapshot-1", "v1")); err != nil {
		t.Fatal(err)
	}
	const workers, each = 6, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				_, err := s.UpdateSnapshot(c, "snap-1", func(sn *store.Snapshot) error {
					sn.Copies = append(sn.Copies, store.SnapshotCopy{StorageNode: fmt.Sprintf("w%d-%d", w, i)})
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
		t.Errorf("UpdateSnapshot: %v", err)
	}
	if got, _ := s.GetSnapshot(c, "snap-1"); len(got.Copies) != 2+workers*each {
		t.Errorf("lost updates: %d copies, want %d", len(got.Copies), 2+workers*each)
	}
}

func testSnapshotGroups(t *testing.T, s store.Store) {
	c := ctx(t)
	in := &store.SnapshotGroup{ID: "group-1", Name: "vgs-1", VolumeIDs: []string{"v1", "v2"}, SnapshotIDs: []string{"snap-a", "snap-b"}, State: store.SnapshotCreating}
	if err := s.CreateSnapshotGroup(c, in); err != nil {
		t.Fatalf("CreateSnapshotGroup: %v", err)
	}
	if err := s.CreateSnapshotGroup(c, &store.SnapshotGroup{ID: "group-2", Name: "vgs-1"}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("a group name reused = %v, want ErrAlreadyExists", err)
	}
	got, err := s.GetSnapshotGroupByName(c, "vgs-1")
	if err != nil || got.ID != "group-1" || !reflect.DeepEqual(got.SnapshotIDs, in.SnapshotIDs) || got.CreatedAt.IsZero() {
		t.Fatalf("GetSnapshotGroupByName = %+v, %v", got, err)
	}
	up, err := s.UpdateSnapshotGroup(c, "group-1", func(g *store.SnapshotGroup) error { g.State = store.SnapshotReady; return nil })
	if err != nil || up.State != store.SnapshotReady {
		t.Errorf("UpdateSnapshotGroup = %+v, %v", up, err)
	}
	if list, err := s.ListSnapshotGroups(c); err != nil || len(list) != 1 || list[0].State != store.SnapshotReady {
		t.Errorf("ListSnapshotGroups = %v, %v", list, err)
	}
	if err := s.DeleteSnapshotGroup(c, "group-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSnapshotGroup(c, "group-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted group still there: %v", err)
	}
	if err := s.DeleteSnapshotGroup(c, "group-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteSnapshotGroup = %v, want ErrNotFound", err)
	}
}
