package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	"k8s.io/klog/v2"
)

// CreateRequest is the input of CreateReplica.
type CreateRequest struct {
	ReplicaID    string
	VolumeID     string
	SizeBytes    int64
	Provisioning Provisioning
	AllowedHosts []string
	// Source, when set, is the snapshot range the new file starts as.
	Source *SnapshotSource
}

// CreateReplica creates replica req.ReplicaID, or returns it when it exists
// with the same volume, size and provisioning (a repeated create ignores
// AllowedHosts: re-allowing a host revoked since would break fencing).
//
// Order: (1) record the replica as creating, (2) create/grow the backing
// file, (3) export it (subsystem, namespace, hosts, port links), (4) record
// it ready. A crash after (1) is completed by a repeated create or the next
// start (both resume from the record); a failure for lack of space removes
// what was created.
func (s *Service) CreateReplica(ctx context.Context, req CreateRequest) (*Replica, error) {
	hosts, err := validateCreate(req)
	if err != nil {
		return nil, err
	}
	if !s.inflight.Insert(req.ReplicaID) {
		return nil, inFlightError(req.ReplicaID)
	}
	defer s.inflight.Delete(req.ReplicaID)

	if cur, ok := s.get(req.ReplicaID); ok {
		if cur.State == StateDeleting {
			return nil, fmt.Errorf("%w: replica %s is being deleted; repeat DeleteReplica before creating it again", ErrFailedPrecondition, cur.ID)
		}
		if cur.VolumeID != req.VolumeID || cur.SizeBytes != req.SizeBytes || cur.Provisioning != req.Provisioning {
			return nil, fmt.Errorf("%w: replica %s exists with volume_id=%s size_bytes=%d provisioning_type=%s; requested volume_id=%s size_bytes=%d provisioning_type=%s",
				ErrAlreadyExists, cur.ID, cur.VolumeID, cur.SizeBytes, cur.Provisioning, req.VolumeID, req.SizeBytes, req.Provisioning)
		}
		if !sameSource(cur.Source, req.Source) {
			return nil, fmt.Errorf("%w: replica %s exists with source %s; requested source %s",
				ErrAlreadyExists, cur.ID, cur.Source, req.Source)
		}
		if cur.State == StateCreating {
			if err := s.finishCreate(cur); err != nil {
				return nil, err
			}
			cur, _ = s.get(req.ReplicaID)
		}
		return cur, nil
	}
	c, err := s.pool.Capacity()
	if err != nil {
		return nil, err
	}
	if req.SizeBytes > c.AvailableBytes {
		return nil, fmt.Errorf("%w: size_bytes %d exceeds the %d bytes available in pool %s",
			ErrResourceExhausted, req.SizeBytes, c.AvailableBytes, s.pool.Dir())
	}
	if req.Source != nil {
		if err := s.checkSource(req.Source); err != nil {
			return nil, err
		}
	}
	r := &Replica{
		ID:           req.ReplicaID,
		VolumeID:     req.VolumeID,
		SizeBytes:    req.SizeBytes,
		Provisioning: req.Provisioning,
		AllowedHosts: hosts,
		State:        StateCreating,
		Source:       req.Source,
	}
	if err := s.put(r); err != nil { // (1)
		return nil, err
	}
	if err := s.finishCreate(r); err != nil { // (2)-(4)
		if errors.Is(err, ErrResourceExhausted) {
			// Undo in delete order; on failure the record stays (creating)
			// and a retry or DeleteReplica cleans up.
			if uerr := s.finishDelete(r); uerr != nil {
				klog.ErrorS(uerr, "Cannot undo replica creation", "replica", r.ID)
			}
		}
		return nil, err
	}
	klog.InfoS("Created replica", "replica", r.ID, "volume", r.VolumeID, "sizeBytes", r.SizeBytes, "provisioning", r.Provisioning, "hosts", r.AllowedHosts, "source", r.Source)
	r, _ = s.get(r.ID)
	return r, nil
}

