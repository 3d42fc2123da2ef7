// Package agentclient adapts the target agent's generated gRPC client
// (pkg/agentapi) to provisioner.AgentClient, and keeps one TLS connection
// per storage node with the shared bearer token (pkg/rpcauth).
//
// It is the only provisioner code that knows the wire API: gRPC codes are
// translated here into the provisioner's sentinel errors, keeping the
// agent's message for the user.
package agentclient

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/grpcerr"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// Client is a provisioner.AgentClient over one agent connection.
type Client struct {
	c agentapi.TargetClient
}

var _ provisioner.AgentClient = (*Client)(nil)

// New wraps a generated client.
func New(c agentapi.TargetClient) *Client { return &Client{c: c} }

// sentinels translate an agent's status codes into the provisioner's
// errors. Codes without a counterpart (Internal, Unauthenticated, ...) stay
// status errors, which provisioner.Code passes through.
var sentinels = grpcerr.Sentinels{
	codes.NotFound:           provisioner.ErrNotFound,
	codes.ResourceExhausted:  provisioner.ErrResourceExhausted,
	codes.Unavailable:        provisioner.ErrUnavailable,
	codes.DeadlineExceeded:   provisioner.ErrUnavailable,
	codes.InvalidArgument:    provisioner.ErrInvalidArgument,
	codes.AlreadyExists:      provisioner.ErrAlreadyExists,
	codes.FailedPrecondition: provisioner.ErrFailedPrecondition,
	codes.Aborted:            provisioner.ErrAborted,
}

func mapErr(err error) error { return sentinels.Map(err, "agent") }

func provType(t storageclass.ProvisioningType) agentapi.ProvisioningType {
	if t == storageclass.Thick {
		return agentapi.ProvisioningType_PROVISIONING_TYPE_THICK
	}
	return agentapi.ProvisioningType_PROVISIONING_TYPE_THIN
}

func endpoints(in []*agentapi.Endpoint) []store.Endpoint {
	out := make([]store.Endpoint, 0, len(in))
	for _, e := range in {
		out = append(out, store.Endpoint{Transport: e.GetTransport(), Family: e.GetAddressFamily(), Address: e.GetAddress(), ServiceID: e.GetServiceId()})
	}
	return out
}

func (c *Client) CreateReplica(ctx context.Context, r provisioner.ReplicaSpec) (provisioner.AgentReplica, error) {
	req := &agentapi.CreateReplicaRequest{
		ReplicaId: r.ReplicaID, VolumeId: r.VolumeID, SizeBytes: r.SizeBytes,
		ProvisioningType: provType(r.ProvisioningType), AllowedHosts: r.AllowedHosts,
	}
	if src := r.Source; src != nil {
		req.Source = &agentapi.SnapshotSource{SnapshotId: src.SnapshotID, SourceOffset: src.SourceOffset, Length: src.Length, TargetOffset: src.TargetOffset}
	}
	resp, err := c.c.CreateReplica(ctx, req)
	if err != nil {
		return provisioner.AgentReplica{}, mapErr(err)
	}
	rep := resp.GetReplica()
	return provisioner.AgentReplica{NQN: rep.GetNqn(), Endpoints: endpoints(rep.GetEndpoints())}, nil
}

func (c *Client) DeleteReplica(ctx context.Context, id string) error {
	_, err := c.c.DeleteReplica(ctx, &agentapi.DeleteReplicaRequest{ReplicaId: id})
	return mapErr(err)
}

func (c *Client) ListReplicas(ctx context.Context) ([]provisioner.HeldReplica, error) {
	resp, err := c.c.ListReplicas(ctx, &agentapi.ListReplicasRequest{})
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]provisioner.HeldReplica, 0, len(resp.GetReplicas()))
	for _, r := range resp.GetReplicas() {
		out = append(out, heldReplica(r))
	}
	return out, nil
}

func (c *Client) GetReplica(ctx context.Context, id string) (provisioner.HeldReplica, error) {
	resp, err := c.c.GetReplica(ctx, &agentapi.GetReplicaRequest{ReplicaId: id})
	if err != nil {
		return provisioner.HeldReplica{}, mapErr(err)
	}
	return heldReplica(resp.GetReplica()), nil
}

func heldReplica(r *agentapi.Replica) provisioner.HeldReplica {
	return provisioner.HeldReplica{ID: r.GetReplicaId(), VolumeID: r.GetVolumeId(), SizeBytes: r.GetSizeBytes()}
}

