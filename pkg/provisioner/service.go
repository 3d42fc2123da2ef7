// Package provisioner is the core of nvmirror-provisioner: the volume
// operations (create, delete, publish, expand, replace a replica) over the
// registry (package store), placement (package placement) and the storage
// nodes' agents (AgentClient). The gRPC API is a thin layer over Service;
// errors are the sentinels in errors.go, mapped to codes by Code.
//
// Crash safety: every operation writes its intent to the store before it
// calls an agent (a volume is recorded "creating" with its planned replicas
// before any replica exists; a replacement is recorded before it is
// created). A retry, or the sweeper, finds the intent and completes or
// undoes it (a create nobody resumes is rolled back after CreatingTimeout);
// no replica is created on a storage node without a record that leads back
// to it. What agent calls landing late leave behind anyway, the orphan scan
// finds (orphans.go).
package provisioner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/inflight"
	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/provisioner/placement"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// Labels read from a storage node's record when its agent does not report
// a zone or rack.
const (
	LabelZone = "topology.kubernetes.io/zone"
	LabelRack = "nvmirror.io/rack"
)

// MaxReplicas is the most replicas a volume's configuration may hold: 3 at
// creation plus one replacement in flight.
const MaxReplicas = 4

// Defaults of the rollback of interrupted creates and of the orphan scan.
const (
	DefaultCreatingTimeout    = 5 * time.Minute
	DefaultOrphanGrace        = 15 * time.Minute
	DefaultTombstoneRetention = 30 * 24 * time.Hour
)

// Options configure a Service.
type Options struct {
	Store  store.Store
	Agents Agents
	// ThinOvercommit for placement; 0 means placement.DefaultThinOvercommit.
	ThinOvercommit float64
	// MaxReplacementsPerNode bounds concurrent replica replacements
	// targeting one storage node (default 2), so a storage node's loss does
	// not turn every volume it held into a simultaneous full resync onto
	// one survivor (a rebuild storm).
	MaxReplacementsPerNode int
	// AgentTimeout bounds each agent call of a capacity survey (default 5 s):
	// one hung agent must not stall every CreateVolume.
	AgentTimeout time.Duration
	// Rand is the source of IDs (crypto/rand by default).
	Rand io.Reader
	// Events receives recorded events for syslog forwarding; nil = store only.
	Events EventSink
	// CredentialScope says how DH-HMAC-CHAP secrets are shared: per
	// (host, storage node), the default, or one set per host.
	CredentialScope CredentialScope
	// RepairLease is how long a storage node's offline repair runs without
	// the provisioner asking for it before it stops itself (default 2 min;
	// at least twice the repair interval).
	RepairLease time.Duration
	// HealTimeUnit is the unit of maxReplicaDownTime for offline repairs
	// (default a minute; tests shorten it, like the node's healer).
	HealTimeUnit time.Duration
	// RepairRetry is how long after a failed offline repair of a volume
	// the next one may start; it doubles with each failure in a row, up to
	// 32 times (default 1 min).
	RepairRetry time.Duration
	// MaxConcurrentMoves bounds the replica moves drains keep in flight
	// across the cluster (default 2): each is a full copy of a replica.
	MaxConcurrentMoves int
	// CreatingTimeout is the age past which a volume still "creating" is
	// rolled back by the sweeper when no create of it runs in this process
	// (default 5 min: far longer than a create's agent calls).
	CreatingTimeout time.Duration
	// OrphanGrace is how long a released orphan stays orphaned, from its
	// first sight by this leader, before the scan reclaims it (default
	// 15 min).
	OrphanGrace time.Duration
	// TombstoneRetention is how long a deleted volume's tombstone is kept
	// (default 30 days); an orphan of a volume whose tombstone expired is
	// reported as unknown, never reclaimed automatically.
	TombstoneRetention time.Duration
	// Now is the clock (time.Now by default; tests move it).
	Now func() time.Time
	// Quiescer holds a published volume's writes on its node while a
	// snapshot is cut; nil: the service's own node hub (Nodes), the
	// command channel the CSI nodes keep open (tests give a fake).
	Quiescer Quiescer
	// FreezeTimeout bounds a snapshot's hold on a volume's writes
	// (DefaultFreezeTimeout when 0).
	FreezeTimeout time.Duration
}

