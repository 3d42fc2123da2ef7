package provisioner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// orphanState is what the leader's scans know, in memory: a new leader
// starts with nothing, so every orphan's grace starts again from its first
// sight by that leader (a failover delays a reclaim, never hastens one).
type orphanState struct {
	// busy: one scan or reclaim at a time (TryLock: a second is Aborted).
	busy sync.Mutex

	mu    sync.Mutex
	known map[orphanKey]Orphan
	// reclaimed: replica IDs reclaimed lately, so an administrator's retry
	// of a reclaim that succeeded succeeds again.
	reclaimed   map[string]time.Time
	lastScan    time.Time
	unreachable []string
	stats       OrphanStats
}

// OrphanStats are the counters of the orphan scan and of create rollbacks
// since the process started (the metrics).
type OrphanStats struct {
	// Known: orphans known after the last scan, by class.
	Known map[OrphanClass]int
	// Found: orphans seen for the first time, by class.
	Found map[OrphanClass]uint64
	// Reclaimed by the scan after the grace (automatic) or by an
	// administrator's command (admin); ReclaimFailures: attempts that
	// failed (retried at the next scan).
	ReclaimedAutomatic, ReclaimedAdmin, ReclaimFailures uint64
	// RolledBack: volumes left creating past the timeout and rolled back.
	RolledBack uint64
}

// OrphanReport is the last scan's view (ListOrphans).
type OrphanReport struct {
	Orphans []Orphan
	// ScannedAt: when the last scan ended (zero: none yet on this leader).
	ScannedAt time.Time
	// Unreachable: storage nodes that did not answer it; their orphans
	// are those of earlier scans.
	Unreachable []string
	// Grace: a released orphan is reclaimed once orphaned this long.
	Grace time.Duration
}

// ReclaimAfter is when the scan reclaims o (zero: never by itself).
func (r OrphanReport) ReclaimAfter(o Orphan) time.Time {
	if o.Class != OrphanReleased {
		return time.Time{}
	}
	return o.FirstSeen.Add(r.Grace)
}

// reclaimedMemory is how long an administrator's retry of a reclaim that
// succeeded is answered as a success.
const reclaimedMemory = time.Hour

// OrphanStats returns a copy of the counters.
func (s *Service) OrphanStats() OrphanStats {
	s.orphans.mu.Lock()
	defer s.orphans.mu.Unlock()
	out := s.orphans.stats
	out.Known = map[OrphanClass]int{}
	for _, o := range s.orphans.known {
		out.Known[o.Class]++
	}
	out.Found = map[OrphanClass]uint64{}
	for c, n := range s.orphans.stats.Found {
		out.Found[c] = n
	}
	return out
}

// forgetOrphans drops what the scans knew: called while this process does
// not lead, so a leadership regained later measures graces afresh.
func (s *Service) forgetOrphans() {
	s.orphans.mu.Lock()
	defer s.orphans.mu.Unlock()
	s.orphans.known, s.orphans.lastScan, s.orphans.unreachable = nil, time.Time{}, nil
}

// RunOrphanScanner scans every interval while this provisioner leads, and
// forgets what it saw whenever it does not, until ctx ends.
func (s *Service) RunOrphanScanner(ctx context.Context, interval time.Duration) {
	s.everyInterval(ctx, interval, nil, func(ctx context.Context) {
		if err := s.ScanOrphans(ctx); err != nil {
			klog.ErrorS(err, "Orphan scan failed")
		}
	}, s.forgetOrphans)
}

// ScanOrphans runs one scan: lists every storage node's replicas, compares
// them with the registry (decideOrphans), reports orphans seen for the
// first time and reclaims the released ones whose grace has passed.
func (s *Service) ScanOrphans(ctx context.Context) error {
	if err := s.requireLeader(); err != nil {
		return err
	}
	if !s.orphans.busy.TryLock() {
		return fmt.Errorf("an orphan scan or reclaim is running; retry: %w", ErrAborted)
	}
	defer s.orphans.busy.Unlock()

	held, unreachable, err := s.listHeld(ctx)
	if err != nil {
		return err
	}
	// The registry is read after the agents answered (see orphanScan).
	idx, err := s.readRegistryIndex(ctx, true)
	if err != nil {
		return err
	}
	now := s.o.Now()
	s.orphans.mu.Lock()
	d := decideOrphans(orphanScan{held: held, index: idx, prev: s.orphans.known, now: now, grace: s.o.OrphanGrace})
	s.orphans.known, s.orphans.lastScan, s.orphans.unreachable = d.known, now, unreachable
	for _, o := range d.found {
		if s.orphans.stats.Found == nil {
			s.orphans.stats.Found = map[OrphanClass]uint64{}
		}
		s.orphans.stats.Found[o.Class]++
	}
	s.orphans.mu.Unlock()

	for _, o := range d.found {
		klog.InfoS("Orphan replica found", "storageNode", o.StorageNode, "replica", o.ReplicaID, "volume", o.VolumeID, "class", o.Class, "reason", o.Reason)
		s.recordOffline(ctx, orphanEvent(events.OrphanFound, o, foundMessage(o, s.o.OrphanGrace)))
	}
	for _, o := range d.reclaim {
		if err := s.reclaimOrphan(ctx, o, false); err != nil {
			klog.ErrorS(err, "Orphan replica not reclaimed; the next scan retries", "storageNode", o.StorageNode, "replica", o.ReplicaID, "volume", o.VolumeID)
		}
	}
	if len(unreachable) > 0 {
		klog.V(2).InfoS("Orphan scan: storage nodes that did not answer are left for the next scan", "storageNodes", unreachable)
	}
	return nil
}

