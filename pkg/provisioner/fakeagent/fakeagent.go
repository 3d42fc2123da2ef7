// Package fakeagent is an in-memory cluster of storage-node agents that
// implements provisioner.Agents, for tests of the provisioner and of its
// users. It follows the agent contract (idempotent create and delete,
// capacity accounting, host allow-lists) and lets a test take nodes down,
// inject failures and block calls.
package fakeagent

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/repair"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// Replica is a replica held by a fake node.
type Replica struct {
	ID, VolumeID string
	SizeBytes    int64
	Type         storageclass.ProvisioningType
	Hosts        map[string]bool
}

// Node is a fake storage node.
type Node struct {
	ID, Zone, Rack   string
	Address          string
	TotalBytes       int64
	AvailableBytes   int64
	ProvisionedBytes int64
	Down             bool
	Replicas         map[string]*Replica
	// HostAuth holds the secrets set per host; AuthUnsupported makes
	// SetHostAuth fail like a kernel without target authentication.
	HostAuth        map[string]provisioner.HostSecrets
	AuthUnsupported bool
	// AllowedWithSecret records, per replica and host, the host secret the
	// node held when the host was allowed ("" = none): tests check that a
	// host is never admitted before its secrets.
	AllowedWithSecret map[string]string
	// CreateHook, when set, runs before CreateReplica (outside the lock):
	// return an error to fail the call, block to hold it.
	CreateHook func(provisioner.ReplicaSpec) error
	// DeleteHook, when set, runs before DeleteReplica (outside the lock),
	// like CreateHook.
	DeleteHook func(replicaID string) error
	// ListHook, when set, runs before ListReplicas and GetReplica (outside
	// the lock), like CreateHook.
	ListHook func() error
	Creates  int // CreateReplica calls that created something
	// RepairHostNQN is reported by NodeInfo ("" = no offline repair);
	// AddNode sets RepairNQNPrefix + id.
	RepairHostNQN string
	// Repairs are the offline repairs started here, by ID; a test moves
	// them along with SetRepair. Stopped lists the IDs StopRepair saw.
	Repairs map[string]*FakeRepair
	Stopped map[string]bool
	// RepairHook, when set, runs before StartRepair (outside the lock),
	// like CreateHook.
	RepairHook func(repair.Request) error

	// Files are the replicas' data (see WriteReplica); Snapshots the
	// snapshot copies held here; Superblocks what each replica's md
	// superblock reads as (zero: none). Reflink makes snapshot copies
	// free of pool space, as on an XFS pool with reflink.
	Files        map[string]*File
	Snapshots    map[string]*Snapshot
	Superblocks  map[string]provisioner.Superblock
	Reflink      bool
	SnapshotHook func(snapshotID string) error
}

// Cluster is a set of fake nodes.
type Cluster struct {
	mu    sync.Mutex
	nodes map[string]*Node
}

// New returns an empty cluster.
func New() *Cluster { return &Cluster{nodes: map[string]*Node{}} }

// AddNode adds a node with an empty pool of total bytes and returns the
// record to register in the store.
func (c *Cluster) AddNode(id, zone, rack string, total int64) *store.StorageNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	addr := fmt.Sprintf("10.0.0.%d", len(c.nodes)+1)
	c.nodes[id] = &Node{ID: id, Zone: zone, Rack: rack, Address: addr, TotalBytes: total, AvailableBytes: total, Replicas: map[string]*Replica{},
		RepairHostNQN: RepairNQNPrefix + id, Repairs: map[string]*FakeRepair{}, Stopped: map[string]bool{}}
	return &store.StorageNode{ID: id, Address: addr + ":7070"}
}

// SetDown makes a node unreachable (true) or brings it back.
func (c *Cluster) SetDown(id string, down bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[id].Down = down
}

// SetCreateHook installs a CreateReplica hook on a node.
func (c *Cluster) SetCreateHook(id string, hook func(provisioner.ReplicaSpec) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[id].CreateHook = hook
}

// SetDeleteHook installs a DeleteReplica hook on a node.
func (c *Cluster) SetDeleteHook(id string, hook func(replicaID string) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[id].DeleteHook = hook
}

// SetListHook installs a ListReplicas/GetReplica hook on a node.
func (c *Cluster) SetListHook(id string, hook func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[id].ListHook = hook
}

// Replica returns a copy of a replica held by node, or nil.
func (c *Cluster) Replica(node, replicaID string) *Replica {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.nodes[node].Replicas[replicaID]
	if r == nil {
		return nil
	}
	cp := *r
	cp.Hosts = map[string]bool{}
	for h := range r.Hosts {
		cp.Hosts[h] = true
	}
	return &cp
}

