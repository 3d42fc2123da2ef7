// Package store defines the provisioner's registry: volumes and their
// replicas, storage nodes, and the bounded event/audit log, behind a Store
// interface with two implementations (boltstore: one embedded database file,
// the default; etcdstore: etcd, for several provisioner replicas with leader
// election). storetest holds the conformance suite both pass.
//
// Concurrency: every read-modify-write of a volume goes through
// UpdateVolume, which runs the mutation against the latest record and
// commits only if nothing changed in between (bolt: one write transaction;
// etcd: compare-and-swap on the key's revision, retried). Two provisioner
// operations on one volume therefore never lose each other's updates.
package store

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// Sentinel errors; the service maps them to gRPC codes in one place.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: a compare-and-swap kept failing (heavy contention); the
	// caller may retry the whole operation.
	ErrConflict = errors.New("concurrent update conflict")
	// ErrNotLeader: this provisioner lost (or never had) leadership.
	ErrNotLeader = errors.New("not the leader")
)

// ReplicaState is a replica's state in the volume's configuration.
type ReplicaState string

const (
	// ReplicaActive: part of the volume; the node assembles it.
	ReplicaActive ReplicaState = "active"
	// ReplicaDeleting: being deleted from its storage node (which may be
	// away); the sweeper retries until the agent confirms.
	ReplicaDeleting ReplicaState = "deleting"
	// ReplicaDeleted: out of the volume's configuration and gone from its
	// storage node (or, after DeleteReplica with the node away, still
	// PendingDelete there); a node that still has it in its md array takes
	// it out, then marks it removed.
	ReplicaDeleted ReplicaState = "deleted"
	// ReplicaRemoved: no longer in the volume's array (completed deletion,
	// or replaced). Its storage-node copy may still await deletion
	// (PendingDelete). Kept for history until the volume is deleted.
	ReplicaRemoved ReplicaState = "removed"
)

// Endpoint is an NVMe-oF address where a replica is exported.
type Endpoint struct {
	Transport string `json:"transport"` // "tcp"
	Family    string `json:"family"`    // "ipv4" | "ipv6"
	Address   string `json:"address"`   // traddr
	ServiceID string `json:"serviceID"` // trsvcid (port)
}

// Replica is one leg of a volume's mirror.
//
// State follows the replica's membership of the volume's md array (what the
// node acts on); PendingDelete tracks its copy on the storage node (what the
// sweeper acts on). They are separate because the two complete at
// different times and on different machines: a replaced replica is
// "removed" from the array at once but deleted from its storage node only
// when that node returns.
type Replica struct {
	ID          string       `json:"id"`
	StorageNode string       `json:"storageNode"`
	NQN         string       `json:"nqn"`
	Addresses   []Endpoint   `json:"addresses,omitempty"`
	State       ReplicaState `json:"state"`
	// PendingDelete: the storage node still holds this replica and must
	// delete it; the sweeper retries until its agent confirms.
	PendingDelete bool `json:"pendingDelete,omitempty"`
	// AllowedHost is the host NQN the agent last confirmed as allowed; the
	// sweeper reconciles it with the volume's PublishedHostNQN on agents
	// that were unreachable at publish or unpublish time.
	AllowedHost string `json:"allowedHost,omitempty"`
	// ReplacedBy / Replaces link a replacement to the replica it stands in
	// for, so ReplaceReplica can answer a retry with the same replica.
	ReplacedBy string `json:"replacedBy,omitempty"`
	Replaces   string `json:"replaces,omitempty"`
	// Move: this replica was added by a live move of Replaces (MoveReplica),
	// which stays active and leaves only when this one is recorded in
	// sync (then Move is cleared); a replacement's old replica left at
	// once.
	Move bool `json:"move,omitempty"`
	// OutOfSyncSince is when the replica stopped holding every write
	// acknowledged to the volume: the node reported that md failed or lost
	// it, or it was created empty as a replacement. Zero means in sync,
	// which is what every record written before the field existed reads
	// as. The node never starts the volume from out-of-sync replicas
	// alone: they would serve old data as if it were current.
	OutOfSyncSince time.Time `json:"outOfSyncSince,omitzero"`
	// OutOfSyncAtEvents is the md array's event count when the replica was
	// recorded out of sync (0 when unknown or in sync): which generation
	// of writes it misses everything after.
	OutOfSyncAtEvents uint64 `json:"outOfSyncAtEvents,omitempty"`
	// DivergedSince is when a promotion (PromoteReplicas) gave the replica
	// up: it may hold writes the volume no longer has, because the volume
	// was started again from other replicas. md cannot tell such a member
	// from an ordinary stale one once the running array's event count has
	// passed its own, and a bitmap re-add would then leave the writes the
	// promotion gave up in place on this leg only. So a diverged replica is
	// never assembled, connected or joined; it stays out of sync and is
	// replaced after maxReplicaDownTime. Zero for every other replica.
	DivergedSince time.Time `json:"divergedSince,omitzero"`
	CreatedAt     time.Time `json:"createdAt"`
	UpdatedAt     time.Time `json:"updatedAt"`
}

