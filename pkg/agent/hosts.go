package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

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
	if !s.inflight.Insert(id) {
		return nil, inFlightError(id)
	}
	defer s.inflight.Delete(id)
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
	if !s.inflight.Insert(id) {
		return nil, inFlightError(id)
	}
	defer s.inflight.Delete(id)
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
