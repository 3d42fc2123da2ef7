package agent

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

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
