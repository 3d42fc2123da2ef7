package volume

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCheckStartable(t *testing.T) {
	since := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	v := &Volume{ID: "vol-1", Replicas: []Replica{
		{ID: "a", StorageNode: "sn-a", State: ReplicaActive},
		{ID: "b", StorageNode: "sn-b", State: ReplicaActive, OutOfSyncSince: since, OutOfSyncAtEvents: 40},
		{ID: "c", StorageNode: "sn-c", State: ReplicaActive, OutOfSyncSince: since.Add(time.Hour)},
		{ID: "old", StorageNode: "sn-d", State: ReplicaRemoved},
	}}
	for _, ok := range [][]string{{"a"}, {"a", "b"}, {"b", "a", "c"}, nil} {
		if err := v.CheckStartable(ok); err != nil {
			t.Errorf("reached %v: %v", ok, err)
		}
	}
	// A removed replica never counts, in sync or not.
	if err := v.CheckStartable([]string{"old", "b"}); err == nil {
		t.Error("a removed replica made a stale one startable")
	}
	err := v.CheckStartable([]string{"c", "b"})
	if !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("stale only: %v, want FailedPrecondition", err)
	}
	for _, want := range []string{"volume vol-1", "replicas b, c are out of sync since 2026-12-04T10:00:00Z",
		"in-sync replicas a on storage nodes sn-a are unreachable", "nvmirrorctl promote vol-1 c --accept-data-loss"} /* c dropped out last */ {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	// No replica in sync at all (only an admin's promotion can start it).
	v.Replicas[0].OutOfSyncSince = since
	if err := v.CheckStartable([]string{"b"}); !errors.Is(err, ErrFailedPrecondition) || !strings.Contains(err.Error(), "no replica is recorded in sync") {
		t.Errorf("none in sync: %v", err)
	}
}
