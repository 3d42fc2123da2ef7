package provisioner

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// A replica's sync state is what keeps a node from starting a volume from
// stale data. md knows which member missed writes only while the array
// runs on one node; once that node is gone, the members' superblocks are
// all another node has, and a member md failed long ago assembles as
// happily as a current one. The registry therefore records, per replica,
// since when it has been out of sync: the node reports it (ReportReplicaSync)
// and NodeStage refuses to start a volume from out-of-sync replicas alone.
// PromoteReplicas is the administrator's escape when the in-sync replicas
// are gone for good.

// SyncReport is a node's report of one replica's state in its md array.
type SyncReport struct {
	VolumeID, ReplicaID string
	// InSync false: md failed or lost the member. True: recovery onto it
	// finished.
	InSync bool
	// ObservedAt is when the node saw it; required when InSync is false.
	ObservedAt time.Time
	// ArrayEvents is the md array's event count when the node saw it.
	ArrayEvents uint64
	// NodeID is the reporting CSI node (logs).
	NodeID string
}

// validate names the wire field that is wrong.
func (r SyncReport) validate() error {
	switch {
	case r.VolumeID == "":
		return fmt.Errorf("%w: volume_id is empty", ErrInvalidArgument)
	case r.ReplicaID == "":
		return fmt.Errorf("%w: replica_id is empty", ErrInvalidArgument)
	case !r.InSync && r.ObservedAt.IsZero():
		return fmt.Errorf("%w: observed_at is required when in_sync is false (it becomes the replica's out-of-sync time)", ErrInvalidArgument)
	}
	return nil
}

// inSyncActive returns the IDs of the volume's active, in-sync replicas
// other than except: the replicas that hold every acknowledged write.
func inSyncActive(v *store.Volume, except string) []string {
	var out []string
	for _, r := range v.Replicas {
		if r.ID != except && r.State == store.ReplicaActive && r.InSync() {
			out = append(out, r.ID)
		}
	}
	return out
}

