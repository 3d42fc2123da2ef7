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
	"github.com/nvmirror/nvmirror/pkg/repair"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// Offline repair: a node's healer looks after the volumes staged on it;
// nothing looked after the others, so a volume whose pod was not running
// stayed degraded, and a storage node loss could quietly take it down to
// one copy. The provisioner heals those under the same rules as the
// healer, with md doing the copying on a storage node:
//
//   - a replica away longer than maxReplicaDownTime is replaced
//     (ReplaceReplica, with all its rules: never the last in-sync one);
//   - out-of-sync replicas that can be reached (one that came back, or a
//     new replacement) are brought up to date by a storage node's agent
//     (StartRepair): it connects to the replicas as its own host NQN,
//     assembles the array from the in-sync ones and lets md re-add (the
//     bitmap: only what changed is copied) or recover (a blank
//     replacement: a full copy) the others.
//
// Only a volume published to no host is repaired offline; while a repair
// runs (Volume.Repair), PublishVolume first stops it and revokes the
// repair's host on every replica (which cuts its sessions), so a host that
// takes the volume over never shares it with the repair. md keeps how far
// a recovery got in the superblocks, so the host's healer continues where
// the repair stopped.

// RepairOnce runs one pass over every volume: advances the running offline
// repairs and starts those that are due. It returns how many repairs run
// afterwards.
func (s *Service) RepairOnce(ctx context.Context) (running int, err error) {
	if err := s.requireLeader(); err != nil {
		return 0, err
	}
	vols, err := s.o.Store.ListVolumes(ctx)
	if err != nil {
		return 0, err
	}
	var reach map[string]*surveyedNode
	for _, v := range vols {
		if v.Repair != nil && v.State != store.VolumeReady {
			// Being deleted: the repair must not hold its replicas.
			s.logEnd(s.takeOverRepair(ctx, v, ""), v.ID)
			continue
		}
		if v.Repair != nil {
			if s.pollRepair(ctx, v) {
				running++
			}
			continue
		}
		if v.State != store.VolumeReady || v.PublishedHostNQN != "" {
			continue // a published volume: the host's healer looks after it
		}
		if reach == nil {
			if reach, _, err = s.survey(ctx); err != nil {
				return running, err
			}
		}
		started, err := s.repairVolume(ctx, v, reach)
		if err != nil {
			klog.ErrorS(err, "Offline repair not started", "volume", v.ID)
		}
		if started {
			running++
		}
	}
	return running, nil
}

// RunRepairer runs RepairOnce every interval while this provisioner leads,
// until ctx ends, and at once when a volume no host has published gets a
// new replica (a move, a replacement, a higher replica count).
func (s *Service) RunRepairer(ctx context.Context, interval time.Duration) {
	s.everyInterval(ctx, interval, s.repairWake, func(ctx context.Context) {
		if n, err := s.RepairOnce(ctx); err != nil {
			klog.ErrorS(err, "Offline repair pass failed")
		} else if n > 0 {
			klog.V(2).InfoS("Offline repairs running", "count", n)
		}
	}, nil)
}

// reachable reports whether the replica's storage node answered the survey.
func reachable(reach map[string]*surveyedNode, r store.Replica) bool {
	sn := reach[r.StorageNode]
	return sn != nil && sn.err == nil
}