// Diverged reports whether a promotion gave the replica up.
func (r Replica) Diverged() bool { return !r.DivergedSince.IsZero() }

// InSync reports whether the registry holds the replica to have every
// acknowledged write.
func (r Replica) InSync() bool { return r.OutOfSyncSince.IsZero() }

// VolumeState is the volume's lifecycle state.
type VolumeState string

const (
	VolumeCreating VolumeState = "creating"
	VolumeReady    VolumeState = "ready"
	VolumeDeleting VolumeState = "deleting"
)

// Volume is the registry record of one volume.
type Volume struct {
	ID         string                  `json:"id"`
	Name       string                  `json:"name"` // CSI CreateVolume name; unique
	SizeBytes  int64                   `json:"sizeBytes"`
	Parameters storageclass.Parameters `json:"parameters"`
	State      VolumeState             `json:"state"`
	MDUUID     string                  `json:"mdUUID"`
	MDName     string                  `json:"mdName"`
	// PublishedHostNQN is the one host allowed on the replicas ("" when
	// unpublished); PublishedNodeID is the CSI node ID it was published for
	// (display and audit; the fence is the host NQN).
	PublishedHostNQN string    `json:"publishedHostNQN,omitempty"`
	PublishedNodeID  string    `json:"publishedNodeID,omitempty"`
	Replicas         []Replica `json:"replicas"`
	// Metadata describes the claim (PVC name and namespace, PV name), keyed
	// by the CSI parameter names the external-provisioner injects.
	Metadata map[string]string `json:"metadata,omitempty"`
	// DegradedSince is when a node first reported the volume degraded
	// (VolumeDegraded event); zero while the volume is whole. It lives
	// here, not only on the node, so it survives the node's restarts and
	// the pod moving to another node.
	DegradedSince time.Time `json:"degradedSince,omitzero"`
	// Repair is the offline repair running for the volume (nil: none).
	// While it is set no host may be published: PublishVolume stops the
	// repair first (StopRepair, then revoking its host on every replica).
	Repair *OfflineRepair `json:"repair,omitempty"`
	// Block: created for raw block access (no filesystem).
	Block bool `json:"block,omitempty"`
	// Source is what the volume was created from (a restore or a clone);
	// nil for an empty volume. Such a volume's replicas hold data before
	// any host staged it, so nothing may treat them as blank.
	Source    *ContentSource `json:"source,omitempty"`
	CreatedAt time.Time      `json:"createdAt"`
	UpdatedAt time.Time      `json:"updatedAt"`
}

// ContentSource names what a volume was created from: one of the two.
type ContentSource struct {
	SnapshotID string `json:"snapshotID,omitempty"`
	VolumeID   string `json:"volumeID,omitempty"`
}

// OfflineRepair is a storage node's repair of a volume no host has staged:
// that node connects to the replicas as HostNQN and lets md bring the
// out-of-sync ones up to date.
type OfflineRepair struct {
	ID          string `json:"id"`
	StorageNode string `json:"storageNode"`
	// HostNQN is the repairing storage node's host identity; the replicas
	// that allow it record it as their AllowedHost.
	HostNQN string `json:"hostNQN"`
	// Replicas are the out-of-sync replicas being brought up to date.
	Replicas  []string  `json:"replicas"`
	StartedAt time.Time `json:"startedAt"`
	// LeaseUntil: the storage node stops the repair by itself once this
	// passes without the provisioner asking for it.
	LeaseUntil time.Time `json:"leaseUntil"`
}

