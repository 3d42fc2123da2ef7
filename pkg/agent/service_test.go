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

func TestCreateReplicaIdempotent(t *testing.T) {
	e := newEnv(t)
	r := e.create("r1", 8*mib, Thin, hostA)
	if r.State != StateReady || r.SizeBytes != 8*mib || !slices.Equal(r.AllowedHosts, []string{hostA}) {
		t.Fatalf("created %+v", r)
	}
	e.checkExported("r1", hostA)
	if p := e.persisted()["r1"]; p == nil || p.State != StateReady {
		t.Fatalf("persisted %+v", p)
	}
	// Same parameters: same replica; hosts of a repeated create are ignored.
	r2 := e.create("r1", 8*mib, Thin, hostB)
	if r2.State != StateReady || !slices.Equal(r2.AllowedHosts, []string{hostA}) {
		t.Fatalf("repeated create returned %+v", r2)
	}
	e.checkExported("r1", hostA)
	for name, req := range map[string]CreateRequest{
		"size":   {ReplicaID: "r1", VolumeID: "vol-1", SizeBytes: 16 * mib, Provisioning: Thin},
		"type":   {ReplicaID: "r1", VolumeID: "vol-1", SizeBytes: 8 * mib, Provisioning: Thick},
		"volume": {ReplicaID: "r1", VolumeID: "vol-2", SizeBytes: 8 * mib, Provisioning: Thin},
	} {
		_, err := e.svc.CreateReplica(context.Background(), req)
		if !errors.Is(err, ErrAlreadyExists) {
			t.Errorf("create with other %s: err = %v, want ErrAlreadyExists", name, err)
		}
	}
	if got, _ := e.pool.Size("r1"); got != 8*mib {
		t.Errorf("file size changed to %d", got)
	}
}

func TestCreateReplicaThick(t *testing.T) {
	e := newEnv(t)
	e.create("thick", 4*mib, Thick)
	if a := allocatedBytes(t, e.pool.Path("thick")); a < 4*mib {
		t.Fatalf("thick replica has %d bytes allocated", a)
	}
}

func TestCreateReplicaInvalidCreatesNothing(t *testing.T) {
	e := newEnv(t)
	ok := CreateRequest{ReplicaID: "r1", VolumeID: "vol-1", SizeBytes: mib, Provisioning: Thin}
	for _, tc := range []struct {
		name  string
		edit  func(*CreateRequest)
		field string
	}{
		{"empty id", func(r *CreateRequest) { r.ReplicaID = "" }, "replica_id"},
		{"traversal", func(r *CreateRequest) { r.ReplicaID = "../../etc/passwd" }, "replica_id"},
		{"dotdot", func(r *CreateRequest) { r.ReplicaID = ".." }, "replica_id"},
		{"slash", func(r *CreateRequest) { r.ReplicaID = "a/b" }, "replica_id"},
		{"upper", func(r *CreateRequest) { r.ReplicaID = "Replica" }, "replica_id"},
		{"leading dash", func(r *CreateRequest) { r.ReplicaID = "-r" }, "replica_id"},
		{"nul", func(r *CreateRequest) { r.ReplicaID = "r\x00" }, "replica_id"},
		{"comma", func(r *CreateRequest) { r.ReplicaID = "r,hostnqn=x" }, "replica_id"},
		{"too long", func(r *CreateRequest) { r.ReplicaID = strings.Repeat("a", 64) }, "replica_id"},
		{"no volume", func(r *CreateRequest) { r.VolumeID = "" }, "volume_id"},
		{"bad volume", func(r *CreateRequest) { r.VolumeID = "v/1" }, "volume_id"},
		{"negative size", func(r *CreateRequest) { r.SizeBytes = -4096 }, "size_bytes"},
		{"zero size", func(r *CreateRequest) { r.SizeBytes = 0 }, "size_bytes"},
		{"unaligned size", func(r *CreateRequest) { r.SizeBytes = 4097 }, "size_bytes"},
		{"huge size", func(r *CreateRequest) { r.SizeBytes = 1 << 62 }, "size_bytes"},
		{"no type", func(r *CreateRequest) { r.Provisioning = "" }, "provisioning_type"},
		{"bad host", func(r *CreateRequest) { r.AllowedHosts = []string{hostA, "not-an-nqn"} }, "allowed_hosts[1]"},
		{"host injection", func(r *CreateRequest) { r.AllowedHosts = []string{"nqn.x,traddr=1.2.3.4"} }, "allowed_hosts[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := ok
			tc.edit(&req)
			_, err := e.svc.CreateReplica(context.Background(), req)
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tc.field+":") {
				t.Errorf("error %q does not name field %s", err, tc.field)
			}
		})
	}
	e.checkNothingCreated()
}