// ReplicaIDs returns the sorted IDs of the replicas a node holds.
func (c *Cluster) ReplicaIDs(node string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id := range c.nodes[node].Replicas {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// TotalReplicas counts replicas over all nodes.
func (c *Cluster) TotalReplicas() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, node := range c.nodes {
		n += len(node.Replicas)
	}
	return n
}

// Agent implements provisioner.Agents.
func (c *Cluster) Agent(ctx context.Context, rec *store.StorageNode) (provisioner.AgentClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.nodes[rec.ID]; !ok {
		return nil, fmt.Errorf("no agent for %s: %w", rec.ID, provisioner.ErrUnavailable)
	}
	return &client{c: c, id: rec.ID}, nil
}

type client struct {
	c  *Cluster
	id string
}

// node returns the node, locked, or ErrUnavailable when it is down.
func (a *client) node() (*Node, func(), error) {
	a.c.mu.Lock()
	n := a.c.nodes[a.id]
	if n.Down {
		a.c.mu.Unlock()
		return nil, nil, fmt.Errorf("storage node %s: connection refused: %w", a.id, provisioner.ErrUnavailable)
	}
	return n, a.c.mu.Unlock, nil
}

func (a *client) CreateReplica(ctx context.Context, spec provisioner.ReplicaSpec) (provisioner.AgentReplica, error) {
	a.c.mu.Lock()
	hook := a.c.nodes[a.id].CreateHook
	a.c.mu.Unlock()
	if hook != nil {
		if err := hook(spec); err != nil {
			return provisioner.AgentReplica{}, err
		}
	}
	n, unlock, err := a.node()
	if err != nil {
		return provisioner.AgentReplica{}, err
	}
	defer unlock()
	out := provisioner.AgentReplica{
		NQN:       "nqn.2024-01.io.nvmirror:" + spec.ReplicaID,
		Endpoints: []store.Endpoint{{Transport: "tcp", Family: "ipv4", Address: n.Address, ServiceID: "4420"}},
	}
	if _, ok := n.Replicas[spec.ReplicaID]; ok {
		return out, nil // idempotent
	}
	if n.AvailableBytes < spec.SizeBytes {
		return provisioner.AgentReplica{}, fmt.Errorf("pool has %d bytes free, need %d: %w", n.AvailableBytes, spec.SizeBytes, provisioner.ErrResourceExhausted)
	}
	r := &Replica{ID: spec.ReplicaID, VolumeID: spec.VolumeID, SizeBytes: spec.SizeBytes, Type: spec.ProvisioningType, Hosts: map[string]bool{}}
	for _, h := range spec.AllowedHosts {
		if n.AllowedWithSecret == nil {
			n.AllowedWithSecret = map[string]string{}
		}
		n.AllowedWithSecret[r.ID+"/"+h] = n.HostAuth[h].Secret
		r.Hosts[h] = true
	}
	if src := spec.Source; src != nil {
		snap, ok := n.snapshots()[src.SnapshotID]
		if !ok || !snap.Complete {
			return provisioner.AgentReplica{}, fmt.Errorf("source snapshot %s: %w", src.SnapshotID, provisioner.ErrNotFound)
		}
		if src.SourceOffset+src.Length > snap.SizeBytes || src.TargetOffset+src.Length > spec.SizeBytes {
			return provisioner.AgentReplica{}, fmt.Errorf("source range does not fit: %w", provisioner.ErrInvalidArgument)
		}
		f := newFile(spec.SizeBytes)
		for blk, b := range snap.Data.Blocks {
			off := blk * blockSize
			if off >= src.SourceOffset && off < src.SourceOffset+src.Length {
				f.write(off-src.SourceOffset+src.TargetOffset, b)
			}
		}
		if n.Files == nil {
			n.Files = map[string]*File{}
		}
		n.Files[spec.ReplicaID] = f
	}
	n.Replicas[r.ID] = r
	n.ProvisionedBytes += r.SizeBytes
	if r.Type == storageclass.Thick {
		n.AvailableBytes -= r.SizeBytes
	}
	n.Creates++
	return out, nil
}

func (a *client) DeleteReplica(ctx context.Context, id string) error {
	a.c.mu.Lock()
	hook := a.c.nodes[a.id].DeleteHook
	a.c.mu.Unlock()
	if hook != nil {
		if err := hook(id); err != nil {
			return err
		}
	}
	n, unlock, err := a.node()
	if err != nil {
		return err
	}
	defer unlock()
	r, ok := n.Replicas[id]
	if !ok {
		return nil
	}
	n.ProvisionedBytes -= r.SizeBytes
	if r.Type == storageclass.Thick {
		n.AvailableBytes += r.SizeBytes
	}
	delete(n.Replicas, id)
	delete(n.Files, id)
	return nil
}

// listed runs the node's ListHook, then returns the node locked like node.
func (a *client) listed() (*Node, func(), error) {
	a.c.mu.Lock()
	hook := a.c.nodes[a.id].ListHook
	a.c.mu.Unlock()
	if hook != nil {
		if err := hook(); err != nil {
			return nil, nil, err
		}
	}
	return a.node()
}

func (a *client) ListReplicas(ctx context.Context) ([]provisioner.HeldReplica, error) {
	n, unlock, err := a.listed()
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := make([]provisioner.HeldReplica, 0, len(n.Replicas))
	for _, r := range n.Replicas {
		out = append(out, provisioner.HeldReplica{ID: r.ID, VolumeID: r.VolumeID, SizeBytes: r.SizeBytes})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (a *client) GetReplica(ctx context.Context, id string) (provisioner.HeldReplica, error) {
	n, unlock, err := a.listed()
	if err != nil {
		return provisioner.HeldReplica{}, err
	}
	defer unlock()
	r, ok := n.Replicas[id]
	if !ok {
		return provisioner.HeldReplica{}, fmt.Errorf("replica %s: %w", id, provisioner.ErrNotFound)
	}
	return provisioner.HeldReplica{ID: r.ID, VolumeID: r.VolumeID, SizeBytes: r.SizeBytes}, nil
}

func (a *client) ExpandReplica(ctx context.Context, id string, size int64) error {
	n, unlock, err := a.node()
	if err != nil {
		return err
	}
	defer unlock()
	r, ok := n.Replicas[id]
	if !ok {
		return fmt.Errorf("replica %s: %w", id, provisioner.ErrNotFound)
	}
	if size <= r.SizeBytes {
		return nil
	}
	grow := size - r.SizeBytes
	if r.Type == storageclass.Thick {
		if n.AvailableBytes < grow {
			return fmt.Errorf("pool too small: %w", provisioner.ErrResourceExhausted)
		}
		n.AvailableBytes -= grow
	}
	n.ProvisionedBytes += grow
	r.SizeBytes = size
	return nil
}

func (a *client) setHost(id, host string, allow bool) error {
	n, unlock, err := a.node()
	if err != nil {
		return err
	}
	defer unlock()
	r, ok := n.Replicas[id]
	if !ok {
		return fmt.Errorf("replica %s: %w", id, provisioner.ErrNotFound)
	}
	if allow {
		if n.AllowedWithSecret == nil {
			n.AllowedWithSecret = map[string]string{}
		}
		n.AllowedWithSecret[id+"/"+host] = n.HostAuth[host].Secret
		r.Hosts[host] = true
	} else {
		delete(r.Hosts, host)
	}
	return nil
}

func (a *client) AllowHost(ctx context.Context, id, host string) error {
	return a.setHost(id, host, true)
}

func (a *client) SetHostAuth(ctx context.Context, host string, s provisioner.HostSecrets) error {
	n, unlock, err := a.node()
	if err != nil {
		return err
	}
	defer unlock()
	if n.AuthUnsupported {
		return fmt.Errorf("storage node %s: kernel NVMe target without in-band authentication (CONFIG_NVME_TARGET_AUTH): %w", n.ID, provisioner.ErrFailedPrecondition)
	}
	if n.HostAuth == nil {
		n.HostAuth = map[string]provisioner.HostSecrets{}
	}
	if s.Secret == "" {
		delete(n.HostAuth, host)
	} else {
		n.HostAuth[host] = s
	}
	return nil
}

// HostAuth returns the secrets a node holds for host.
func (c *Cluster) HostAuth(node, host string) provisioner.HostSecrets {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[node].HostAuth[host]
}

// SetAuthUnsupported makes a node refuse SetHostAuth like a kernel without
// target authentication.
func (c *Cluster) SetAuthUnsupported(node string, v bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[node].AuthUnsupported = v
}

// AllowedWithSecret is the host secret node held when host was allowed on
// replicaID ("" = none), and whether it was allowed at all.
func (c *Cluster) AllowedWithSecret(node, replicaID, host string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.nodes[node].AllowedWithSecret[replicaID+"/"+host]
	return s, ok
}

func (a *client) RevokeHost(ctx context.Context, id, host string) error {
	return a.setHost(id, host, false)
}

func (a *client) GetCapacity(ctx context.Context) (provisioner.Capacity, error) {
	n, unlock, err := a.node()
	if err != nil {
		return provisioner.Capacity{}, err
	}
	defer unlock()
	var snaps int
	var snapBytes int64
	for _, s := range n.Snapshots {
		if s.Complete {
			snaps++
			snapBytes += s.AllocatedBytes
		}
	}
	return provisioner.Capacity{TotalBytes: n.TotalBytes, AvailableBytes: n.AvailableBytes, ProvisionedBytes: n.ProvisionedBytes, ReplicaCount: len(n.Replicas),
		SnapshotCount: snaps, SnapshotAllocatedBytes: snapBytes}, nil
}

func (a *client) NodeInfo(ctx context.Context) (provisioner.NodeInfo, error) {
	n, unlock, err := a.node()
	if err != nil {
		return provisioner.NodeInfo{}, err
	}
	defer unlock()
	return provisioner.NodeInfo{Name: n.ID, Zone: n.Zone, Rack: n.Rack, RepairHostNQN: n.RepairHostNQN}, nil
}