// Clone returns a deep copy, so callers can mutate without aliasing what a
// store (or another goroutine) holds.
func (v *Volume) Clone() *Volume {
	c := *v
	if v.Repair != nil {
		r := *v.Repair
		r.Replicas = append([]string(nil), v.Repair.Replicas...)
		c.Repair = &r
	}
	c.Parameters.Zones = append([]string(nil), v.Parameters.Zones...)
	c.Parameters.Racks = append([]string(nil), v.Parameters.Racks...)
	c.Parameters.StorageNodes = append([]string(nil), v.Parameters.StorageNodes...)
	c.Metadata = maps.Clone(v.Metadata)
	if v.Source != nil {
		src := *v.Source
		c.Source = &src
	}
	c.Replicas = make([]Replica, len(v.Replicas))
	for i, r := range v.Replicas {
		r.Addresses = append([]Endpoint(nil), r.Addresses...)
		c.Replicas[i] = r
	}
	return &c
}

// Replica returns the replica with id, or nil.
func (v *Volume) Replica(id string) *Replica {
	for i := range v.Replicas {
		if v.Replicas[i].ID == id {
			return &v.Replicas[i]
		}
	}
	return nil
}

// Tombstone is what the registry keeps of a volume it deleted: the volume's
// ID and every replica it ever recorded, with their storage nodes. It is
// the registry's proof that it once owned those replicas and let go of
// them, so a copy an agent still (or again) holds, e.g. created by a call
// that landed after the volume's deletion, may be reclaimed without an
// administrator; a replica the registry has no such proof for (a registry
// restored from a backup older than the volume) is only reported.
type Tombstone struct {
	VolumeID  string             `json:"volumeID"`
	Name      string             `json:"name"`
	Replicas  []TombstoneReplica `json:"replicas"`
	DeletedAt time.Time          `json:"deletedAt"`
}

// TombstoneReplica is one replica of a deleted volume.
type TombstoneReplica struct {
	ID          string `json:"id"`
	StorageNode string `json:"storageNode"`
}

// TombstoneOf returns the tombstone of v, deleted at t.
func TombstoneOf(v *Volume, t time.Time) *Tombstone {
	out := &Tombstone{VolumeID: v.ID, Name: v.Name, DeletedAt: t.UTC()}
	for _, r := range v.Replicas {
		out.Replicas = append(out.Replicas, TombstoneReplica{ID: r.ID, StorageNode: r.StorageNode})
	}
	return out
}

// SnapshotState is a snapshot's lifecycle state.
type SnapshotState string

const (
	// SnapshotCreating: recorded before any copy is cut; the sweeper
	// finishes it or rolls it back if the provisioner stops half way.
	SnapshotCreating SnapshotState = "creating"
	// SnapshotReady: every wanted copy is complete.
	SnapshotReady SnapshotState = "ready"
	// SnapshotDeleting: its copies are being deleted (storage nodes that
	// are away delete theirs when they return); the record goes when the
	// last copy is gone.
	SnapshotDeleting SnapshotState = "deleting"
)

// CopyState is the state of one storage node's copy of a snapshot.
type CopyState string

const (
	// CopyCutting: the copy is being cut or received; not yet usable.
	CopyCutting CopyState = "cutting"
	CopyReady   CopyState = "ready"
	// CopyDeleting: to be deleted from its storage node (retried).
	CopyDeleting CopyState = "deleting"
)

// SnapshotCopy is one storage node's copy of a snapshot. Every ready copy
// of a snapshot holds identical bytes.
type SnapshotCopy struct {
	StorageNode    string    `json:"storageNode"`
	State          CopyState `json:"state"`
	AllocatedBytes int64     `json:"allocatedBytes,omitempty"`
	Reflinked      bool      `json:"reflinked,omitempty"`
}

