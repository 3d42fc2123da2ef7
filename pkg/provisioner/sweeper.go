package provisioner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// needsSweep reports whether a volume has work for the sweeper: replicas
// to delete from their nodes, a deleted volume to forget, or host
// allowances to bring in line with the published host.
func needsSweep(v *store.Volume) bool {
	if v.State == store.VolumeDeleting {
		return true
	}
	for _, r := range v.Replicas {
		if r.PendingDelete || hostMismatch(v, r) {
			return true
		}
	}
	return false
}

// hostMismatch: an agent allows a host the volume is not published to (a
// stale fence, e.g. the agent was away at unpublish), or an active replica
// does not yet allow the published host (away at publish).
func hostMismatch(v *store.Volume, r store.Replica) bool {
	if r.PendingDelete {
		return false // deletion removes every allowance
	}
	if v.Repair != nil && r.AllowedHost == v.Repair.HostNQN {
		return false // the running offline repair's host
	}
	if r.AllowedHost != "" && r.AllowedHost != v.PublishedHostNQN {
		return true
	}
	return r.State == store.ReplicaActive && r.NQN != "" && v.State == store.VolumeReady &&
		v.PublishedHostNQN != "" && r.AllowedHost != v.PublishedHostNQN
}

// Sweep runs one pass over every volume that has work (see needsSweep),
// after finishing the moves a provisioner left half made, and returns how
// many still have work afterwards (storage nodes away).
func (s *Service) Sweep(ctx context.Context) (remaining int, err error) {
	if err := s.requireLeader(); err != nil {
		return 0, err
	}
	vols, err := s.o.Store.ListVolumes(ctx)
	if err != nil {
		return 0, err
	}
	remaining = s.finishHalfMadeMoves(ctx, vols) + s.sweepSnapshots(ctx)
	for _, v := range vols {
		if !needsSweep(v) {
			continue
		}
		if err := s.sweepVolume(ctx, v.ID); err != nil {
			remaining++
			klog.V(3).InfoS("Sweep incomplete", "volume", v.ID, "err", err)
		}
	}
	return remaining, nil
}

// RunSweeper sweeps every interval while this provisioner leads, until ctx
// ends; each pass first rolls back the creates left past CreatingTimeout.
func (s *Service) RunSweeper(ctx context.Context, interval time.Duration) {
	s.whileLeader(ctx, interval, func(ctx context.Context) {
		if _, err := s.RollBackStaleCreates(ctx); err != nil {
			klog.ErrorS(err, "Rollback of interrupted creates failed")
		}
		if n, err := s.Sweep(ctx); err != nil {
			klog.ErrorS(err, "Sweep failed")
		} else if n > 0 {
			klog.V(2).InfoS("Sweep: volumes waiting for storage nodes", "count", n)
		}
	})
}

// whileLeader runs pass at once and then every interval, whenever this
// provisioner leads, until ctx ends: the loop of the provisioner's
// background work (the sweeper, the offline repairer).
func (s *Service) whileLeader(ctx context.Context, interval time.Duration, pass func(context.Context)) {
	s.everyInterval(ctx, interval, nil, pass, nil)
}

// wake sends a wake-up on ch unless one is pending already.
func wake(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// everyInterval is whileLeader that also runs following (when not nil) on
// every tick this provisioner does not lead, and runs at once, not waiting
// for the tick, whenever wake (when not nil) receives.
func (s *Service) everyInterval(ctx context.Context, interval time.Duration, wake <-chan struct{}, pass func(context.Context), following func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if s.o.Store.IsLeader() {
			pass(ctx)
		} else if following != nil {
			following()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
	}
}

// sweepVolume deletes pending replicas, reconciles host allowances, and
// forgets a deleted volume once nothing of it is left. It returns an error
// while work remains.
func (s *Service) sweepVolume(ctx context.Context, id string) error {
	v, err := s.o.Store.GetVolume(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	deleted, _ := s.forReplicas(ctx, v, func(r store.Replica) bool { return r.PendingDelete }, func(a AgentClient, r store.Replica) error {
		if err := a.DeleteReplica(ctx, r.ID); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		return nil
	})
	type hostFix struct{ allowed string }
	fixed := map[string]hostFix{}
	var mismatched int
	for _, r := range v.Replicas {
		if !hostMismatch(v, r) {
			continue
		}
		mismatched++
		a, err := s.agentFor(ctx, r.StorageNode)
		if err != nil {
			continue
		}
		if r.AllowedHost != "" && r.AllowedHost != v.PublishedHostNQN {
			if err := a.RevokeHost(ctx, r.ID, r.AllowedHost); err != nil && !errors.Is(err, ErrNotFound) {
				continue
			}
		}
		allowed := ""
		if r.State == store.ReplicaActive && v.PublishedHostNQN != "" {
			if err := s.allowHost(ctx, a, v, r, v.PublishedHostNQN); err != nil {
				fixed[r.ID] = hostFix{allowed: ""} // old host revoked at least
				continue
			}
			allowed = v.PublishedHostNQN
		}
		fixed[r.ID] = hostFix{allowed: allowed}
	}
	var pending int
	out, err := s.o.Store.UpdateVolume(ctx, id, func(cur *store.Volume) error {
		pending = 0
		for i := range cur.Replicas {
			r := &cur.Replicas[i]
			if deleted[r.ID] && r.PendingDelete {
				r.PendingDelete = false
				r.AllowedHost = ""
				if r.State == store.ReplicaDeleting {
					r.State = store.ReplicaDeleted
				}
			}
			if f, ok := fixed[r.ID]; ok {
				r.AllowedHost = f.allowed
			}
			if r.PendingDelete {
				pending++
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if out.State == store.VolumeDeleting && pending == 0 {
		if err := s.o.Store.DeleteVolume(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		klog.InfoS("Volume deleted from every storage node", "volume", id, "name", out.Name)
		return nil
	}
	if pending > 0 || len(fixed) < mismatched || needsHostWork(out) {
		return fmt.Errorf("volume %s: %d replicas still to delete, host allowances out of date on %d: %w", id, pending, mismatched-len(fixed), ErrUnavailable)
	}
	return nil
}

func needsHostWork(v *store.Volume) bool {
	for _, r := range v.Replicas {
		if hostMismatch(v, r) {
			return true
		}
	}
	return false
}