// Service implements the volume operations.
type Service struct {
	o         Options
	mu        sync.Mutex
	replacing map[string]int // storage node → replacements in flight
	// repairBackoff holds, per volume, when the next offline repair may
	// start after failures, so a repair that cannot succeed (a device that
	// fails its checks) is not retried, and announced, every pass.
	repairBackoff map[string]backoff
	// fencing holds the volumes whose host fence is changing in this
	// process: an offline repair being set up, or a publish (which takes a
	// repair over). One at a time per volume, so a publish never interleaves
	// with a repair's allowances and leaves the repair's host allowed.
	fencing inflight.Set
	// drainStuck: per draining storage node, the volumes whose replica
	// could not move in the last pass and why; drainReported: what a drain
	// already announced (stuck replicas, a finished drain).
	drainStuck    map[string]map[string]string
	drainReported map[string]bool
	// moving holds the volumes a move is being set up for in this process
	// (recorded, not yet created), so the drainer never finishes one
	// beside it.
	moving inflight.Set
	// snapshotting: volumes whose snapshot is being cut or deleted.
	snapshotting inflight.Set
	// moveDone wakes the drainer when a move finishes, repairWake the
	// offline repairer when a volume no host has published gets a new
	// replica to fill (buffered: one pending wake-up is enough).
	moveDone, repairWake chan struct{}
	// creates: the volume names being created or rolled back in this
	// process, so a stale create's rollback never runs beside a create.
	creates createGate
	orphans orphanState
	// nodes is the command channel to the CSI nodes (nodehub.go).
	nodes *NodeHub
}

type backoff struct {
	until time.Time
	delay time.Duration
}

