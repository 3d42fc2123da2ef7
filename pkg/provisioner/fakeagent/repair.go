package fakeagent

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/repair"
)

// RepairNQNPrefix names a fake node's repair host NQN.
const RepairNQNPrefix = "nqn.2024-01.io.nvmirror:repair:"

// FakeRepair is an offline repair a fake node was asked to run: the
// request as received and the status the test set.
type FakeRepair struct {
	Request repair.Request
	Status  repair.Status
	// Gets counts GetRepair calls (lease renewals).
	Gets int
}

// Repair returns a copy of the repair id on node, or nil.
func (c *Cluster) Repair(node, id string) *FakeRepair {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.nodes[node].Repairs[id]
	if r == nil {
		return nil
	}
	cp := *r
	return &cp
}

// RepairsOn returns the IDs of the repairs started on node, sorted.
func (c *Cluster) RepairsOn(node string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.nodes[node].Repairs))
}

// WasStopped reports whether StopRepair was called for id on node.
func (c *Cluster) WasStopped(node, id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[node].Stopped[id]
}

// SetRepair sets what GetRepair reports for repair id on node.
func (c *Cluster) SetRepair(node, id string, fn func(*repair.Status)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn(&c.nodes[node].Repairs[id].Status)
}

// SetRepairHostNQN changes (or with "" disables) a node's offline repair.
func (c *Cluster) SetRepairHostNQN(node, nqn string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[node].RepairHostNQN = nqn
}

// SetRepairHook installs a StartRepair hook on a node.
func (c *Cluster) SetRepairHook(node string, hook func(repair.Request) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[node].RepairHook = hook
}

func (a *client) StartRepair(ctx context.Context, r repair.Request) (repair.Status, error) {
	a.c.mu.Lock()
	hook := a.c.nodes[a.id].RepairHook
	a.c.mu.Unlock()
	if hook != nil {
		if err := hook(r); err != nil {
			return repair.Status{}, err
		}
	}
	n, unlock, err := a.node()
	if err != nil {
		return repair.Status{}, err
	}
	defer unlock()
	if n.RepairHostNQN == "" {
		return repair.Status{}, fmt.Errorf("offline repair disabled: %w", provisioner.ErrFailedPrecondition)
	}
	if err := r.Validate(); err != nil {
		return repair.Status{}, fmt.Errorf("%w: %v", provisioner.ErrInvalidArgument, err)
	}
	if n.Stopped[r.ID] {
		return repair.Status{}, fmt.Errorf("repair %s was stopped: %w", r.ID, provisioner.ErrFailedPrecondition)
	}
	if cur, ok := n.Repairs[r.ID]; ok {
		return cur.Status, nil
	}
	for _, cur := range n.Repairs {
		if cur.Request.VolumeID == r.VolumeID && cur.Status.State == repair.Running {
			return repair.Status{}, fmt.Errorf("volume %s is being repaired: %w", r.VolumeID, provisioner.ErrAborted)
		}
	}
	n.Repairs[r.ID] = &FakeRepair{Request: r, Status: repair.Status{ID: r.ID, VolumeID: r.VolumeID, State: repair.Running}}
	return n.Repairs[r.ID].Status, nil
}

func (a *client) GetRepair(ctx context.Context, id string) (repair.Status, error) {
	n, unlock, err := a.node()
	if err != nil {
		return repair.Status{}, err
	}
	defer unlock()
	r, ok := n.Repairs[id]
	if !ok {
		return repair.Status{}, fmt.Errorf("repair %s: %w", id, provisioner.ErrNotFound)
	}
	r.Gets++
	return r.Status, nil
}

func (a *client) StopRepair(ctx context.Context, id string) error {
	n, unlock, err := a.node()
	if err != nil {
		return err
	}
	defer unlock()
	n.Stopped[id] = true
	if r, ok := n.Repairs[id]; ok && r.Status.State == repair.Running {
		r.Status.State = repair.Stopped
	}
	return nil
}
