package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
)

const (
	hostA = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001"
	hostB = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-000000000002"
	mib   = 1 << 20
)

type env struct {
	t    *testing.T
	dir  string
	pool *Pool
	exp  *fakeExporter
	svc  *Service
}

func testOptions() Options {
	return Options{
		NodeName: "node-1", Zone: "z1", Rack: "r1",
		Ports: []nvmet.Port{{ID: 7, Transport: "tcp", AdrFam: "ipv4", TrAddr: "127.0.0.1", TrSvcID: "4420"}},
	}
}

// newEnv starts a service on a temp pool with an empty fake configfs.
func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), exp: newFakeExporter()}
	var err error
	if e.pool, err = NewPool(e.dir); err != nil {
		t.Fatal(err)
	}
	e.restart()
	return e
}

// restart builds a new Service on the same pool, state file and configfs,
// as after an agent restart, and starts it.
func (e *env) restart() error {
	e.t.Helper()
	svc, err := NewService(testOptions(), e.pool, NewStore(filepath.Join(e.dir, StateFileName)), e.exp)
	if err != nil {
		e.t.Fatal(err)
	}
	e.svc = svc
	return svc.Start(context.Background())
}

func (e *env) create(id string, size int64, prov Provisioning, hosts ...string) *Replica {
	e.t.Helper()
	r, err := e.svc.CreateReplica(context.Background(), CreateRequest{ReplicaID: id, VolumeID: "vol-1", SizeBytes: size, Provisioning: prov, AllowedHosts: hosts})
	if err != nil {
		e.t.Fatalf("CreateReplica(%s): %v", id, err)
	}
	return r
}

// checkExported asserts that replica id is exported exactly as a ready
// replica with hosts should be.
func (e *env) checkExported(id string, hosts ...string) {
	e.t.Helper()
	sub, ok := e.exp.exported(DefaultNQNPrefix + id)
	if !ok {
		e.t.Fatalf("replica %s not exported", id)
	}
	if len(sub.Namespaces) != 1 {
		e.t.Fatalf("replica %s has %d namespaces", id, len(sub.Namespaces))
	}
	ns := sub.Namespaces[0]
	if ns.NSID != NSID || ns.DevicePath != e.pool.Path(id) || ns.UUID != nvmeof.NamespaceUUID(id) || ns.NGUID != nvmeof.NamespaceNGUID(id) {
		e.t.Errorf("replica %s namespace %+v", id, ns)
	}
	if sub.Serial != nvmeof.SerialFor(id) {
		e.t.Errorf("replica %s serial %q", id, sub.Serial)
	}
	if !slices.Equal(sub.AllowedHosts, normalizeHosts(hosts)) {
		e.t.Errorf("replica %s allowed hosts %v, want %v", id, sub.AllowedHosts, hosts)
	}
	if !slices.Equal(sub.Ports, []int{7}) {
		e.t.Errorf("replica %s ports %v, want [7]", id, sub.Ports)
	}
	if _, err := os.Stat(e.pool.Path(id)); err != nil {
		e.t.Errorf("replica %s backing file: %v", id, err)
	}
}

// persisted reads the state file as a fresh agent would.
func (e *env) persisted() map[string]*Replica {
	e.t.Helper()
	recs, err := NewStore(filepath.Join(e.dir, StateFileName)).Load()
	if err != nil {
		e.t.Fatal(err)
	}
	return recs
}

func TestConcurrentCallOnSameReplicaAborted(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.create("r1", mib, Thin)
	if !e.svc.inflight.Insert("r1") {
		t.Fatal("insert")
	}
	calls := map[string]func() error{
		"create": func() error {
			_, err := e.svc.CreateReplica(ctx, CreateRequest{ReplicaID: "r1", VolumeID: "vol-1", SizeBytes: mib, Provisioning: Thin})
			return err
		},
		"delete": func() error { return e.svc.DeleteReplica(ctx, "r1") },
		"expand": func() error { _, err := e.svc.ExpandReplica(ctx, "r1", 2*mib); return err },
		"allow":  func() error { _, err := e.svc.AllowHost(ctx, "r1", hostA); return err },
		"revoke": func() error { _, err := e.svc.RevokeHost(ctx, "r1", hostA); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrInFlight) {
			t.Errorf("%s while busy: %v, want ErrInFlight", name, err)
		}
	}
	// Other replicas are not blocked, reads are not blocked.
	e.create("r2", mib, Thin)
	if _, err := e.svc.GetReplica("r1"); err != nil {
		t.Fatal(err)
	}
	e.svc.inflight.Delete("r1")
	if err := calls["delete"](); err != nil {
		t.Fatalf("delete after release: %v", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	o := Options{}
	err := o.Validate()
	if err == nil {
		t.Fatal("empty options accepted")
	}
	for _, want := range []string{"--pool-dir", "--listen", "--tls-cert-file", "--tls-client-ca-file", "--node-name", "--nvme-address"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}
	ports, err := ParseNvmeAddresses([]string{"127.0.0.2:4420", "[fd00::1]:4421"}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if ports[0].ID != 10 || ports[1].ID != 11 || ports[1].AdrFam != "ipv6" || ports[1].TrSvcID != "4421" {
		t.Fatalf("ports %+v", ports)
	}
	if _, err := ParseNvmeAddresses([]string{"127.0.0.2"}, 1); err == nil {
		t.Fatal("address without port accepted")
	}
	o = Options{PoolDir: "/pool", Listen: ":9400", TLSCertFile: "c", TLSKeyFile: "k", TLSClientCAFile: "ca", NodeName: "n", Ports: ports, NQNPrefix: "nqn.2026-11.io.nvmirror:replica"}
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--nqn-prefix") {
		t.Fatalf("prefix without ':' : %v", err)
	}
	o.NQNPrefix = ""
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if o.StateFile != "/pool/state.json" || o.NQNPrefix != DefaultNQNPrefix {
		t.Fatalf("defaults not filled: %+v", o)
	}
}
