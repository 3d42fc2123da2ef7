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
// undoes it; no replica ever exists on a storage node without a record that
// leads back to it.
package provisioner

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nvmirror/nvmirror/pkg/mdraid"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/provisioner/placement"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
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

// sizeAlignment: volume sizes are rounded up to whole MiB. Agents need
// multiples of 4 KiB; md RAID1 with an internal bitmap uses the device in
// larger units anyway, and MiB keeps the sizes users see round.
const sizeAlignment = 1 << 20

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
}

// Service implements the volume operations.
type Service struct {
	o         Options
	mu        sync.Mutex
	replacing map[string]int // storage node → replacements in flight
}

// New returns a Service.
func New(o Options) (*Service, error) {
	if o.Store == nil || o.Agents == nil {
		return nil, errors.New("provisioner: store and agents are required")
	}
	if o.MaxReplacementsPerNode <= 0 {
		o.MaxReplacementsPerNode = 2
	}
	if o.AgentTimeout <= 0 {
		o.AgentTimeout = 5 * time.Second
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	switch o.CredentialScope {
	case "":
		o.CredentialScope = ScopeStorageNode
	case ScopeStorageNode, ScopeHost:
	default:
		return nil, fmt.Errorf("provisioner: credential scope %q: want %s or %s", o.CredentialScope, ScopeStorageNode, ScopeHost)
	}
	return &Service{o: o, replacing: map[string]int{}}, nil
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
func (s *Service) newVolumeID() string  { return "vol-" + s.randomHex(16) }
func (s *Service) newReplicaID() string { return "rep-" + s.randomHex(12) }

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

// ReplicaSize is the size of each replica of a volume of volumeSize bytes:
// the volume plus the md metadata reserve the node creates the array with,
// so the md device the pod sees holds the whole volume.
func ReplicaSize(volumeSize int64) int64 { return volumeSize + mdraid.MetadataReserve }

func roundUp(n int64) int64 { return (n + sizeAlignment - 1) / sizeAlignment * sizeAlignment }

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
	err    error
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
		sn := &surveyedNode{record: r, node: placement.Node{ID: r.ID, Zone: r.Labels[LabelZone], Rack: r.Labels[LabelRack]}}
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

// CreateRequest is a CreateVolume call.
type CreateRequest struct {
	Name       string
	SizeBytes  int64
	Parameters map[string]string
	// Block: the volume is for raw block access. Recorded for display; it
	// is not part of the idempotency comparison (the node decides from the
	// capability at stage time).
	Block bool
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
	if req.Name == "" {
		return nil, fmt.Errorf("%w: volume name is empty", ErrInvalidArgument)
	}
	if req.SizeBytes <= 0 {
		return nil, fmt.Errorf("%w: size %d must be positive", ErrInvalidArgument, req.SizeBytes)
	}
	size := roundUp(req.SizeBytes)
	p, err := storageclass.Parse(req.Parameters)
	if err != nil {
		return nil, err
	}
	if v, err := s.o.Store.GetVolumeByName(ctx, req.Name); err == nil {
		return s.existing(ctx, v, size, p)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}

	_, nodes, err := s.survey(ctx)
	if err != nil {
		return nil, err
	}
	chosen, err := placement.Choose(nodes, placement.Request{SizeBytes: ReplicaSize(size), Count: p.NumReplicas, Params: p, ThinOvercommit: s.o.ThinOvercommit})
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", req.Name, err)
	}
	id := s.newVolumeID()
	// Every volume gets an md UUID, single-replica ones too: the node
	// serves those without md and ignores it, and one rule is simpler for
	// every reader than "UUID unless numReplicas is 1".
	v := &store.Volume{ID: id, Name: req.Name, SizeBytes: size, Parameters: p, State: store.VolumeCreating,
		MDUUID: s.newMDUUID(), MDName: mdName(id), Metadata: metadataOf(p), Block: req.Block}
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
				results[i].ar, err = a.CreateReplica(ctx, ReplicaSpec{ReplicaID: r.ID, VolumeID: v.ID, SizeBytes: ReplicaSize(v.SizeBytes), ProvisioningType: v.Parameters.ProvisioningType})
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
		s.rollbackCreate(ctx, v.ID)
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
	return out, nil
}

// rollbackCreate marks the volume and all its replicas for deletion and
// runs one sweep of it; what cannot be deleted now is left to the sweeper.
func (s *Service) rollbackCreate(ctx context.Context, id string) {
	_, err := s.o.Store.UpdateVolume(ctx, id, func(v *store.Volume) error {
		markDeleting(v)
		return nil
	})
	if err != nil {
		klog.ErrorS(err, "Cannot record rollback; the sweeper will not see it", "volume", id)
		return
	}
	if err := s.sweepVolume(ctx, id); err != nil {
		klog.V(2).InfoS("Rollback incomplete; the sweeper will finish it", "volume", id, "err", err)
	}
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
	_, err := s.o.Store.UpdateVolume(ctx, id, func(v *store.Volume) error {
		if v.PublishedHostNQN != "" {
			return fmt.Errorf("volume %s is still published to %s: %w", id, v.PublishedHostNQN, ErrFailedPrecondition)
		}
		markDeleting(v)
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

// listTokenPrefix marks the paging tokens this provisioner issues, so a
// token from elsewhere (or mangled) is refused rather than misread.
const listTokenPrefix = "v1:"

// ListVolumes returns up to max volumes (0: all) in volume ID order,
// starting after the volume named by startToken, and the token of the next
// page ("" after the last). The token is the base64 of the last ID
// returned: it stays valid when that volume is deleted meanwhile (the next
// page starts after where it was) and needs no server-side state, so it
// survives a provisioner restart or failover. A token not issued here is
// ErrInvalidArgument.
func (s *Service) ListVolumes(ctx context.Context, startToken string, max int) ([]*store.Volume, string, error) {
	if max < 0 {
		return nil, "", fmt.Errorf("%w: max entries %d must not be negative", ErrInvalidArgument, max)
	}
	after := ""
	if startToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(startToken)
		id, ok := strings.CutPrefix(string(b), listTokenPrefix)
		if err != nil || !ok || id == "" {
			return nil, "", fmt.Errorf("%w: starting token %q was not issued by this provisioner", ErrInvalidArgument, startToken)
		}
		after = id
	}
	all, err := s.o.Store.ListVolumes(ctx)
	if err != nil {
		return nil, "", err
	}
	i := sort.Search(len(all), func(i int) bool { return all[i].ID > after })
	page := all[i:]
	if max > 0 && len(page) > max {
		page = page[:max]
		return page, base64.RawURLEncoding.EncodeToString([]byte(listTokenPrefix + page[len(page)-1].ID)), nil
	}
	return page, "", nil
}

// ModifyVolume changes a volume's mutable parameters. Only
// maxReplicaDownTime is mutable: the others decide where the replicas are
// and how they were made, which changing a record cannot change. Values are
// validated by the StorageClass rules (same messages); another key is
// ErrInvalidArgument naming it. Setting the current value is a no-op, so a
// retry succeeds.
func (s *Service) ModifyVolume(ctx context.Context, id string, mutable map[string]string) (*store.Volume, error) {
	if err := s.requireLeader(); err != nil {
		return nil, err
	}
	// Validate before touching the record: a bad key or value changes
	// nothing.
	if _, err := storageclass.Defaults().WithMutable(mutable); err != nil {
		return nil, err
	}
	return s.o.Store.UpdateVolume(ctx, id, func(v *store.Volume) error {
		if v.State == store.VolumeDeleting {
			return fmt.Errorf("volume %s is being deleted: %w", id, ErrFailedPrecondition)
		}
		p, err := v.Parameters.WithMutable(mutable)
		if err != nil {
			return err
		}
		v.Parameters = p
		return nil
	})
}

// PublishVolume allows hostNQN on every active replica. A RAID1 volume is
// attached to one host at a time: a second host gets ErrFailedPrecondition
// (the fence against two hosts writing). Publishing again to the same host
// is a retry and re-applies the allowance.
//
// nodeID (the CSI node ID) is recorded for display and audit; the fence is
// the host NQN, so a publish to the same host with another node ID updates
// it rather than failing.
func (s *Service) PublishVolume(ctx context.Context, id, hostNQN, nodeID string) (*store.Volume, error) {
	if err := s.requireLeader(); err != nil {
		return nil, err
	}
	// Validate before recording: a host NQN every agent refuses would
	// otherwise stay recorded as the volume's host and block the real one.
	if err := nvmeof.ValidateNQN(hostNQN); err != nil {
		return nil, fmt.Errorf("%w: host NQN %q: %v", ErrInvalidArgument, hostNQN, err)
	}
	v, err := s.o.Store.UpdateVolume(ctx, id, func(v *store.Volume) error {
		switch v.State {
		case store.VolumeReady:
		case store.VolumeCreating:
			return fmt.Errorf("volume %s is still being created: %w", id, ErrUnavailable)
		default:
			return fmt.Errorf("volume %s is being deleted: %w", id, ErrFailedPrecondition)
		}
		if v.PublishedHostNQN != "" && v.PublishedHostNQN != hostNQN {
			return fmt.Errorf("volume %s is published to %s; a mirrored volume attaches to one host at a time: %w", id, v.PublishedHostNQN, ErrFailedPrecondition)
		}
		v.PublishedHostNQN = hostNQN
		if nodeID != "" {
			v.PublishedNodeID = nodeID
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	allowed, failed := s.forReplicas(ctx, v, func(r store.Replica) bool { return r.State == store.ReplicaActive }, func(a AgentClient, r store.Replica) error {
		return s.allowHost(ctx, a, v, r, hostNQN)
	})
	v, err = s.recordAllowed(ctx, id, allowed, hostNQN)
	if err != nil {
		return nil, err
	}
	// Replicas on unreachable nodes are allowed by the sweeper when they
	// return; the host assembles the array degraded meanwhile. Any other
	// failure (a refused host NQN, say) is the caller's to see.
	if err := hardErrors(failed); err != nil {
		return nil, fmt.Errorf("publish volume %s to %s: %w", id, hostNQN, err)
	}
	if len(allowed) == 0 {
		return nil, fmt.Errorf("volume %s: no replica could allow %s (%v): %w", id, hostNQN, errors.Join(mapValues(failed)...), ErrUnavailable)
	}
	return v, nil
}

// UnpublishVolume revokes hostNQN on every replica and clears the volume's
// host. Agents that cannot be reached keep the allowance until the sweeper
// revokes it when they return; refusing to unpublish until every storage
// node answers would pin a volume to a dead host forever, which defeats the
// mirror. Unpublishing an unknown volume, or from a host it is not
// published to, succeeds (CSI idempotency).
func (s *Service) UnpublishVolume(ctx context.Context, id, hostNQN string) error {
	if err := s.requireLeader(); err != nil {
		return err
	}
	v, err := s.o.Store.GetVolume(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if v.PublishedHostNQN == "" || (hostNQN != "" && v.PublishedHostNQN != hostNQN) {
		return nil
	}
	host := v.PublishedHostNQN
	revoked, failed := s.forReplicas(ctx, v, func(r store.Replica) bool { return r.State == store.ReplicaActive || r.AllowedHost == host }, func(a AgentClient, r store.Replica) error {
		err := a.RevokeHost(ctx, r.ID, host)
		if errors.Is(err, ErrNotFound) {
			return nil // nothing left to fence
		}
		return err
	})
	if err := hardErrors(failed); err != nil {
		return fmt.Errorf("unpublish volume %s: %w", id, err)
	}
	_, err = s.o.Store.UpdateVolume(ctx, id, func(v *store.Volume) error {
		for i := range v.Replicas {
			if revoked[v.Replicas[i].ID] {
				v.Replicas[i].AllowedHost = ""
			}
		}
		if v.PublishedHostNQN == host {
			v.PublishedHostNQN, v.PublishedNodeID = "", ""
		}
		return nil
	})
	return err
}

// forReplicas runs op on the agents of the selected replicas in parallel
// and returns the IDs for which it succeeded and the errors of the others.
func (s *Service) forReplicas(ctx context.Context, v *store.Volume, sel func(store.Replica) bool, op func(AgentClient, store.Replica) error) (map[string]bool, map[string]error) {
	ok := map[string]bool{}
	failed := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, r := range v.Replicas {
		if !sel(r) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := s.agentFor(ctx, r.StorageNode)
			if err == nil {
				err = op(a, r)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				klog.V(2).InfoS("Replica operation failed", "volume", v.ID, "replica", r.ID, "storageNode", r.StorageNode, "err", err)
				failed[r.ID] = fmt.Errorf("replica %s on %s: %w", r.ID, r.StorageNode, err)
				return
			}
			ok[r.ID] = true
		}()
	}
	wg.Wait()
	return ok, failed
}

// hardErrors joins the failures that are not "storage node unreachable":
// those are the caller's to report, while unreachable nodes are left to the
// sweeper.
func hardErrors(failed map[string]error) error {
	var errs []error
	for _, err := range failed {
		if !errors.Is(err, ErrUnavailable) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func mapValues(m map[string]error) []error {
	out := make([]error, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	return out
}

func (s *Service) recordAllowed(ctx context.Context, id string, allowed map[string]bool, host string) (*store.Volume, error) {
	return s.o.Store.UpdateVolume(ctx, id, func(v *store.Volume) error {
		for i := range v.Replicas {
			if allowed[v.Replicas[i].ID] {
				v.Replicas[i].AllowedHost = host
			}
		}
		return nil
	})
}

// ExpandVolume grows every active replica to newSize and then records the
// size. Every active replica must be reachable: a replica left smaller than
// the array could never be re-added, so a partial expansion is refused
// (ErrUnavailable, retry) rather than recorded.
func (s *Service) ExpandVolume(ctx context.Context, id string, newSize int64) (*store.Volume, error) {
	if err := s.requireLeader(); err != nil {
		return nil, err
	}
	if newSize <= 0 {
		return nil, fmt.Errorf("%w: size %d must be positive", ErrInvalidArgument, newSize)
	}
	size := roundUp(newSize)
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
		return a.ExpandReplica(ctx, r.ID, ReplicaSize(size))
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
