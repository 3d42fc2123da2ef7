package provisioner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/dhchap"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// NVMe in-band authentication (DH-HMAC-CHAP).
//
// Secrets are per (host, storage node) pair, generated here and kept in the
// registry (store.HostCredentials). A pair's secrets reach its storage node
// before the host is allowed on any replica there (allowHost), so the
// kernel target never admits the host without them. A pair gets secrets
// when a volume requiring authentication is first allowed on it; from then
// on every connection of that host to that storage node authenticates,
// whatever the volume's own mode, because the kernel target keeps secrets
// on its global entry for the host. The node therefore uses a pair's
// secrets for every replica on that storage node (GetHostCredentials).
//
// New secrets, at creation and at rotation, are recorded Pending first,
// pushed to the agent, then recorded Applied. GetHostCredentials returns
// Applied only: a host re-keyed before its storage node would fail to
// authenticate. A push whose outcome is unknown leaves Pending, which the
// next allowHost or RotateCredentials pushes again.

// CredentialScope is how widely one set of secrets is shared.
type CredentialScope string

const (
	// ScopeStorageNode: each (host, storage node) pair has its own
	// secrets. A storage node that leaks what it holds exposes only its own
	// pairs: nobody can use them to pass as the host elsewhere.
	ScopeStorageNode CredentialScope = "storage-node"
	// ScopeHost: one set of secrets per host, held by every storage node
	// the host uses. Needed when several storage-node agents share one
	// kernel target (the kernel keeps one entry per host NQN, so they
	// would overwrite each other's secrets); a leak from one storage node
	// then exposes the host's secrets on all.
	ScopeHost CredentialScope = "host"
)

// HostSecrets are a pair's secrets as an agent's SetHostAuth takes them.
type HostSecrets struct {
	Secret     string // the host's key
	CtrlSecret string // the storage node's key (bidirectional)
}

// StorageNodeCredentials are the secrets between a host and one storage node.
type StorageNodeCredentials struct {
	StorageNode string
	store.Secrets
}

// RotatedNode is the outcome of a rotation on one storage node.
type RotatedNode struct {
	StorageNode string
	Generation  int64
	Err         error // nil when the storage node holds the new secrets
}

// newSecrets draws a host and a controller secret; the caller sets the
// generation.
func (s *Service) newSecrets() (store.Secrets, error) {
	host, err := dhchap.Generate(s.o.Rand)
	if err != nil {
		return store.Secrets{}, fmt.Errorf("generate DH-HMAC-CHAP secret: %w", err)
	}
	ctrl, err := dhchap.Generate(s.o.Rand)
	if err != nil {
		return store.Secrets{}, fmt.Errorf("generate DH-HMAC-CHAP secret: %w", err)
	}
	return store.Secrets{Secret: host, CtrlSecret: ctrl, CreatedAt: time.Now().UTC()}, nil
}

// pairCredentials returns the pair's credentials; when need is set and the
// pair has none, it records new ones (Pending) first.
func (s *Service) pairCredentials(ctx context.Context, host, node string, need bool) (store.PairCredentials, error) {
	if !need {
		hc, err := s.o.Store.GetHostCredentials(ctx, host)
		if errors.Is(err, store.ErrNotFound) {
			return store.PairCredentials{}, nil
		}
		if err != nil {
			return store.PairCredentials{}, err
		}
		return hc.Pairs[node], nil
	}
	fresh, err := s.newSecrets()
	if err != nil {
		return store.PairCredentials{}, err
	}
	fresh.Generation = 1
	hc, err := s.o.Store.UpdateHostCredentials(ctx, host, func(hc *store.HostCredentials) error {
		pc := hc.Pairs[node]
		if pc.Applied.IsZero() && pc.Pending.IsZero() {
			if hc.Pairs == nil {
				hc.Pairs = map[string]store.PairCredentials{}
			}
			pc.Pending = fresh
			if s.o.CredentialScope == ScopeHost {
				// The host's one set: the newest any storage node has
				// (pending or applied), so every node converges on it.
				if newest := newestSecrets(hc); !newest.IsZero() {
					pc.Pending = newest
				}
			}
			hc.Pairs[node] = pc
		}
		return nil
	})
	if err != nil {
		return store.PairCredentials{}, err
	}
	return hc.Pairs[node], nil
}

