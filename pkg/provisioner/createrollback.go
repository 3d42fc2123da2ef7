package provisioner

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// A provisioner killed in the middle of CreateVolume leaves the volume
// "creating", with replicas on agents, until a CreateVolume of the same
// name resumes it; if none ever comes (the claim was deleted meanwhile),
// the sweeper rolls it back once it is older than CreatingTimeout: the
// replicas are deleted (the sweeper retries those on storage nodes away),
// the record goes (leaving its tombstone), and a later CreateVolume of the
// name starts afresh. Never while a create of that name runs in this
// process (createGate); a create in another process (a former leader)
// cannot complete over it: finishCreate refuses a volume that left
// "creating", and a replica its late agent call creates is an orphan of a
// deleted volume, which the orphan scan reclaims.

// createGate holds the volume names being created, and those being rolled
// back, in this process. Creates of one name may run side by side (they
// converge on one record); a rollback runs only alone.
type createGate struct {
	mu          sync.Mutex
	creating    map[string]int
	rollingBack map[string]bool
}

// enterCreate registers a create of name; false while it is rolled back.
func (g *createGate) enterCreate(name string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.rollingBack[name] {
		return false
	}
	if g.creating == nil {
		g.creating = map[string]int{}
	}
	g.creating[name]++
	return true
}

func (g *createGate) leaveCreate(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.creating[name]--; g.creating[name] <= 0 {
		delete(g.creating, name)
	}
}

// enterRollback registers a rollback of name; false while a create of it
// (or another rollback) runs.
func (g *createGate) enterRollback(name string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.creating[name] > 0 || g.rollingBack[name] {
		return false
	}
	if g.rollingBack == nil {
		g.rollingBack = map[string]bool{}
	}
	g.rollingBack[name] = true
	return true
}

func (g *createGate) leaveRollback(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.rollingBack, name)
}

// errNotStale aborts a rollback whose volume moved on meanwhile.
var errNotStale = errors.New("no longer a stale create")

// RollBackStaleCreates rolls back every volume still "creating" longer
// than CreatingTimeout after it was recorded, unless a create of it runs
// in this process. It returns how many it rolled back.
func (s *Service) RollBackStaleCreates(ctx context.Context) (int, error) {
	if err := s.requireLeader(); err != nil {
		return 0, err
	}
	vols, err := s.o.Store.ListVolumes(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, v := range vols {
		if !s.staleCreate(v) {
			continue
		}
		if s.rollBackStale(ctx, v) {
			n++
		}
	}
	return n, nil
}

func (s *Service) staleCreate(v *store.Volume) bool {
	return v.State == store.VolumeCreating && s.o.Now().Sub(v.CreatedAt) >= s.o.CreatingTimeout
}

func (s *Service) rollBackStale(ctx context.Context, v *store.Volume) bool {
	if !s.creates.enterRollback(v.Name) {
		klog.V(2).InfoS("Stale create left alone: a create of it runs", "volume", v.ID, "name", v.Name)
		return false
	}
	defer s.creates.leaveRollback(v.Name)
	if !s.fencing.Insert(v.ID) {
		return false // a delete of it runs
	}
	defer s.fencing.Delete(v.ID)
	err := s.rollbackCreate(ctx, v.ID, func(cur *store.Volume) error {
		if !s.staleCreate(cur) {
			return errNotStale
		}
		return nil
	})
	if errors.Is(err, errNotStale) || errors.Is(err, store.ErrNotFound) {
		return false
	}
	if err != nil {
		klog.ErrorS(err, "Cannot roll back a stale create", "volume", v.ID, "name", v.Name)
		return false
	}
	age := s.o.Now().Sub(v.CreatedAt).Round(1e9)
	klog.InfoS("Rolled back a create left unfinished", "volume", v.ID, "name", v.Name, "age", age, "replicas", replicaNodes(v))
	s.orphans.mu.Lock()
	s.orphans.stats.RolledBack++
	s.orphans.mu.Unlock()
	s.recordOffline(ctx, events.Event{Type: events.CreateRolledBack, Volume: v.ID, Replicas: ids(v.Replicas),
		Message: events.Truncate(fmt.Sprintf("volume %s (%s) was still being created %s after it was recorded (--creating-timeout %s) and no create of it runs: its replicas are deleted and its record removed; a CreateVolume of the name starts afresh",
			v.ID, v.Name, age, s.o.CreatingTimeout), events.MaxMessageLength)})
	return true
}
