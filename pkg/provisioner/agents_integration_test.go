package provisioner_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/nvmirror/nvmirror/pkg/agent"
	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/agentclient"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/boltstore"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/rpcauth/rpcauthtest"
)

// memExporter stands in for the kernel's nvmet configfs under the real
// agent (pkg/agent): subsystems, namespaces and allowed hosts in memory.
// Everything above it (the agent's state file, pool of sparse files, gRPC
// server with TLS and token, and the provisioner's adapter) is real.
type memExporter struct {
	mu   sync.Mutex
	subs map[string]*nvmet.Subsystem
	auth map[string]nvmet.HostAuth
}

func newMemExporter() *memExporter {
	return &memExporter{subs: map[string]*nvmet.Subsystem{}, auth: map[string]nvmet.HostAuth{}}
}

func (m *memExporter) AuthSupported() error { return nil }
func (m *memExporter) SetHostAuth(host string, a nvmet.HostAuth) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.auth[host] = a
	return nil
}
func (m *memExporter) hostAuth(host string) nvmet.HostAuth {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.auth[host]
}

func (m *memExporter) Available() error            { return nil }
func (m *memExporter) EnsurePort(nvmet.Port) error { return nil }
func (m *memExporter) ListSubsystems() ([]nvmet.Subsystem, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []nvmet.Subsystem
	for _, s := range m.subs {
		out = append(out, *s)
	}
	return out, nil
}
func (m *memExporter) GetSubsystem(nqn string) (nvmet.Subsystem, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.subs[nqn]
	if !ok {
		return nvmet.Subsystem{}, fmt.Errorf("subsystem %s: %w", nqn, nvmeof.ErrNotFound)
	}
	c := *s
	c.AllowedHosts = slices.Clone(s.AllowedHosts)
	return c, nil
}
func (m *memExporter) EnsureSubsystem(nqn, serial string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.subs[nqn]; !ok {
		m.subs[nqn] = &nvmet.Subsystem{NQN: nqn, Serial: serial}
	}
	return nil
}
func (m *memExporter) sub(nqn string) (*nvmet.Subsystem, error) {
	s, ok := m.subs[nqn]
	if !ok {
		return nil, fmt.Errorf("subsystem %s: %w", nqn, nvmeof.ErrNotFound)
	}
	return s, nil
}
func (m *memExporter) EnsureNamespace(nqn string, ns nvmet.Namespace) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.sub(nqn)
	if err != nil {
		return err
	}
	ns.Enabled = true
	s.Namespaces = []nvmet.Namespace{ns}
	return nil
}
func (m *memExporter) RevalidateNamespace(string, int) error { return nil }
func (m *memExporter) AllowHost(nqn, host string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.sub(nqn)
	if err != nil {
		return err
	}
	if !slices.Contains(s.AllowedHosts, host) {
		s.AllowedHosts = append(s.AllowedHosts, host)
	}
	return nil
}
func (m *memExporter) RevokeHost(nqn, host string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.subs[nqn]; ok {
		s.AllowedHosts = slices.DeleteFunc(s.AllowedHosts, func(h string) bool { return h == host })
	}
	return nil
}
func (m *memExporter) CutSessions(string) error { return nil }
func (m *memExporter) LinkSubsystem(port int, nqn string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.sub(nqn)
	if err != nil {
		return err
	}
	if !slices.Contains(s.Ports, port) {
		s.Ports = append(s.Ports, port)
	}
	return nil
}
func (m *memExporter) UnlinkSubsystem(port int, nqn string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.subs[nqn]; ok {
		s.Ports = slices.DeleteFunc(s.Ports, func(p int) bool { return p == port })
	}
	return nil
}
func (m *memExporter) RemoveSubsystem(nqn string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.subs, nqn)
	return nil
}

func (m *memExporter) hosts(nqn string) []string {
	s, err := m.GetSubsystem(nqn)
	if err != nil {
		return nil
	}
	return s.AllowedHosts
}

type realAgent struct {
	id   string
	pool string
	exp  *memExporter
	addr string
	srv  *grpc.Server
}

const agentToken = "integration-token"

