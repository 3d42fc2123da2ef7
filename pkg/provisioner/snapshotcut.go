package provisioner

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// Quiescer holds the writes of volumes staged on a CSI node while their
// snapshot copies are cut (implemented by the node hub: the node's md holds
// new writes once every write in flight has reached every member).
type Quiescer interface {
	// Freeze holds new writes to volumeIDs on the node and returns, per
	// volume, the replicas its md holds as in-sync members while frozen.
	// The node thaws by itself after thawAfter.
	Freeze(ctx context.Context, nodeID string, volumeIDs []string, thawAfter time.Duration) (freezeID string, inSync map[string][]string, err error)
	// Thaw releases a freeze; unknown or finished: success.
	Thaw(ctx context.Context, nodeID, freezeID string) error
}

// DefaultFreezeTimeout bounds how long a node holds a volume's writes for a
// snapshot: the node thaws by itself after it even if the provisioner never
// sends the thaw (it died mid-snapshot). Reflinks take milliseconds, so
// the real hold is far shorter; a cut that outlasts it fails and is retried.
const DefaultFreezeTimeout = 10 * time.Second

// cutTarget is one volume of a cut: its snapshot record and what the cut
// found.
type cutTarget struct {
	snap *store.Snapshot
	vol  *store.Volume
	// legs are the replicas whose files are copied: every replica holding
	// the volume's newest data at the cut.
	legs []store.Replica
	// copies are the agents' answers, by storage node.
	copies map[string]HeldSnapshot
	sbs    map[string]Superblock
}

// inSyncLegs are the replicas the registry holds in sync: the legs of a
// volume no host has published (no host can write it).
func inSyncLegs(v *store.Volume) []store.Replica {
	var out []store.Replica
	for _, r := range v.Replicas {
		if r.State == store.ReplicaActive && r.InSync() && !r.Diverged() {
			out = append(out, r)
		}
	}
	return out
}

// cut takes the copies of every target at one crash-consistent point: the
// writes of every published volume are held on its node (all nodes
// involved, at once) while every leg's file is copied on its storage node,
// then released. A write acknowledged before the cut reached every in-sync
// member before the freeze returned, so it is in every copy; one issued
// after waits for the thaw, so it is in none; and since every volume stays
// held until every copy is cut, a write that depends on another (a
// database's data page after its log record, on another volume) is never
// in the cut without it. Every copy of one volume therefore holds the same
// data region. Volumes no host has published take no writes (the fence);
// their in-sync replicas hold the same data when their md was stopped
// cleanly, which the copies' superblocks prove, or else only one copy is
// kept and the others are made from it.
//
// The caller has recorded the planned copies (state cutting) on every
// storage node cut may use, so a crash leaves nothing unaccounted for.
func (s *Service) cut(ctx context.Context, targets []*cutTarget) (time.Time, error) {
	byNode := map[string][]*cutTarget{}
	for _, t := range targets {
		if t.vol.PublishedNodeID == "" {
			t.legs = inSyncLegs(t.vol)
			continue
		}
		byNode[t.vol.PublishedNodeID] = append(byNode[t.vol.PublishedNodeID], t)
	}
	if len(byNode) > 0 && s.o.Quiescer == nil {
		return time.Time{}, fmt.Errorf("volume %s is published and this provisioner has no node channel to hold its writes: %w", targets[0].vol.ID, ErrUnavailable)
	}

	freezeCalled := s.o.Now()
	freezes, err := s.freezeAll(ctx, byNode)
	defer s.thawAll(freezes)
	if err != nil {
		return time.Time{}, err
	}
	cutAt := time.Now().UTC()
	for _, t := range targets {
		if len(t.legs) == 0 {
			return time.Time{}, fmt.Errorf("volume %s has no replica holding its newest data (recorded in sync, or held in sync by its host's md): %w", t.vol.ID, ErrFailedPrecondition)
		}
	}
	if err := s.copyLegs(ctx, targets); err != nil {
		return time.Time{}, err
	}
	// A node holds writes until FreezeTimeout after it was asked, at most:
	// copies finished later may have been cut from legs writes had
	// reached unevenly again.
	if took := s.o.Now().Sub(freezeCalled); len(freezes) > 0 && took > s.o.FreezeTimeout {
		return time.Time{}, fmt.Errorf("the copies took %v, longer than the nodes hold writes (--freeze-timeout %v): %w", took.Round(time.Millisecond), s.o.FreezeTimeout, ErrUnavailable)
	}
	return cutAt, nil
}

type nodeFreeze struct {
	node, id string
}

