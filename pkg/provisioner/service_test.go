package provisioner_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/fakeagent"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/boltstore"
)

const gib = int64(1) << 30

const (
	hostA = "nqn.2014-08.org.nvmexpress:uuid:6f1c2a10-7d3e-4b8a-9c1d-1a2b3c4d5e6f"
	hostB = "nqn.2014-08.org.nvmexpress:uuid:0b9a8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"
)

type env struct {
	svc     *provisioner.Service
	store   store.Store
	cluster *fakeagent.Cluster
	ctx     context.Context
}

// node describes a fake storage node: id, zone, rack, pool GiB.
type node struct {
	id, zone, rack string
	gib            int64
}

func threeRacks() []node {
	return []node{{"sn-1", "z1", "r1", 100}, {"sn-2", "z1", "r2", 100}, {"sn-3", "z1", "r3", 100}}
}

func newEnvWithStore(t testing.TB, st store.Store, nodes []node, o provisioner.Options) *env {
	t.Helper()
	ctx := context.Background()
	c := fakeagent.New()
	for _, n := range nodes {
		if err := st.PutStorageNode(ctx, c.AddNode(n.id, n.zone, n.rack, n.gib*gib)); err != nil {
			t.Fatal(err)
		}
	}
	o.Store, o.Agents = st, c
	svc, err := provisioner.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return &env{svc: svc, store: st, cluster: c, ctx: ctx}
}

func newEnv(t testing.TB, nodes []node) *env {
	t.Helper()
	return newEnvOpts(t, nodes, provisioner.Options{})
}

func newEnvOpts(t testing.TB, nodes []node, o provisioner.Options) *env {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "registry.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newEnvWithStore(t, st, nodes, o)
}

func (e *env) create(t *testing.T, name string, size int64, p map[string]string) *store.Volume {
	t.Helper()
	v, err := e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: name, SizeBytes: size, Parameters: p})
	if err != nil {
		t.Fatalf("CreateVolume(%s): %v", name, err)
	}
	return v
}

func wantCode(t *testing.T, err error, sentinel error, contains ...string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("err = %v, want %v", err, sentinel)
	}
	for _, s := range contains {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
}

type notLeader struct{ store.Store }

func (notLeader) IsLeader() bool { return false }

func TestNotLeaderRefuses(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "r.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e := newEnvWithStore(t, notLeader{st}, threeRacks(), provisioner.Options{})
	_, err = e.svc.CreateVolume(e.ctx, provisioner.CreateRequest{Name: "x", SizeBytes: gib})
	wantCode(t, err, store.ErrNotLeader)
	if c := provisioner.Code(err); c.String() != "Unavailable" {
		t.Errorf("code %v", c)
	}
}

// Replicas carry the md metadata reserve on top of the volume, so the md
// device the node assembles holds the whole volume.
func TestReplicaSize(t *testing.T) {
	if got, want := layout.ReplicaSize(1<<30), int64(1<<30)+layout.MetadataReserve; got != want {
		t.Fatalf("layout.ReplicaSize(1 GiB) = %d, want %d", got, want)
	}
}
