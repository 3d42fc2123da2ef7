package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/rpcauth/rpcauthtest"
)

const token = "test-token"

// serve runs svc behind mutual TLS, the agent's authorization, the token
// check and the logging interceptor on an in-memory listener, and returns a
// client holding the provisioner's certificate (with the token when
// withToken).
func serve(t testing.TB, svc *Service, withToken bool, opts ...ServerOption) agentapi.TargetClient {
	t.Helper()
	ca := rpcauthtest.NewCA(t)
	prov := ca.Client(t, "nvmirror-provisioner", "provisioner")
	return serveAs(t, svc, ca, &prov, withToken, opts...)
}

// serveAs is serve with the client's certificate chosen (nil: none).
func serveAs(t testing.TB, svc *Service, ca *rpcauthtest.CA, client *rpcauthtest.Cert, withToken bool, opts ...ServerOption) agentapi.TargetClient {
	t.Helper()
	dir := t.TempDir()
	crt, key := ca.Server(t, "sn-1").WriteNamed(t, dir, "server")
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	auth, err := rpcauth.NewServer(rpcauth.ServerConfig{CertFile: crt, KeyFile: key, ClientCAFile: ca.WriteCA(t, dir),
		TokenFile: tokenFile, Authorizer: Authorizer()})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(
		grpc.Creds(auth.Credentials()),
		grpc.ChainUnaryInterceptor(auth.UnaryServerInterceptor(), LoggingInterceptor),
		grpc.ChainStreamInterceptor(auth.StreamServerInterceptor(), StreamLoggingInterceptor),
	)
	agentapi.RegisterTargetServer(srv, NewServer(svc, opts...))
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	clientTLS := &tls.Config{RootCAs: ca.Pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if client != nil {
		clientTLS.Certificates = []tls.Certificate{client.TLS}
	}
	dialOpts := []grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)),
	}
	if withToken {
		dialOpts = append(dialOpts, grpc.WithPerRPCCredentials(rpcauth.TokenCredentials{Token: token}))
	}
	conn, err := grpc.NewClient("passthrough:///bufnet", dialOpts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentapi.NewTargetClient(conn)
}

func TestGRPCErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{fieldError("replica_id", "bad"), codes.InvalidArgument},
		{fmt.Errorf("x: %w", ErrNotFound), codes.NotFound},
		{fmt.Errorf("x: %w", ErrAlreadyExists), codes.AlreadyExists},
		{fmt.Errorf("x: %w", ErrResourceExhausted), codes.ResourceExhausted},
		{fmt.Errorf("x: %w", ErrFailedPrecondition), codes.FailedPrecondition},
		{inFlightError("r"), codes.Aborted},
		{context.Canceled, codes.Canceled},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{errors.New("configfs exploded"), codes.Internal},
		{status.Error(codes.Unavailable, "already a status"), codes.Unavailable},
	} {
		if got := status.Code(grpcError(tc.err)); got != tc.want {
			t.Errorf("grpcError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestGRPCEndToEnd(t *testing.T) {
	e := newEnv(t)
	c := serve(t, e.svc, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	resp, err := c.CreateReplica(ctx, &agentapi.CreateReplicaRequest{
		ReplicaId: "r1", VolumeId: "vol-1", SizeBytes: 4 * mib,
		ProvisioningType: agentapi.ProvisioningType_PROVISIONING_TYPE_THIN, AllowedHosts: []string{hostA},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.GetReplica()
	if r.GetNqn() != DefaultNQNPrefix+"r1" || r.GetState() != agentapi.ReplicaState_REPLICA_STATE_READY ||
		r.GetNsid() != 1 || r.GetNamespaceUuid() == "" || len(r.GetEndpoints()) != 1 || r.GetEndpoints()[0].GetAddress() != "127.0.0.1" {
		t.Fatalf("replica %v", r)
	}
	for _, tc := range []struct {
		name  string
		call  func() error
		code  codes.Code
		field string
	}{
		{"negative size", func() error {
			_, err := c.CreateReplica(ctx, &agentapi.CreateReplicaRequest{ReplicaId: "r2", VolumeId: "v", SizeBytes: -1, ProvisioningType: agentapi.ProvisioningType_PROVISIONING_TYPE_THIN})
			return err
		}, codes.InvalidArgument, "size_bytes"},
		{"traversal", func() error {
			_, err := c.CreateReplica(ctx, &agentapi.CreateReplicaRequest{ReplicaId: "../x", VolumeId: "v", SizeBytes: mib, ProvisioningType: agentapi.ProvisioningType_PROVISIONING_TYPE_THIN})
			return err
		}, codes.InvalidArgument, "replica_id"},
		{"unspecified type", func() error {
			_, err := c.CreateReplica(ctx, &agentapi.CreateReplicaRequest{ReplicaId: "r2", VolumeId: "v", SizeBytes: mib})
			return err
		}, codes.InvalidArgument, "provisioning_type"},
		{"other size", func() error {
			_, err := c.CreateReplica(ctx, &agentapi.CreateReplicaRequest{ReplicaId: "r1", VolumeId: "vol-1", SizeBytes: 8 * mib, ProvisioningType: agentapi.ProvisioningType_PROVISIONING_TYPE_THIN})
			return err
		}, codes.AlreadyExists, ""},
		{"beyond free space", func() error {
			_, err := c.CreateReplica(ctx, &agentapi.CreateReplicaRequest{ReplicaId: "r2", VolumeId: "v", SizeBytes: 1 << 59, ProvisioningType: agentapi.ProvisioningType_PROVISIONING_TYPE_THICK})
			return err
		}, codes.ResourceExhausted, ""},
		{"get unknown", func() error { _, err := c.GetReplica(ctx, &agentapi.GetReplicaRequest{ReplicaId: "nope"}); return err }, codes.NotFound, ""},
		{"expand unknown", func() error {
			_, err := c.ExpandReplica(ctx, &agentapi.ExpandReplicaRequest{ReplicaId: "nope", SizeBytes: mib})
			return err
		}, codes.NotFound, ""},
		{"delete unknown", func() error {
			_, err := c.DeleteReplica(ctx, &agentapi.DeleteReplicaRequest{ReplicaId: "nope"})
			return err
		}, codes.OK, ""},
		{"revoke unknown", func() error {
			_, err := c.RevokeHost(ctx, &agentapi.RevokeHostRequest{ReplicaId: "nope", HostNqn: hostA})
			return err
		}, codes.OK, ""},
		{"allow bad host", func() error {
			_, err := c.AllowHost(ctx, &agentapi.AllowHostRequest{ReplicaId: "r1", HostNqn: "x/y"})
			return err
		}, codes.InvalidArgument, "host_nqn"},
	} {
		err := tc.call()
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
		}
		if tc.field != "" && !strings.Contains(status.Convert(err).Message(), tc.field) {
			t.Errorf("%s: message %q does not name %s", tc.name, status.Convert(err).Message(), tc.field)
		}
	}
	if _, err := e.svc.GetReplica("r2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("r2 exists after refused creates")
	}

	// Aborted while another call holds the replica.
	e.svc.inflight.Insert("r1")
	if _, err := c.ExpandReplica(ctx, &agentapi.ExpandReplicaRequest{ReplicaId: "r1", SizeBytes: 8 * mib}); status.Code(err) != codes.Aborted {
		t.Errorf("expand while busy: %v, want Aborted", err)
	}
	e.svc.inflight.Delete("r1")

	if _, err := c.RevokeHost(ctx, &agentapi.RevokeHostRequest{ReplicaId: "r1", HostNqn: hostA}); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListReplicas(ctx, &agentapi.ListReplicasRequest{})
	if err != nil || len(list.GetReplicas()) != 1 || len(list.GetReplicas()[0].GetAllowedHosts()) != 0 {
		t.Fatalf("ListReplicas = %v, %v", list, err)
	}
	capResp, err := c.GetCapacity(ctx, &agentapi.GetCapacityRequest{})
	if err != nil || capResp.GetProvisionedBytes() != 4*mib || capResp.GetReplicaCount() != 1 || capResp.GetAvailableBytes() <= 0 {
		t.Fatalf("GetCapacity = %v, %v", capResp, err)
	}
	ni, err := c.NodeInfo(ctx, &agentapi.NodeInfoRequest{})
	if err != nil || ni.GetNodeName() != "node-1" || ni.GetZone() != "z1" || ni.GetRack() != "r1" || len(ni.GetEndpoints()) != 1 || ni.GetVersion() == "" {
		t.Fatalf("NodeInfo = %v, %v", ni, err)
	}
}

func TestGRPCWithoutTokenUnauthenticated(t *testing.T) {
	e := newEnv(t)
	c := serve(t, e.svc, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.CreateReplica(ctx, &agentapi.CreateReplicaRequest{ReplicaId: "r1", VolumeId: "v", SizeBytes: mib, ProvisioningType: agentapi.ProvisioningType_PROVISIONING_TYPE_THIN})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("create without token: %v, want Unauthenticated", err)
	}
	e.checkNothingCreated()
}

// TestGRPCOnlyTheProvisioner: the agent API is the provisioner's alone. A
// node plugin's or the controller's certificate is PermissionDenied naming
// the caller; another storage node's certificate (a server certificate), a
// certificate of another CA, an expired one or none are Unauthenticated.
// Nothing is created by any of them.
func TestGRPCOnlyTheProvisioner(t *testing.T) {
	ca := rpcauthtest.NewCA(t)
	foreign := rpcauthtest.NewCA(t)
	expired := ca.Issue(t, rpcauthtest.Leaf{Name: "nvmirror-provisioner", Roles: []string{"provisioner"}, Client: true,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Minute)})
	for _, tc := range []struct {
		name    string
		cert    *rpcauthtest.Cert
		want    codes.Code
		errPart string
	}{
		{"node plugin", ptr(ca.Client(t, "worker-1", "node")), codes.PermissionDenied, "worker-1 (node) may not call /nvmirror.target.v1.Target/CreateReplica: allowed to provisioner"},
		{"controller", ptr(ca.Client(t, "nvmirror-controller", "controller")), codes.PermissionDenied, "nvmirror-controller (controller)"},
		{"admin", ptr(ca.Client(t, "ops", "admin")), codes.PermissionDenied, "ops (admin)"},
		{"another storage node", ptr(ca.Issue(t, rpcauthtest.Leaf{Name: "sn-2", Roles: []string{"storage-node"}, Hosts: []string{"sn-2"}, Server: true})),
			codes.Unauthenticated, "incompatible key usage"},
		{"foreign CA", ptr(foreign.Client(t, "nvmirror-provisioner", "provisioner")), codes.Unauthenticated, "unknown authority"},
		{"expired", &expired, codes.Unauthenticated, "expired"},
		{"no certificate", nil, codes.Unauthenticated, "no client certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			c := serveAs(t, e.svc, ca, tc.cert, true)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := c.CreateReplica(ctx, &agentapi.CreateReplicaRequest{ReplicaId: "r1", VolumeId: "v", SizeBytes: mib, ProvisioningType: agentapi.ProvisioningType_PROVISIONING_TYPE_THIN})
			if status.Code(err) != tc.want || !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("CreateReplica: %v, want %v saying %q", err, tc.want, tc.errPart)
			}
			e.checkNothingCreated()
		})
	}
}

func ptr[T any](v T) *T { return &v }

// BenchmarkCreateDeleteReplica measures one CreateReplica + DeleteReplica
// round trip through gRPC (TLS, token, in-memory connection) with the fake
// exporter: the agent's own cost (validation, two or three fsynced state
// writes per call, backing file creation/removal), without the kernel.
func BenchmarkCreateDeleteReplica(b *testing.B) {
	for _, prov := range []agentapi.ProvisioningType{agentapi.ProvisioningType_PROVISIONING_TYPE_THIN, agentapi.ProvisioningType_PROVISIONING_TYPE_THICK} {
		b.Run(strings.ToLower(strings.TrimPrefix(prov.String(), "PROVISIONING_TYPE_")), func(b *testing.B) {
			dir := b.TempDir()
			pool, err := NewPool(dir)
			if err != nil {
				b.Fatal(err)
			}
			svc, err := NewService(testOptions(), pool, NewStore(dir+"/"+StateFileName), newFakeExporter())
			if err != nil {
				b.Fatal(err)
			}
			if err := svc.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			c := serve(b, svc, true)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				id := fmt.Sprintf("bench-%d", i)
				if _, err := c.CreateReplica(ctx, &agentapi.CreateReplicaRequest{ReplicaId: id, VolumeId: "v", SizeBytes: 64 * mib, ProvisioningType: prov, AllowedHosts: []string{hostA}}); err != nil {
					b.Fatal(err)
				}
				if _, err := c.DeleteReplica(ctx, &agentapi.DeleteReplicaRequest{ReplicaId: id}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
