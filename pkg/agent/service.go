package agent

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"

	"github.com/nvmirror/nvmirror/pkg/inflight"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
)

// Exporter is the part of the kernel target (nvmet.Target) the agent uses.
// Tests substitute an in-memory fake.
type Exporter interface {
	Available() error
	EnsurePort(p nvmet.Port) error
	ListSubsystems() ([]nvmet.Subsystem, error)
	GetSubsystem(nqn string) (nvmet.Subsystem, error)
	EnsureSubsystem(nqn, serial string) error
	EnsureNamespace(nqn string, ns nvmet.Namespace) error
	RevalidateNamespace(nqn string, nsid int) error
	AllowHost(nqn, hostNQN string) error
	RevokeHost(nqn, hostNQN string) error
	CutSessions(nqn string) error
	LinkSubsystem(portID int, nqn string) error
	UnlinkSubsystem(portID int, nqn string) error
	RemoveSubsystem(nqn string) error
	// AuthSupported reports (nvmeof.ErrAuthUnsupported) a kernel target
	// without in-band authentication; SetHostAuth sets a host's secrets.
	AuthSupported() error
	SetHostAuth(hostNQN string, a nvmet.HostAuth) error
}

var _ Exporter = (*nvmet.Target)(nil)

// NSID is the namespace ID of every replica: one namespace per subsystem.
const NSID = 1

// DefaultNQNPrefix is prepended to replica IDs to name their subsystems.
// Everything under the agent's prefix belongs to the agent: the reconcile
// removes subsystems under it that the state does not list.
const DefaultNQNPrefix = "nqn.2026-11.io.nvmirror:replica:"

// Service is the agent: it owns the replicas of one pool and their exports.
// Its methods are the API operations, independent of gRPC; server.go maps
// them to the protobuf service.
//
// Every operation is ordered so that a crash between any two steps leaves a
// state that repeating the call, or the next Start, completes: the intent is
// recorded in the state file before the system is changed, and the record
// goes away only after the system change is done.
type Service struct {
	opts  Options
	pool  *Pool
	store *Store
	exp   Exporter
	// inflight holds the replica IDs with a mutating call running: a second
	// call on the same replica fails fast with ErrInFlight (gRPC Aborted)
	// rather than queueing behind a possibly slow first one.
	inflight inflight.Set
	// snapInflight is inflight for snapshot IDs (a call that copies a
	// replica into a snapshot holds both).
	snapInflight inflight.Set

	// mu guards replicas and serializes state file writes. It is never held
	// across exporter or pool calls; per-replica exclusion is inflight's job.
	mu       sync.Mutex
	replicas map[string]*Replica

	bufferedIO bool

	// authMu guards hostAuth (the hosts' DH-HMAC-CHAP secrets, persisted
	// in authStore) and orders secret changes with their configfs writes.
	authMu    sync.Mutex
	hostAuth  map[string]HostSecrets
	authStore *HostAuthStore
}

// NewService loads the state file and returns the agent. It does not touch
// the kernel target; Start does.
func NewService(opts Options, pool *Pool, store *Store, exp Exporter) (*Service, error) {
	if err := opts.validateService(); err != nil {
		return nil, err
	}
	recs, err := store.Load()
	if err != nil {
		return nil, err
	}
	authStore := NewHostAuthStore(filepath.Join(filepath.Dir(store.Path()), HostAuthFileName))
	hostAuth, err := authStore.Load()
	if err != nil {
		return nil, err
	}
	return &Service{opts: opts, pool: pool, store: store, exp: exp, replicas: recs, bufferedIO: opts.BufferedIO,
		hostAuth: hostAuth, authStore: authStore}, nil
}

// NQN is the subsystem NQN of replica id.
func (s *Service) NQN(id string) string { return s.opts.NQNPrefix + id }

// Endpoints are the nvmet ports the agent exports its replicas on.
func (s *Service) Endpoints() []nvmet.Port { return slices.Clone(s.opts.Ports) }

// PoolCapacity is the answer of GetCapacity.
type PoolCapacity struct {
	Capacity
	ProvisionedBytes int64
	ReplicaCount     int
	// Snapshots kept in the pool and what their files allocate.
	SnapshotCount          int
	SnapshotAllocatedBytes int64
}

// GetCapacity reports the pool's space (see Pool for the rule).
func (s *Service) GetCapacity() (PoolCapacity, error) {
	c, err := s.pool.Capacity()
	if err != nil {
		return PoolCapacity{}, err
	}
	out := PoolCapacity{Capacity: c}
	for _, r := range s.snapshot() {
		out.ProvisionedBytes += r.SizeBytes
		out.ReplicaCount++
	}
	snaps, err := s.pool.listSnapshots()
	if err != nil {
		return PoolCapacity{}, err
	}
	for _, sn := range snaps {
		out.SnapshotCount++
		out.SnapshotAllocatedBytes += sn.AllocatedBytes
	}
	return out, nil
}

// Options returns the agent's options (for NodeInfo).
func (s *Service) Options() Options { return s.opts }

func inFlightError(id string) error {
	return fmt.Errorf("%w: another call on replica %s is running; retry", ErrInFlight, id)
}

// get returns a copy of replica id's record.
func (s *Service) get(id string) (*Replica, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.replicas[id]
	if !ok {
		return nil, false
	}
	return r.clone(), true
}

func (s *Service) snapshot() map[string]*Replica {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*Replica, len(s.replicas))
	for id, r := range s.replicas {
		out[id] = r.clone()
	}
	return out
}

// put stores a copy of r, durably, before returning. On a write failure the
// in-memory state is unchanged.
func (s *Service) put(r *Replica) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := maps.Clone(s.replicas)
	next[r.ID] = r.clone()
	if err := s.store.Save(next); err != nil {
		return fmt.Errorf("persist replica %s: %w", r.ID, err)
	}
	s.replicas = next
	return nil
}

func (s *Service) drop(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.replicas[id]; !ok {
		return nil
	}
	next := maps.Clone(s.replicas)
	delete(next, id)
	if err := s.store.Save(next); err != nil {
		return fmt.Errorf("persist removal of replica %s: %w", id, err)
	}
	s.replicas = next
	return nil
}