// startRealAgents runs n nvmirror-target services (pkg/agent) behind
// gRPC with TLS and the bearer token, each with a pool of sparse files in a
// temporary directory, in rack r<i>.
func startRealAgents(t testing.TB, n int) ([]*realAgent, *tls.Config) {
	t.Helper()
	var names []string
	for i := 1; i <= n; i++ {
		names = append(names, fmt.Sprintf("sn-%d", i))
	}
	cert := rpcauthtest.NewCert(t, names...)
	serverTLS, clientTLS := cert.ServerTLS(), cert.ClientTLS()
	auth, err := rpcauth.NewTokenAuth(agentToken)
	if err != nil {
		t.Fatal(err)
	}
	var out []*realAgent
	for i := 1; i <= n; i++ {
		a := &realAgent{id: fmt.Sprintf("sn-%d", i), pool: filepath.Join(t.TempDir(), "pool"), exp: newMemExporter()}
		pool, err := agent.NewPool(a.pool)
		if err != nil {
			t.Fatal(err)
		}
		opts := agent.Options{
			PoolDir: a.pool, NQNPrefix: fmt.Sprintf("nqn.2026-11.io.nvmirror:sn%d:", i),
			Ports:    []nvmet.Port{{ID: 1, Transport: "tcp", AdrFam: "ipv4", TrAddr: fmt.Sprintf("10.0.0.%d", i), TrSvcID: "4420"}},
			NodeName: a.id, Zone: "z1", Rack: fmt.Sprintf("r%d", i),
		}
		svc, err := agent.NewService(opts, pool, agent.NewStore(filepath.Join(a.pool, "state.json")), a.exp)
		if err != nil {
			t.Fatal(err)
		}
		if err := svc.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		a.srv = grpc.NewServer(append(auth.ServerOptions(), grpc.Creds(credentials.NewTLS(serverTLS)))...)
		agentapi.RegisterTargetServer(a.srv, agent.NewServer(svc))
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a.addr = ln.Addr().String()
		go a.srv.Serve(ln)
		t.Cleanup(a.srv.Stop)
		out = append(out, a)
	}
	return out, clientTLS
}

