package provisioner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// Draining a storage node: cordon it, then move every replica it holds
// away, a few at a time. The intent is the node's record (Draining), so a
// drain goes on after any crash or leader change: each pass looks at the
// registry afresh and starts moves until MaxConcurrentMoves are in flight.
// A replica the placement rules leave nowhere to go is reported (an Audit
// event once, and in the drain's status) and left where it is.

// DrainMethod is the Audit method of drain steps.
const DrainMethod = "DrainStorageNode"

// DrainStatus is where a drain of one storage node stands.
type DrainStatus struct {
	Node *store.StorageNode
	// ReplicasLeft are the active replicas still on the node, and BytesLeft
	// the size of their volumes: what is left to move.
	ReplicasLeft int
	BytesLeft    int64
	// MovesInFlight are moves off the node not finished yet.
	MovesInFlight int
	// Stuck: volume ID → why its replica cannot move (from the last pass).
	Stuck map[string]string
}

// DrainStorageNode starts (drain true: cordon and drain) or stops (false:
// the node stays cordoned, moves in flight finish) draining a storage node,
// and returns the drain's status. Idempotent; unknown node: ErrNotFound.
func (s *Service) DrainStorageNode(ctx context.Context, id string, drain bool) (DrainStatus, error) {
	if err := s.requireLeader(); err != nil {
		return DrainStatus{}, err
	}
	n, err := s.o.Store.GetStorageNode(ctx, id)
	if err != nil {
		return DrainStatus{}, err
	}
	if n.Draining != drain || (drain && !n.Cordoned) {
		n.Draining = drain
		n.Cordoned = n.Cordoned || drain
		if err := s.o.Store.PutStorageNode(ctx, n); err != nil {
			return DrainStatus{}, err
		}
		what := "drain stopped: the node stays cordoned; moves in flight finish"
		if drain {
			what = "drain started: cordoned, its replicas move away"
		}
		klog.InfoS("Storage node "+what, "storageNode", id)
		s.recordAudit(ctx, events.Event{Method: DrainMethod, StorageNode: id, Message: "storage node " + id + " " + what})
	}
	return s.DrainStatusOf(ctx, n)
}

// DrainStatusOf counts what is left on node n.
func (s *Service) DrainStatusOf(ctx context.Context, n *store.StorageNode) (DrainStatus, error) {
	vols, err := s.o.Store.ListVolumes(ctx)
	if err != nil {
		return DrainStatus{}, err
	}
	st := DrainStatus{Node: n, Stuck: map[string]string{}}
	for _, v := range vols {
		for _, r := range v.Replicas {
			if r.StorageNode != n.ID || r.State != store.ReplicaActive {
				continue
			}
			st.ReplicasLeft++
			st.BytesLeft += v.SizeBytes
			if r.ReplacedBy != "" {
				st.MovesInFlight++
			}
		}
	}
	s.mu.Lock()
	maps.Copy(st.Stuck, s.drainStuck[n.ID])
	s.mu.Unlock()
	return st, nil
}

// RunDrainer drains the draining storage nodes every interval while this
// provisioner leads.
func (s *Service) RunDrainer(ctx context.Context, interval time.Duration) {
	// A finished move frees a place under MaxConcurrentMoves: the next
	// one starts then, not up to an interval later.
	s.everyInterval(ctx, interval, s.moveDone, func(ctx context.Context) {
		if err := s.DrainOnce(ctx); err != nil {
			klog.ErrorS(err, "Drain pass failed")
		}
	}, nil)
}