// New returns a Service.
func New(o Options) (*Service, error) {
	if o.Store == nil || o.Agents == nil {
		return nil, errors.New("provisioner: store and agents are required")
	}
	if o.MaxReplacementsPerNode <= 0 {
		o.MaxReplacementsPerNode = 2
	}
	if o.MaxConcurrentMoves <= 0 {
		o.MaxConcurrentMoves = 2
	}
	if o.AgentTimeout <= 0 {
		o.AgentTimeout = 5 * time.Second
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.RepairLease <= 0 {
		o.RepairLease = 2 * time.Minute
	}
	if o.HealTimeUnit <= 0 {
		o.HealTimeUnit = time.Minute
	}
	if o.RepairRetry <= 0 {
		o.RepairRetry = time.Minute
	}
	if o.CreatingTimeout <= 0 {
		o.CreatingTimeout = DefaultCreatingTimeout
	}
	if o.OrphanGrace <= 0 {
		o.OrphanGrace = DefaultOrphanGrace
	}
	if o.TombstoneRetention <= 0 {
		o.TombstoneRetention = DefaultTombstoneRetention
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.FreezeTimeout <= 0 {
		o.FreezeTimeout = DefaultFreezeTimeout
	}
	switch o.CredentialScope {
	case "":
		o.CredentialScope = ScopeStorageNode
	case ScopeStorageNode, ScopeHost:
	default:
		return nil, fmt.Errorf("provisioner: credential scope %q: want %s or %s", o.CredentialScope, ScopeStorageNode, ScopeHost)
	}
	s := &Service{o: o, replacing: map[string]int{}, repairBackoff: map[string]backoff{},
		drainStuck: map[string]map[string]string{}, drainReported: map[string]bool{}, moveDone: make(chan struct{}, 1), repairWake: make(chan struct{}, 1)}
	s.nodes = newNodeHub(o.Store.IsLeader, func(prefix string) string { return prefix + s.randomHex(12) })
	if s.o.Quiescer == nil {
		s.o.Quiescer = s.nodes
	}
	return s, nil
}

func (s *Service) randomHex(n int) string {
	b := make([]byte, n)
	if _, err := io.ReadFull(s.o.Rand, b); err != nil {
		panic(fmt.Sprintf("random source failed: %v", err)) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// IDs use the agent's character rules ([a-z0-9-]); the md name is at most
// 27 bytes so mdadm stores it with the "any:" homehost prefix.
func (s *Service) newVolumeID() string   { return "vol-" + s.randomHex(16) }
func (s *Service) newReplicaID() string  { return "rep-" + s.randomHex(12) }
func (s *Service) newRepairID() string   { return "rpr-" + s.randomHex(12) }
func (s *Service) newSnapshotID() string { return "snap-" + s.randomHex(12) }
func (s *Service) newGroupID() string    { return "group-" + s.randomHex(12) }

// newMDUUID returns a random array UUID in mdadm's colon form
// (xxxxxxxx:xxxxxxxx:xxxxxxxx:xxxxxxxx). The provisioner chooses it, once,
// at creation: the node passes it to mdadm --create and assembles only the
// array with this UUID, so two nodes (or a node that lost its state) can
// never end up with two different arrays for one volume.
func (s *Service) newMDUUID() string {
	h := s.randomHex(16)
	return h[0:8] + ":" + h[8:16] + ":" + h[16:24] + ":" + h[24:32]
}
func mdName(volumeID string) string {
	id := volumeID
	if len(id) > 24 {
		id = id[:24]
	}
	return "nvm-" + id[4:]
}

// volumeSize validates a requested size (the parameter named by what) and
// rounds it up to whole MiB (layout.Alignment): positive, and at most
// layout.MaxVolumeSize (ErrOutOfRange), checked before rounding so a size
// near 2^63 cannot wrap.
func volumeSize(what string, n int64) (int64, error) {
	if n <= 0 {
		return 0, fmt.Errorf("%w: %s %d must be positive", ErrInvalidArgument, what, n)
	}
	if n > layout.MaxVolumeSize {
		return 0, fmt.Errorf("%s %d is above the largest volume, %d bytes: %w", what, n, layout.MaxVolumeSize, ErrOutOfRange)
	}
	return (n + layout.Alignment - 1) / layout.Alignment * layout.Alignment, nil
}

func (s *Service) requireLeader() error {
	if !s.o.Store.IsLeader() {
		return fmt.Errorf("this provisioner is not the leader: %w", store.ErrNotLeader)
	}
	return nil
}

// surveyedNode is a storage node with its live state.
type surveyedNode struct {
	record *store.StorageNode
	agent  AgentClient
	node   placement.Node
	// repairHostNQN is the node's offline repair identity ("" = none).
	repairHostNQN string
	err           error
}

// survey asks every registered agent for its capacity and failure domain,
// in parallel, each call bounded by AgentTimeout. Unreachable agents come
// back unhealthy, which placement reports by name.
func (s *Service) survey(ctx context.Context) (map[string]*surveyedNode, []placement.Node, error) {
	records, err := s.o.Store.ListStorageNodes(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("list storage nodes: %w", err)
	}
	out := make(map[string]*surveyedNode, len(records))
	var wg sync.WaitGroup
	for _, r := range records {
		sn := &surveyedNode{record: r, node: placement.Node{ID: r.ID, Zone: r.Labels[LabelZone], Rack: r.Labels[LabelRack], Cordoned: r.Cordoned}}
		out[r.ID] = sn
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, s.o.AgentTimeout)
			defer cancel()
			a, err := s.o.Agents.Agent(cctx, sn.record)
			if err != nil {
				sn.err = err
				return
			}
			sn.agent = a
			c, err := a.GetCapacity(cctx)
			if err != nil {
				sn.err = err
				return
			}
			info, err := a.NodeInfo(cctx)
			if err != nil {
				sn.err = err
				return
			}
			if info.Zone != "" {
				sn.node.Zone = info.Zone
			}
			if info.Rack != "" {
				sn.node.Rack = info.Rack
			}
			sn.repairHostNQN = info.RepairHostNQN
			sn.node.TotalBytes, sn.node.AvailableBytes, sn.node.ProvisionedBytes = c.TotalBytes, c.AvailableBytes, c.ProvisionedBytes
			sn.node.Replicas = c.ReplicaCount
			sn.node.Healthy = true
		}()
	}
	wg.Wait()
	nodes := make([]placement.Node, 0, len(out))
	for _, sn := range out {
		if sn.err != nil {
			klog.V(2).InfoS("Storage node unreachable during survey", "storageNode", sn.record.ID, "err", sn.err)
		}
		nodes = append(nodes, sn.node)
	}
	return out, nodes, nil
}

// agentFor returns the agent of a storage node by id.
func (s *Service) agentFor(ctx context.Context, nodeID string) (AgentClient, error) {
	rec, err := s.o.Store.GetStorageNode(ctx, nodeID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("storage node %s is not registered: %w", nodeID, ErrUnavailable)
		}
		return nil, err
	}
	return s.o.Agents.Agent(ctx, rec)
}