// Snapshot is the registry record of one volume snapshot: a
// crash-consistent point-in-time image of the source volume, kept as
// identical copies (files named by the snapshot ID) on storage nodes.
type Snapshot struct {
	ID             string `json:"id"`
	Name           string `json:"name"` // CSI CreateSnapshot name; unique
	SourceVolumeID string `json:"sourceVolumeID"`
	// SizeBytes is the source volume's size at the cut: the smallest
	// volume the snapshot restores into.
	SizeBytes int64 `json:"sizeBytes"`
	// DataOffset is where the volume's data starts in each copy (the md
	// data offset of a mirrored source; 0 for a one-replica one).
	DataOffset int64 `json:"dataOffset"`
	// WantCopies is how many storage nodes keep a copy: the source's
	// replica count at the cut.
	WantCopies int            `json:"wantCopies"`
	Copies     []SnapshotCopy `json:"copies"`
	State      SnapshotState  `json:"state"`
	// GroupID is the group snapshot it belongs to ("" when none).
	GroupID string `json:"groupID,omitempty"`
	// Internal: taken by the provisioner for a clone, never listed to CSI;
	// deleted once the clone exists.
	Internal bool `json:"internal,omitempty"`
	// Parameters are the VolumeSnapshotClass parameters.
	Parameters map[string]string `json:"parameters,omitempty"`
	// SourceParameters and SourceBlock are the source volume's, so a
	// restore knows them after the source is gone.
	SourceParameters storageclass.Parameters `json:"sourceParameters"`
	SourceBlock      bool                    `json:"sourceBlock,omitempty"`
	// CutAt is the point in time the snapshot holds (zero until cut).
	CutAt     time.Time `json:"cutAt,omitzero"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Clone returns a deep copy.
func (s *Snapshot) Clone() *Snapshot {
	c := *s
	c.Copies = append([]SnapshotCopy(nil), s.Copies...)
	c.Parameters = maps.Clone(s.Parameters)
	c.SourceParameters.Zones = append([]string(nil), s.SourceParameters.Zones...)
	c.SourceParameters.Racks = append([]string(nil), s.SourceParameters.Racks...)
	c.SourceParameters.StorageNodes = append([]string(nil), s.SourceParameters.StorageNodes...)
	return &c
}

// Copy returns the copy on storageNode, or nil.
func (s *Snapshot) Copy(storageNode string) *SnapshotCopy {
	for i := range s.Copies {
		if s.Copies[i].StorageNode == storageNode {
			return &s.Copies[i]
		}
	}
	return nil
}

// SnapshotGroup is the registry record of a group snapshot: snapshots of
// several volumes cut at one crash-consistent point.
type SnapshotGroup struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"` // CSI group snapshot name; unique
	VolumeIDs   []string          `json:"volumeIDs"`
	SnapshotIDs []string          `json:"snapshotIDs"`
	State       SnapshotState     `json:"state"`
	Parameters  map[string]string `json:"parameters,omitempty"`
	CutAt       time.Time         `json:"cutAt,omitzero"`
	CreatedAt   time.Time         `json:"createdAt"`
	UpdatedAt   time.Time         `json:"updatedAt"`
}

// Clone returns a deep copy.
func (g *SnapshotGroup) Clone() *SnapshotGroup {
	c := *g
	c.VolumeIDs = append([]string(nil), g.VolumeIDs...)
	c.SnapshotIDs = append([]string(nil), g.SnapshotIDs...)
	c.Parameters = maps.Clone(g.Parameters)
	return &c
}

// StorageNode is a registered target agent.
type StorageNode struct {
	ID       string            `json:"id"`
	Address  string            `json:"address"` // agent gRPC endpoint
	Labels   map[string]string `json:"labels,omitempty"`
	LastSeen time.Time         `json:"lastSeen"`
	// Cordoned: no new replica is placed here (an admin's nvmirrorctl
	// cordon, before maintenance); the replicas it holds keep serving.
	Cordoned bool `json:"cordoned,omitempty"`
	// Draining: an admin asked for every replica to move away (the node is
	// cordoned too); the provisioner's drainer moves them, a few at a time.
	Draining bool `json:"draining,omitempty"`
}

// HostCredentials are the NVMe in-band authentication (DH-HMAC-CHAP) secrets
// of one host (a compute node's host NQN), one set per storage node. They
// are per (host, storage node) and not per volume because the kernel target
// keeps secrets on its global entry for the host: every replica a host is
// allowed on, on one storage node, authenticates with the same secrets. A
// storage node that leaks its secrets therefore exposes only its own pairs.
type HostCredentials struct {
	HostNQN string `json:"hostNQN"`
	// Pairs by storage node ID.
	Pairs     map[string]PairCredentials `json:"pairs,omitempty"`
	UpdatedAt time.Time                  `json:"updatedAt"`
}

