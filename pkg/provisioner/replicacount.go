package provisioner

import (
	"context"
	"fmt"
	"slices"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/provisioner/placement"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// Changing a live volume's replica count (numReplicas through a
// VolumeAttributesClass or nvmirrorctl set). The parameter is recorded
// first; then the replicas follow it: a higher count adds replicas (placed
// by the StorageClass rules, created out of sync, filled by the node's md
// or an offline repair), a lower one deletes the replicas that matter
// least (DeleteReplica's path: the node takes them out of md). A retry, or
// a call after a partial failure, reconciles again from the record.

// minMirrored is the fewest replicas a mirrored volume keeps: its md array
// stays, and md wants --force below two slots.
const minMirrored = 2

// mirrored reports whether v has an md array: a volume created with one
// replica has none (its node mounts the namespace itself), and a mirrored
// one never goes below minMirrored, so the current count says which it is.
func mirrored(v *store.Volume) bool { return v.Parameters.NumReplicas >= minMirrored }

// checkReplicaCount refuses a replica count v (its record before the
// change) cannot take now: an unmirrored volume no other count, a
// mirrored one none below minMirrored.
func checkReplicaCount(v *store.Volume, n int) error {
	switch {
	case !mirrored(v) && n != v.Parameters.NumReplicas:
		return fmt.Errorf("%w: numReplicas: volume %s was created with one replica, so it has no md array to grow; create a volume with numReplicas %d and copy the data",
			ErrFailedPrecondition, v.ID, n)
	case n < minMirrored && mirrored(v):
		return fmt.Errorf("%w: numReplicas: a mirrored volume keeps at least %d replicas (its md array stays); volume %s cannot go to %d", ErrFailedPrecondition, minMirrored, v.ID, n)
	case v.State != store.VolumeReady:
		return fmt.Errorf("volume %s is %s: %w", v.ID, v.State, ErrFailedPrecondition)
	}
	for _, r := range v.Replicas {
		if r.State == store.ReplicaActive && (r.ReplacedBy != "" || r.Move) {
			return fmt.Errorf("volume %s: a move or replacement of replica %s runs; the replica count changes when it is done (retry): %w", v.ID, r.ID, ErrAborted)
		}
	}
	return nil
}

// reconcileReplicaCount adds or deletes replicas of volume id until its
// active replicas match its numReplicas, and returns the volume.
func (s *Service) reconcileReplicaCount(ctx context.Context, id string) (*store.Volume, error) {
	v, err := s.o.Store.GetVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	want := v.Parameters.NumReplicas
	active := 0
	for _, r := range v.Replicas {
		if r.State == store.ReplicaActive {
			active++
		}
	}
	for ; active < want; active++ {
		if _, err := s.addReplica(ctx, id); err != nil {
			return nil, fmt.Errorf("volume %s: add a replica to reach numReplicas %d: %w", id, want, err)
		}
	}
	for ; active > want; active-- {
		cur, err := s.o.Store.GetVolume(ctx, id)
		if err != nil {
			return nil, err
		}
		surveyed, _, err := s.survey(ctx)
		if err != nil {
			return nil, err
		}
		victim := leastNeeded(cur, surveyed)
		if victim == "" {
			return nil, fmt.Errorf("volume %s: no replica can go to reach numReplicas %d: %w", id, want, ErrFailedPrecondition)
		}
		if _, err := s.DeleteReplica(ctx, id, victim); err != nil {
			return nil, fmt.Errorf("volume %s: delete replica %s to reach numReplicas %d: %w", id, victim, want, err)
		}
		klog.InfoS("Replica count lowered: replica deleted", "volume", id, "replica", victim, "numReplicas", want)
	}
	return s.o.Store.GetVolume(ctx, id)
}

// addReplica places and creates one more replica of volume id, out of
// sync, and returns it.
func (s *Service) addReplica(ctx context.Context, id string) (*store.Replica, error) {
	v, err := s.o.Store.GetVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	if n := inConfiguration(v); n >= MaxReplicas {
		return nil, fmt.Errorf("volume %s already has %d replicas in its configuration: %w", id, n, ErrFailedPrecondition)
	}
	surveyed, nodes, err := s.survey(ctx)
	if err != nil {
		return nil, err
	}
	chosen, err := placement.Choose(nodes, s.placementAway(v, "", surveyed))
	if err != nil {
		return nil, err
	}
	target := chosen[0].ID
	if !s.reserve(target) {
		return nil, fmt.Errorf("storage node %s is busy with replacements, retry later: %w", target, ErrUnavailable)
	}
	defer s.release(target)
	newR := store.Replica{ID: s.newReplicaID(), StorageNode: target, State: store.ReplicaActive, OutOfSyncSince: time.Now()}
	if _, err := s.o.Store.UpdateVolume(ctx, id, func(v *store.Volume) error {
		v.Replicas = append(v.Replicas, newR)
		return nil
	}); err != nil {
		return nil, err
	}
	klog.InfoS("Replica count raised: adding a replica", "volume", id, "replica", newR.ID, "storageNode", target)
	return s.finishReplacement(ctx, id, "", newR.ID)
}

// leastNeeded picks the active replica of v whose loss matters least: one
// a promotion gave up, then one out of sync, then one on a storage node
// that does not answer, then one sharing its rack (or zone) with another
// replica, so the spread the placement rules made survives; ties by ID. It
// never picks the last in-sync replica ("" when none may go).
func leastNeeded(v *store.Volume, surveyed map[string]*surveyedNode) string {
	type cand struct {
		id   string
		rank []bool // each true makes the replica a better pick
	}
	var cs []cand
	rackUse, zoneUse := map[string]int{}, map[string]int{}
	loc := func(r store.Replica) (zone, rack string) {
		if sn := surveyed[r.StorageNode]; sn != nil {
			return sn.node.Zone, sn.node.Zone + "/" + sn.node.Rack
		}
		return "", ""
	}
	for _, r := range v.Replicas {
		if r.State == store.ReplicaActive {
			z, rk := loc(r)
			zoneUse[z]++
			rackUse[rk]++
		}
	}
	for _, r := range v.Replicas {
		if r.State != store.ReplicaActive || (r.InSync() && len(inSyncActive(v, r.ID)) == 0) {
			continue
		}
		z, rk := loc(r)
		sn := surveyed[r.StorageNode]
		cs = append(cs, cand{id: r.ID, rank: []bool{r.Diverged(), !r.InSync(), sn == nil || sn.err != nil, rackUse[rk] > 1, zoneUse[z] > 1}})
	}
	if len(cs) == 0 {
		return ""
	}
	slices.SortFunc(cs, func(a, b cand) int {
		for i := range a.rank {
			if a.rank[i] != b.rank[i] {
				if a.rank[i] {
					return -1
				}
				return 1
			}
		}
		if a.id < b.id {
			return -1
		}
		return 1
	})
	return cs[0].id
}