func foundMessage(o Orphan, grace time.Duration) string {
	switch o.Class {
	case OrphanReleased:
		return fmt.Sprintf("replica %s (volume %s) on storage node %s is owned by no volume: %s; it is deleted if still orphaned after %s", o.ReplicaID, o.VolumeID, o.StorageNode, o.Reason, grace)
	case OrphanUnknown:
		return fmt.Sprintf("replica %s (volume %s) on storage node %s is owned by no volume: %s; it is kept until an administrator reclaims it (nvmirrorctl orphans reclaim %s)", o.ReplicaID, o.VolumeID, o.StorageNode, o.Reason, o.ReplicaID)
	}
	return fmt.Sprintf("replica %s (volume %s) on storage node %s does not match the registry: %s; it is kept", o.ReplicaID, o.VolumeID, o.StorageNode, o.Reason)
}

func orphanEvent(t events.Type, o Orphan, msg string) events.Event {
	return events.Event{Type: t, Volume: o.VolumeID, Replica: o.ReplicaID, StorageNode: o.StorageNode, Message: events.Truncate(msg, events.MaxMessageLength)}
}

// listHeld asks every registered storage node for its replicas, in
// parallel, each call bounded by AgentTimeout. Nodes that fail are
// returned by name and absent from held.
func (s *Service) listHeld(ctx context.Context) (held map[string][]HeldReplica, unreachable []string, err error) {
	nodes, err := s.o.Store.ListStorageNodes(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("list storage nodes: %w", err)
	}
	held = map[string][]HeldReplica{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, s.o.AgentTimeout)
			defer cancel()
			a, err := s.o.Agents.Agent(cctx, n)
			var rs []HeldReplica
			if err == nil {
				rs, err = a.ListReplicas(cctx)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				klog.V(2).InfoS("Storage node did not list its replicas", "storageNode", n.ID, "err", err)
				unreachable = append(unreachable, n.ID)
				return
			}
			held[n.ID] = rs
		})
	}
	wg.Wait()
	return held, unreachable, nil
}

// readRegistryIndex reads the volumes and tombstones; expire drops the
// tombstones older than TombstoneRetention first (the scan's housekeeping).
func (s *Service) readRegistryIndex(ctx context.Context, expire bool) (registryIndex, error) {
	tombs, err := s.o.Store.ListTombstones(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tombstones: %w", err)
	}
	if expire {
		kept := tombs[:0]
		for _, t := range tombs {
			if s.o.Now().Sub(t.DeletedAt) < s.o.TombstoneRetention {
				kept = append(kept, t)
				continue
			}
			if err := s.o.Store.DeleteTombstone(ctx, t.VolumeID); err != nil && !errors.Is(err, store.ErrNotFound) {
				return nil, fmt.Errorf("expire tombstone of volume %s: %w", t.VolumeID, err)
			}
			klog.V(2).InfoS("Tombstone expired", "volume", t.VolumeID, "deletedAt", t.DeletedAt)
		}
		tombs = kept
	}
	vols, err := s.o.Store.ListVolumes(ctx)
	if err != nil {
		return nil, err
	}
	return indexRegistry(vols, tombs), nil
}

// reclaimOrphan deletes an orphan from its storage node after checking,
// against a fresh read of the registry and of the agent, that it is still
// an orphan the caller may reclaim (admin: unknown ones too) and still the
// replica of the volume decided on.
func (s *Service) reclaimOrphan(ctx context.Context, o Orphan, admin bool) error {
	deleted, err := s.deleteOrphan(ctx, o, admin)
	s.orphans.mu.Lock()
	defer s.orphans.mu.Unlock()
	if err != nil {
		s.orphans.stats.ReclaimFailures++
		return err
	}
	delete(s.orphans.known, o.key())
	for id, at := range s.orphans.reclaimed {
		if s.o.Now().Sub(at) > reclaimedMemory {
			delete(s.orphans.reclaimed, id)
		}
	}
	if s.orphans.reclaimed == nil {
		s.orphans.reclaimed = map[string]time.Time{}
	}
	s.orphans.reclaimed[o.ReplicaID] = s.o.Now()
	switch {
	case !deleted: // gone by itself meanwhile: nothing reclaimed
	case admin:
		s.orphans.stats.ReclaimedAdmin++
	default:
		s.orphans.stats.ReclaimedAutomatic++
	}
	return nil
}

