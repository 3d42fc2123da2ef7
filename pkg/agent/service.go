package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
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
	opts     Options
	pool     *Pool
	store    *Store
	exp      Exporter
	inflight inflight

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

// CreateRequest is the input of CreateReplica.
type CreateRequest struct {
	ReplicaID    string
	VolumeID     string
	SizeBytes    int64
	Provisioning Provisioning
	AllowedHosts []string
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

// Start checks the kernel target, creates the agent's ports and reconciles
// configfs to the state. An error wrapping ErrRestoreIncomplete lists
// replicas that could not be restored: the agent can still serve the others
// (and deletes); any other error means it cannot work at all.
func (s *Service) Start(ctx context.Context) error {
	if err := s.exp.Available(); err != nil {
		return fmt.Errorf("kernel NVMe-oF target: %w", err)
	}
	c, err := s.pool.Capacity()
	if err != nil {
		return err
	}
	if c.TmpFS && !s.bufferedIO {
		klog.InfoS("Pool is on tmpfs, which has no O_DIRECT: exporting with buffered I/O", "pool", s.pool.Dir())
		s.bufferedIO = true
	}
	for _, p := range s.opts.Ports {
		p.Subsystems = nil
		if err := s.exp.EnsurePort(p); err != nil {
			return fmt.Errorf("nvmet port %d (%s:%s): %w", p.ID, p.TrAddr, p.TrSvcID, err)
		}
	}
	if err := s.Reconcile(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrRestoreIncomplete, err)
	}
	return nil
}

