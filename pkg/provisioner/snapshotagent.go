package provisioner

import "context"

// SnapshotAgent is the snapshot part of the agent API (see the agent's
// proto for the full contract). Implemented by agentclient (gRPC) and by
// fakeagent.
//
// CreateSnapshot, DeleteSnapshot and WriteData to a snapshot are idempotent
// by snapshot ID; GetSnapshot of an unknown (or still incomplete) snapshot
// is ErrNotFound.
type SnapshotAgent interface {
	// CreateSnapshot copies replicaID's backing file, as it is at one
	// instant, into snapshot snapshotID on the same storage node, and
	// returns it with the md superblock the copy carries.
	CreateSnapshot(ctx context.Context, snapshotID, replicaID string) (HeldSnapshot, Superblock, error)
	DeleteSnapshot(ctx context.Context, snapshotID string) error
	GetSnapshot(ctx context.Context, snapshotID string) (HeldSnapshot, error)
	ListSnapshots(ctx context.Context) ([]HeldSnapshot, error)
	// ReadSuperblock reads the md superblock a replica's file carries now.
	ReadSuperblock(ctx context.Context, replicaID string) (Superblock, error)
	// ReadData calls fn with the allocated data of src in [offset,
	// offset+length) (length 0: to the end), in ascending chunks; what it
	// does not deliver reads as zeros.
	ReadData(ctx context.Context, src DataRef, offset, length int64, fn func(offset int64, data []byte) error) error
	// WriteData writes what produce sends into dst (a new snapshot copy of
	// dst.SizeBytes, complete only when produce returns nil, or a replica
	// no host is allowed on) and returns the snapshot copy (zero for a
	// replica).
	WriteData(ctx context.Context, dst DataRef, produce func(send func(offset int64, data []byte) error) error) (HeldSnapshot, error)
	// SnapshotRanges returns the allocated ranges of a snapshot, or those
	// whose content differs from base (base "" for allocated), in file
	// offsets from offset on, at most max (0: the agent's page); next is
	// where to continue (0: done).
	SnapshotRanges(ctx context.Context, snapshotID, base string, offset, length int64, max int) (ranges []ByteRange, next int64, err error)
}

// DataRef names a snapshot or a replica on one storage node (one of the two
// IDs). SizeBytes and VolumeID describe a snapshot copy being written.
type DataRef struct {
	SnapshotID, ReplicaID string
	SizeBytes             int64
	VolumeID              string
}

// HeldSnapshot is a snapshot copy as the storage node holding it reports it.
type HeldSnapshot struct {
	ID              string
	SizeBytes       int64
	AllocatedBytes  int64
	SourceReplicaID string
	VolumeID        string
	Reflinked       bool
}

// Superblock is the part of an md 1.2 superblock the provisioner checks.
type Superblock struct {
	Present   bool
	ArrayUUID string
	Events    uint64
	DevNumber uint32
	// DevRoles by slot: < 0xff00 an active role; 0xffff spare or unused,
	// 0xfffe faulty.
	DevRoles   []uint16
	Recovering bool
	// Clean: the array was stopped cleanly, so its in-sync members hold
	// the same data.
	Clean bool
}

// ActiveRole reports whether the superblock holds slot dev as an active
// member.
func (sb Superblock) ActiveRole(dev uint32) bool {
	return int(dev) < len(sb.DevRoles) && sb.DevRoles[dev] < 0xff00
}

// ByteRange is a range of bytes.
type ByteRange struct {
	Offset, Length int64
}