// pushPair makes the agent hold the pair's newest secrets and, when those
// were pending, records them applied.
func (s *Service) pushPair(ctx context.Context, a AgentClient, host, node string, pc store.PairCredentials) error {
	want := pc.Applied
	if !pc.Pending.IsZero() {
		want = pc.Pending
	}
	if want.IsZero() {
		return nil
	}
	if err := a.SetHostAuth(ctx, host, HostSecrets{Secret: want.Secret, CtrlSecret: want.CtrlSecret}); err != nil {
		return fmt.Errorf("set the authentication secrets of host %s on storage node %s: %w", host, node, err)
	}
	if pc.Pending.IsZero() {
		return nil
	}
	_, err := s.o.Store.UpdateHostCredentials(ctx, host, func(hc *store.HostCredentials) error {
		cur := hc.Pairs[node]
		if cur.Pending.Generation == want.Generation && cur.Pending.Secret == want.Secret {
			cur.Applied, cur.Pending = cur.Pending, store.Secrets{}
			hc.Pairs[node] = cur
		}
		return nil
	})
	if err == nil {
		klog.InfoS("Storage node holds new authentication secrets", "host", host, "storageNode", node, "generation", want.Generation)
	}
	return err
}

// allowHost is the one way the provisioner admits a host on a replica:
// the pair's secrets first, then the allowance.
func (s *Service) allowHost(ctx context.Context, a AgentClient, v *store.Volume, r store.Replica, host string) error {
	if err := s.prepareHost(ctx, a, v, r.StorageNode, host); err != nil {
		return err
	}
	return a.AllowHost(ctx, r.ID, host)
}

// prepareHost gives the storage node the secrets it must demand from host
// before the host is allowed there (also for a replica created with the
// host already allowed).
func (s *Service) prepareHost(ctx context.Context, a AgentClient, v *store.Volume, node, host string) error {
	need := v.Parameters.Auth() != storageclass.AuthNone
	pc, err := s.pairCredentials(ctx, host, node, need)
	if err != nil {
		return err
	}
	if !need && pc.Applied.IsZero() {
		// Secrets that never reached the storage node (its kernel refused
		// them, say) are not demanded there: a volume without
		// authentication must not fail on them.
		return nil
	}
	return s.pushPair(ctx, a, host, node, pc)
}

// newestSecrets returns the highest generation of secrets any pair of the
// host has, pending or applied.
func newestSecrets(hc *store.HostCredentials) store.Secrets {
	var best store.Secrets
	for _, pc := range hc.Pairs {
		for _, s := range []store.Secrets{pc.Applied, pc.Pending} {
			if !s.IsZero() && s.Generation > best.Generation {
				best = s
			}
		}
	}
	return best
}

// GetHostCredentials returns the applied secrets of host, by storage node.
func (s *Service) GetHostCredentials(ctx context.Context, host string) ([]StorageNodeCredentials, error) {
	if err := nvmeof.ValidateNQN(host); err != nil {
		return nil, fmt.Errorf("%w: host NQN %q: %v", ErrInvalidArgument, host, err)
	}
	hc, err := s.o.Store.GetHostCredentials(ctx, host)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []StorageNodeCredentials
	for _, node := range slices.Sorted(maps.Keys(hc.Pairs)) {
		if pc := hc.Pairs[node]; !pc.Applied.IsZero() {
			out = append(out, StorageNodeCredentials{StorageNode: node, Secrets: pc.Applied})
		}
	}
	return out, nil
}