// repairVolume decides for one unpublished volume: record it degraded,
// replace replicas away too long, start a repair of the reachable
// out-of-sync ones, or record it healed.
func (s *Service) repairVolume(ctx context.Context, v *store.Volume, reach map[string]*surveyedNode) (bool, error) {
	if !mirrored(v) {
		// No md array: nothing an md repair could do, and its replica
		// reading blank at the ends says nothing about the middle.
		return false, nil
	}
	var away, stale, inSync []store.Replica
	for _, r := range v.Replicas {
		switch {
		case r.State != store.ReplicaActive || r.NQN == "":
		case !reachable(reach, r) || r.Diverged():
			// A diverged replica can never be brought up to date (md
			// would re-add it by bitmap): like one away, it is replaced.
			away = append(away, r)
		case r.InSync():
			inSync = append(inSync, r)
		default:
			stale = append(stale, r)
		}
	}
	if len(away) > 0 {
		var err error
		if v, err = s.replaceAway(ctx, v, away); err != nil {
			return false, err
		}
		if v == nil {
			return false, nil
		}
		return s.repairVolume(ctx, v, reach)
	}
	if len(stale) == 0 {
		if !v.DegradedSince.IsZero() {
			s.recordOffline(ctx, events.Event{Type: events.VolumeHealed, Volume: v.ID,
				Message: "every replica is reachable and in sync (no host has the volume staged)"})
		}
		return false, nil
	}
	if len(inSync) == 0 {
		return false, fmt.Errorf("volume %s: out-of-sync replicas %v are reachable but no in-sync replica is: nothing to repair from", v.ID, ids(stale))
	}
	if v.DegradedSince.IsZero() {
		s.recordOffline(ctx, events.Event{Type: events.VolumeDegraded, Volume: v.ID, Replicas: ids(stale),
			Message: "replicas out of sync and no host has the volume staged: repairing offline"})
	}
	if wait := s.retryIn(v.ID); wait > 0 {
		klog.V(2).InfoS("Offline repair: waiting after failures", "volume", v.ID, "retryIn", wait.Round(time.Second))
		return false, nil
	}
	if !s.fencing.Insert(v.ID) {
		return false, nil // a publish runs: the volume is about to have a host
	}
	defer s.fencing.Delete(v.ID)
	if v.Source != nil {
		if done, err := s.fillNeverStaged(ctx, v, reach, inSync, stale); done || err != nil {
			return done, err
		}
	}
	return s.startRepair(ctx, v, reach, inSync, stale)
}

// fillNeverStaged repairs a restored or cloned volume no host has ever
// staged: its replicas hold the volume's data without an md superblock (the
// first stage creates the array), so md cannot repair it and, worse, a
// repair's check for blank members would see nothing at their ends. The
// data region of an in-sync replica is copied into each out-of-sync one
// instead, which is then recorded in sync. done is false when the volume
// has an md superblock (it was staged: an ordinary md repair).
func (s *Service) fillNeverStaged(ctx context.Context, v *store.Volume, reach map[string]*surveyedNode, inSync, stale []store.Replica) (bool, error) {
	from := inSync[0]
	src := reach[from.StorageNode].agent
	sb, err := src.ReadSuperblock(ctx, from.ID)
	if err != nil {
		return false, fmt.Errorf("volume %s: reading replica %s's md superblock: %w", v.ID, from.ID, err)
	}
	if sb.Present {
		return false, nil
	}
	var filled []string
	for _, r := range stale {
		to := reach[r.StorageNode].agent
		if _, err := s.relay(ctx, src, DataRef{ReplicaID: from.ID}, dataOffset(v), v.SizeBytes, to, DataRef{ReplicaID: r.ID}, 0); err != nil {
			s.repairEnded(v.ID, true)
			return false, fmt.Errorf("volume %s: copying replica %s into %s (never staged, restored): %w", v.ID, from.ID, r.ID, err)
		}
		filled = append(filled, r.ID)
	}
	_, err = s.o.Store.UpdateVolume(ctx, v.ID, func(cur *store.Volume) error {
		if cur.PublishedHostNQN != "" || cur.Repair != nil {
			return errRepairRaced
		}
		for _, id := range filled {
			if r := cur.Replica(id); r != nil && r.State == store.ReplicaActive {
				r.OutOfSyncSince, r.OutOfSyncAtEvents = time.Time{}, 0
				completeMove(cur, id)
			}
		}
		return nil
	})
	if errors.Is(err, errRepairRaced) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	s.repairEnded(v.ID, false)
	klog.InfoS("Filled the new replicas of a never-staged restored volume from an in-sync one", "volume", v.ID, "from", from.ID, "replicas", filled)
	s.recordOffline(ctx, events.Event{Type: events.SynchEnded, Volume: v.ID, Replicas: filled, StorageNode: from.StorageNode,
		Message: fmt.Sprintf("copied from replica %s (the volume was restored and never staged: no md array yet)", from.ID)})
	return true, nil
}