func newRealEnv(t testing.TB, st store.Store, agents []*realAgent, clientTLS *tls.Config) *provisioner.Service {
	t.Helper()
	pool, err := agentclient.NewPool(rpcauth.StaticClientCredentials(clientTLS), agentToken)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	for _, a := range agents {
		if err := st.PutStorageNode(context.Background(), &store.StorageNode{ID: a.id, Address: a.addr}); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := provisioner.New(provisioner.Options{Store: st, Agents: pool, AgentTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func agentByID(agents []*realAgent, id string) *realAgent {
	for _, a := range agents {
		if a.id == id {
			return a
		}
	}
	return nil
}

func TestWithRealAgents(t *testing.T) {
	ctx := context.Background()
	agents, clientTLS := startRealAgents(t, 3)
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "registry.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svc := newRealEnv(t, st, agents, clientTLS)

	v, err := svc.CreateVolume(ctx, provisioner.CreateRequest{Name: "pvc-real", SizeBytes: 64 << 20, Parameters: map[string]string{"numReplicas": "3"}})
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	for _, r := range v.Replicas {
		a := agentByID(agents, r.StorageNode)
		files, _ := filepath.Glob(filepath.Join(a.pool, r.ID+"*"))
		if len(files) != 1 {
			t.Errorf("replica %s: backing files %v in %s", r.ID, files, a.pool)
		} else if fi, _ := os.Stat(files[0]); fi.Size() != layout.ReplicaSize(64<<20) {
			t.Errorf("replica %s: backing file size %d", r.ID, fi.Size())
		}
		if len(r.Addresses) != 1 || r.Addresses[0].Address != fmt.Sprintf("10.0.0.%s", r.StorageNode[3:]) || r.NQN == "" {
			t.Errorf("replica record = %+v", r)
		}
	}

	_, err = svc.PublishVolume(ctx, v.ID, "nqn.2014-08.org.nvmexpress:uuid:not-a-uuid", "node-x")
	if !errors.Is(err, provisioner.ErrInvalidArgument) {
		t.Errorf("malformed host NQN: %v, want InvalidArgument", err)
	}
	if _, err := svc.PublishVolume(ctx, v.ID, hostA, "node-x"); err != nil {
		t.Fatalf("PublishVolume: %v", err)
	}
	for _, r := range v.Replicas {
		if hs := agentByID(agents, r.StorageNode).exp.hosts(r.NQN); !slices.Equal(hs, []string{hostA}) {
			t.Errorf("replica %s allows %v", r.ID, hs)
		}
	}
	_, err = svc.PublishVolume(ctx, v.ID, hostB, "node-x")
	if !errors.Is(err, provisioner.ErrFailedPrecondition) {
		t.Errorf("second host: %v", err)
	}

	// Authentication through the real agent API: secrets reach every
	// storage node, and a rotation replaces them.
	av, err := svc.CreateVolume(ctx, provisioner.CreateRequest{Name: "pvc-auth", SizeBytes: 64 << 20, Parameters: map[string]string{"numReplicas": "2", "authentication": "bidirectional"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.PublishVolume(ctx, av.ID, hostA, "node-x"); err != nil {
		t.Fatalf("publish with authentication: %v", err)
	}
	creds, err := svc.GetHostCredentials(ctx, hostA)
	if err != nil || len(creds) != 2 {
		t.Fatalf("GetHostCredentials = %v, %v", len(creds), err)
	}
	for _, c := range creds {
		if got := agentByID(agents, c.StorageNode).exp.hostAuth(hostA); got.Secret != c.Secret || got.CtrlSecret != c.CtrlSecret {
			t.Errorf("agent %s holds other secrets than the registry", c.StorageNode)
		}
	}
	if _, rotated, err := svc.RotateCredentials(ctx, av.ID); err != nil || len(rotated) != 2 || rotated[0].Err != nil {
		t.Fatalf("RotateCredentials = %+v, %v", rotated, err)
	}
	for _, c := range creds {
		if got := agentByID(agents, c.StorageNode).exp.hostAuth(hostA); got.Secret == c.Secret || got.Secret == "" {
			t.Errorf("agent %s still holds the old secret after rotation", c.StorageNode)
		}
	}
	if err := svc.UnpublishVolume(ctx, av.ID, hostA); err != nil {
		t.Fatal(err)
	}
	if err := svc.DeleteVolume(ctx, av.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.ExpandVolume(ctx, v.ID, 128<<20); err != nil {
		t.Fatalf("ExpandVolume: %v", err)
	}
	if err := svc.UnpublishVolume(ctx, v.ID, hostA); err != nil {
		t.Fatal(err)
	}
	for _, r := range v.Replicas {
		if hs := agentByID(agents, r.StorageNode).exp.hosts(r.NQN); len(hs) != 0 {
			t.Errorf("replica %s still allows %v after unpublish", r.ID, hs)
		}
	}

	// A storage node goes away: delete waits for it.
	down := agentByID(agents, v.Replicas[0].StorageNode)
	down.srv.Stop()
	if err := svc.DeleteVolume(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := st.GetVolume(ctx, v.ID); err != nil || got.State != store.VolumeDeleting {
		t.Fatalf("after delete with a node away: %+v, %v", got, err)
	}
	for _, r := range v.Replicas[1:] {
		if files, _ := filepath.Glob(filepath.Join(agentByID(agents, r.StorageNode).pool, r.ID+"*")); len(files) != 0 {
			t.Errorf("replica %s not deleted from a reachable node: %v", r.ID, files)
		}
	}
	if files, _ := filepath.Glob(filepath.Join(down.pool, v.Replicas[0].ID+"*")); len(files) != 1 {
		t.Errorf("replica on the stopped node: %v", files)
	}
}

// BenchmarkRealAgentsCreateDelete: volumes (3 replicas of 64 MiB) created
// and deleted per second with three real agents (pkg/agent: sparse-file
// pools and state files on disk, in-memory configfs) over gRPC with TLS and
// the bearer token, for each store backend.
func BenchmarkRealAgentsCreateDelete(b *testing.B) {
	for _, name := range []string{"bolt", "etcd"} {
		b.Run(name, func(b *testing.B) {
			agents, clientTLS := startRealAgents(b, 3)
			st := benchStore(b, name)
			defer st.Close()
			svc := newRealEnv(b, st, agents, clientTLS)
			ctx := context.Background()
			i := 0
			start := time.Now()
			for b.Loop() {
				v, err := svc.CreateVolume(ctx, provisioner.CreateRequest{Name: fmt.Sprintf("pvc-%d", i), SizeBytes: 64 << 20, Parameters: map[string]string{"numReplicas": "3"}})
				if err != nil {
					b.Fatal(err)
				}
				if err := svc.DeleteVolume(ctx, v.ID); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(i)/time.Since(start).Seconds(), "volumes/s")
		})
	}
}
