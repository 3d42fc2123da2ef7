package provisioner

import (
	"context"
	"errors"
	"fmt"

	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// ModifyVolume changes a volume's mutable parameters (storageclass
// MutableKeys): the healing policy, and numReplicas, which the replicas
// then follow (reconcileReplicaCount: replicas added or deleted; refused
// for a single-replica volume, below two for a mirrored one, and Aborted
// while a move or replacement runs). The others decide where the replicas
// are and how they were made, which changing a record cannot change.
// Values are validated by the StorageClass rules (same messages); another
// key is ErrInvalidArgument naming it. Setting the current value is a
// no-op, so a retry succeeds (and finishes a replica change a failure
// interrupted).
func (s *Service) ModifyVolume(ctx context.Context, id string, mutable map[string]string) (*store.Volume, error) {
	if err := s.requireLeader(); err != nil {
		return nil, err
	}
	// Validate before touching the record: a bad key or value changes
	// nothing.
	if _, err := storageclass.Defaults().WithMutable(mutable); err != nil {
		return nil, err
	}
	_, count := mutable[storageclass.KeyNumReplicas]
	v, err := s.o.Store.UpdateVolume(ctx, id, func(v *store.Volume) error {
		if v.State == store.VolumeDeleting {
			return fmt.Errorf("volume %s is being deleted: %w", id, ErrFailedPrecondition)
		}
		p, err := v.Parameters.WithMutable(mutable)
		if err != nil {
			return err
		}
		if count {
			if err := checkReplicaCount(v, p.NumReplicas); err != nil {
				return err
			}
		}
		v.Parameters = p
		return nil
	})
	if err != nil || !count {
		return v, err
	}
	return s.reconcileReplicaCount(ctx, id)
}

// ExpandVolume grows every active replica to newSize and then records the
// size. Every active replica must be reachable: a replica left smaller than
// the array could never be re-added, so a partial expansion is refused
// (ErrUnavailable, retry) rather than recorded.
func (s *Service) ExpandVolume(ctx context.Context, id string, newSize int64) (*store.Volume, error) {
	if err := s.requireLeader(); err != nil {
		return nil, err
	}
	size, err := volumeSize("size", newSize)
	if err != nil {
		return nil, err
	}
	v, err := s.o.Store.GetVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	if v.State != store.VolumeReady {
		return nil, fmt.Errorf("volume %s is %s: %w", id, v.State, ErrFailedPrecondition)
	}
	if size <= v.SizeBytes {
		return v, nil
	}
	_, failed := s.forReplicas(ctx, v, func(r store.Replica) bool { return r.State == store.ReplicaActive }, func(a AgentClient, r store.Replica) error {
		return a.ExpandReplica(ctx, r.ID, layout.ReplicaSize(size))
	})
	if len(failed) > 0 {
		return nil, fmt.Errorf("expand volume %s to %d: %w", id, size, errors.Join(mapValues(failed)...))
	}
	return s.o.Store.UpdateVolume(ctx, id, func(v *store.Volume) error {
		if size > v.SizeBytes {
			v.SizeBytes = size
		}
		return nil
	})
}