// replaceAway records the volume degraded when replicas are away, and
// replaces those away longer than maxReplicaDownTime. It returns the
// volume as it is now, or nil when nothing more is to be done this pass.
func (s *Service) replaceAway(ctx context.Context, v *store.Volume, away []store.Replica) (*store.Volume, error) {
	if v.DegradedSince.IsZero() {
		s.recordOffline(ctx, events.Event{Type: events.VolumeDegraded, Volume: v.ID, Replicas: ids(away), StorageNode: away[0].StorageNode,
			Message: "storage node unreachable and no host has the volume staged"})
		return nil, nil
	}
	maxDown := time.Duration(v.Parameters.MaxReplicaDownTimeMinutes) * s.o.HealTimeUnit
	if maxDown == 0 || time.Since(v.DegradedSince) < maxDown {
		return nil, nil
	}
	var errs []error
	replaced := false
	for _, r := range away {
		nr, err := s.ReplaceReplica(ctx, v.ID, r.ID)
		if err != nil {
			errs = append(errs, fmt.Errorf("replace %s: %w", r.ID, err))
			continue
		}
		replaced = true
		klog.InfoS("Replaced a replica of an unstaged volume", "volume", v.ID, "missing", r.ID, "replica", nr.ID,
			"storageNode", nr.StorageNode, "degradedFor", time.Since(v.DegradedSince).Round(time.Second))
	}
	if !replaced {
		return nil, errors.Join(errs...)
	}
	cur, err := s.o.Store.GetVolume(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	return cur, errors.Join(errs...)
}

// startRepair picks the storage node, records the repair (the fence
// against a publish), allows the repair's host on every member and starts
// it.
func (s *Service) startRepair(ctx context.Context, v *store.Volume, reach map[string]*surveyedNode, inSync, stale []store.Replica) (bool, error) {
	node, hostNQN := repairNode(reach, stale, inSync)
	if node == "" {
		return false, fmt.Errorf("volume %s: no reachable storage node does offline repair (nvmirror-target --offline-repair)", v.ID)
	}
	rec := &store.OfflineRepair{ID: s.newRepairID(), StorageNode: node, HostNQN: hostNQN, Replicas: ids(stale),
		StartedAt: time.Now(), LeaseUntil: time.Now().Add(s.o.RepairLease)}
	v, err := s.o.Store.UpdateVolume(ctx, v.ID, func(cur *store.Volume) error {
		if cur.PublishedHostNQN != "" || cur.Repair != nil || cur.State != store.VolumeReady {
			return errRepairRaced
		}
		cur.Repair = rec
		return nil
	})
	if errors.Is(err, errRepairRaced) {
		return false, nil // a publish or another pass got there first
	}
	if err != nil {
		return false, err
	}
	members := append(slices.Clone(inSync), stale...)
	allowed, failed := s.forReplicas(ctx, v, func(r store.Replica) bool {
		return slices.ContainsFunc(members, func(m store.Replica) bool { return m.ID == r.ID })
	},
		func(a AgentClient, r store.Replica) error { return s.allowHost(ctx, a, v, r, hostNQN) })
	if _, err := s.recordAllowed(ctx, v.ID, allowed, hostNQN); err != nil {
		return false, err
	}
	if len(failed) > 0 {
		s.repairEnded(v.ID, true)
		return false, s.endRepair(ctx, v.ID, rec, fmt.Sprintf("allowing the repair host failed: %v", errors.Join(mapValues(failed)...)))
	}
	req, err := s.repairRequest(ctx, v, rec, inSync, stale)
	if err == nil {
		var a AgentClient
		if a, err = s.agentFor(ctx, node); err == nil {
			_, err = a.StartRepair(ctx, req)
		}
	}
	if err != nil {
		s.repairEnded(v.ID, true)
		return false, errors.Join(err, s.endRepair(ctx, v.ID, rec, fmt.Sprintf("starting it on %s failed: %v", node, err)))
	}
	s.renewLease(ctx, v.ID, rec.ID)
	klog.InfoS("Offline repair started", "volume", v.ID, "repair", rec.ID, "storageNode", node, "inSync", ids(inSync), "outOfSync", rec.Replicas)
	s.recordOffline(ctx, events.Event{Type: events.SynchStarted, Volume: v.ID, Replicas: rec.Replicas, StorageNode: node,
		Message: fmt.Sprintf("offline repair %s on storage node %s (no host has the volume staged)", rec.ID, node)})
	return true, nil
}

var errRepairRaced = errors.New("volume changed meanwhile")

// repairNode prefers the storage node of a replica being brought up to
// date (its writes stay local), then one of an in-sync replica, then any
// reachable node that repairs.
func repairNode(reach map[string]*surveyedNode, stale, inSync []store.Replica) (node, hostNQN string) {
	for _, r := range append(slices.Clone(stale), inSync...) {
		if sn := reach[r.StorageNode]; sn != nil && sn.err == nil && sn.repairHostNQN != "" {
			return r.StorageNode, sn.repairHostNQN
		}
	}
	for _, id := range slices.Sorted(maps.Keys(reach)) {
		if sn := reach[id]; sn.err == nil && sn.repairHostNQN != "" {
			return id, sn.repairHostNQN
		}
	}
	return "", ""
}

// repairRequest builds the agent's request, with the repair host's secrets
// for each member's storage node when the volume requires authentication.
func (s *Service) repairRequest(ctx context.Context, v *store.Volume, rec *store.OfflineRepair, inSync, stale []store.Replica) (repair.Request, error) {
	req := repair.Request{ID: rec.ID, VolumeID: v.ID, MDUUID: v.MDUUID, Lease: s.o.RepairLease,
		MaxRebuildKiBps: uint64(v.Parameters.RebuildBandwidthMiBps) * 1024}
	auth := v.Parameters.Auth()
	var pairs map[string]store.PairCredentials
	if auth != storageclass.AuthNone {
		hc, err := s.o.Store.GetHostCredentials(ctx, rec.HostNQN)
		if err != nil {
			return repair.Request{}, fmt.Errorf("secrets of the repair host %s: %w", rec.HostNQN, err)
		}
		pairs = hc.Pairs
	}
	for _, group := range []struct {
		rs     []store.Replica
		inSync bool
	}{{inSync, true}, {stale, false}} {
		for _, r := range group.rs {
			m := repair.Member{Replica: volume.Replica{ID: r.ID, StorageNode: r.StorageNode, NQN: r.NQN, State: volume.ReplicaActive}, InSync: group.inSync}
			for _, ep := range r.Addresses {
				m.Endpoints = append(m.Endpoints, volume.Endpoint{Address: ep.Address, Port: ep.ServiceID})
			}
			if auth != storageclass.AuthNone {
				p := pairs[r.StorageNode].Applied
				if p.IsZero() {
					return repair.Request{}, fmt.Errorf("storage node %s holds no secrets for the repair host %s yet", r.StorageNode, rec.HostNQN)
				}
				m.Secret = p.Secret
				if auth == storageclass.AuthBidirectional {
					m.CtrlSecret = p.CtrlSecret
				}
			}
			req.Members = append(req.Members, m)
		}
	}
	return req, nil
}

// pollRepair asks the repairing storage node how its repair goes (which
// renews the lease) and completes it when it ended. It reports whether the
// repair still runs.
func (s *Service) pollRepair(ctx context.Context, v *store.Volume) bool {
	rec := v.Repair
	a, err := s.agentFor(ctx, rec.StorageNode)
	var st repair.Status
	if err == nil {
		st, err = a.GetRepair(ctx, rec.ID)
	}
	switch {
	case errors.Is(err, ErrNotFound):
		s.repairEnded(v.ID, true)
		s.logEnd(s.endRepair(ctx, v.ID, rec, "the storage node does not know the repair (its agent restarted?)"), v.ID)
		return false
	case err != nil && leaseExpired(rec):
		// The node stopped the repair by itself when its lease ran out.
		s.repairEnded(v.ID, true)
		s.logEnd(s.endRepair(ctx, v.ID, rec, fmt.Sprintf("storage node %s unreachable past the repair's lease: %v", rec.StorageNode, err)), v.ID)
		return false
	case err != nil:
		klog.V(2).InfoS("Offline repair: storage node does not answer; its lease still runs", "volume", v.ID, "repair", rec.ID, "storageNode", rec.StorageNode, "leaseUntil", rec.LeaseUntil, "err", err)
		return true
	}
	switch st.State {
	case repair.Running:
		s.renewLease(ctx, v.ID, rec.ID)
		klog.V(2).InfoS("Offline repair running", "volume", v.ID, "repair", rec.ID, "storageNode", rec.StorageNode,
			"syncedBytes", st.SyncDoneBytes, "ofBytes", st.SyncTotalBytes, "written", st.BytesWritten, "message", st.Message)
		return true
	case repair.Succeeded:
		s.repairEnded(v.ID, false)
		s.logEnd(s.finishRepair(ctx, v.ID, rec, st), v.ID)
	default:
		s.repairEnded(v.ID, true)
		s.logEnd(s.endRepair(ctx, v.ID, rec, fmt.Sprintf("%s on %s: %s", st.State, rec.StorageNode, st.Message)), v.ID)
	}
	return false
}

// repairLeaseMargin is added to a repair's recorded lease before the
// provisioner holds it expired: the storage node needs a moment to notice
// and stop md, and the two count the lease on their own clocks.
const repairLeaseMargin = 15 * time.Second

// leaseExpired reports whether the storage node has surely stopped the
// repair by itself.
func leaseExpired(rec *store.OfflineRepair) bool {
	return time.Now().After(rec.LeaseUntil.Add(repairLeaseMargin))
}

// renewLease records the lease the storage node renewed when it last
// answered (counted from after its answer: never earlier than its own).
func (s *Service) renewLease(ctx context.Context, volumeID, repairID string) {
	lease := time.Now().Add(s.o.RepairLease)
	if _, err := s.o.Store.UpdateVolume(ctx, volumeID, func(cur *store.Volume) error {
		if cur.Repair != nil && cur.Repair.ID == repairID {
			cur.Repair.LeaseUntil = lease
		}
		return nil
	}); err != nil {
		klog.ErrorS(err, "Recording an offline repair's lease", "volume", volumeID)
	}
}

// retryIn is how long the volume's next offline repair must wait.
func (s *Service) retryIn(volumeID string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Until(s.repairBackoff[volumeID].until)
}

// repairEnded updates the volume's retry delay: cleared by a success,
// doubled (up to 32 times RepairRetry) by each failure in a row.
func (s *Service) repairEnded(volumeID string, failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !failed {
		delete(s.repairBackoff, volumeID)
		return
	}
	b := s.repairBackoff[volumeID]
	b.delay = min(max(2*b.delay, s.o.RepairRetry), 32*s.o.RepairRetry)
	b.until = time.Now().Add(b.delay)
	s.repairBackoff[volumeID] = b
}

func (s *Service) logEnd(err error, volumeID string) {
	if err != nil {
		klog.ErrorS(err, "Ending an offline repair", "volume", volumeID)
	}
}

// finishRepair records the replicas md brought in sync, then ends the
// repair.
func (s *Service) finishRepair(ctx context.Context, volumeID string, rec *store.OfflineRepair, st repair.Status) error {
	moved := map[string]store.Replica{} // new replica → the one its move removed
	_, err := s.o.Store.UpdateVolume(ctx, volumeID, func(cur *store.Volume) error {
		clear(moved) // fn may run again after a conflict
		if cur.Repair == nil || cur.Repair.ID != rec.ID {
			return errRepairRaced
		}
		for _, id := range st.Synced {
			if r := cur.Replica(id); r != nil && r.State == store.ReplicaActive && slices.Contains(rec.Replicas, id) {
				r.OutOfSyncSince, r.OutOfSyncAtEvents = time.Time{}, 0
				if old := completeMove(cur, id); old != nil {
					moved[id] = *old
				}
			}
		}
		return nil
	})
	if errors.Is(err, errRepairRaced) {
		return nil // taken over meanwhile; the host's healer records sync
	}
	if err != nil {
		return err
	}
	klog.InfoS("Offline repair finished", "volume", volumeID, "repair", rec.ID, "storageNode", rec.StorageNode,
		"synced", st.Synced, "bytesWritten", st.BytesWritten, "bitmapReAdd", st.BitmapReAdd)
	for id, old := range moved {
		s.logMoveDone(ctx, volumeID, id, &old)
	}
	s.recordOffline(ctx, events.Event{Type: events.SynchEnded, Volume: volumeID, Replicas: st.Synced, StorageNode: rec.StorageNode,
		Message: fmt.Sprintf("offline repair %s: %d replica(s) in sync, %d bytes written to them", rec.ID, len(st.Synced), st.BytesWritten)})
	return s.endRepair(ctx, volumeID, rec, "")
}

// endRepair revokes the repair's host on every replica (cutting its
// sessions) and clears the volume's repair record. A replica whose agent
// cannot be reached keeps the host as its AllowedHost, which the sweeper
// revokes when the node returns. reason is why it ended early ("" when it
// succeeded).
func (s *Service) endRepair(ctx context.Context, volumeID string, rec *store.OfflineRepair, reason string) error {
	v, err := s.o.Store.GetVolume(ctx, volumeID)
	if err != nil {
		return err
	}
	revoked, failed := s.forReplicas(ctx, v, func(r store.Replica) bool { return r.AllowedHost == rec.HostNQN }, func(a AgentClient, r store.Replica) error {
		err := a.RevokeHost(ctx, r.ID, rec.HostNQN)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	})
	_, err = s.o.Store.UpdateVolume(ctx, volumeID, func(cur *store.Volume) error {
		for i := range cur.Replicas {
			if revoked[cur.Replicas[i].ID] && cur.Replicas[i].AllowedHost == rec.HostNQN {
				cur.Replicas[i].AllowedHost = ""
			}
		}
		if cur.Repair != nil && cur.Repair.ID == rec.ID {
			cur.Repair = nil
		}
		return nil
	})
	if err != nil {
		return err
	}
	if reason != "" {
		klog.InfoS("Offline repair ended early", "volume", volumeID, "repair", rec.ID, "storageNode", rec.StorageNode, "reason", reason)
	}
	if len(failed) > 0 {
		// Unreachable nodes: their replicas keep the repair host as
		// AllowedHost, which the sweeper revokes when they return (and
		// no host can reach them meanwhile either).
		klog.InfoS("Revoking the offline repair's host left to the sweeper", "volume", volumeID, "repair", rec.ID, "replicas", len(failed))
	}
	if err := hardErrors(failed); err != nil {
		return fmt.Errorf("offline repair %s of volume %s: revoking its host %s: %w", rec.ID, volumeID, rec.HostNQN, err)
	}
	return nil
}

// takeOverRepair stops a volume's offline repair so that a host can be
// published: the storage node stops it (md records the recovery's
// progress), then its host is revoked on every replica. A storage node that
// does not answer stops by itself when its lease runs out; until then the
// publish is refused (ErrUnavailable, retried by the CO).
func (s *Service) takeOverRepair(ctx context.Context, v *store.Volume, hostNQN string) error {
	rec := v.Repair
	a, err := s.agentFor(ctx, rec.StorageNode)
	if err == nil {
		err = a.StopRepair(ctx, rec.ID)
	}
	if err != nil && !leaseExpired(rec) {
		return fmt.Errorf("volume %s is being repaired offline by storage node %s, which does not answer (%v); the repair stops by itself by %s, and the volume can be published then: %w",
			v.ID, rec.StorageNode, err, rec.LeaseUntil.Add(repairLeaseMargin).UTC().Format(time.RFC3339), ErrUnavailable)
	}
	why := "taken over by host " + hostNQN
	if hostNQN == "" {
		why = "the volume is being deleted"
	}
	klog.InfoS("Offline repair stopped", "volume", v.ID, "repair", rec.ID, "storageNode", rec.StorageNode, "reason", why)
	return s.endRepair(ctx, v.ID, rec, why)
}

// recordOffline records an event of the offline repairer (the store, and
// syslog); a failure is logged, never a reason to stop repairing.
func (s *Service) recordOffline(ctx context.Context, e events.Event) {
	e.Time = time.Now()
	if _, err := s.RecordEvents(ctx, e); err != nil {
		klog.ErrorS(err, "Recording an offline repair event", "type", e.Type, "volume", e.Volume)
	}
}

func ids(rs []store.Replica) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}