// Reconcile makes configfs and the pool match the state:
//   - subsystems under the agent's NQN prefix that no record lists are
//     removed (with their sessions); subsystems outside the prefix are
//     never touched;
//   - records being created are completed, records being deleted are
//     deleted, ready records are re-exported (after a reboot configfs is
//     empty) with exactly their allowed hosts, and pending session cuts
//     are done;
//   - backing files without a record are reported, never deleted.
func (s *Service) Reconcile(ctx context.Context) error {
	recs := s.snapshot()
	var errs []error
	subs, err := s.exp.ListSubsystems()
	if err != nil {
		return fmt.Errorf("list nvmet subsystems: %w", err)
	}
	for _, sub := range subs {
		id, ours := strings.CutPrefix(sub.NQN, s.opts.NQNPrefix)
		if !ours {
			continue
		}
		if _, known := recs[id]; known {
			continue
		}
		klog.InfoS("Removing export the agent does not own", "nqn", sub.NQN)
		if err := s.exp.RemoveSubsystem(sub.NQN); err != nil {
			errs = append(errs, fmt.Errorf("remove unowned subsystem %s: %w", sub.NQN, err))
		}
	}
	ids := slices.Sorted(maps.Keys(recs))
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return err
		}
		r := recs[id]
		var err error
		switch r.State {
		case StateDeleting:
			err = s.finishDelete(r)
		case StateCreating:
			err = s.finishCreate(r)
		default:
			err = s.export(r, false)
		}
		if err != nil {
			klog.ErrorS(err, "Cannot restore replica", "replica", id, "state", r.State)
			errs = append(errs, fmt.Errorf("replica %s: %w", id, err))
		} else {
			klog.V(2).InfoS("Replica restored", "replica", id, "state", r.State)
		}
	}
	files, err := s.pool.List()
	if err != nil {
		errs = append(errs, err)
	}
	for _, id := range files {
		if _, ok := recs[id]; !ok {
			klog.InfoS("Backing file without a replica record; left in place for an administrator", "path", s.pool.Path(id))
		}
	}
	return errors.Join(errs...)
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
	if !s.inflight.insert(req.ReplicaID) {
		return nil, inFlightError(req.ReplicaID)
	}
	defer s.inflight.remove(req.ReplicaID)

	if cur, ok := s.get(req.ReplicaID); ok {
		if cur.State == StateDeleting {
			return nil, fmt.Errorf("%w: replica %s is being deleted; repeat DeleteReplica before creating it again", ErrFailedPrecondition, cur.ID)
		}
		if cur.VolumeID != req.VolumeID || cur.SizeBytes != req.SizeBytes || cur.Provisioning != req.Provisioning {
			return nil, fmt.Errorf("%w: replica %s exists with volume_id=%s size_bytes=%d provisioning_type=%s; requested volume_id=%s size_bytes=%d provisioning_type=%s",
				ErrAlreadyExists, cur.ID, cur.VolumeID, cur.SizeBytes, cur.Provisioning, req.VolumeID, req.SizeBytes, req.Provisioning)
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
	r := &Replica{
		ID:           req.ReplicaID,
		VolumeID:     req.VolumeID,
		SizeBytes:    req.SizeBytes,
		Provisioning: req.Provisioning,
		AllowedHosts: hosts,
		State:        StateCreating,
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
	klog.InfoS("Created replica", "replica", r.ID, "volume", r.VolumeID, "sizeBytes", r.SizeBytes, "provisioning", r.Provisioning, "hosts", r.AllowedHosts)
	r, _ = s.get(r.ID)
	return r, nil
}

// finishCreate does steps (2)-(4) of CreateReplica for a record.
func (s *Service) finishCreate(r *Replica) error {
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

// export makes configfs export r exactly as recorded: subsystem with its
// serial, namespace 1 with its identity and backing file, its allowed hosts
// and no others (extra hosts are revoked and sessions cut), linked to every
// agent port and to no other port. After an expand interrupted before the
// file grew, it grows the file and revalidates the namespace. fileMayBeNew
// says whether a missing backing file may be created: never for a ready
// replica, whose data would silently become zeros.
func (s *Service) export(r *Replica, fileMayBeNew bool) error {
	nqn := s.NQN(r.ID)
	size, err := s.pool.Size(r.ID)
	if errors.Is(err, ErrNotFound) && !fileMayBeNew {
		return fmt.Errorf("%w: backing file %s of ready replica %s is missing; not exporting an empty file in its place",
			ErrFailedPrecondition, s.pool.Path(r.ID), r.ID)
	}
	if err != nil {
		return err
	}
	grew := false
	if size < r.SizeBytes {
		if err := s.pool.Ensure(r.ID, r.SizeBytes, r.Provisioning); err != nil {
			return err
		}
		grew = true
	}
	if err := s.exp.EnsureSubsystem(nqn, nvmeof.SerialFor(r.ID)); err != nil {
		return fmt.Errorf("subsystem %s: %w", nqn, err)
	}
	ns := nvmet.Namespace{
		NSID:       NSID,
		DevicePath: s.pool.Path(r.ID),
		UUID:       nvmeof.NamespaceUUID(r.ID),
		NGUID:      nvmeof.NamespaceNGUID(r.ID),
		BufferedIO: s.bufferedIO,
	}
	if err := s.exp.EnsureNamespace(nqn, ns); err != nil {
		return fmt.Errorf("namespace of %s: %w", nqn, err)
	}
	if grew {
		if err := s.exp.RevalidateNamespace(nqn, NSID); err != nil {
			return err
		}
	}
	sub, err := s.exp.GetSubsystem(nqn)
	if err != nil {
		return err
	}
	cut := r.CutPending
	for _, h := range sub.AllowedHosts {
		if !slices.Contains(r.AllowedHosts, h) {
			klog.InfoS("Revoking host not in the replica's record", "replica", r.ID, "host", h)
			if err := s.exp.RevokeHost(nqn, h); err != nil {
				return err
			}
			cut = true
		}
	}
	for _, h := range r.AllowedHosts {
		// Secrets first: the host must never be admitted without them.
		if err := s.applyHostAuth(h); err != nil {
			return err
		}
		if err := s.exp.AllowHost(nqn, h); err != nil {
			return fmt.Errorf("allow host %s on %s: %w", h, nqn, err)
		}
	}
	ours := map[int]bool{}
	for _, p := range s.opts.Ports {
		ours[p.ID] = true
	}
	for _, id := range sub.Ports {
		if !ours[id] {
			if err := s.exp.UnlinkSubsystem(id, nqn); err != nil {
				return err
			}
		}
	}
	// Cut before linking the agent's ports: right after a reboot the
	// subsystem has no port yet and nothing to cut.
	if cut && len(sub.Ports) > 0 {
		if err := s.exp.CutSessions(nqn); err != nil {
			return err
		}
	}
	for _, p := range s.opts.Ports {
		if err := s.exp.LinkSubsystem(p.ID, nqn); err != nil {
			return fmt.Errorf("export %s on port %d: %w", nqn, p.ID, err)
		}
	}
	if r.CutPending {
		c := r.clone()
		c.CutPending = false
		return s.put(c)
	}
	return nil
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
	if !s.inflight.insert(id) {
		return inFlightError(id)
	}
	defer s.inflight.remove(id)
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
	if !s.inflight.insert(id) {
		return nil, inFlightError(id)
	}
	defer s.inflight.remove(id)
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

// AllowHost lets host connect to replica id.
//
// Order: (1) record the host, (2) allow it in configfs. A crash after (1)
// is completed by a repeated call or the next start.
func (s *Service) AllowHost(ctx context.Context, id, host string) (*Replica, error) {
	if err := validateReplicaID(id); err != nil {
		return nil, err
	}
	if err := validateHostNQN("host_nqn", host); err != nil {
		return nil, err
	}
	if !s.inflight.insert(id) {
		return nil, inFlightError(id)
	}
	defer s.inflight.remove(id)
	r, ok := s.get(id)
	if !ok {
		return nil, fmt.Errorf("%w: replica %s", ErrNotFound, id)
	}
	if r.State != StateReady {
		return nil, fmt.Errorf("%w: replica %s is %s, not ready", ErrFailedPrecondition, id, r.State)
	}
	if !slices.Contains(r.AllowedHosts, host) {
		r.AllowedHosts = normalizeHosts(append(r.AllowedHosts, host))
		if err := s.put(r); err != nil { // (1)
			return nil, err
		}
	}
	if err := s.applyHostAuth(host); err != nil { // (2) secrets before the allowance
		return nil, err
	}
	if err := s.exp.AllowHost(s.NQN(id), host); err != nil { // (2)
		return nil, fmt.Errorf("allow host %s on replica %s: %w", host, id, err)
	}
	klog.InfoS("Allowed host on replica", "replica", id, "host", host)
	return r, nil
}

// RevokeHost stops host from reaching replica id, including an established
// session. Unknown replicas and hosts not allowed are success.
//
// Order: (1) remove the host from the record and mark a session cut
// pending, (2) revoke it in configfs, (3) cut the replica's sessions (the
// kernel only checks allowed hosts at connect time; every session of the
// replica is cut, the hosts still allowed reconnect), (4) clear the pending
// mark. After a crash, a repeated call or the next start sees the mark and
// cuts; without the mark a retry does not cut again, so retries do not
// disturb the host published after this one.
func (s *Service) RevokeHost(ctx context.Context, id, host string) (*Replica, error) {
	if err := validateReplicaID(id); err != nil {
		return nil, err
	}
	if err := validateHostNQN("host_nqn", host); err != nil {
		return nil, err
	}
	if !s.inflight.insert(id) {
		return nil, inFlightError(id)
	}
	defer s.inflight.remove(id)
	r, ok := s.get(id)
	if !ok {
		return nil, nil
	}
	if r.State == StateDeleting {
		return r, nil
	}
	if i := slices.Index(r.AllowedHosts, host); i >= 0 {
		r.AllowedHosts = slices.Delete(r.AllowedHosts, i, i+1)
		r.CutPending = true
		if err := s.put(r); err != nil { // (1)
			return nil, err
		}
	}
	nqn := s.NQN(id)
	if err := s.exp.RevokeHost(nqn, host); err != nil && !errors.Is(err, nvmeof.ErrNotFound) { // (2)
		return nil, fmt.Errorf("revoke host %s on replica %s: %w", host, id, err)
	}
	if r.CutPending {
		if err := s.exp.CutSessions(nqn); err != nil && !errors.Is(err, nvmeof.ErrNotFound) { // (3)
			return nil, fmt.Errorf("cut sessions of replica %s: %w", id, err)
		}
		r.CutPending = false
		if err := s.put(r); err != nil { // (4)
			return nil, err
		}
		klog.InfoS("Revoked host on replica and cut its sessions", "replica", id, "host", host)
	}
	return r, nil
}

// PoolCapacity is the answer of GetCapacity.
type PoolCapacity struct {
	Capacity
	ProvisionedBytes int64
	ReplicaCount     int
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
	return out, nil
}

// Options returns the agent's options (for NodeInfo).
func (s *Service) Options() Options { return s.opts }

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

// inflight is the set of replica IDs with a mutating call running. A second
// call on the same replica fails fast with ErrInFlight (gRPC Aborted)
// rather than queueing behind a possibly slow first one.
type inflight struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

func (f *inflight) insert(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, busy := f.ids[id]; busy {
		return false
	}
	if f.ids == nil {
		f.ids = map[string]struct{}{}
	}
	f.ids[id] = struct{}{}
	return true
}

func (f *inflight) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ids, id)
}