// RotateCredentials replaces the secrets between the volume's host and the
// storage nodes of its active replicas (see the API's comment). It returns
// the host and the outcome per storage node; the error is for the call as a
// whole (volume not found, not published, no authentication).
func (s *Service) RotateCredentials(ctx context.Context, volumeID string) (string, []RotatedNode, error) {
	if err := s.requireLeader(); err != nil {
		return "", nil, err
	}
	v, err := s.o.Store.GetVolume(ctx, volumeID)
	if err != nil {
		return "", nil, err
	}
	host := v.PublishedHostNQN
	if host == "" {
		return "", nil, fmt.Errorf("volume %s is not published to any host, so it has no connection secrets to rotate: %w", volumeID, ErrFailedPrecondition)
	}
	if v.Parameters.Auth() == storageclass.AuthNone {
		return "", nil, fmt.Errorf("volume %s has authentication %s (StorageClass parameter %s); there are no secrets to rotate: %w",
			volumeID, storageclass.AuthNone, storageclass.KeyAuthentication, ErrFailedPrecondition)
	}
	var nodes []string
	for _, r := range v.Replicas {
		if r.State == store.ReplicaActive && !slices.Contains(nodes, r.StorageNode) {
			nodes = append(nodes, r.StorageNode)
		}
	}
	pairs, err := s.beginRotation(ctx, host, nodes)
	if err != nil {
		return "", nil, err
	}
	// In ScopeHost the rotation reaches every storage node holding the
	// host's secrets, not only this volume's.
	nodes = slices.Sorted(maps.Keys(pairs))
	out := make([]RotatedNode, 0, len(nodes))
	for _, node := range nodes {
		pc := pairs[node]
		res := RotatedNode{StorageNode: node, Generation: pc.Pending.Generation}
		if pc.Pending.IsZero() {
			res.Generation = pc.Applied.Generation // already holds the newest
		}
		a, err := s.agentFor(ctx, node)
		if err == nil {
			err = s.pushPair(ctx, a, host, node, pc)
		}
		if err != nil {
			klog.ErrorS(err, "Rotation left pending", "volume", volumeID, "host", host, "storageNode", node, "generation", res.Generation)
		}
		res.Err = err
		out = append(out, res)
	}
	return host, out, nil
}

// beginRotation records new pending secrets for the pairs of host and
// nodes, in one registry update, and returns the pairs to push. A pair with
// a rotation already pending keeps it: a retry of a rotation that could not
// reach a storage node completes it instead of starting another. In
// ScopeHost one new set (or the newest pending one) goes to every pair of
// the host, the nodes' included.
func (s *Service) beginRotation(ctx context.Context, host string, nodes []string) (map[string]store.PairCredentials, error) {
	// Drawn before the update, whose function may run more than once: one
	// set per node, or the host's one set ("").
	draw := nodes
	if s.o.CredentialScope == ScopeHost {
		draw = []string{""}
	}
	fresh := make(map[string]store.Secrets, len(draw))
	for _, n := range draw {
		sec, err := s.newSecrets()
		if err != nil {
			return nil, err
		}
		fresh[n] = sec
	}
	var out map[string]store.PairCredentials
	_, err := s.o.Store.UpdateHostCredentials(ctx, host, func(hc *store.HostCredentials) error {
		if hc.Pairs == nil {
			hc.Pairs = map[string]store.PairCredentials{}
		}
		out = map[string]store.PairCredentials{}
		if s.o.CredentialScope != ScopeHost {
			for _, n := range nodes {
				pc := hc.Pairs[n]
				if pc.Pending.IsZero() {
					pc.Pending = fresh[n]
					pc.Pending.Generation = pc.Applied.Generation + 1
					hc.Pairs[n] = pc
				}
				out[n] = pc
			}
			return nil
		}
		for _, n := range nodes {
			if _, ok := hc.Pairs[n]; !ok {
				hc.Pairs[n] = store.PairCredentials{}
			}
		}
		var shared store.Secrets
		for _, pc := range hc.Pairs {
			if !pc.Pending.IsZero() && pc.Pending.Generation > shared.Generation {
				shared = pc.Pending
			}
		}
		if shared.IsZero() {
			shared = fresh[""]
			shared.Generation = newestSecrets(hc).Generation + 1
		}
		for n, pc := range hc.Pairs {
			if pc.Applied != shared {
				pc.Pending = shared
			}
			hc.Pairs[n] = pc
			out[n] = pc
		}
		return nil
	})
	return out, err
}
