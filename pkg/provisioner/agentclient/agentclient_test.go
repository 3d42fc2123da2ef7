package agentclient

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/rpcauth/rpcauthtest"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

const token = "s3cret-token"

// agent is a scripted TargetServer that records the last create request.
type agent struct {
	agentapi.UnimplementedTargetServer
	lastCreate *agentapi.CreateReplicaRequest
	lastRepair *agentapi.StartRepairRequest
}

func (a *agent) CreateReplica(ctx context.Context, r *agentapi.CreateReplicaRequest) (*agentapi.CreateReplicaResponse, error) {
	if r.GetSizeBytes() > 1<<40 {
		return nil, status.Error(codes.ResourceExhausted, "pool has 100 GiB free, need 2 TiB")
	}
	a.lastCreate = r
	return &agentapi.CreateReplicaResponse{Replica: &agentapi.Replica{
		ReplicaId: r.GetReplicaId(), Nqn: "nqn.2024-01.io.nvmirror:" + r.GetReplicaId(),
		Endpoints: []*agentapi.Endpoint{{Transport: "tcp", AddressFamily: "ipv4", Address: "10.0.0.7", ServiceId: "4420"}},
	}}, nil
}

func (a *agent) AllowHost(ctx context.Context, r *agentapi.AllowHostRequest) (*agentapi.AllowHostResponse, error) {
	return nil, status.Errorf(codes.NotFound, "replica %s not found", r.GetReplicaId())
}

func (a *agent) GetCapacity(context.Context, *agentapi.GetCapacityRequest) (*agentapi.GetCapacityResponse, error) {
	return &agentapi.GetCapacityResponse{TotalBytes: 100, AvailableBytes: 60, ProvisionedBytes: 70, ReplicaCount: 3}, nil
}

func (a *agent) NodeInfo(context.Context, *agentapi.NodeInfoRequest) (*agentapi.NodeInfoResponse, error) {
	return &agentapi.NodeInfoResponse{NodeName: "sn-1", Zone: "z1", Rack: "r1"}, nil
}

func (a *agent) ListReplicas(context.Context, *agentapi.ListReplicasRequest) (*agentapi.ListReplicasResponse, error) {
	return &agentapi.ListReplicasResponse{Replicas: []*agentapi.Replica{
		{ReplicaId: "rep-1", VolumeId: "vol-1", SizeBytes: 1 << 30},
		{ReplicaId: "rep-2", VolumeId: "vol-2", SizeBytes: 2 << 30},
	}}, nil
}

func (a *agent) GetReplica(ctx context.Context, r *agentapi.GetReplicaRequest) (*agentapi.GetReplicaResponse, error) {
	if r.GetReplicaId() != "rep-1" {
		return nil, status.Errorf(codes.NotFound, "replica %s not found", r.GetReplicaId())
	}
	return &agentapi.GetReplicaResponse{Replica: &agentapi.Replica{ReplicaId: "rep-1", VolumeId: "vol-1", SizeBytes: 1 << 30}}, nil
}

func serve(t *testing.T, a *agent) (addr string, clientTLS *tls.Config, stop func()) {
	t.Helper()
	// The agent's certificate names its storage node, which the pool
	// verifies.
	cert := rpcauthtest.NewCert(t, "sn-1")
	serverTLS, clientTLS := cert.ServerTLS(), cert.ClientTLS()
	auth, err := rpcauth.NewTokenAuth(token)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(append(auth.ServerOptions(), grpc.Creds(credentials.NewTLS(serverTLS)))...)
	agentapi.RegisterTargetServer(srv, a)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	return ln.Addr().String(), clientTLS, srv.Stop
}

