package provisioner

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// DeleteReplica takes one replica out of a volume's configuration (an
// administrator's operation) and returns the volume.
//
//   - The intent is recorded first, in one update: the replica becomes
//     deleted (the node holding the volume removes it from its array and
//     calls MarkReplicaRemoved: the healer's second repair) and pending
//     deletion on its storage node.
//   - Then, best effort, the volume's host is revoked on the replica, so the
//     node cannot connect it again, and the replica is deleted on its
//     agent. An unreachable storage node is left to the sweeper, which
//     deletes the replica when the node returns; the call succeeds. Any
//     other agent failure is returned (the record stays deleted and pending;
//     a retry, or the sweeper, deletes it).
//   - Refused (ErrFailedPrecondition) for the last active replica of the
//     volume: with it the volume would have no data. A replacement still
//     being created does not count as active. Refused too for the last
//     in-sync replica: the others miss acknowledged writes. A volume still
//     being created is ErrUnavailable (retry when it is ready).
//   - Idempotent: a replica already deleting, deleted or removed returns the
//     volume (retrying the storage-node deletion if it is still pending).
//   - Unknown volume or replica: ErrNotFound.
func (s *Service) DeleteReplica(ctx context.Context, volumeID, replicaID string) (*store.Volume, error) {
	if err := s.requireLeader(); err != nil {
		return nil, err
	}
	v, err := s.o.Store.UpdateVolume(ctx, volumeID, func(v *store.Volume) error {
		r := v.Replica(replicaID)
		if r == nil {
			return fmt.Errorf("volume %s has no replica %s: %w", volumeID, replicaID, ErrNotFound)
		}
		if r.State != store.ReplicaActive {
			return nil // already on its way out: a retry
		}
		switch v.State {
		case store.VolumeReady:
		case store.VolumeCreating:
			return fmt.Errorf("volume %s is still being created: %w", volumeID, ErrUnavailable)
		default:
			return fmt.Errorf("volume %s is %s: %w", volumeID, v.State, ErrFailedPrecondition)
		}
		others := 0
		for _, o := range v.Replicas {
			if o.ID != replicaID && o.State == store.ReplicaActive && o.NQN != "" {
				others++
			}
		}
		if others == 0 {
			return fmt.Errorf("replica %s is the last active replica of volume %s; deleting it would lose the volume's data (delete the volume instead): %w", replicaID, volumeID, ErrFailedPrecondition)
		}
		if r.InSync() && len(inSyncActive(v, replicaID)) == 0 {
			return errLastInSync(volumeID, replicaID, "deleting it")
		}
		r.State, r.PendingDelete = store.ReplicaDeleted, true
		if r.NQN == "" {
			// A replacement reserved but not created yet: unlink it, so a
			// retry of ReplaceReplica places a new one rather than creating
			// this one (as finishReplacement does when creation fails).
			for i := range v.Replicas {
				if m := &v.Replicas[i]; m.ReplacedBy == replicaID {
					m.ReplacedBy = ""
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	r := v.Replica(replicaID)
	if !r.PendingDelete {
		return v, nil
	}
	klog.InfoS("Deleting replica", "volume", volumeID, "replica", replicaID, "storageNode", r.StorageNode)
	revoked, err := s.deleteOnAgent(ctx, v, *r)
	if errors.Is(err, ErrUnavailable) {
		klog.InfoS("Replica deleted from the volume; its storage node is away, the sweeper deletes it when it returns", "volume", volumeID, "replica", replicaID, "storageNode", r.StorageNode, "err", err)
		return v, nil
	}
	out, uerr := s.o.Store.UpdateVolume(ctx, volumeID, func(v *store.Volume) error {
		r := v.Replica(replicaID)
		if r == nil || !r.PendingDelete {
			return nil
		}
		if err == nil {
			r.PendingDelete, r.AllowedHost = false, ""
			if r.State == store.ReplicaDeleting { // as the sweeper does
				r.State = store.ReplicaDeleted
			}
		} else if revoked {
			r.AllowedHost = ""
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("replica %s of volume %s is deleted from the volume, but deleting it on storage node %s failed (the sweeper retries): %w", replicaID, volumeID, r.StorageNode, err)
	}
	if uerr != nil {
		return nil, uerr
	}
	return out, nil
}

// deleteOnAgent revokes the volume's host on a replica (so that the node
// cannot connect it again even if the deletion fails) and deletes it on its
// agent. revoked reports whether every host allowance is known gone.
func (s *Service) deleteOnAgent(ctx context.Context, v *store.Volume, r store.Replica) (revoked bool, err error) {
	a, err := s.agentFor(ctx, r.StorageNode)
	if err != nil {
		return false, err
	}
	revoked = true
	hosts := []string{r.AllowedHost}
	if v.PublishedHostNQN != r.AllowedHost {
		// Allowed at publish perhaps without the record showing it.
		hosts = append(hosts, v.PublishedHostNQN)
	}
	for _, h := range hosts {
		if h == "" {
			continue
		}
		if err := a.RevokeHost(ctx, r.ID, h); err != nil && !errors.Is(err, ErrNotFound) {
			if errors.Is(err, ErrUnavailable) {
				return false, err
			}
			klog.V(2).InfoS("Cannot revoke host on a deleted replica", "volume", v.ID, "replica", r.ID, "host", h, "err", err)
			revoked = false
		}
	}
	if err := a.DeleteReplica(ctx, r.ID); err != nil && !errors.Is(err, ErrNotFound) {
		return revoked, err
	}
	return true, nil
}
