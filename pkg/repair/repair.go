// Package repair runs offline repairs on a storage node: for a volume that
// no compute node has staged, this machine acts as the volume's NVMe host
// for a while, assembles its md RAID1 from the replicas recorded in sync,
// brings the out-of-sync ones up to date with md itself (a bitmap re-add
// for a replica that was a member: only what changed is copied; a full
// recovery for a new, blank replacement), then stops the array and
// disconnects. md does the copying, so every rule md keeps for a staged
// volume (event counts, the bitmap, recovery checkpoints) holds here too,
// and a compute node that stages the volume afterwards, or in the middle,
// finds ordinary md members.
//
// The agent serves it over its gRPC API (StartRepair, GetRepair,
// StopRepair); the provisioner decides when to repair, on which storage
// node, and fences the volume (no compute host allowed) meanwhile.
//
// A repair holds a lease: every Get renews it, and a repair whose lease
// runs out stops itself, so a storage node cut off from the provisioner
// stops writing to a volume that another host may take over.
package repair

import (
	"errors"
	"time"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// Sentinel errors; the agent maps them to gRPC codes.
var (
	// ErrInvalidArgument: a request field is malformed (the message names
	// it).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: no repair with that ID.
	ErrNotFound = errors.New("not found")
	// ErrBusy: another repair of the same volume runs.
	ErrBusy = errors.New("another repair of the volume is running")
	// ErrStopped: the repair ID was stopped and is never started again.
	ErrStopped = errors.New("repair was stopped")
	// ErrIdentity: a device is not what the registry says it is (namespace
	// identity, md array UUID, or data where a blank replica was expected).
	ErrIdentity = errors.New("identity check failed")
	// ErrNewerData: an out-of-sync member carries a higher md event count
	// than the in-sync ones (it went on taking writes they never saw, as
	// after nvmirrorctl promote); md would resync those writes away. The
	// same error as md's joining rule gives (mdraid.Join).
	ErrNewerData = mdraid.ErrNewerMember
)

// Member is one replica of the volume being repaired.
type Member struct {
	volume.Replica
	// InSync: the array is assembled from these; the others are brought up
	// to date.
	InSync bool
	// Secret and CtrlSecret are the DH-HMAC-CHAP secrets to connect with
	// ("" when the volume has no authentication; CtrlSecret only for
	// bidirectional authentication).
	Secret, CtrlSecret string
}

// Request is one repair.
type Request struct {
	ID, VolumeID string
	// MDUUID is the array's UUID in mdraid.NormalizeUUID's form.
	MDUUID  string
	Members []Member
	// MaxRebuildKiBps caps md's resync rate for this array (0: md's
	// default).
	MaxRebuildKiBps uint64
	// Lease is how long the repair runs without a Get before it stops
	// itself.
	Lease time.Duration
}

// State is where a repair is.
type State string

const (
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Stopped   State = "stopped"
)

// Done reports whether the repair has ended (nothing of it runs).
func (s State) Done() bool { return s != Running }

// Status is a repair's state and progress.
type Status struct {
	ID, VolumeID string
	State        State
	// Message says why it failed or stopped, or what it is doing.
	Message string
	// SyncDoneBytes and SyncTotalBytes are md's recovery progress.
	SyncDoneBytes, SyncTotalBytes uint64
	// BytesWritten is what the repair wrote to the out-of-sync members'
	// devices (their block device write counters): what it copied.
	BytesWritten uint64
	// Synced are the members brought in sync (every out-of-sync one when
	// Succeeded).
	Synced []string
	// BitmapReAdd says per out-of-sync member whether md re-added it from
	// the bitmap (true) or recovered it in full (false).
	BitmapReAdd map[string]bool
}

// maxIDLength bounds repair IDs (the agent's character rules).
const maxIDLength = 63

// Validate names the first malformed field.
func (r Request) Validate() error {
	switch {
	case !validID(r.ID):
		return fieldError("repair_id", "want [a-z0-9][a-z0-9-]{0,62}, got %q", r.ID)
	case r.VolumeID == "":
		return fieldError("volume_id", "is empty")
	case r.MDUUID == "":
		return fieldError("md_uuid", "is empty")
	case r.Lease <= 0:
		return fieldError("lease_seconds", "must be > 0")
	}
	var inSync, outOfSync int
	seen := map[string]bool{}
	for _, m := range r.Members {
		switch {
		case m.ID == "" || seen[m.ID]:
			return fieldError("members.replica_id", "empty or repeated: %q", m.ID)
		case m.NQN == "":
			return fieldError("members.nqn", "empty for replica %s", m.ID)
		case len(m.Endpoints) == 0:
			return fieldError("members.endpoints", "none for replica %s", m.ID)
		case m.CtrlSecret != "" && m.Secret == "":
			return fieldError("members.dhchap_ctrl_secret", "set without dhchap_secret for replica %s", m.ID)
		}
		seen[m.ID] = true
		if m.InSync {
			inSync++
		} else {
			outOfSync++
		}
	}
	if inSync == 0 {
		return fieldError("members", "no in-sync member: the array would start from stale data")
	}
	if outOfSync == 0 {
		return fieldError("members", "no out-of-sync member: nothing to repair")
	}
	return nil
}

func validID(s string) bool {
	if s == "" || len(s) > maxIDLength {
		return false
	}
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0
		if !ok {
			return false
		}
	}
	return true
}
