package volume

import (
	"time"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// CreateVolumeRequest is what the controller asks the provisioner for.
type CreateVolumeRequest struct {
	// Name is the CO's volume name; creation is idempotent by it.
	Name string
	// SizeBytes is already rounded to 1 MiB and within the CO's range.
	SizeBytes int64
	// Parameters are the StorageClass parameters (plus the
	// VolumeAttributesClass's mutable ones), unvalidated by the driver.
	Parameters map[string]string
	// Block is true when every requested capability is raw block.
	Block bool
	// AccessMode is the CSI access mode name of the first capability,
	// e.g. "SINGLE_NODE_WRITER", kept for audit and display.
	AccessMode string
	// SourceSnapshotID or SourceVolumeID (at most one): the volume starts
	// as a copy of the snapshot, or of the volume now (a clone).
	SourceSnapshotID, SourceVolumeID string
}

// Volume is the registry record of one volume.
type Volume struct {
	ID        string
	Name      string
	SizeBytes int64
	// Parameters are the StorageClass parameters as the provisioner
	// normalised them, for display and audit; decisions read Policy.
	Parameters map[string]string
	// Policy is the part of the parameters the node side acts on, typed.
	Policy storageclass.Policy
	// MDUUID identifies the volume's md array (any UUID form mdadm reads);
	// MDName is stored in the superblock. Empty MDUUID is only valid for a
	// single-replica volume, which is served without md.
	MDUUID, MDName string
	// PublishedHost is the host NQN the replicas admit ("" when
	// unpublished); PublishedNode is the CSI node ID it was published for.
	PublishedHost, PublishedNode string
	Replicas                     []Replica
	// DegradedSince is when the volume lost a replica (zero when whole), as
	// the node's healer reported it.
	DegradedSince time.Time
	// SourceSnapshotID, SourceVolumeID: what the volume was created from
	// (empty for an empty volume).
	SourceSnapshotID, SourceVolumeID string
}

// Replica is one leg of the mirror: an NVMe-oF namespace on a storage node.
type Replica struct {
	ID          string
	StorageNode string
	NQN         string
	// NamespaceUUID is the namespace's UUID; empty means the one
	// nvmeof.NamespaceUUID derives from ID.
	NamespaceUUID string
	Endpoints     []Endpoint
	// State is where the replica is in its life; only active replicas are
	// connected.
	State ReplicaState
	// OutOfSyncSince is when the replica stopped holding every write
	// acknowledged to the volume (md failed or lost its member, or it was
	// created empty as a replacement); zero while it is in sync. A replica
	// out of sync never serves the volume on its own and is never the
	// source of a resync.
	OutOfSyncSince time.Time
	// OutOfSyncAtEvents is the md event count of the array when the
	// replica was recorded out of sync: the write generation it misses
	// everything after (0 when unknown or in sync).
	OutOfSyncAtEvents uint64
	// DivergedSince is when a promotion gave the replica up: it may hold
	// writes the volume no longer has, which a bitmap re-add would leave on
	// this leg alone. A node never connects, assembles or joins it; the
	// healer replaces it after maxReplicaDownTime. Zero otherwise.
	DivergedSince time.Time
	// Move: added by a live move of another replica, which keeps serving
	// until this one is in sync; the volume is not degraded meanwhile.
	Move bool
}

// Diverged reports whether a promotion gave the replica up.
func (r Replica) Diverged() bool { return !r.DivergedSince.IsZero() }

// InSync reports whether the replica holds every acknowledged write, as
// far as the registry knows.
func (r Replica) InSync() bool { return r.OutOfSyncSince.IsZero() }

// Endpoint is one NVMe/TCP address a replica is exported on.
type Endpoint struct {
	Address, Port string
}

// AuditRecord is one executed CSI call, as reported to the provisioner.
type AuditRecord struct {
	Time      time.Time
	Operation string // CSI method name, e.g. "NodeStageVolume"
	VolumeID  string
	Node      string // CSI node ID concerned, if any
	Outcome   AuditOutcome
	Message   string // error text or gRPC code on failure
}

// Authentication is the volume's authentication mode; none when unset.
func (v *Volume) Authentication() storageclass.Authentication {
	if v.Policy.Authentication == "" {
		return storageclass.AuthNone
	}
	return v.Policy.Authentication
}

// ReplicaState is a replica's place in its life, as the provisioner records
// it: active until the healer or an admin retires it; a retired replica is
// deleting (its storage node is still deleting it), then deleted (gone from
// its storage node, still a member of the md array), then removed (out of
// the array too, kept in the record for history).
type ReplicaState string

// Replica states as the provisioner reports them.
const (
	ReplicaActive   ReplicaState = "active"
	ReplicaDeleting ReplicaState = "deleting"
	ReplicaDeleted  ReplicaState = "deleted"
	ReplicaRemoved  ReplicaState = "removed"
)

// AuditOutcome says whether an audited call succeeded.
type AuditOutcome string

// Audit outcomes.
const (
	AuditSuccess AuditOutcome = "success"
	AuditFailure AuditOutcome = "failure"
)

// ActiveReplicas returns the replicas in state active, in registry order:
// the ones a host connects.
func (v *Volume) ActiveReplicas() []Replica {
	var out []Replica
	for _, r := range v.Replicas {
		if r.State == ReplicaActive {
			out = append(out, r)
		}
	}
	return out
}

// NamespaceID is the UUID the replica's namespace must report: the recorded
// one, or the one the storage node derives from the replica ID when the
// record predates recording it. A device reporting another is not this
// replica and is never used.
func (r Replica) NamespaceID() string {
	if r.NamespaceUUID != "" {
		return r.NamespaceUUID
	}
	return nvmeof.NamespaceUUID(r.ID)
}
