package volume

import (
	"context"
	"time"
)

// Snapshot is a point-in-time copy of a volume as the CSI controller sees
// it (the provisioner keeps it as identical copies on storage nodes).
type Snapshot struct {
	ID             string
	Name           string
	SourceVolumeID string
	// SizeBytes is the source volume's size at the snapshot: the smallest
	// volume it restores into.
	SizeBytes int64
	// CreatedAt is the point in time the snapshot holds.
	CreatedAt  time.Time
	ReadyToUse bool
	// GroupID is the group snapshot it belongs to ("" when none).
	GroupID string
	// Copies are the storage nodes holding a complete copy.
	Copies []string
}

// SnapshotGroup is a group snapshot: snapshots of several volumes at one
// crash-consistent point.
type SnapshotGroup struct {
	ID         string
	Name       string
	CreatedAt  time.Time
	ReadyToUse bool
	// Snapshots are the members that exist: fewer than MemberIDs once a
	// deletion has begun.
	Snapshots []*Snapshot
	// MemberIDs are every member's snapshot ID as the group was taken,
	// deleted or not (empty from a provisioner older than this field).
	MemberIDs []string
}

// ByteRange is a range of a volume's bytes.
type ByteRange struct {
	Offset, Length int64
}

// SnapshotProvisioner is the snapshot part of the provisioner's API as the
// CSI controller uses it.
type SnapshotProvisioner interface {
	// CreateSnapshot snapshots the volume, or returns the snapshot of that
	// name when it is of the same volume (ErrAlreadyExists otherwise).
	// Unknown volume: ErrNotFound.
	CreateSnapshot(ctx context.Context, name, sourceVolumeID string, params map[string]string) (*Snapshot, error)
	// DeleteSnapshot: unknown is not an error.
	DeleteSnapshot(ctx context.Context, id string) error
	// GetSnapshot returns the snapshot, or ErrNotFound.
	GetSnapshot(ctx context.Context, id string) (*Snapshot, error)
	// ListSnapshots pages like ListVolumes; snapshotID and sourceVolumeID
	// filter ("" for none).
	ListSnapshots(ctx context.Context, snapshotID, sourceVolumeID, startToken string, max int) (snaps []*Snapshot, next string, err error)
	CreateSnapshotGroup(ctx context.Context, name string, volumeIDs []string, params map[string]string) (*SnapshotGroup, error)
	// DeleteSnapshotGroup: unknown is not an error.
	DeleteSnapshotGroup(ctx context.Context, id string) error
	GetSnapshotGroup(ctx context.Context, id string) (*SnapshotGroup, error)
	// SnapshotRanges returns the allocated ranges of a snapshot, or (base
	// set) those changed since base, from volume offset start, at most max
	// (0: the provisioner's page); next is where to continue (0: done).
	SnapshotRanges(ctx context.Context, snapshotID, base string, start int64, max int) (ranges []ByteRange, volumeSize, next int64, err error)
}