// Secrets is one generation of a pair's secrets, in the NVMe "DHHC-1:"
// representation.
type Secrets struct {
	// Secret is the host's key; CtrlSecret the storage node's key for
	// bidirectional authentication (always generated with Secret, so a
	// volume asking for bidirectional never needs a rotation first).
	Secret     string    `json:"secret"`
	CtrlSecret string    `json:"ctrlSecret"`
	Generation int64     `json:"generation"`
	CreatedAt  time.Time `json:"createdAt"`
}

// IsZero reports whether no secrets are set.
func (s Secrets) IsZero() bool { return s.Secret == "" }

// PairCredentials are the secrets between one host and one storage node.
type PairCredentials struct {
	// Applied: what the storage node confirmed it holds; what the host
	// connects and re-authenticates with.
	Applied Secrets `json:"applied"`
	// Pending: a rotation the storage node has not confirmed yet (zero when
	// none). It is pushed again until confirmed, then becomes Applied. The
	// host never uses it before: a host re-keyed ahead of its storage node
	// would fail authentication.
	Pending Secrets `json:"pending,omitzero"`
}

// Clone returns a deep copy.
func (c *HostCredentials) Clone() *HostCredentials {
	out := *c
	out.Pairs = maps.Clone(c.Pairs)
	return &out
}

// DefaultEventRetention is how many events a store keeps when not told:
// enough for weeks of a busy cluster's events, small enough (~30 MB) that
// the registry stays light. Oldest are dropped first; syslog is the
// long-term archive.
const DefaultEventRetention = 100000