func (e *env) checkNothingCreated() {
	e.t.Helper()
	if n := e.exp.subsystemCount(); n != 0 {
		e.t.Errorf("%d subsystems created", n)
	}
	if ids, _ := e.pool.List(); len(ids) != 0 {
		e.t.Errorf("backing files created: %v", ids)
	}
	if recs := e.persisted(); len(recs) != 0 {
		e.t.Errorf("records persisted: %v", recs)
	}
	ents, _ := os.ReadDir(e.dir)
	for _, en := range ents {
		if en.Name() != StateFileName {
			e.t.Errorf("unexpected file in pool: %s", en.Name())
		}
	}
}

func TestCreateReplicaBeyondFreeSpace(t *testing.T) {
	e := newEnv(t)
	c, err := e.pool.Capacity()
	if err != nil {
		t.Fatal(err)
	}
	size := (c.AvailableBytes + 1<<30) &^ (BlockSize - 1)
	_, err = e.svc.CreateReplica(context.Background(), CreateRequest{ReplicaID: "big", VolumeID: "v", SizeBytes: size, Provisioning: Thin})
	if !errors.Is(err, ErrResourceExhausted) {
		t.Fatalf("err = %v, want ErrResourceExhausted", err)
	}
	if !strings.Contains(err.Error(), "available") {
		t.Errorf("error %q does not give the available size", err)
	}
	e.checkNothingCreated()
}

func TestDeleteReplica(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.svc.DeleteReplica(ctx, "never-existed"); err != nil {
		t.Fatalf("delete of unknown: %v", err)
	}
	e.create("r1", mib, Thin, hostA)
	e.create("r2", mib, Thin)
	for i := 0; i < 2; i++ {
		if err := e.svc.DeleteReplica(ctx, "r1"); err != nil {
			t.Fatalf("delete #%d: %v", i+1, err)
		}
	}
	if _, ok := e.exp.exported(DefaultNQNPrefix + "r1"); ok {
		t.Error("r1 still exported")
	}
	if _, err := os.Stat(e.pool.Path("r1")); !os.IsNotExist(err) {
		t.Errorf("r1 file still there: %v", err)
	}
	if _, ok := e.persisted()["r1"]; ok {
		t.Error("r1 still persisted")
	}
	if _, err := e.svc.GetReplica("r1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetReplica after delete: %v", err)
	}
	e.checkExported("r2")
	// Unknown to the state but left in configfs and the pool (state lost):
	// delete still removes both.
	ghost := DefaultNQNPrefix + "ghost"
	if err := e.exp.EnsureSubsystem(ghost, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.pool.Ensure("ghost", BlockSize, Thin); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteReplica(ctx, "ghost"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.exp.exported(ghost); ok {
		t.Error("ghost still exported")
	}
	if _, err := os.Stat(e.pool.Path("ghost")); !os.IsNotExist(err) {
		t.Error("ghost file still there")
	}
	if err := e.svc.DeleteReplica(ctx, "../r2"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("delete with bad id: %v", err)
	}
}

func TestExpandReplica(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.create("r1", 4*mib, Thin)
	r, err := e.svc.ExpandReplica(ctx, "r1", 8*mib)
	if err != nil || r.SizeBytes != 8*mib {
		t.Fatalf("expand: %+v, %v", r, err)
	}
	if got, _ := e.pool.Size("r1"); got != 8*mib {
		t.Fatalf("file size %d", got)
	}
	if e.persisted()["r1"].SizeBytes != 8*mib {
		t.Fatal("new size not persisted")
	}
	if _, err := e.svc.ExpandReplica(ctx, "r1", 8*mib); err != nil {
		t.Fatalf("repeated expand: %v", err)
	}
	if _, err := e.svc.ExpandReplica(ctx, "r1", 4*mib); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "size_bytes") {
		t.Fatalf("shrink: %v, want InvalidArgument on size_bytes", err)
	}
	if _, err := e.svc.ExpandReplica(ctx, "nope", 8*mib); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expand unknown: %v", err)
	}
	c, _ := e.pool.Capacity()
	huge := (8*mib + c.AvailableBytes + 1<<30) &^ (BlockSize - 1)
	if _, err := e.svc.ExpandReplica(ctx, "r1", huge); !errors.Is(err, ErrResourceExhausted) {
		t.Fatalf("expand beyond free space: %v", err)
	}
	if e.persisted()["r1"].SizeBytes != 8*mib {
		t.Fatal("refused expand changed the persisted size")
	}
	n := 0
	for _, c := range e.exp.calls {
		if c == "RevalidateNamespace" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("RevalidateNamespace called %d times, want 2", n)
	}
}