// DrainOnce starts moves off every draining storage node, up to
// MaxConcurrentMoves in flight across the cluster, one change at a time per
// volume.
func (s *Service) DrainOnce(ctx context.Context) error {
	nodes, err := s.o.Store.ListStorageNodes(ctx)
	if err != nil {
		return err
	}
	draining := map[string]*store.StorageNode{}
	for _, n := range nodes {
		if n.Draining {
			draining[n.ID] = n
		}
	}
	if len(draining) == 0 {
		return nil
	}
	vols, err := s.o.Store.ListVolumes(ctx)
	if err != nil {
		return err
	}
	inFlight := 0
	for _, v := range vols {
		inFlight += movesInFlight(v)
	}
	left := map[string]int{}
	stuck := map[string]map[string]string{}
	var errs []error
	for _, v := range vols {
		if v.State != store.VolumeReady {
			continue
		}
		for _, r := range v.Replicas {
			if r.State != store.ReplicaActive || draining[r.StorageNode] == nil {
				continue
			}
			left[r.StorageNode]++
			// One change at a time per volume: a move or replacement in
			// flight finishes first.
			if r.ReplacedBy != "" || movesInFlight(v) > 0 || inFlight >= s.o.MaxConcurrentMoves {
				continue
			}
			nr, err := s.MoveReplica(ctx, v.ID, r.ID, "")
			switch {
			case err == nil:
				inFlight++
				klog.InfoS("Drain: moving a replica", "storageNode", r.StorageNode, "volume", v.ID, "replica", r.ID, "newReplica", nr.ID, "to", nr.StorageNode)
			case errors.Is(err, ErrResourceExhausted) || errors.Is(err, ErrFailedPrecondition) || errors.Is(err, ErrInvalidArgument):
				// The placement rules leave it nowhere to go (or the
				// volume cannot change now): reported, left in place.
				if stuck[r.StorageNode] == nil {
					stuck[r.StorageNode] = map[string]string{}
				}
				stuck[r.StorageNode][v.ID] = err.Error()
				s.reportStuck(ctx, r, v.ID, err)
			case errors.Is(err, ErrUnavailable) || errors.Is(err, ErrAborted):
				// Busy: the next pass tries again.
			default:
				errs = append(errs, fmt.Errorf("drain %s: move replica %s of volume %s: %w", r.StorageNode, r.ID, v.ID, err))
			}
			break // one replica of a volume per pass
		}
	}
	s.mu.Lock()
	for id := range draining {
		s.drainStuck[id] = stuck[id]
	}
	s.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(draining)) {
		if left[id] == 0 && !s.drainDone(id) {
			klog.InfoS("Storage node drained: it holds no active replica", "storageNode", id)
			s.recordAudit(ctx, events.Event{Method: DrainMethod, StorageNode: id, Message: "storage node " + id + " drained: it holds no active replica; uncordon it to use it again"})
		}
	}
	return errors.Join(errs...)
}

// finishHalfMadeMoves creates the new replicas of moves (an admin's or a
// drain's) a provisioner recorded but did not get to create on their
// storage node (killed between the two): finishReplacement creates them, or
// undoes the reservation so a drain places the move anew. Without this such
// a move would hold its volume (one change at a time) for good. The sweeper
// runs it; it returns how many it could not finish this pass.
func (s *Service) finishHalfMadeMoves(ctx context.Context, vols []*store.Volume) (unfinished int) {
	for _, v := range vols {
		for _, r := range v.Replicas {
			if !r.Move || r.NQN != "" || r.State != store.ReplicaActive {
				continue
			}
			// Not beside a MoveReplica of this process still creating it.
			if !s.moving.Insert(v.ID) {
				continue
			}
			_, err := s.finishReplacement(ctx, v.ID, r.Replaces, r.ID)
			s.moving.Delete(v.ID)
			if err != nil {
				unfinished++
				klog.ErrorS(err, "Could not finish a move a provisioner left half made", "volume", v.ID, "replica", r.Replaces, "newReplica", r.ID)
			} else {
				klog.InfoS("Finished a move a provisioner left half made", "volume", v.ID, "replica", r.Replaces, "newReplica", r.ID)
			}
		}
	}
	return unfinished
}

// movesInFlight counts the moves of volume v not finished yet.
func movesInFlight(v *store.Volume) int {
	n := 0
	for _, r := range v.Replicas {
		if r.Move && r.State == store.ReplicaActive {
			n++
		}
	}
	return n
}

// reportStuck records, once per replica (the reason's wording changes with
// the nodes' fill; the drain's status has the latest), that a drain cannot
// move it.
func (s *Service) reportStuck(ctx context.Context, r store.Replica, volumeID string, err error) {
	key := "stuck\x00" + r.ID
	s.mu.Lock()
	seen := s.drainReported[key]
	s.drainReported[key] = true
	s.mu.Unlock()
	if seen {
		return
	}
	klog.InfoS("Drain: a replica has nowhere to go; leaving it", "storageNode", r.StorageNode, "volume", volumeID, "replica", r.ID, "err", err)
	s.recordAudit(ctx, events.Event{Method: DrainMethod, StorageNode: r.StorageNode, Volume: volumeID, Replica: r.ID,
		Message: fmt.Sprintf("drain of storage node %s cannot move replica %s of volume %s, left in place: %v", r.StorageNode, r.ID, volumeID, err)})
}

// drainDone reports whether node id's drain end was already recorded, and
// records it.
func (s *Service) drainDone(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	done := s.drainReported["drained\x00"+id]
	s.drainReported["drained\x00"+id] = true
	return done
}
