package provisioner

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// PublishVolume allows hostNQN on every active replica. A RAID1 volume is
// attached to one host at a time: a second host gets ErrFailedPrecondition
// (the fence against two hosts writing). Publishing again to the same host
// is a retry and re-applies the allowance.
//
// nodeID (the CSI node ID) is recorded for display and audit; the fence is
// the host NQN, so a publish to the same host with another node ID updates
// it rather than failing.
func (s *Service) PublishVolume(ctx context.Context, id, hostNQN, nodeID string) (*store.Volume, error) {
	if err := s.requireLeader(); err != nil {
		return nil, err
	}
	// Validate before recording: a host NQN every agent refuses would
	// otherwise stay recorded as the volume's host and block the real one.
	if err := nvmeof.ValidateNQN(hostNQN); err != nil {
		return nil, fmt.Errorf("%w: host NQN %q: %v", ErrInvalidArgument, hostNQN, err)
	}
	if !s.fencing.Insert(id) {
		return nil, fmt.Errorf("volume %s: an offline repair of it is being set up or another publish runs; retry: %w", id, ErrAborted)
	}
	defer s.fencing.Delete(id)
	// A storage node repairing the volume offline gives it up first: the
	// host and the repair must never share the replicas.
	cur, err := s.o.Store.GetVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	if cur.Repair != nil && cur.State == store.VolumeReady {
		if err := s.takeOverRepair(ctx, cur, hostNQN); err != nil {
			return nil, err
		}
	}
	v, err := s.o.Store.UpdateVolume(ctx, id, func(v *store.Volume) error {
		switch v.State {
		case store.VolumeReady:
		case store.VolumeCreating:
			return fmt.Errorf("volume %s is still being created: %w", id, ErrUnavailable)
		default:
			return fmt.Errorf("volume %s is being deleted: %w", id, ErrFailedPrecondition)
		}
		if v.Repair != nil {
			return fmt.Errorf("volume %s: an offline repair started meanwhile; retry: %w", id, ErrAborted)
		}
		if v.PublishedHostNQN != "" && v.PublishedHostNQN != hostNQN {
			return fmt.Errorf("volume %s is published to %s; a mirrored volume attaches to one host at a time: %w", id, v.PublishedHostNQN, ErrFailedPrecondition)
		}
		v.PublishedHostNQN = hostNQN
		if nodeID != "" {
			v.PublishedNodeID = nodeID
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	allowed, failed := s.forReplicas(ctx, v, func(r store.Replica) bool { return r.State == store.ReplicaActive }, func(a AgentClient, r store.Replica) error {
		return s.allowHost(ctx, a, v, r, hostNQN)
	})
	v, err = s.recordAllowed(ctx, id, allowed, hostNQN)
	if err != nil {
		return nil, err
	}
	// Replicas on unreachable nodes are allowed by the sweeper when they
	// return; the host assembles the array degraded meanwhile. Any other
	// failure (a refused host NQN, say) is the caller's to see.
	if err := hardErrors(failed); err != nil {
		return nil, fmt.Errorf("publish volume %s to %s: %w", id, hostNQN, err)
	}
	if len(allowed) == 0 {
		return nil, fmt.Errorf("volume %s: no replica could allow %s (%v): %w", id, hostNQN, errors.Join(mapValues(failed)...), ErrUnavailable)
	}
	return v, nil
}

// UnpublishVolume revokes hostNQN on every replica and clears the volume's
// host. Agents that cannot be reached keep the allowance until the sweeper
// revokes it when they return; refusing to unpublish until every storage
// node answers would pin a volume to a dead host forever, which defeats the
// mirror. Unpublishing an unknown volume, or from a host it is not
// published to, succeeds (CSI idempotency).
func (s *Service) UnpublishVolume(ctx context.Context, id, hostNQN string) error {
	if err := s.requireLeader(); err != nil {
		return err
	}
	v, err := s.o.Store.GetVolume(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if v.PublishedHostNQN == "" || (hostNQN != "" && v.PublishedHostNQN != hostNQN) {
		return nil
	}
	host := v.PublishedHostNQN
	revoked, failed := s.forReplicas(ctx, v, func(r store.Replica) bool { return r.State == store.ReplicaActive || r.AllowedHost == host }, func(a AgentClient, r store.Replica) error {
		err := a.RevokeHost(ctx, r.ID, host)
		if errors.Is(err, ErrNotFound) {
			return nil // nothing left to fence
		}
		return err
	})
	if err := hardErrors(failed); err != nil {
		return fmt.Errorf("unpublish volume %s: %w", id, err)
	}
	_, err = s.o.Store.UpdateVolume(ctx, id, func(v *store.Volume) error {
		for i := range v.Replicas {
			if revoked[v.Replicas[i].ID] {
				v.Replicas[i].AllowedHost = ""
			}
		}
		if v.PublishedHostNQN == host {
			v.PublishedHostNQN, v.PublishedNodeID = "", ""
		}
		return nil
	})
	return err
}

// forReplicas runs op on the agents of the selected replicas in parallel
// and returns the IDs for which it succeeded and the errors of the others.
func (s *Service) forReplicas(ctx context.Context, v *store.Volume, sel func(store.Replica) bool, op func(AgentClient, store.Replica) error) (map[string]bool, map[string]error) {
	ok := map[string]bool{}
	failed := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, r := range v.Replicas {
		if !sel(r) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := s.agentFor(ctx, r.StorageNode)
			if err == nil {
				err = op(a, r)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				klog.V(2).InfoS("Replica operation failed", "volume", v.ID, "replica", r.ID, "storageNode", r.StorageNode, "err", err)
				failed[r.ID] = fmt.Errorf("replica %s on %s: %w", r.ID, r.StorageNode, err)
				return
			}
			ok[r.ID] = true
		}()
	}
	wg.Wait()
	return ok, failed
}

// hardErrors joins the failures that are not "storage node unreachable":
// those are the caller's to report, while unreachable nodes are left to the
// sweeper.
func hardErrors(failed map[string]error) error {
	var errs []error
	for _, err := range failed {
		if !errors.Is(err, ErrUnavailable) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func mapValues(m map[string]error) []error {
	out := make([]error, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	return out
}

func (s *Service) recordAllowed(ctx context.Context, id string, allowed map[string]bool, host string) (*store.Volume, error) {
	return s.o.Store.UpdateVolume(ctx, id, func(v *store.Volume) error {
		for i := range v.Replicas {
			if allowed[v.Replicas[i].ID] {
				v.Replicas[i].AllowedHost = host
			}
		}
		return nil
	})
}
