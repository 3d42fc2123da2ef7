package provisioner

import (
	"context"
	"fmt"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/provisioner/placement"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// Storage node maintenance: cordon a node, move a replica live.
//
// A move adds before it removes. MoveReplica records a new replica beside
// the old one (Move, Replaces), out of sync; the node holding the volume
// grows its md array by a slot and fills it (the healer's join), or, for a
// volume no host has staged, an offline repair does. When the new replica is
// recorded in sync (ReportReplicaSync, or the end of the offline repair),
// completeMove removes the old one in the same registry change, and the
// healer takes it out of md and shrinks the array back. So the volume never
// has fewer in-sync replicas than before the move.

// Audit methods of the maintenance operations.
const (
	MoveMethod   = "MoveReplica"
	CordonMethod = "CordonStorageNode"
)

// MoveReplica moves a replica of a volume to another storage node live and
// returns the new replica.
//
//   - Idempotent: while a move (or replacement) of the replica is in
//     flight, a retry answers with its new replica.
//   - to "" places the new replica by the volume's StorageClass rules, as
//     a replacement would be placed; a named node must satisfy them too
//     (ErrFailedPrecondition naming the rule), and be registered
//     (ErrInvalidArgument naming to_storage_node).
//   - replicaID not a replica of the volume: ErrInvalidArgument; not active,
//     volume not ready, or MaxReplicas in its configuration already:
//     ErrFailedPrecondition.
func (s *Service) MoveReplica(ctx context.Context, volumeID, replicaID, to string) (*store.Replica, error) {
	if err := s.requireLeader(); err != nil {
		return nil, err
	}
	if !s.moving.Insert(volumeID) {
		return nil, fmt.Errorf("volume %s: a move of it is being set up; retry: %w", volumeID, ErrAborted)
	}
	defer s.moving.Delete(volumeID)
	v, err := s.o.Store.GetVolume(ctx, volumeID)
	if err != nil {
		return nil, err
	}
	m := v.Replica(replicaID)
	if m == nil {
		return nil, fmt.Errorf("%w: replica_id: %s is not a replica of volume %s", ErrInvalidArgument, replicaID, volumeID)
	}
	if m.ReplacedBy != "" {
		return s.finishReplacement(ctx, volumeID, replicaID, m.ReplacedBy)
	}
	if err := movable(v, m); err != nil {
		return nil, err
	}
	surveyed, nodes, err := s.survey(ctx)
	if err != nil {
		return nil, err
	}
	req := s.placementAway(v, replicaID, surveyed)
	if to != "" {
		if surveyed[to] == nil {
			return nil, fmt.Errorf("%w: to_storage_node: no storage node %q is registered", ErrInvalidArgument, to)
		}
		nodes = []placement.Node{surveyed[to].node}
	}
	chosen, err := placement.Choose(nodes, req)
	if err != nil {
		if to != "" {
			return nil, fmt.Errorf("move replica %s of volume %s to %s: %v: %w", replicaID, volumeID, to, err, ErrFailedPrecondition)
		}
		return nil, fmt.Errorf("move replica %s of volume %s: %w", replicaID, volumeID, err)
	}
	target := chosen[0].ID
	if !s.reserve(target) {
		return nil, fmt.Errorf("move replica %s: storage node %s is busy with other replacements, retry later: %w", replicaID, target, ErrUnavailable)
	}
	defer s.release(target)

	newR := store.Replica{ID: s.newReplicaID(), StorageNode: target, State: store.ReplicaActive, Replaces: replicaID, Move: true, OutOfSyncSince: time.Now()}
	standIn, mine, err := s.recordStandIn(ctx, volumeID, replicaID, newR, func(v *store.Volume, m *store.Replica) error { return movable(v, m) })
	if err != nil {
		return nil, err
	}
	if !mine {
		return s.finishReplacement(ctx, volumeID, replicaID, standIn)
	}
	klog.InfoS("Moving replica", "volume", volumeID, "replica", replicaID, "from", m.StorageNode, "newReplica", newR.ID, "to", target)
	nr, err := s.finishReplacement(ctx, volumeID, replicaID, newR.ID)
	if err != nil {
		return nil, err
	}
	s.recordAudit(ctx, events.Event{Method: MoveMethod, Volume: volumeID, Replicas: []string{replicaID, nr.ID}, StorageNode: target,
		Message: fmt.Sprintf("move of replica %s from storage node %s started: new replica %s on %s fills first, then %s leaves", replicaID, m.StorageNode, nr.ID, target, replicaID)})
	return nr, nil
}

// movable checks that replica m of v may be moved now.
func movable(v *store.Volume, m *store.Replica) error {
	switch {
	case v.State != store.VolumeReady:
		return fmt.Errorf("volume %s is %s: %w", v.ID, v.State, ErrFailedPrecondition)
	case m.State != store.ReplicaActive:
		return fmt.Errorf("replica %s of volume %s is %s, not active: %w", m.ID, v.ID, m.State, ErrFailedPrecondition)
	case !mirrored(v):
		// Its node mounts the namespace itself: no md would fill a new
		// replica, so a move could never finish.
		return fmt.Errorf("volume %s has one replica and no md array, so it cannot be moved live; copy its data to a mirrored volume: %w", v.ID, ErrFailedPrecondition)
	case inConfiguration(v) >= MaxReplicas:
		return fmt.Errorf("volume %s already has %d replicas in its configuration (at most %d; a move or replacement is in flight): %w",
			v.ID, inConfiguration(v), MaxReplicas, ErrFailedPrecondition)
	}
	return nil
}

// placementAway is the placement request for a replica standing in for
// replica away of v: the other active replicas keep their nodes, zones and
// racks; away's node and nodes still holding an old copy are excluded;
// storage nodes busy with replacements too.
func (s *Service) placementAway(v *store.Volume, away string, surveyed map[string]*surveyedNode) placement.Request {
	req := placement.Request{SizeBytes: layout.ReplicaSize(v.SizeBytes), Count: 1, Params: v.Parameters, ThinOvercommit: s.o.ThinOvercommit}
	for _, r := range v.Replicas {
		switch {
		case r.ID != away && r.State == store.ReplicaActive:
			loc := placement.Location{NodeID: r.StorageNode}
			if sn := surveyed[r.StorageNode]; sn != nil {
				loc.Zone, loc.Rack = sn.node.Zone, sn.node.Rack
			}
			req.Existing = append(req.Existing, loc)
		case r.ID == away || r.PendingDelete || r.State == store.ReplicaDeleting:
			// The replica's own node, and nodes still holding an old copy
			// (a node must never end up with two). A replica deleted and
			// gone from its node (deleted or removed, nothing pending)
			// holds nothing there: its node may take the volume again,
			// which a volume brought back up to its replica count after a
			// lowering needs when no other node fits.
			req.Exclude = append(req.Exclude, r.StorageNode)
		}
	}
	req.Exclude = append(req.Exclude, s.busyNodes()...)
	return req
}

// completeMove, inside a registry update in which replica id of v was
// just recorded in sync: when id was added by a move, the replica it moves
// leaves (removed, pending deletion on its node). It returns that replica,
// or nil.
func completeMove(v *store.Volume, id string) *store.Replica {
	r := v.Replica(id)
	if r == nil || !r.Move || !r.InSync() {
		return nil
	}
	old := v.Replica(r.Replaces)
	if old == nil || old.State != store.ReplicaActive || old.ReplacedBy != id {
		return nil
	}
	old.State, old.PendingDelete = store.ReplicaRemoved, true
	// From now on an ordinary replica: its loss degrades the volume.
	r.Move = false
	return old
}

// logMoveDone records the end of a move completeMove completed.
func (s *Service) logMoveDone(ctx context.Context, volumeID, newID string, old *store.Replica) {
	if old == nil {
		return
	}
	klog.InfoS("Replica moved", "volume", volumeID, "replica", old.ID, "from", old.StorageNode, "newReplica", newID)
	wake(s.moveDone)
	s.recordAudit(ctx, events.Event{Method: MoveMethod, Volume: volumeID, Replicas: []string{old.ID, newID}, StorageNode: old.StorageNode,
		Message: fmt.Sprintf("move of replica %s from storage node %s finished: %s is in sync, %s leaves the volume", old.ID, old.StorageNode, newID, old.ID)})
}

// CordonStorageNode sets or clears a storage node's cordon (clearing it
// ends a drain) and returns its record. Idempotent; an unknown node is
// ErrNotFound.
func (s *Service) CordonStorageNode(ctx context.Context, id string, cordoned bool) (*store.StorageNode, error) {
	if err := s.requireLeader(); err != nil {
		return nil, err
	}
	n, err := s.o.Store.GetStorageNode(ctx, id)
	if err != nil {
		return nil, err
	}
	if n.Cordoned == cordoned && !(n.Draining && !cordoned) {
		return n, nil
	}
	// Uncordoning ends a drain too.
	n.Cordoned, n.Draining = cordoned, n.Draining && cordoned
	if err := s.o.Store.PutStorageNode(ctx, n); err != nil {
		return nil, err
	}
	what := "uncordoned: new replicas may be placed on it again"
	if cordoned {
		what = "cordoned: no new replica is placed on it; its replicas keep serving"
	}
	klog.InfoS("Storage node "+what, "storageNode", id)
	s.recordAudit(ctx, events.Event{Method: CordonMethod, StorageNode: id, Message: "storage node " + id + " " + what})
	return n, nil
}

// recordAudit records an Audit event of the provisioner's own (OK outcome);
// a failure to record is logged, never the operation's failure.
func (s *Service) recordAudit(ctx context.Context, e events.Event) {
	e.Time, e.Type, e.Outcome = time.Now(), events.Audit, "OK"
	if _, err := s.RecordEvents(ctx, e); err != nil {
		klog.ErrorS(err, "Cannot record an audit event", "method", e.Method, "volume", e.Volume, "storageNode", e.StorageNode)
	}
}