// freezeAll freezes every node's published volumes in parallel and fills in
// each target's legs from what the node's md holds in sync.
func (s *Service) freezeAll(ctx context.Context, byNode map[string][]*cutTarget) ([]nodeFreeze, error) {
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		freezes []nodeFreeze
		errs    []error
	)
	timeout := s.o.FreezeTimeout
	for node, ts := range byNode {
		ids := make([]string, 0, len(ts))
		for _, t := range ts {
			ids = append(ids, t.vol.ID)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			fctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			fid, inSync, err := s.o.Quiescer.Freeze(fctx, node, ids, timeout)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("node %s could not hold the writes of %s: %w", node, strings.Join(ids, ", "), err))
				return
			}
			freezes = append(freezes, nodeFreeze{node: node, id: fid})
			for _, t := range ts {
				held := map[string]bool{}
				for _, id := range inSync[t.vol.ID] {
					held[id] = true
				}
				for _, r := range t.vol.Replicas {
					if r.State == store.ReplicaActive && held[r.ID] && !r.Diverged() {
						t.legs = append(t.legs, r)
					}
				}
			}
		}()
	}
	wg.Wait()
	return freezes, errors.Join(errs...)
}

// thawAll releases every freeze, on a context of its own: the caller's may
// be done, and writes must not wait for the node's own timeout.
func (s *Service) thawAll(freezes []nodeFreeze) {
	if len(freezes) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.o.AgentTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, f := range freezes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.o.Quiescer.Thaw(ctx, f.node, f.id); err != nil {
				klog.ErrorS(err, "Thawing a node's volumes failed; the node thaws them by itself at its timeout", "node", f.node, "freeze", f.id)
			}
		}()
	}
	wg.Wait()
}

// copyLegs copies every target's legs on their storage nodes, in parallel.
func (s *Service) copyLegs(ctx context.Context, targets []*cutTarget) error {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	for _, t := range targets {
		t.copies = map[string]HeldSnapshot{}
		t.sbs = map[string]Superblock{}
		for _, leg := range t.legs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, s.o.AgentTimeout)
				defer cancel()
				a, err := s.agentFor(cctx, leg.StorageNode)
				var held HeldSnapshot
				var sb Superblock
				if err == nil {
					held, sb, err = a.CreateSnapshot(cctx, t.snap.ID, leg.ID)
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("copy of replica %s of volume %s on storage node %s: %w", leg.ID, t.vol.ID, leg.StorageNode, err))
					return
				}
				t.copies[leg.StorageNode] = held
				t.sbs[leg.StorageNode] = sb
			}()
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// identicalCopies returns the storage nodes whose copies of t may be kept as
// identical ones. A published volume's legs were held in sync by its md
// while frozen: all of them. A volume no host has published: all of them
// when its md was never created (no superblock on any) or when every copy carries the volume's superblock, stopped
// cleanly, at the same event count and holding itself active; otherwise
// one (a crash left legs that may differ in writes never acknowledged, and
// only md's resync would settle them): the first in order, reflinked
// preferred.
func identicalCopies(t *cutTarget) []string {
	nodes := make([]string, 0, len(t.copies))
	for n := range t.copies {
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool {
		ri, rj := t.copies[nodes[i]].Reflinked, t.copies[nodes[j]].Reflinked
		if ri != rj {
			return ri
		}
		return nodes[i] < nodes[j]
	})
	if len(nodes) <= 1 || t.vol.PublishedNodeID != "" {
		return nodes
	}
	present := 0
	var events uint64
	same := true
	for i, n := range nodes {
		sb := t.sbs[n]
		if !sb.Present {
			continue
		}
		present++
		if i == 0 {
			events = sb.Events
		}
		if sb.ArrayUUID != "" && t.vol.MDUUID != "" && !sameUUID(sb.ArrayUUID, t.vol.MDUUID) || !sb.Clean || sb.Recovering ||
			!sb.ActiveRole(sb.DevNumber) || sb.Events != events {
			same = false
		}
	}
	// No superblock on any: md was never created, so no host ever wrote
	// the legs, which hold what the agents created them with (zeros, or
	// one snapshot's copy).
	if present == 0 || present == len(nodes) && same {
		return nodes
	}
	klog.InfoS("The replicas of an unpublished volume may differ (not stopped cleanly together); keeping one copy and making the others from it",
		"volume", t.vol.ID, "snapshot", t.snap.ID, "kept", nodes[0])
	return nodes[:1]
}

// sameUUID compares md UUIDs in any of mdadm's spellings.
func sameUUID(a, b string) bool {
	norm := func(s string) string {
		return strings.ToLower(strings.NewReplacer(":", "", "-", "").Replace(s))
	}
	return norm(a) == norm(b)
}