// Store is the registry. Implementations are safe for concurrent use.
type Store interface {
	// CreateVolume records a new volume; ErrAlreadyExists if its ID or its
	// name is taken.
	CreateVolume(ctx context.Context, v *Volume) error
	// GetVolume returns a copy of the volume; ErrNotFound if absent.
	GetVolume(ctx context.Context, id string) (*Volume, error)
	// GetVolumeByName finds a volume by its CSI name; ErrNotFound if absent.
	GetVolumeByName(ctx context.Context, name string) (*Volume, error)
	// ListVolumes returns every volume, ordered by ID.
	ListVolumes(ctx context.Context) ([]*Volume, error)
	// ListVolumesAfter returns up to limit (> 0) volumes whose ID sorts
	// after `after` ("": from the first), ordered by ID: one range read of
	// that many records, not of the whole registry (the pages of
	// ListVolumes).
	ListVolumesAfter(ctx context.Context, after string, limit int) ([]*Volume, error)
	// UpdateVolume applies fn to the current record and stores the result
	// atomically. fn may run more than once (after a conflicting write) and
	// must not have side effects beyond the volume; an error from fn aborts
	// and is returned as is. The volume's ID and Name are immutable.
	// Returns the stored record.
	UpdateVolume(ctx context.Context, id string, fn func(*Volume) error) (*Volume, error)
	// DeleteVolume removes the record (and frees its name) and, in the
	// same transaction, records its Tombstone (TombstoneOf, at the time of
	// the deletion); ErrNotFound if absent.
	DeleteVolume(ctx context.Context, id string) error
	// ListTombstones returns the tombstones of deleted volumes, ordered by
	// volume ID.
	ListTombstones(ctx context.Context) ([]*Tombstone, error)
	// DeleteTombstone forgets a tombstone (expiry); ErrNotFound if absent.
	DeleteTombstone(ctx context.Context, volumeID string) error

	// CreateSnapshot records a new snapshot; ErrAlreadyExists if its ID or
	// its name is taken.
	CreateSnapshot(ctx context.Context, s *Snapshot) error
	// GetSnapshot returns a copy; ErrNotFound if absent.
	GetSnapshot(ctx context.Context, id string) (*Snapshot, error)
	// GetSnapshotByName finds a snapshot by its CSI name; ErrNotFound if
	// absent.
	GetSnapshotByName(ctx context.Context, name string) (*Snapshot, error)
	// ListSnapshots returns every snapshot, ordered by ID.
	ListSnapshots(ctx context.Context) ([]*Snapshot, error)
	// UpdateSnapshot is UpdateVolume for snapshots (ID and Name immutable).
	UpdateSnapshot(ctx context.Context, id string, fn func(*Snapshot) error) (*Snapshot, error)
	// DeleteSnapshot removes the record and frees its name; ErrNotFound if
	// absent.
	DeleteSnapshot(ctx context.Context, id string) error

	// CreateSnapshotGroup, GetSnapshotGroup, GetSnapshotGroupByName,
	// ListSnapshotGroups, UpdateSnapshotGroup and DeleteSnapshotGroup are
	// the same for group snapshots.
	CreateSnapshotGroup(ctx context.Context, g *SnapshotGroup) error
	GetSnapshotGroup(ctx context.Context, id string) (*SnapshotGroup, error)
	GetSnapshotGroupByName(ctx context.Context, name string) (*SnapshotGroup, error)
	ListSnapshotGroups(ctx context.Context) ([]*SnapshotGroup, error)
	UpdateSnapshotGroup(ctx context.Context, id string, fn func(*SnapshotGroup) error) (*SnapshotGroup, error)
	DeleteSnapshotGroup(ctx context.Context, id string) error

	// PutStorageNode creates or replaces a storage node record.
	PutStorageNode(ctx context.Context, n *StorageNode) error
	GetStorageNode(ctx context.Context, id string) (*StorageNode, error)
	ListStorageNodes(ctx context.Context) ([]*StorageNode, error)
	DeleteStorageNode(ctx context.Context, id string) error

	// GetHostCredentials returns a copy of a host's credentials;
	// ErrNotFound if none were ever set.
	GetHostCredentials(ctx context.Context, hostNQN string) (*HostCredentials, error)
	// UpdateHostCredentials applies fn to the host's current credentials
	// (an empty record with HostNQN set when there are none) and stores the
	// result atomically, like UpdateVolume: fn may run more than once and
	// must have no side effects. Returns the stored record.
	UpdateHostCredentials(ctx context.Context, hostNQN string, fn func(*HostCredentials) error) (*HostCredentials, error)

	// AppendEvent records e, assigning Seq (strictly increasing), and
	// drops the oldest events beyond the retention. An event whose ID is
	// already recorded (and still retained) is not recorded again: the
	// stored one is returned with added false, so a reporter's resend is
	// harmless.
	AppendEvent(ctx context.Context, e events.Event) (rec events.Event, added bool, err error)
	// ListEvents returns matching events, oldest first.
	ListEvents(ctx context.Context, f events.Filter) ([]events.Event, error)

	// Leader campaigns for leadership of the provisioner (candidate names
	// this process). The channel receives true when this process becomes
	// leader and false when it loses leadership; it is closed after ctx
	// ends (leadership is resigned). A store with a single writer (bolt:
	// the file is locked by one process) is always leader.
	Leader(ctx context.Context, candidate string) (<-chan bool, error)
	// IsLeader reports the current leadership.
	IsLeader() bool

	Close() error
}

// NamedRecords describes a kind of record with a unique ID and a unique
// name (snapshots and their groups), so each store implements the kind's
// methods once, generically.
type NamedRecords[T any] struct {
	Kind  string
	Clone func(T) T
	Key   func(T) (id, name string)
	// Stamp sets the record's creation time (if unset) and update time.
	Stamp func(T, time.Time)
}

// SnapshotRecords and SnapshotGroupRecords describe the snapshot kinds.
var (
	SnapshotRecords = NamedRecords[*Snapshot]{
		Kind:  "snapshot",
		Clone: (*Snapshot).Clone,
		Key:   func(s *Snapshot) (string, string) { return s.ID, s.Name },
		Stamp: func(s *Snapshot, now time.Time) { stamp(&s.CreatedAt, &s.UpdatedAt, now) },
	}
	SnapshotGroupRecords = NamedRecords[*SnapshotGroup]{
		Kind:  "snapshot group",
		Clone: (*SnapshotGroup).Clone,
		Key:   func(g *SnapshotGroup) (string, string) { return g.ID, g.Name },
		Stamp: func(g *SnapshotGroup, now time.Time) { stamp(&g.CreatedAt, &g.UpdatedAt, now) },
	}
)

func stamp(created, updated *time.Time, now time.Time) {
	if created.IsZero() {
		*created = now
	}
	*updated = now
}