func TestAllowRevokeHost(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	nqn := DefaultNQNPrefix + "r1"
	e.create("r1", mib, Thin)
	for i := 0; i < 2; i++ {
		if _, err := e.svc.AllowHost(ctx, "r1", hostA); err != nil {
			t.Fatal(err)
		}
	}
	e.checkExported("r1", hostA)
	if got := e.persisted()["r1"].AllowedHosts; !slices.Equal(got, []string{hostA}) {
		t.Fatalf("persisted hosts %v", got)
	}
	if _, err := e.svc.AllowHost(ctx, "r1", hostB); err != nil {
		t.Fatal(err)
	}
	r, err := e.svc.RevokeHost(ctx, "r1", hostA)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.AllowedHosts, []string{hostB}) || r.CutPending {
		t.Fatalf("after revoke %+v", r)
	}
	e.checkExported("r1", hostB)
	if n := e.exp.cutCount(nqn); n != 1 {
		t.Fatalf("sessions cut %d times, want 1", n)
	}
	if p := e.persisted()["r1"]; p.CutPending || slices.Contains(p.AllowedHosts, hostA) {
		t.Fatalf("persisted after revoke %+v", p)
	}
	// A repeated revoke does not cut hostB's session again.
	if _, err := e.svc.RevokeHost(ctx, "r1", hostA); err != nil {
		t.Fatal(err)
	}
	if n := e.exp.cutCount(nqn); n != 1 {
		t.Fatalf("repeated revoke cut sessions again (%d cuts)", n)
	}
	if _, err := e.svc.RevokeHost(ctx, "unknown", hostA); err != nil {
		t.Fatalf("revoke on unknown replica: %v", err)
	}
	if _, err := e.svc.AllowHost(ctx, "unknown", hostA); !errors.Is(err, ErrNotFound) {
		t.Fatalf("allow on unknown replica: %v", err)
	}
	if _, err := e.svc.AllowHost(ctx, "r1", "bogus"); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "host_nqn") {
		t.Fatalf("allow bad host: %v", err)
	}
	if _, err := e.svc.AllowHost(ctx, "r1", nvmeof.DiscoveryNQN); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("allow discovery NQN: %v", err)
	}
}