func (c *Client) ExpandReplica(ctx context.Context, id string, size int64) error {
	_, err := c.c.ExpandReplica(ctx, &agentapi.ExpandReplicaRequest{ReplicaId: id, SizeBytes: size})
	return mapErr(err)
}

func (c *Client) AllowHost(ctx context.Context, id, host string) error {
	_, err := c.c.AllowHost(ctx, &agentapi.AllowHostRequest{ReplicaId: id, HostNqn: host})
	return mapErr(err)
}

func (c *Client) SetHostAuth(ctx context.Context, host string, s provisioner.HostSecrets) error {
	_, err := c.c.SetHostAuth(ctx, &agentapi.SetHostAuthRequest{HostNqn: host, DhchapKey: s.Secret, DhchapCtrlKey: s.CtrlSecret})
	return mapErr(err)
}

func (c *Client) RevokeHost(ctx context.Context, id, host string) error {
	_, err := c.c.RevokeHost(ctx, &agentapi.RevokeHostRequest{ReplicaId: id, HostNqn: host})
	return mapErr(err)
}

func (c *Client) GetCapacity(ctx context.Context) (provisioner.Capacity, error) {
	resp, err := c.c.GetCapacity(ctx, &agentapi.GetCapacityRequest{})
	if err != nil {
		return provisioner.Capacity{}, mapErr(err)
	}
	return provisioner.Capacity{TotalBytes: resp.GetTotalBytes(), AvailableBytes: resp.GetAvailableBytes(),
		ProvisionedBytes: resp.GetProvisionedBytes(), ReplicaCount: int(resp.GetReplicaCount()),
		SnapshotCount: int(resp.GetSnapshotCount()), SnapshotAllocatedBytes: resp.GetSnapshotAllocatedBytes()}, nil
}

func (c *Client) NodeInfo(ctx context.Context) (provisioner.NodeInfo, error) {
	resp, err := c.c.NodeInfo(ctx, &agentapi.NodeInfoRequest{})
	if err != nil {
		return provisioner.NodeInfo{}, mapErr(err)
	}
	return provisioner.NodeInfo{Name: resp.GetNodeName(), Zone: resp.GetZone(), Rack: resp.GetRack(), RepairHostNQN: resp.GetRepairHostNqn()}, nil
}

// Pool implements provisioner.Agents: one gRPC connection per agent
// address, over mutual TLS (the provisioner's client certificate is in the
// TLS configuration), with the bearer token, if any, on every call. Each
// agent must present a certificate for its storage node's name, unless the
// configuration names one server name for all (a shared certificate): a
// storage node cannot pose as another.
type Pool struct {
	creds *rpcauth.ClientCredentials
	token string
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

var _ provisioner.Agents = (*Pool)(nil)

// NewPool returns a pool; creds are required (the token must never travel
// in clear text), token is optional (agents started with --token-file
// refuse calls without it).
func NewPool(creds *rpcauth.ClientCredentials, token string) (*Pool, error) {
	if creds == nil {
		return nil, errors.New("agent pool: TLS credentials are required")
	}
	return &Pool{creds: creds, token: token, conns: map[string]*grpc.ClientConn{}}, nil
}

// Agent returns the client of the node's agent. Connections are lazy (no
// dial here), so an unreachable agent shows up as ErrUnavailable on its
// first call, not as a failure to build the client.
func (p *Pool) Agent(ctx context.Context, n *store.StorageNode) (provisioner.AgentClient, error) {
	if n.Address == "" {
		return nil, fmt.Errorf("storage node %s has no agent address: %w", n.ID, provisioner.ErrUnavailable)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cc, ok := p.conns[n.Address]
	if !ok {
		creds := p.creds
		if creds.ServerName() == "" {
			creds = creds.WithServerName(n.ID)
		}
		opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
		if p.token != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(rpcauth.TokenCredentials{Token: p.token}))
		}
		var err error
		cc, err = grpc.NewClient(n.Address, opts...)
		if err != nil {
			return nil, fmt.Errorf("storage node %s at %s: %w", n.ID, n.Address, err)
		}
		p.conns[n.Address] = cc
	}
	return New(agentapi.NewTargetClient(cc)), nil
}

// Close closes every connection.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for addr, cc := range p.conns {
		errs = append(errs, cc.Close())
		delete(p.conns, addr)
	}
	return errors.Join(errs...)
}