// deleteOrphan does reclaimOrphan's checks and deletion; deleted is false
// when the replica was gone already.
func (s *Service) deleteOrphan(ctx context.Context, o Orphan, admin bool) (deleted bool, err error) {
	idx, err := s.readRegistryIndex(ctx, false)
	if err != nil {
		return false, err
	}
	owned, class, why := idx.classify(o.StorageNode, HeldReplica{ID: o.ReplicaID, VolumeID: o.VolumeID})
	switch {
	case owned:
		return false, fmt.Errorf("replica %s on storage node %s is owned by volume %s now; not an orphan: %w", o.ReplicaID, o.StorageNode, o.VolumeID, ErrFailedPrecondition)
	case class == OrphanConflict:
		return false, fmt.Errorf("replica %s on storage node %s is never reclaimed: %s: %w", o.ReplicaID, o.StorageNode, why, ErrFailedPrecondition)
	case class == OrphanUnknown && !admin:
		return false, fmt.Errorf("replica %s: %s; only an administrator reclaims it: %w", o.ReplicaID, why, ErrFailedPrecondition)
	}
	a, err := s.agentFor(ctx, o.StorageNode)
	if err != nil {
		return false, err
	}
	cctx, cancel := context.WithTimeout(ctx, s.o.AgentTimeout)
	defer cancel()
	h, err := a.GetReplica(cctx, o.ReplicaID)
	if errors.Is(err, ErrNotFound) {
		klog.InfoS("Orphan replica already gone from its storage node", "storageNode", o.StorageNode, "replica", o.ReplicaID, "volume", o.VolumeID)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if h.VolumeID != o.VolumeID {
		return false, fmt.Errorf("storage node %s now reports replica %s for volume %s, not %s: not deleted: %w", o.StorageNode, o.ReplicaID, h.VolumeID, o.VolumeID, ErrFailedPrecondition)
	}
	if err := a.DeleteReplica(cctx, o.ReplicaID); err != nil && !errors.Is(err, ErrNotFound) {
		return false, fmt.Errorf("delete orphan replica %s on storage node %s: %w", o.ReplicaID, o.StorageNode, err)
	}
	how := "after " + s.o.OrphanGrace.String() + " orphaned"
	if admin {
		how = "by an administrator's command"
	}
	klog.InfoS("Orphan replica reclaimed", "storageNode", o.StorageNode, "replica", o.ReplicaID, "volume", o.VolumeID, "class", class, "admin", admin)
	s.recordOffline(ctx, orphanEvent(events.OrphanReclaimed, o,
		fmt.Sprintf("replica %s (volume %s, %s) deleted from storage node %s %s: %s", o.ReplicaID, o.VolumeID, class, o.StorageNode, how, why)))
	return true, nil
}

// ListOrphans returns what the last scan found (this leader's).
func (s *Service) ListOrphans(ctx context.Context) (OrphanReport, error) {
	if err := s.requireLeader(); err != nil {
		return OrphanReport{}, err
	}
	s.orphans.mu.Lock()
	defer s.orphans.mu.Unlock()
	out := OrphanReport{ScannedAt: s.orphans.lastScan, Unreachable: append([]string(nil), s.orphans.unreachable...), Grace: s.o.OrphanGrace}
	for _, o := range s.orphans.known {
		out.Orphans = append(out.Orphans, o)
	}
	sortOrphans(out.Orphans)
	return out, nil
}

// ReclaimOrphan deletes an orphan the last scan found, at an
// administrator's command: released and unknown ones (an unknown one may
// hold a volume created after a restored registry's backup: the
// administrator decides), never a conflicting one, and only after the same
// checks as the scan's reclaims. Idempotent: a replica reclaimed lately
// succeeds again.
func (s *Service) ReclaimOrphan(ctx context.Context, replicaID string) (Orphan, error) {
	if err := s.requireLeader(); err != nil {
		return Orphan{}, err
	}
	if !s.orphans.busy.TryLock() {
		return Orphan{}, fmt.Errorf("an orphan scan or reclaim is running; retry: %w", ErrAborted)
	}
	defer s.orphans.busy.Unlock()
	s.orphans.mu.Lock()
	var matches []Orphan
	for _, o := range s.orphans.known {
		if o.ReplicaID == replicaID {
			matches = append(matches, o)
		}
	}
	_, reclaimed := s.orphans.reclaimed[replicaID]
	s.orphans.mu.Unlock()
	switch {
	case len(matches) == 0 && reclaimed:
		return Orphan{ReplicaID: replicaID}, nil
	case len(matches) == 0:
		return Orphan{}, fmt.Errorf("replica %s is not among the orphans the last scan found (nvmirrorctl orphans lists them): %w", replicaID, ErrNotFound)
	case len(matches) > 1:
		return Orphan{}, fmt.Errorf("replica %s is held by several storage nodes; reclaim it on each by hand: %w", replicaID, ErrFailedPrecondition)
	}
	return matches[0], s.reclaimOrphan(ctx, matches[0], true)
}