// finishCreate does steps (2)-(4) of CreateReplica for a record. A
// replica from a snapshot gets its file built aside and renamed into place
// (Pool.EnsureFromSnapshot), so an existing file is always complete.
func (s *Service) finishCreate(r *Replica) error {
	if r.Source != nil {
		if err := s.pool.EnsureFromSnapshot(r.ID, r.SizeBytes, r.Provisioning, *r.Source); err != nil {
			return err
		}
	}
	if err := s.pool.Ensure(r.ID, r.SizeBytes, r.Provisioning); err != nil {
		return err
	}
	if err := s.export(r, true); err != nil {
		return err
	}
	r = r.clone()
	r.State = StateReady
	return s.put(r)
}

// DeleteReplica removes replica id: its export (cutting live sessions),
// then its data. An unknown ID is success (leftovers of that ID are still
// removed).
//
// Order: (1) record the replica as deleting, (2) remove the subsystem,
// (3) remove the backing file, (4) drop the record. A crash anywhere is
// completed by a repeated delete or the next start; nothing is re-exported
// once (1) is durable.
func (s *Service) DeleteReplica(ctx context.Context, id string) error {
	if err := validateReplicaID(id); err != nil {
		return err
	}
	if !s.inflight.Insert(id) {
		return inFlightError(id)
	}
	defer s.inflight.Delete(id)
	r, ok := s.get(id)
	if !ok {
		r = &Replica{ID: id, State: StateDeleting}
	} else if r.State != StateDeleting {
		r.State = StateDeleting
		if err := s.put(r); err != nil { // (1)
			return err
		}
	}
	if err := s.finishDelete(r); err != nil {
		return err
	}
	if ok {
		klog.InfoS("Deleted replica", "replica", id, "volume", r.VolumeID)
	}
	return nil
}

// finishDelete does steps (2)-(4) of DeleteReplica.
func (s *Service) finishDelete(r *Replica) error {
	if err := s.exp.RemoveSubsystem(s.NQN(r.ID)); err != nil { // (2)
		return fmt.Errorf("unexport replica %s: %w", r.ID, err)
	}
	if err := s.pool.Remove(r.ID); err != nil { // (3)
		return err
	}
	return s.drop(r.ID) // (4)
}

// ExpandReplica grows replica id to size bytes. A size equal to the current
// one succeeds (and re-does the file growth and revalidation, completing an
// interrupted expand); a smaller one is InvalidArgument.
//
// Order: (1) record the new size, (2) grow the file, (3) revalidate the
// namespace so hosts see the size. A crash after (1) is completed by a
// repeated expand or the next start (export grows a file smaller than its
// record and revalidates). A failure for lack of space restores the old
// size in the record.
func (s *Service) ExpandReplica(ctx context.Context, id string, size int64) (*Replica, error) {
	if err := validateReplicaID(id); err != nil {
		return nil, err
	}
	if err := validateSize(size); err != nil {
		return nil, err
	}
	if !s.inflight.Insert(id) {
		return nil, inFlightError(id)
	}
	defer s.inflight.Delete(id)
	r, ok := s.get(id)
	if !ok {
		return nil, fmt.Errorf("%w: replica %s", ErrNotFound, id)
	}
	if r.State != StateReady {
		return nil, fmt.Errorf("%w: replica %s is %s, not ready", ErrFailedPrecondition, id, r.State)
	}
	if size < r.SizeBytes {
		return nil, fieldError("size_bytes", "%d is smaller than the replica's %d bytes; shrinking is not supported", size, r.SizeBytes)
	}
	if size > r.SizeBytes {
		c, err := s.pool.Capacity()
		if err != nil {
			return nil, err
		}
		if delta := size - r.SizeBytes; delta > c.AvailableBytes {
			return nil, fmt.Errorf("%w: growing replica %s from %d to %d bytes needs %d bytes; pool %s has %d available",
				ErrResourceExhausted, id, r.SizeBytes, size, delta, s.pool.Dir(), c.AvailableBytes)
		}
		old := r.SizeBytes
		r.SizeBytes = size
		if err := s.put(r); err != nil { // (1)
			return nil, err
		}
		if err := s.pool.Ensure(id, size, r.Provisioning); err != nil { // (2)
			if errors.Is(err, ErrResourceExhausted) {
				r.SizeBytes = old
				if perr := s.put(r); perr != nil {
					klog.ErrorS(perr, "Cannot restore replica size after failed growth", "replica", id)
				}
			}
			return nil, err
		}
		klog.InfoS("Expanded replica", "replica", id, "fromBytes", old, "toBytes", size)
	} else if err := s.pool.Ensure(id, size, r.Provisioning); err != nil {
		return nil, err
	}
	if err := s.exp.RevalidateNamespace(s.NQN(id), NSID); err != nil { // (3)
		return nil, fmt.Errorf("revalidate namespace of replica %s: %w", id, err)
	}
	return r, nil
}