// A crash between the state write and the session cut of a revoke: the
// next start cuts.
func TestRevokeCrashBeforeCut(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.create("r1", mib, Thin, hostA)
	e.exp.fail("CutSessions", errors.New("agent killed"))
	if _, err := e.svc.RevokeHost(ctx, "r1", hostA); err == nil {
		t.Fatal("revoke succeeded despite failing cut")
	}
	if p := e.persisted()["r1"]; !p.CutPending || len(p.AllowedHosts) != 0 {
		t.Fatalf("persisted %+v, want host gone and cut pending", p)
	}
	if err := e.restart(); err != nil {
		t.Fatal(err)
	}
	if n := e.exp.cutCount(DefaultNQNPrefix + "r1"); n != 1 {
		t.Fatalf("restart cut %d times, want 1", n)
	}
	if p := e.persisted()["r1"]; p.CutPending {
		t.Fatal("cut still pending after restart")
	}
	e.checkExported("r1")
}

func TestConcurrentCallOnSameReplicaAborted(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.create("r1", mib, Thin)
	if !e.svc.inflight.insert("r1") {
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
	e.svc.inflight.remove("r1")
	if err := calls["delete"](); err != nil {
		t.Fatalf("delete after release: %v", err)
	}
}

// After a reboot configfs is empty: Start restores every export, with its
// hosts, from the state file.
func TestReconcileAfterReboot(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.create("r1", mib, Thin, hostA)
	e.create("r2", 2*mib, Thin)
	if _, err := e.svc.AllowHost(ctx, "r2", hostB); err != nil {
		t.Fatal(err)
	}
	e.exp.wipe()
	if err := e.restart(); err != nil {
		t.Fatal(err)
	}
	e.checkExported("r1", hostA)
	e.checkExported("r2", hostB)
	rs, _ := e.svc.ListReplicas("")
	if len(rs) != 2 {
		t.Fatalf("ListReplicas = %d replicas", len(rs))
	}
}

// Start removes exports under the agent's prefix that it does not own,
// leaves other subsystems alone, unlinks its replicas from foreign ports
// and revokes hosts the record does not list (cutting their sessions).
func TestReconcileRemovesWhatItDoesNotOwn(t *testing.T) {
	e := newEnv(t)
	e.create("r1", mib, Thin, hostA)
	mine := DefaultNQNPrefix + "r1"
	stray := DefaultNQNPrefix + "stray"
	foreign := "nqn.2026-11.io.other:vol"
	for _, n := range []string{stray, foreign} {
		if err := e.exp.EnsureSubsystem(n, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.exp.EnsurePort(nvmet.Port{ID: 99, TrAddr: "127.0.0.9", TrSvcID: "4420"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{mine, foreign} {
		if err := e.exp.LinkSubsystem(99, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.exp.AllowHost(mine, hostB); err != nil {
		t.Fatal(err)
	}
	if err := e.restart(); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.exp.exported(stray); ok {
		t.Error("stray subsystem under our prefix kept")
	}
	if s, ok := e.exp.exported(foreign); !ok || !slices.Equal(s.Ports, []int{99}) {
		t.Errorf("foreign subsystem touched: %+v %v", s, ok)
	}
	e.checkExported("r1", hostA)
	if n := e.exp.cutCount(mine); n != 1 {
		t.Errorf("sessions cut %d times after revoking the unlisted host, want 1", n)
	}
}

// Crash points of create, delete and expand, completed by the next start.
func TestReconcileCompletesInterruptedOperations(t *testing.T) {
	e := newEnv(t)
	store := NewStore(filepath.Join(e.dir, StateFileName))
	// create: record written, nothing else. delete: record deleting, file
	// and export still there. expand: record bigger than the file.
	e.create("deleting", mib, Thin)
	e.create("expanding", mib, Thin)
	recs := e.persisted()
	recs["creating"] = &Replica{ID: "creating", VolumeID: "v", SizeBytes: mib, Provisioning: Thin, AllowedHosts: []string{hostA}, State: StateCreating}
	recs["deleting"].State = StateDeleting
	recs["expanding"].SizeBytes = 2 * mib
	if err := store.Save(recs); err != nil {
		t.Fatal(err)
	}
	if err := e.restart(); err != nil {
		t.Fatal(err)
	}
	e.checkExported("creating", hostA)
	if r, _ := e.svc.GetReplica("creating"); r.State != StateReady {
		t.Errorf("creating replica is %s after start", r.State)
	}
	if _, ok := e.exp.exported(DefaultNQNPrefix + "deleting"); ok {
		t.Error("deleting replica still exported")
	}
	if _, err := os.Stat(e.pool.Path("deleting")); !os.IsNotExist(err) {
		t.Error("deleting replica's file still there")
	}
	if size, _ := e.pool.Size("expanding"); size != 2*mib {
		t.Errorf("expanding replica file is %d bytes, want %d", size, 2*mib)
	}
	got := e.persisted()
	if _, ok := got["deleting"]; ok || got["creating"].State != StateReady {
		t.Errorf("state after start: %+v", got)
	}
}

// A ready replica whose backing file vanished is not re-created empty.
func TestReconcileMissingFileNotRecreated(t *testing.T) {
	e := newEnv(t)
	e.create("r1", mib, Thin)
	e.create("r2", mib, Thin)
	os.Remove(e.pool.Path("r1"))
	e.exp.wipe()
	err := e.restart()
	if err == nil || !strings.Contains(err.Error(), "r1") {
		t.Fatalf("start: %v, want an error naming r1", err)
	}
	if _, err := os.Stat(e.pool.Path("r1")); !os.IsNotExist(err) {
		t.Fatal("empty file created for r1")
	}
	if _, ok := e.exp.exported(DefaultNQNPrefix + "r1"); ok {
		t.Fatal("r1 exported without data")
	}
	e.checkExported("r2")
}

// A failure in the middle of create leaves a record that the retry
// completes.
func TestCreateRetryAfterExportFailure(t *testing.T) {
	e := newEnv(t)
	e.exp.fail("LinkSubsystem", errors.New("configfs said no"))
	req := CreateRequest{ReplicaID: "r1", VolumeID: "vol-1", SizeBytes: mib, Provisioning: Thin, AllowedHosts: []string{hostA}}
	if _, err := e.svc.CreateReplica(context.Background(), req); err == nil {
		t.Fatal("create succeeded despite export failure")
	}
	if p := e.persisted()["r1"]; p == nil || p.State != StateCreating {
		t.Fatalf("persisted %+v, want creating", p)
	}
	r, err := e.svc.CreateReplica(context.Background(), req)
	if err != nil || r.State != StateReady {
		t.Fatalf("retry: %+v, %v", r, err)
	}
	e.checkExported("r1", hostA)
}

func TestListReplicasByVolume(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, v := range []struct{ id, vol string }{{"a", "v1"}, {"b", "v2"}, {"c", "v1"}} {
		if _, err := e.svc.CreateReplica(ctx, CreateRequest{ReplicaID: v.id, VolumeID: v.vol, SizeBytes: BlockSize, Provisioning: Thin}); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := e.svc.ListReplicas("v1")
	if err != nil || len(rs) != 2 || rs[0].ID != "a" || rs[1].ID != "c" {
		t.Fatalf("ListReplicas(v1) = %v, %v", rs, err)
	}
	c, err := e.svc.GetCapacity()
	if err != nil || c.ReplicaCount != 3 || c.ProvisionedBytes != 3*BlockSize || c.TotalBytes <= 0 {
		t.Fatalf("GetCapacity = %+v, %v", c, err)
	}
}

func TestOptionsValidate(t *testing.T) {
	o := Options{}
	err := o.Validate()
	if err == nil {
		t.Fatal("empty options accepted")
	}
	for _, want := range []string{"--pool-dir", "--listen", "--tls-cert-file", "--token-file", "--node-name", "--nvme-address"} {
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
	o = Options{PoolDir: "/pool", Listen: ":9400", TLSCertFile: "c", TLSKeyFile: "k", TokenFile: "t", NodeName: "n", Ports: ports, NQNPrefix: "nqn.2026-11.io.nvmirror:replica"}
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