// ReportReplicaSync records what the node's md says of an active replica
// and returns the volume.
//
//   - Out of sync: idempotent; the earliest time reported is kept with its
//     md event count, so a late resend of an older report moves the time
//     back and a newer one changes nothing.
//   - In sync: clears both. A report whose md event count is below the
//     one recorded when the replica went out of sync predates that failure
//     (a node's queue resending an old report) and changes nothing.
//   - Refused (ErrFailedPrecondition) for a replica that is not active,
//     and for an out-of-sync report on the last in-sync active replica: md
//     never fails the last member of a RAID1, so that report comes from a
//     bug or a stale node, and recording it would erase the only evidence
//     of which replica holds the data.
//   - A diverged replica (given up by a promotion) stays out of sync: an
//     out-of-sync report changes nothing, an in-sync one is refused
//     (ErrFailedPrecondition).
//   - Unknown volume or replica: ErrNotFound.
func (s *Service) ReportReplicaSync(ctx context.Context, r SyncReport) (*store.Volume, error) {
	if err := s.requireLeader(); err != nil {
		return nil, err
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	changed := false
	var moved *store.Replica
	v, err := s.o.Store.UpdateVolume(ctx, r.VolumeID, func(v *store.Volume) error {
		changed, moved = false, nil // fn may run again after a conflict
		rep := v.Replica(r.ReplicaID)
		if rep == nil {
			return fmt.Errorf("volume %s has no replica %s: %w", r.VolumeID, r.ReplicaID, ErrNotFound)
		}
		if rep.State != store.ReplicaActive {
			return fmt.Errorf("replica %s of volume %s is %s, not active; only an active replica's sync state is recorded: %w", r.ReplicaID, r.VolumeID, rep.State, ErrFailedPrecondition)
		}
		if rep.Diverged() {
			if !r.InSync {
				return nil // out of sync it stays
			}
			// No node joins a diverged replica, so md holding it in sync
			// means a node that predates the promotion still runs the old
			// history; recording it would hide which data the volume has.
			return fmt.Errorf("replica %s of volume %s was given up by a promotion at %s (it may hold writes the volume no longer has) and never returns "+
				"in sync; node %q reports it in sync: %w", r.ReplicaID, r.VolumeID, rep.DivergedSince.UTC().Format(time.RFC3339), r.NodeID, ErrFailedPrecondition)
		}
		if r.InSync {
			if rep.InSync() {
				return nil
			}
			if r.ArrayEvents != 0 && rep.OutOfSyncAtEvents != 0 && r.ArrayEvents < rep.OutOfSyncAtEvents {
				klog.V(2).InfoS("Ignoring an in-sync report older than the replica's failure", "volume", r.VolumeID, "replica", r.ReplicaID,
					"node", r.NodeID, "reportedEvents", r.ArrayEvents, "outOfSyncAtEvents", rep.OutOfSyncAtEvents)
				return nil
			}
			rep.OutOfSyncSince, rep.OutOfSyncAtEvents = time.Time{}, 0
			changed = true
			if old := completeMove(v, r.ReplicaID); old != nil {
				c := *old
				moved = &c
			}
			return nil
		}
		if rep.InSync() {
			if len(inSyncActive(v, r.ReplicaID)) == 0 {
				return fmt.Errorf("replica %s is the last in-sync active replica of volume %s; md never fails the last member of a RAID1, "+
					"so a report that it is out of sync (from node %q, observed %s) comes from a bug or a stale node, and recording it would erase "+
					"the only record of which replica holds the volume's data: %w",
					r.ReplicaID, r.VolumeID, r.NodeID, r.ObservedAt.UTC().Format(time.RFC3339), ErrFailedPrecondition)
			}
		} else if !r.ObservedAt.Before(rep.OutOfSyncSince) {
			return nil // already out of sync since earlier
		}
		rep.OutOfSyncSince, rep.OutOfSyncAtEvents = r.ObservedAt, r.ArrayEvents
		changed = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	if changed {
		klog.InfoS("Replica sync state recorded", "volume", r.VolumeID, "replica", r.ReplicaID, "inSync", r.InSync,
			"observedAt", r.ObservedAt, "arrayEvents", r.ArrayEvents, "node", r.NodeID)
	}
	s.logMoveDone(ctx, r.VolumeID, r.ReplicaID, moved)
	return v, nil
}

// PromoteMethod is the audit record's method for PromoteReplicas.
const PromoteMethod = "PromoteReplicas"

// PromoteReplicas marks active replicas in sync although the registry
// holds them stale: the administrator's escape when the in-sync replicas
// are lost for good, so that a node may start the volume from what is
// left. The writes acknowledged while they were out of sync are lost,
// which acceptDataLoss acknowledges.
//
//   - Refused (ErrInvalidArgument, nothing changes) without
//     acceptDataLoss, without replica IDs, or when an ID is not an active
//     replica of this volume; a volume being deleted is
//     ErrFailedPrecondition; an unknown volume ErrNotFound.
//   - Replicas already in sync are left as they are; when all are, nothing
//     changes and nothing is recorded (a retry).
//   - The replicas the promotion gives up (givenUp: those that may hold
//     writes the promoted ones lack) are marked diverged and out of sync in
//     the same change: no node assembles or joins them again. Promoting a
//     diverged replica takes its mark away (the admin changed their mind)
//     and gives up the others in its place.
//   - The Audit event (volume, replicas, since when each was out of sync,
//     reason) is recorded before the registry changes, so no promotion is
//     ever unaccounted for; if the change then fails, a second Audit event
//     records the failure.
func (s *Service) PromoteReplicas(ctx context.Context, volumeID string, replicaIDs []string, acceptDataLoss bool, reason string) (*store.Volume, error) {
	if err := s.requireLeader(); err != nil {
		return nil, err
	}
	switch {
	case volumeID == "":
		return nil, fmt.Errorf("%w: volume_id is empty", ErrInvalidArgument)
	case !acceptDataLoss:
		return nil, fmt.Errorf("%w: accept_data_loss must be true: promoting out-of-sync replicas loses the writes acknowledged while they were out of sync", ErrInvalidArgument)
	case len(replicaIDs) == 0:
		return nil, fmt.Errorf("%w: replica_ids is empty", ErrInvalidArgument)
	}
	ids := slices.Compact(slices.Sorted(slices.Values(replicaIDs)))
	for _, id := range ids {
		if id == "" {
			return nil, fmt.Errorf("%w: replica_ids holds an empty ID", ErrInvalidArgument)
		}
	}
	cur, err := s.o.Store.GetVolume(ctx, volumeID)
	if err != nil {
		return nil, err
	}
	stale, err := promotable(cur, ids)
	if err != nil {
		return nil, err
	}
	if len(stale) == 0 {
		return cur, nil
	}
	now := time.Now()
	audit := events.Event{
		Time: now, Type: events.Audit, Method: PromoteMethod, Outcome: "OK", Volume: volumeID, Replicas: ids,
		Message: promoteMessage(stale, givenUp(cur, ids), reason),
	}
	if len(ids) == 1 {
		audit.Replica = ids[0]
	}
	// Recorded first: a promotion must never happen without its record.
	if _, err := s.RecordEvents(ctx, audit); err != nil {
		return nil, fmt.Errorf("record the audit event of promoting %v on volume %s (nothing promoted): %w", ids, volumeID, err)
	}
	v, err := s.o.Store.UpdateVolume(ctx, volumeID, func(v *store.Volume) error {
		stale, err := promotable(v, ids)
		if err != nil {
			return err
		}
		// Decided before the promoted replicas are marked in sync: which
		// replicas diverge depends on what was in sync before.
		diverged := givenUp(v, ids)
		for _, r := range stale {
			rep := v.Replica(r.ID)
			rep.OutOfSyncSince, rep.OutOfSyncAtEvents, rep.DivergedSince = time.Time{}, 0, time.Time{}
		}
		for _, id := range diverged {
			rep := v.Replica(id)
			rep.DivergedSince = now
			if rep.InSync() {
				rep.OutOfSyncSince = now
			}
		}
		return nil
	})
	if err != nil {
		failed := audit
		failed.Time, failed.Outcome = time.Now(), Code(err).String()
		failed.Message = fmt.Sprintf("promotion recorded above was not applied: %v", err)
		if _, ferr := s.RecordEvents(ctx, failed); ferr != nil {
			klog.ErrorS(ferr, "Cannot record the failure of a promotion", "volume", volumeID, "replicas", ids, "promoteErr", err)
		}
		return nil, err
	}
	klog.InfoS("WARNING: out-of-sync replicas promoted to in sync; data loss accepted", "volume", volumeID, "replicas", ids, "reason", reason)
	return v, nil
}

// promotable checks that every ID is an active replica of v (the volume
// not being deleted) and returns those that are out of sync.
func promotable(v *store.Volume, ids []string) ([]store.Replica, error) {
	if v.State == store.VolumeDeleting {
		return nil, fmt.Errorf("volume %s is being deleted: %w", v.ID, ErrFailedPrecondition)
	}
	var stale []store.Replica
	for _, id := range ids {
		r := v.Replica(id)
		switch {
		case r == nil:
			return nil, fmt.Errorf("%w: replica_ids: %s is not a replica of volume %s", ErrInvalidArgument, id, v.ID)
		case r.State != store.ReplicaActive:
			return nil, fmt.Errorf("%w: replica_ids: %s is %s, not an active replica of volume %s", ErrInvalidArgument, id, r.State, v.ID)
		case !r.InSync():
			stale = append(stale, *r)
		}
	}
	return stale, nil
}

// givenUp returns the active replicas a promotion of the replicas promoted
// gives up (sorted): those that may hold writes the promoted ones lack.
//
// Until a promotion every replica of a volume shares one history: a replica
// md failed at event count E holds the volume as it was at E, so one that
// failed earlier holds a prefix of what one that failed later holds, and md
// brings it up to date with a bitmap re-add. A promotion forks that history
// at the promoted replicas' newest point (the highest event count recorded
// when they fell out). A replica past that point (in sync, or out of sync
// at a higher or equal count, or at an unknown one) holds writes the
// promoted history will never have; once the running array's count passes
// its own, md would take it for a stale member and re-add it by bitmap,
// which copies only what was written since and leaves the given-up writes
// on that leg alone: the mirror's legs would differ. Those are diverged.
// A replica that fell out strictly before the fork is an ordinary stale
// one. Nothing diverges when a promoted replica is already in sync: the
// history goes on from it.
func givenUp(v *store.Volume, promoted []string) []string {
	var fork uint64
	for _, id := range promoted {
		r := v.Replica(id)
		if r == nil {
			continue
		}
		if r.InSync() {
			return nil
		}
		if r.OutOfSyncAtEvents == 0 {
			fork = 0 // unknown: nothing can be shown to precede it
			break
		}
		fork = max(fork, r.OutOfSyncAtEvents)
	}
	var out []string
	for _, r := range v.Replicas {
		if r.State != store.ReplicaActive || slices.Contains(promoted, r.ID) || r.Diverged() {
			continue
		}
		if r.InSync() || r.OutOfSyncAtEvents == 0 || fork == 0 || r.OutOfSyncAtEvents >= fork {
			out = append(out, r.ID)
		}
	}
	slices.Sort(out)
	return out
}

// promoteMessage is the audit record's message. The event model gives each
// type one level and Audit's is Info; the message starts with WARNING so
// that whoever reads syslog or nvmirrorctl events sees what it is.
func promoteMessage(stale []store.Replica, diverged []string, reason string) string {
	parts := make([]string, 0, len(stale))
	for _, r := range stale {
		parts = append(parts, fmt.Sprintf("%s on %s (out of sync since %s, md events %d)", r.ID, r.StorageNode, r.OutOfSyncSince.UTC().Format(time.RFC3339), r.OutOfSyncAtEvents))
	}
	if reason == "" {
		reason = "none given"
	}
	gaveUp := ""
	if len(diverged) > 0 {
		gaveUp = fmt.Sprintf("; replicas %s given up (diverged: they never rejoin and are replaced after maxReplicaDownTime)", strings.Join(diverged, ", "))
	}
	return fmt.Sprintf("WARNING: data loss accepted: replicas %s promoted to in sync; writes acknowledged while they were out of sync are lost%s; reason: %s",
		strings.Join(parts, ", "), gaveUp, reason)
}

// errLastInSync refuses an operation that would leave the volume without
// an in-sync active replica.
func errLastInSync(volumeID, replicaID, op string) error {
	return fmt.Errorf("replica %s is the last in-sync replica of volume %s; %s would leave only replicas that miss acknowledged writes "+
		"(bring its storage node back, or accept data loss with 'nvmirrorctl promote'): %w", replicaID, volumeID, op, ErrFailedPrecondition)
}