// dial serves a over TLS with the token and returns a pooled client of it,
// a context bounding the test's calls, and the agent's address and the
// client TLS configuration for other clients; all end with the test.
func dial(t *testing.T, a *agent) (c provisioner.AgentClient, ctx context.Context, addr string, clientTLS *tls.Config) {
	t.Helper()
	addr, clientTLS, stop := serve(t, a)
	t.Cleanup(stop)
	pool, err := NewPool(rpcauth.StaticClientCredentials(clientTLS), token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	c, err = pool.Agent(ctx, &store.StorageNode{ID: "sn-1", Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	return c, ctx, addr, clientTLS
}

func TestClientOverTLSWithToken(t *testing.T) {
	a := &agent{}
	c, ctx, addr, clientTLS := dial(t, a)

	rep, err := c.CreateReplica(ctx, provisioner.ReplicaSpec{ReplicaID: "rep-1", VolumeID: "vol-1", SizeBytes: 1 << 30, ProvisioningType: storageclass.Thick, AllowedHosts: []string{"h"}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.NQN != "nqn.2024-01.io.nvmirror:rep-1" || len(rep.Endpoints) != 1 || rep.Endpoints[0] != (store.Endpoint{Transport: "tcp", Family: "ipv4", Address: "10.0.0.7", ServiceID: "4420"}) {
		t.Errorf("replica = %+v", rep)
	}
	if lc := a.lastCreate; lc.GetProvisioningType() != agentapi.ProvisioningType_PROVISIONING_TYPE_THICK || lc.GetVolumeId() != "vol-1" || len(lc.GetAllowedHosts()) != 1 {
		t.Errorf("request sent = %v", lc)
	}
	_, err = c.CreateReplica(ctx, provisioner.ReplicaSpec{ReplicaID: "rep-2", SizeBytes: 2 << 40})
	if !errors.Is(err, provisioner.ErrResourceExhausted) || provisioner.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized create: %v", err)
	}
	if err := c.AllowHost(ctx, "rep-x", "h"); !errors.Is(err, provisioner.ErrNotFound) {
		t.Errorf("AllowHost on a missing replica: %v", err)
	}
	if err := c.DeleteReplica(ctx, "rep-1"); provisioner.Code(err) != codes.Unimplemented {
		t.Errorf("unmapped code not passed through: %v", err)
	}
	capa, err := c.GetCapacity(ctx)
	if err != nil || capa != (provisioner.Capacity{TotalBytes: 100, AvailableBytes: 60, ProvisionedBytes: 70, ReplicaCount: 3}) {
		t.Errorf("GetCapacity = %+v, %v", capa, err)
	}
	info, err := c.NodeInfo(ctx)
	if err != nil || info != (provisioner.NodeInfo{Name: "sn-1", Zone: "z1", Rack: "r1"}) {
		t.Errorf("NodeInfo = %+v, %v", info, err)
	}

	held, err := c.ListReplicas(ctx)
	if err != nil || len(held) != 2 || held[1] != (provisioner.HeldReplica{ID: "rep-2", VolumeID: "vol-2", SizeBytes: 2 << 30}) {
		t.Errorf("ListReplicas = %+v, %v", held, err)
	}
	if h, err := c.GetReplica(ctx, "rep-1"); err != nil || h != (provisioner.HeldReplica{ID: "rep-1", VolumeID: "vol-1", SizeBytes: 1 << 30}) {
		t.Errorf("GetReplica = %+v, %v", h, err)
	}
	if _, err := c.GetReplica(ctx, "rep-9"); !errors.Is(err, provisioner.ErrNotFound) {
		t.Errorf("GetReplica of a replica the agent does not hold: %v, want ErrNotFound", err)
	}
	// An agent whose certificate is not its storage node's is refused: a
	// storage node cannot answer for another.
	other, _ := NewPool(rpcauth.StaticClientCredentials(clientTLS), token)
	defer other.Close()
	oc, _ := other.Agent(ctx, &store.StorageNode{ID: "sn-2", Address: addr})
	if _, err := oc.GetCapacity(ctx); !errors.Is(err, provisioner.ErrUnavailable) || !strings.Contains(err.Error(), "sn-2") {
		t.Errorf("agent at sn-2's address with sn-1's certificate: %v, want Unavailable (certificate not for sn-2)", err)
	}

	// A wrong token is refused by the agent.
	bad, _ := NewPool(rpcauth.StaticClientCredentials(clientTLS), "wrong")
	defer bad.Close()
	bc, _ := bad.Agent(ctx, &store.StorageNode{ID: "sn-1", Address: addr})
	if _, err := bc.GetCapacity(ctx); provisioner.Code(err) != codes.Unauthenticated {
		t.Errorf("wrong token: %v", err)
	}
}

func TestUnreachableAgentIsUnavailable(t *testing.T) {
	clientTLS := rpcauthtest.NewCert(t).ClientTLS()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	pool, _ := NewPool(rpcauth.StaticClientCredentials(clientTLS), token)
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := pool.Agent(ctx, &store.StorageNode{ID: "sn-9", Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetCapacity(ctx); !errors.Is(err, provisioner.ErrUnavailable) {
		t.Errorf("GetCapacity on a dead address: %v, want ErrUnavailable", err)
	}
	if _, err := NewPool(nil, token); err == nil {
		t.Error("pool without TLS accepted")
	}
	if _, err := NewPool(rpcauth.StaticClientCredentials(clientTLS), ""); err != nil {
		t.Errorf("pool without token (agents without --token-file): %v", err)
	}
}
