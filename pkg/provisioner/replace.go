package provisioner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/provisioner/placement"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// errReplacedMeanwhile aborts a reservation that lost a race with another
// ReplaceReplica of the same replica; the caller answers with the winner.
var errReplacedMeanwhile = errors.New("replaced meanwhile")

// ReplaceReplica allocates a replacement for a replica that stayed away too
// long (the healer's third repair) and returns it.
//
//   - Idempotent: a retry for the same missing replica returns the same new
//     replica (and finishes creating it if an earlier call was cut short).
//   - Refused (ErrFailedPrecondition) when the volume already has
//     MaxReplicas replicas in its configuration, the missing one counted.
//   - Placed by the volume's StorageClass rules, away from every node that
//     holds (or may still hold) a replica of the volume, and away from
//     storage nodes that already run MaxReplacementsPerNode replacements.
//   - Refused (ErrFailedPrecondition) when the missing replica is the
//     volume's last in-sync one: the others would fill the replacement
//     with stale data.
//   - The new replica is created allowing the volume's host, out of sync
//     (it starts empty; the node marks it in sync when md finished
//     recovering onto it); the missing replica is marked removed and left pending deletion, which the
//     sweeper completes when its node returns.
func (s *Service) ReplaceReplica(ctx context.Context, volumeID, missingID string) (*store.Replica, error) {
	if err := s.requireLeader(); err != nil {
		return nil, err
	}
	v, err := s.o.Store.GetVolume(ctx, volumeID)
	if err != nil {
		return nil, err
	}
	m := v.Replica(missingID)
	if m == nil {
		return nil, fmt.Errorf("volume %s has no replica %s: %w", volumeID, missingID, ErrNotFound)
	}
	if m.ReplacedBy != "" {
		return s.finishReplacement(ctx, volumeID, missingID, m.ReplacedBy)
	}
	if v.State != store.VolumeReady {
		return nil, fmt.Errorf("volume %s is %s: %w", volumeID, v.State, ErrFailedPrecondition)
	}
	if m.State != store.ReplicaActive {
		return nil, fmt.Errorf("replica %s of volume %s is %s, not active: %w", missingID, volumeID, m.State, ErrFailedPrecondition)
	}
	if n := inConfiguration(v); n >= MaxReplicas {
		return nil, fmt.Errorf("volume %s already has %d replicas in its configuration (at most %d): %w", volumeID, n, MaxReplicas, ErrFailedPrecondition)
	}
	// The replacement is filled from the replicas left, and the replaced
	// one is deleted when its node returns: if it is the only one holding
	// every write, both would lose them.
	if m.InSync() && len(inSyncActive(v, missingID)) == 0 {
		return nil, errLastInSync(volumeID, missingID, "replacing it")
	}

	surveyed, nodes, err := s.survey(ctx)
	if err != nil {
		return nil, err
	}
	req := s.placementAway(v, missingID, surveyed)
	busy := s.busyNodes()
	chosen, err := placement.Choose(nodes, req)
	if err != nil {
		if len(busy) > 0 && errors.Is(err, ErrResourceExhausted) {
			return nil, fmt.Errorf("replace replica %s: storage nodes %v are busy with other replacements, retry later (%v): %w", missingID, busy, err, ErrUnavailable)
		}
		return nil, fmt.Errorf("replace replica %s of volume %s: %w", missingID, volumeID, err)
	}
	target := chosen[0].ID
	if !s.reserve(target) {
		return nil, fmt.Errorf("replace replica %s: storage node %s became busy, retry later: %w", missingID, target, ErrUnavailable)
	}
	defer s.release(target)

	// The replacement starts empty: out of sync until the node reports
	// that md finished recovering onto it. Its md event count is unknown
	// (0): it misses everything.
	newR := store.Replica{ID: s.newReplicaID(), StorageNode: target, State: store.ReplicaActive, Replaces: missingID, OutOfSyncSince: time.Now()}
	standIn, mine, err := s.recordStandIn(ctx, volumeID, missingID, newR, func(v *store.Volume, m *store.Replica) error {
		if m.State != store.ReplicaActive {
			return fmt.Errorf("replica %s of volume %s is %s, not active: %w", missingID, volumeID, m.State, ErrFailedPrecondition)
		}
		if n := inConfiguration(v); n >= MaxReplicas {
			return fmt.Errorf("volume %s already has %d replicas in its configuration: %w", volumeID, n, ErrFailedPrecondition)
		}
		if m.InSync() && len(inSyncActive(v, missingID)) == 0 {
			return errLastInSync(volumeID, missingID, "replacing it")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !mine {
		return s.finishReplacement(ctx, volumeID, missingID, standIn)
	}
	klog.InfoS("Replacing replica", "volume", volumeID, "missing", missingID, "replica", newR.ID, "storageNode", target)
	return s.finishReplacement(ctx, volumeID, missingID, newR.ID)
}

// recordStandIn records newR in the volume as the stand-in for replica id
// (its ReplacedBy), once check passes on the record being changed. It
// returns the stand-in's ID and whether it is newR: a call that lost a race
// with another for the same replica gets the winner's.
func (s *Service) recordStandIn(ctx context.Context, volumeID, id string, newR store.Replica, check func(v *store.Volume, m *store.Replica) error) (string, bool, error) {
	_, err := s.o.Store.UpdateVolume(ctx, volumeID, func(v *store.Volume) error {
		m := v.Replica(id)
		if m == nil {
			return fmt.Errorf("volume %s has no replica %s: %w", volumeID, id, ErrNotFound)
		}
		if m.ReplacedBy != "" {
			return errReplacedMeanwhile
		}
		if err := check(v, m); err != nil {
			return err
		}
		m.ReplacedBy = newR.ID
		v.Replicas = append(v.Replicas, newR)
		return nil
	})
	if errors.Is(err, errReplacedMeanwhile) {
		cur, err := s.o.Store.GetVolume(ctx, volumeID)
		if err != nil {
			return "", false, err
		}
		return cur.Replica(id).ReplacedBy, false, nil
	}
	return newR.ID, err == nil, err
}

// inConfiguration counts the replicas the node's array may still contain:
// all but the removed ones.
func inConfiguration(v *store.Volume) int {
	n := 0
	for _, r := range v.Replicas {
		if r.State != store.ReplicaRemoved {
			n++
		}
	}
	return n
}

// finishReplacement creates the reserved replica on its agent (idempotent)
// and records the outcome. On failure the reservation is undone so that a
// retry can place the replacement elsewhere; the half-made replica is left
// pending deletion for the sweeper.
func (s *Service) finishReplacement(ctx context.Context, volumeID, missingID, newID string) (*store.Replica, error) {
	v, err := s.o.Store.GetVolume(ctx, volumeID)
	if err != nil {
		return nil, err
	}
	nr := v.Replica(newID)
	if nr == nil {
		return nil, fmt.Errorf("volume %s: replacement %s vanished: %w", volumeID, newID, ErrAborted)
	}
	if nr.NQN != "" {
		return nr, nil
	}
	spec := ReplicaSpec{ReplicaID: nr.ID, VolumeID: v.ID, SizeBytes: layout.ReplicaSize(v.SizeBytes), ProvisioningType: v.Parameters.ProvisioningType}
	if v.PublishedHostNQN != "" {
		spec.AllowedHosts = []string{v.PublishedHostNQN}
	}
	a, err := s.agentFor(ctx, nr.StorageNode)
	if err == nil && v.PublishedHostNQN != "" {
		// The replica is created with the host allowed: the storage node
		// must hold the host's secrets first.
		err = s.prepareHost(ctx, a, v, nr.StorageNode, v.PublishedHostNQN)
	}
	var ar AgentReplica
	if err == nil {
		ar, err = a.CreateReplica(ctx, spec)
	}
	if err != nil {
		klog.ErrorS(err, "Replacement replica creation failed; undoing the reservation", "volume", volumeID, "replica", newID, "storageNode", nr.StorageNode)
		_, uerr := s.o.Store.UpdateVolume(ctx, volumeID, func(v *store.Volume) error {
			if r := v.Replica(newID); r != nil && r.NQN == "" {
				r.State, r.PendingDelete = store.ReplicaRemoved, true
			}
			if m := v.Replica(missingID); m != nil && m.ReplacedBy == newID {
				m.ReplacedBy = ""
			}
			return nil
		})
		if uerr != nil {
			klog.ErrorS(uerr, "Cannot undo replacement reservation", "volume", volumeID, "replica", newID)
		}
		return nil, fmt.Errorf("replace replica %s: create %s on %s: %w", missingID, newID, nr.StorageNode, err)
	}
	out, err := s.o.Store.UpdateVolume(ctx, volumeID, func(v *store.Volume) error {
		r := v.Replica(newID)
		if r == nil {
			return fmt.Errorf("volume %s: replacement %s vanished: %w", volumeID, newID, ErrAborted)
		}
		r.NQN, r.Addresses = ar.NQN, ar.Endpoints
		r.AllowedHost = v.PublishedHostNQN
		// A replacement's old replica leaves now; a move's stays until the
		// new one is in sync (completeMove).
		if m := v.Replica(missingID); m != nil && m.State != store.ReplicaRemoved && !r.Move {
			m.State, m.PendingDelete = store.ReplicaRemoved, true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if out.PublishedHostNQN == "" {
		// No host's healer will fill it: the offline repairer starts now,
		// not up to --repair-interval later.
		wake(s.repairWake)
	}
	return out.Replica(newID), nil
}

func (s *Service) busyNodes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n, c := range s.replacing {
		if c >= s.o.MaxReplacementsPerNode {
			out = append(out, n)
		}
	}
	return out
}

func (s *Service) reserve(node string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.replacing[node] >= s.o.MaxReplacementsPerNode {
		return false
	}
	s.replacing[node]++
	return true
}

func (s *Service) release(node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.replacing[node]--; s.replacing[node] <= 0 {
		delete(s.replacing, node)
	}
}

// MarkReplicaRemoved records that a node took a deleted replica out of its
// array (the healer's second repair). Idempotent; an active replica cannot
// be removed this way (ErrFailedPrecondition): only DeleteVolume and
// ReplaceReplica take a replica out of service.
func (s *Service) MarkReplicaRemoved(ctx context.Context, volumeID, replicaID string) error {
	if err := s.requireLeader(); err != nil {
		return err
	}
	_, err := s.o.Store.UpdateVolume(ctx, volumeID, func(v *store.Volume) error {
		r := v.Replica(replicaID)
		if r == nil {
			return fmt.Errorf("volume %s has no replica %s: %w", volumeID, replicaID, ErrNotFound)
		}
		switch r.State {
		case store.ReplicaRemoved:
		case store.ReplicaActive:
			return fmt.Errorf("replica %s of volume %s is active: %w", replicaID, volumeID, ErrFailedPrecondition)
		default:
			r.State = store.ReplicaRemoved
		}
		return nil
	})
	return err
}
