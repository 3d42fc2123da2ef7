package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
)

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
	if err := s.pool.cleanSnapshotLeftovers(); err != nil {
		return fmt.Errorf("clean up snapshot directory: %w", err)
	}
	if err := s.Reconcile(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrRestoreIncomplete, err)
	}
	return nil
}

// replicaOf returns the replica ID of a subsystem this agent may have
// created: its NQN is the agent's prefix and a valid replica ID. A prefix
// alone is not enough: another agent's prefix may nest inside this one
// ("...:sn1:" and "...:sn1:b:"), and its subsystems ("...:sn1:b:rep-1")
// then start with ours, but their rest is not a replica ID (a prefix ends
// with ':', which no ID contains).
func (s *Service) replicaOf(nqn string) (string, bool) {
	id, ok := strings.CutPrefix(nqn, s.opts.NQNPrefix)
	if !ok || validateReplicaID(id) != nil {
		return "", false
	}
	return id, true
}

// Reconcile makes configfs and the pool match the state:
//   - subsystems this agent may have created (replicaOf) that no record
//     lists are removed (with their sessions); others, another agent's
//     under a nested prefix included, are never touched;
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
		id, ours := s.replicaOf(sub.NQN)
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
