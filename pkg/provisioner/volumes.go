package provisioner

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/provisioner/placement"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// CreateRequest is a CreateVolume call.
type CreateRequest struct {
	Name       string
	SizeBytes  int64
	Parameters map[string]string
	// Block: the volume is for raw block access. Recorded for display; it
	// is not part of the idempotency comparison (the node decides from the
	// capability at stage time).
	Block bool
	// SourceSnapshotID or SourceVolumeID (at most one): the volume starts
	// as a copy of that snapshot, or of that volume now (a clone).
	SourceSnapshotID, SourceVolumeID string
}

// metadataOf returns the claim metadata the external-provisioner injected,
// keyed by its parameter names; nil when there is none.
func metadataOf(p storageclass.Parameters) map[string]string {
	m := map[string]string{}
	for k, v := range map[string]string{storageclass.KeyPVName: p.Metadata.PVName, storageclass.KeyPVCName: p.Metadata.PVCName, storageclass.KeyPVCNamespace: p.Metadata.PVCNamespace} {
		if v != "" {
			m[k] = v
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// CreateVolume creates a volume, or returns the existing one when a volume
// of that name exists with the same size and configuration (a retry); a
// different size or configuration is ErrAlreadyExists.
func (s *Service) CreateVolume(ctx context.Context, req CreateRequest) (*store.Volume, error) {
	if err := s.requireLeader(); err != nil {
		return nil, err
	}
	if err := storageclass.ValidateVolumeName(req.Name); err != nil {
		return nil, err
	}
	size, err := volumeSize("size", req.SizeBytes)
	if err != nil {
		return nil, err
	}
	p, err := storageclass.Parse(req.Parameters)
	if err != nil {
		return nil, err
	}
	if req.SourceSnapshotID != "" && req.SourceVolumeID != "" {
		return nil, fmt.Errorf("%w: volume_content_source: a snapshot or a volume, not both", ErrInvalidArgument)
	}
	if !s.creates.enterCreate(req.Name) {
		return nil, fmt.Errorf("volume %s: an unfinished earlier create of it is being rolled back; retry: %w", req.Name, ErrUnavailable)
	}
	defer s.creates.leaveCreate(req.Name)
	if v, err := s.o.Store.GetVolumeByName(ctx, req.Name); err == nil {
		if err := sameSource(v, req); err != nil {
			return nil, err
		}
		return s.existing(ctx, v, size, p)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	var src *store.Snapshot
	if req.SourceSnapshotID != "" || req.SourceVolumeID != "" {
		if src, err = s.contentSource(ctx, req, size); err != nil {
			return nil, err
		}
	}

	_, nodes, err := s.survey(ctx)
	if err != nil {
		return nil, err
	}
	chosen, err := placeNear(nodes, placement.Request{SizeBytes: layout.ReplicaSize(size), Count: p.NumReplicas, Params: p, ThinOvercommit: s.o.ThinOvercommit}, src)
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", req.Name, err)
	}
	id := s.newVolumeID()
	// Every volume gets an md UUID, single-replica ones too: the node
	// serves those without md and ignores it, and one rule is simpler for
	// every reader than "UUID unless numReplicas is 1".
	v := &store.Volume{ID: id, Name: req.Name, SizeBytes: size, Parameters: p, State: store.VolumeCreating,
		MDUUID: s.newMDUUID(), MDName: mdName(id), Metadata: metadataOf(p), Block: req.Block}
	if req.SourceSnapshotID != "" || req.SourceVolumeID != "" {
		v.Source = &store.ContentSource{SnapshotID: req.SourceSnapshotID, VolumeID: req.SourceVolumeID}
	}
	for _, n := range chosen {
		v.Replicas = append(v.Replicas, store.Replica{ID: s.newReplicaID(), StorageNode: n.ID, State: store.ReplicaActive})
	}
	if err := s.o.Store.CreateVolume(ctx, v); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			// A concurrent create of the same name won; answer as a retry.
			if other, gerr := s.o.Store.GetVolumeByName(ctx, req.Name); gerr == nil {
				return s.existing(ctx, other, size, p)
			}
		}
		return nil, err
	}
	klog.InfoS("Creating volume", "volume", id, "name", req.Name, "size", size, "replicas", replicaNodes(v))
	return s.finishCreate(ctx, v)
}

func replicaNodes(v *store.Volume) []string {
	var out []string
	for _, r := range v.Replicas {
		out = append(out, r.ID+"@"+r.StorageNode)
	}
	return out
}

func (s *Service) existing(ctx context.Context, v *store.Volume, size int64, p storageclass.Parameters) (*store.Volume, error) {
	if v.SizeBytes != size {
		return nil, fmt.Errorf("volume %s exists with size %d, not %d: %w", v.Name, v.SizeBytes, size, ErrAlreadyExists)
	}
	if !v.Parameters.SameConfiguration(p) {
		return nil, fmt.Errorf("volume %s exists with other parameters (%v): %w", v.Name, v.Parameters.Map(), ErrAlreadyExists)
	}
	switch v.State {
	case store.VolumeReady:
		return v, nil
	case store.VolumeCreating:
		return s.finishCreate(ctx, v) // resume an interrupted create
	default:
		return nil, fmt.Errorf("volume %s is being deleted (or cleaned up after a failed create); retry later: %w", v.Name, ErrUnavailable)
	}
}

// finishCreate creates the planned replicas that do not exist yet (agents
// are idempotent by replica ID) and marks the volume ready. If a replica
// cannot be created, the volume is rolled back (its replicas deleted, by the
// sweeper if their nodes are away) so a retry places it afresh.
func (s *Service) finishCreate(ctx context.Context, v *store.Volume) (*store.Volume, error) {
	type result struct {
		ar  AgentReplica
		err error
	}
	var src *store.Snapshot
	if v.Source != nil {
		var err error
		if src, err = s.sourceSnapshot(ctx, v); err != nil {
			return nil, err
		}
	}
	results := make([]result, len(v.Replicas))
	var wg sync.WaitGroup
	for i, r := range v.Replicas {
		if r.NQN != "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := s.agentFor(ctx, r.StorageNode)
			if err == nil {
				spec := ReplicaSpec{ReplicaID: r.ID, VolumeID: v.ID, SizeBytes: layout.ReplicaSize(v.SizeBytes), ProvisioningType: v.Parameters.ProvisioningType}
				if src != nil {
					spec.Source = localSource(src, v, r.StorageNode)
				}
				results[i].ar, err = a.CreateReplica(ctx, spec)
				if err == nil && src != nil && spec.Source == nil {
					err = s.fillFromSnapshot(ctx, src, v, r, a)
				}
			}
			if err != nil {
				results[i].err = fmt.Errorf("replica %s on storage node %s: %w", r.ID, r.StorageNode, err)
			}
		}()
	}
	wg.Wait()
	var errs []error
	for _, res := range results {
		if res.err != nil {
			errs = append(errs, res.err)
		}
	}
	if len(errs) > 0 {
		err := errors.Join(errs...)
		klog.ErrorS(err, "Volume creation failed; rolling back", "volume", v.ID, "name", v.Name)
		if rerr := s.rollbackCreate(ctx, v.ID, nil); rerr != nil {
			klog.ErrorS(rerr, "Cannot record rollback; the sweeper rolls the create back once it is older than the creating timeout", "volume", v.ID)
		}
		return nil, fmt.Errorf("create volume %s: %w", v.Name, err)
	}
	out, err := s.o.Store.UpdateVolume(ctx, v.ID, func(cur *store.Volume) error {
		if cur.State != store.VolumeCreating && cur.State != store.VolumeReady {
			return fmt.Errorf("volume %s changed to %s during creation: %w", cur.Name, cur.State, ErrAborted)
		}
		for i := range cur.Replicas {
			for j, r := range v.Replicas {
				if cur.Replicas[i].ID == r.ID && results[j].ar.NQN != "" {
					cur.Replicas[i].NQN = results[j].ar.NQN
					cur.Replicas[i].Addresses = results[j].ar.Endpoints
				}
			}
		}
		cur.State = store.VolumeReady
		return nil
	})
	if err != nil {
		return nil, err
	}
	klog.InfoS("Created volume", "volume", out.ID, "name", out.Name)
	if src != nil && src.Internal {
		// The clone exists: its snapshot has served (the sweeper retries).
		if err := s.DeleteSnapshot(ctx, src.ID); err != nil {
			klog.V(2).InfoS("Deleting a clone's snapshot; the sweeper retries", "snapshot", src.ID, "err", err)
		}
	}
	return out, nil
}

