// Package healer keeps the md RAID1 mirrors of the volumes staged on this
// node whole: it watches md and the NVMe-oF controllers of every replica,
// re-adds replicas that come back, completes deletions the provisioner
// recorded, replaces replicas that stayed away past maxReplicaDownTime, and
// reports each transition once as an event (docs/healer.md, section "Events").
//
// The package is split the way the rules are tested: observe.go reads the
// system into an Observation (no process spawned); Decide (decide.go, with
// the replica views of views.go, the session and host events of
// sessions.go, and RecordOutcomes in outcomes.go) is a pure function from
// Observation, Config, Memory and the time to actions, events and the next
// Memory; rekey.go decides and runs DH-HMAC-CHAP re-keys; act.go runs the
// actions through small interfaces; healer.go is the loop, memory.go its
// persistence, queue.go delivers events, and metrics.go exports what the
// loop saw.
package healer

import (
	"time"

	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// Observation is what one cycle saw on this node.
type Observation struct {
	// Volumes are the staged volumes, ordered by ID.
	Volumes []VolumeObservation
}

// VolumeObservation is one staged volume as seen this cycle.
type VolumeObservation struct {
	VolumeID string
	// Staged is false while NodeStage runs; such volumes are only watched.
	Staged bool
	// MDUUID is the volume's array UUID (NormalizeUUID form); empty for a
	// single-replica volume, which has no array and only host events.
	MDUUID string
	// Array is the running array whose UUID is MDUUID; nil when none runs.
	Array *ArrayObservation
	// Record is the provisioner's record of the volume: read this cycle
	// when RecordFresh, else the last copy read (nil if none). Decisions
	// that change the mirror's membership need a fresh one.
	Record      *volume.Volume
	RecordFresh bool
	// StagedReplicas are the replica subsystems recorded in the staging
	// state (connected by NodeStage or by the healer).
	StagedReplicas []stagestate.Replica
	// Controllers are the NVMe controllers of each replica NQN of the
	// volume (staged or configured); a NQN without any is absent.
	Controllers map[string][]ControllerObservation
}

// ArrayObservation is the part of mdraid.Array decisions use.
type ArrayObservation struct {
	Name, Device, UUID string
	// State is md/array_state (clean, active, broken...).
	State      string
	RaidDisks  int
	Degraded   int
	SyncAction string
	// SyncDone and SyncTotal are sectors; both zero when no sync runs.
	SyncDone, SyncTotal uint64
	// SyncSpeedKiB is the running sync's rate (md/sync_speed, KiB/s).
	SyncSpeedKiB uint64
	// SyncSpeedMaxKiB is the array's rate limit (md/sync_speed_max);
	// SyncSpeedMaxSystem when it is the system-wide one.
	SyncSpeedMaxKiB    uint64
	SyncSpeedMaxSystem bool
	Members            []MemberObservation
}

// MemberObservation is one md member.
type MemberObservation struct {
	// Device is the kernel block device name, e.g. "nvme1n1".
	Device string
	// Identities are the namespace's uuid/nguid from /sys/block/<Device>;
	// empty when the device is gone (its controller was deleted while md
	// still holds the member, as an idle array does).
	Identities []string
	Slot       int
	InSync     bool
	Faulty     bool
	Spare      bool
}

// ControllerObservation is one NVMe controller of a replica subsystem.
type ControllerObservation struct {
	Name  string
	State host.ControllerState
	// TrAddr and TrSvcID are the target address and port.
	TrAddr, TrSvcID string
}

// Config are the healer's settings (flags of nvmirror-csi in node mode).
type Config struct {
	// NodeID is the CSI node ID named in events as the observing node.
	NodeID string
	// Interval is the periodic check (--heal-interval, default 30 s), the
	// backstop behind md and NVMe change notifications.
	Interval time.Duration
	// NVMePollInterval is how often every controller's state is re-read
	// between cycles when the kernel log cannot be followed
	// (--nvme-poll-interval, default 1 s): md does not notice a lost leg of
	// an idle array, so controller states are the first sign.
	NVMePollInterval time.Duration
	// NVMeBackstopInterval is how often every controller's state is
	// re-read while the kernel log is followed (--nvme-backstop-interval,
	// default 10 s): the log names the controllers whose state changes,
	// and they are read at once; this full read catches a change the
	// kernel did not log.
	NVMeBackstopInterval time.Duration
	// HealTimeUnit is the unit of maxReplicaDownTime (--heal-time-unit).
	// One minute in production; tests and VM scenarios shrink it (e.g. 1s)
	// so that "2 minutes" passes in 2 seconds. Only for tests.
	HealTimeUnit time.Duration
	// MaxConcurrentReplacements bounds the replacements this node runs at
	// once (--max-concurrent-replacements, default 2): a storage node that
	// dies takes many volumes' replicas with it, and replacing them all at
	// once would saturate the network (a rebuild storm).
	MaxConcurrentReplacements int
	// MaxRebuildBandwidthMiBps caps the sum of this node's md rebuild
	// rates (--max-rebuild-bandwidth, MiB/s; 0: no node-wide cap): the
	// arrays rebuilding at once share it equally, each also under its
	// volume's rebuildBandwidthLimit. Every rebuild counts: re-adds,
	// replacements and resyncs.
	MaxRebuildBandwidthMiBps int
	// FailGoneMembers makes the healer fail, in md, the member of a replica
	// whose controller is gone (deleted by the kernel after ctrl_loss_tmo)
	// while md still counts it in sync, as an idle array does. md then
	// shows the truth, the write-intent bitmap starts tracking what the
	// replica misses, and the next write does not stall on a dead leg.
	// A controller that is only reconnecting is left alone: it may come
	// back within ctrl_loss_tmo with no resync at all.
	FailGoneMembers bool
	// RetryBase and RetryMax bound the exponential backoff between attempts
	// to bring a replica back (connect, re-add) or retire one.
	RetryBase, RetryMax time.Duration
	// ReplaceRetry is the wait after a failed ReplaceReplica (no room, four
	// replicas, provisioner error) before asking again.
	ReplaceRetry time.Duration
}

// DefaultConfig returns the production settings.
func DefaultConfig() Config {
	return Config{
		Interval:                  30 * time.Second,
		NVMePollInterval:          time.Second,
		NVMeBackstopInterval:      10 * time.Second,
		HealTimeUnit:              time.Minute,
		MaxConcurrentReplacements: 2,
		FailGoneMembers:           true,
		RetryBase:                 30 * time.Second,
		RetryMax:                  10 * time.Minute,
		ReplaceRetry:              5 * time.Minute,
	}
}

// Memory is what the healer remembers between cycles and across restarts
// (persisted as JSON in the state directory). Every clock in it is an
// absolute timestamp, so any maxReplicaDownTime works and a restart keeps
// the moment a volume became degraded.
type Memory struct {
	Version int `json:"version"`
	// Volumes by volume ID.
	Volumes map[string]VolumeMemory `json:"volumes,omitempty"`
	// Hosts by storage node name: the last reported state of this node's
	// NVMe-oF connection to it (edge detection for Host events).
	Hosts map[string]HostMemory `json:"hosts,omitempty"`
}

// MemoryVersion is the current layout of Memory.
const MemoryVersion = 1

// VolumeMemory is one volume's state.
type VolumeMemory struct {
	// DegradedSince is when the current degradation began (zero when whole).
	DegradedSince time.Time `json:"degradedSince,omitzero"`
	// Named are the replicas the Degraded events of this episode named; a
	// replica going down that is not among them sends a new Degraded event,
	// and Healed names them all.
	Named []string `json:"named,omitempty"`
	// Sync is the resync being reported.
	Sync SyncMemory `json:"sync,omitzero"`
	// Replicas by replica ID.
	Replicas map[string]ReplicaMemory `json:"replicas,omitempty"`
	// Replacements in progress: removed when the new replica is in sync.
	Replacements []Replacement `json:"replacements,omitempty"`
	// SessionsTracked is set once the replicas' Sessions have been
	// recorded. A volume known from a memory written before sessions were
	// tracked has it unset: its live sessions are then recorded without
	// SessionEstablished events (they were not established now).
	SessionsTracked bool `json:"sessionsTracked,omitempty"`
}

// SyncMemory is a resync between its Started and Ended events.
type SyncMemory struct {
	Active   bool      `json:"active,omitempty"`
	Since    time.Time `json:"since,omitzero"`
	Replicas []string  `json:"replicas,omitempty"`
}

// ReplicaMemory is one replica's state.
type ReplicaMemory struct {
	StorageNode string `json:"storageNode,omitempty"`
	// LastState is the provisioner state last read, so that a replica
	// known deleted or removed stays so during a provisioner outage.
	LastState volume.ReplicaState `json:"lastState,omitempty"`
	// Member is the md member device last bound for this replica: after
	// its controller is deleted the device's identity can no longer be
	// read, but md still lists it under this name.
	Member string `json:"member,omitempty"`
	// DownSince is when the replica was first seen down (zero when up).
	DownSince time.Time `json:"downSince,omitzero"`
	// JoinedAt is when the healer added it back to md; cleared once its
	// sync has been seen to end.
	JoinedAt time.Time `json:"joinedAt,omitzero"`
	// Attempts and NextAttempt pace retries of join and retire actions.
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"nextAttempt,omitzero"`
	// NextReplace paces ReplaceReplica after a failure.
	NextReplace time.Time `json:"nextReplace,omitzero"`
	// ReplacedBy is the replica that replaced this one: it never rejoins.
	ReplacedBy string `json:"replacedBy,omitempty"`
	// Removed is set once MarkReplicaRemoved succeeded.
	Removed bool `json:"removed,omitempty"`
	// Sessions are the replica's live NVMe-oF controllers last seen, by
	// controller name (edge detection for the Session events).
	Sessions map[string]SessionMemory `json:"sessions,omitempty"`
}

// SessionMemory is one live NVMe-oF session (controller) of a replica.
type SessionMemory struct {
	// TrAddr and TrSvcID are the target address and port.
	TrAddr  string `json:"trAddr,omitempty"`
	TrSvcID string `json:"trSvcID,omitempty"`
	// Since is when the session was first seen live.
	Since time.Time `json:"since"`
}

// Replacement is a replacement between ReplaceReplica and the end of the
// new replica's sync; they count against MaxConcurrentReplacements.
type Replacement struct {
	Missing string    `json:"missing"`
	New     string    `json:"new"`
	Started time.Time `json:"started"`
}

// HostMemory is the last reported state of the connection to a storage node.
type HostMemory struct {
	Down  bool      `json:"down,omitempty"`
	Since time.Time `json:"since"`
}

// ActionKind names what an action does.
type ActionKind string

const (
	// ActFail fails the member of a replica whose controller is gone while
	// md still counts it in sync (see Config.FailGoneMembers).
	ActFail ActionKind = "fail"
	// ActJoin brings a replica (back) into the array: connect when no
	// controller exists, find its device by NQN and namespace UUID, check
	// its md superblock, remove its stale faulty member, then re-add
	// (bitmap) and fall back to add when md refuses the re-add.
	ActJoin ActionKind = "join"
	// ActRetire takes a deleted or removed replica out: fail and remove its
	// member if md holds it, disconnect it, and for a deleted replica mark
	// it removed at the provisioner (Mark).
	ActRetire ActionKind = "retire"
	// ActReplace asks the provisioner for a replacement of a replica down
	// past maxReplicaDownTime, takes the old member out of md, and joins
	// the new replica.
	ActReplace ActionKind = "replace"
	// ActRecordSync records at the provisioner that the replica stopped
	// (InSync false) or resumed holding every write: the record NodeStage
	// on any node starts arrays by. Not paced, never waiting for a
	// volume's lock: it changes nothing here.
	ActRecordSync ActionKind = "record-sync"
	// ActSetRebuildRate sets the array's md rebuild rate limit
	// (RebuildKiBps; 0: md's system limit). Not behind the volume's lock:
	// it changes only a rate.
	ActSetRebuildRate ActionKind = "set-rebuild-rate"
	// ActSetSlots brings md's slot count to the replicas the volume has
	// (Slots): down when md holds no more members than that (a replica
	// that left the configuration while the array ran elsewhere, as a move
	// completed offline, leaves a slot md counts as missing), up when a
	// spare waits for a slot (a join that added it but could not grow).
	ActSetSlots ActionKind = "set-slots"
)

// Action is one repair.
type Action struct {
	Kind     ActionKind
	VolumeID string
	// MDDevice and MDUUID identify the array: act re-reads it and checks
	// the UUID before changing anything.
	MDDevice, MDUUID string
	Replica          volume.Replica
	// Member is the replica's md member device, when md holds one.
	Member string
	// Connect is set when the replica has no controller and join must
	// connect it first.
	Connect bool
	// Auth is the volume's authentication mode ("" = none):
	// a connect for host or bidirectional never goes without secrets.
	Auth storageclass.Authentication
	// InSync, on ActRecordSync: the state to record.
	InSync bool
	// RebuildKiBps, on ActSetRebuildRate: the limit in KiB/s.
	RebuildKiBps uint64
	// Mark: retire marks the replica removed at the provisioner.
	Mark bool
	// Slots: how many replicas the volume has (active in its
	// configuration). A join or replacement grows md's slot count to it
	// (a live move or a higher replica count has one replica more than the
	// array had slots); a retire shrinks it to it, so the array stops
	// counting a replica that left as missing. 0 leaves the slots alone.
	Slots int
}

// Outcome is what acting did.
type Outcome struct {
	Action Action
	Err    error
	// ReAdded is true when md took the replica back with --re-add (bitmap
	// resync); false after a full --add.
	ReAdded bool
	// Joined is true when the replica (for replace: the new one) is now
	// in the array, syncing.
	Joined bool
	// NewReplica is the replacement ReplaceReplica returned.
	NewReplica *volume.Replica
	// Record is the volume's record as the provisioner answered a sync
	// report with it: what the next cycles compare md with, rather than the
	// copy read before the report.
	Record *volume.Volume
}