// GetReplica returns replica id or ErrNotFound.
func (s *Service) GetReplica(id string) (*Replica, error) {
	if err := validateReplicaID(id); err != nil {
		return nil, err
	}
	r, ok := s.get(id)
	if !ok {
		return nil, fmt.Errorf("%w: replica %s", ErrNotFound, id)
	}
	return r, nil
}

// ListReplicas returns the replicas, of volumeID only when set, by ID.
func (s *Service) ListReplicas(volumeID string) ([]*Replica, error) {
	if volumeID != "" {
		if err := validateVolumeID(volumeID); err != nil {
			return nil, err
		}
	}
	recs := s.snapshot()
	out := make([]*Replica, 0, len(recs))
	for _, r := range recs {
		if volumeID == "" || r.VolumeID == volumeID {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func validateCreate(req CreateRequest) ([]string, error) {
	if err := validateReplicaID(req.ReplicaID); err != nil {
		return nil, err
	}
	if err := validateVolumeID(req.VolumeID); err != nil {
		return nil, err
	}
	if err := validateSize(req.SizeBytes); err != nil {
		return nil, err
	}
	if err := validateProvisioning(req.Provisioning); err != nil {
		return nil, err
	}
	for i, h := range req.AllowedHosts {
		if err := validateHostNQN(fmt.Sprintf("allowed_hosts[%d]", i), h); err != nil {
			return nil, err
		}
	}
	if req.Source != nil {
		if err := validateSource(req.Source, req.SizeBytes); err != nil {
			return nil, err
		}
	}
	return normalizeHosts(req.AllowedHosts), nil
}

func normalizeHosts(h []string) []string {
	if len(h) == 0 {
		return nil
	}
	out := slices.Clone(h)
	slices.Sort(out)
	return slices.Compact(out)
}

func (src *SnapshotSource) String() string {
	if src == nil {
		return "none"
	}
	return fmt.Sprintf("snapshot %s [%d,+%d) at %d", src.SnapshotID, src.SourceOffset, src.Length, src.TargetOffset)
}

func sameSource(a, b *SnapshotSource) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// validateSource checks a source's fields against a replica of size
// bytes: 4 KiB multiples, a non-empty range that fits the replica.
func validateSource(src *SnapshotSource, size int64) error {
	if err := validateSnapshotID("source.snapshot_id", src.SnapshotID); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"source.source_offset", src.SourceOffset}, {"source.length", src.Length}, {"source.target_offset", src.TargetOffset}} {
		if f.v < 0 || f.v%BlockSize != 0 {
			return fieldError(f.name, "%d is not a non-negative multiple of %d", f.v, BlockSize)
		}
	}
	if src.Length == 0 {
		return fieldError("source.length", "must be positive")
	}
	if src.TargetOffset > size || src.Length > size-src.TargetOffset {
		return fieldError("source.target_offset", "%d+%d bytes does not fit the replica's %d bytes", src.TargetOffset, src.Length, size)
	}
	return nil
}

// checkSource checks that the source snapshot exists and holds the range.
func (s *Service) checkSource(src *SnapshotSource) error {
	sn, err := s.pool.loadSnapshot(src.SnapshotID)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: source snapshot %s is not on this storage node", ErrFailedPrecondition, src.SnapshotID)
	}
	if err != nil {
		return err
	}
	if src.SourceOffset > sn.SizeBytes || src.Length > sn.SizeBytes-src.SourceOffset {
		return fieldError("source.length", "%d+%d bytes is beyond the end of snapshot %s (%d bytes)", src.SourceOffset, src.Length, src.SnapshotID, sn.SizeBytes)
	}
	return nil
}