// rollbackCreate marks the volume and all its replicas for deletion and
// runs one sweep of it; what cannot be deleted now is left to the sweeper.
// check (nil: none) may refuse, against the current record, with an error
// returned as is. The error is only the recording's.
func (s *Service) rollbackCreate(ctx context.Context, id string, check func(*store.Volume) error) error {
	_, err := s.o.Store.UpdateVolume(ctx, id, func(v *store.Volume) error {
		if check != nil {
			if err := check(v); err != nil {
				return err
			}
		}
		markDeleting(v)
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.sweepVolume(ctx, id); err != nil {
		klog.V(2).InfoS("Rollback incomplete; the sweeper will finish it", "volume", id, "err", err)
	}
	return nil
}

func markDeleting(v *store.Volume) {
	v.State = store.VolumeDeleting
	for i := range v.Replicas {
		r := &v.Replicas[i]
		if r.State == store.ReplicaRemoved && !r.PendingDelete {
			continue // already gone from its node
		}
		if r.State == store.ReplicaActive {
			r.State = store.ReplicaDeleting
		}
		r.PendingDelete = true
	}
}

// DeleteVolume deletes a volume. Replicas on reachable storage nodes are
// deleted now; the others stay "deleting" and the sweeper deletes them when
// their nodes return; the record goes when the last replica is gone.
// Deleting an unknown volume succeeds (CSI idempotency).
func (s *Service) DeleteVolume(ctx context.Context, id string) error {
	if err := s.requireLeader(); err != nil {
		return err
	}
	if !s.fencing.Insert(id) {
		return fmt.Errorf("volume %s: an offline repair of it is being set up or a publish runs; retry: %w", id, ErrAborted)
	}
	defer s.fencing.Delete(id)
	// An offline repair must not hold replicas being deleted; a storage
	// node that does not answer loses them anyway (deletion cuts its
	// sessions), so its repair stopping is not waited for.
	if cur, err := s.o.Store.GetVolume(ctx, id); err == nil && cur.Repair != nil && cur.PublishedHostNQN == "" {
		if err := s.takeOverRepair(ctx, cur, ""); err != nil && !errors.Is(err, ErrUnavailable) {
			return err
		}
	}
	_, err := s.o.Store.UpdateVolume(ctx, id, func(v *store.Volume) error {
		if v.PublishedHostNQN != "" {
			return fmt.Errorf("volume %s is still published to %s: %w", id, v.PublishedHostNQN, ErrFailedPrecondition)
		}
		markDeleting(v)
		v.Repair = nil
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.sweepVolume(ctx, id); err != nil {
		klog.InfoS("Volume deleted; some replicas wait for their storage nodes", "volume", id, "err", err)
	}
	return nil
}

// GetVolume returns a volume by ID.
func (s *Service) GetVolume(ctx context.Context, id string) (*store.Volume, error) {
	return s.o.Store.GetVolume(ctx, id)
}
