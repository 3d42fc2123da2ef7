package agent

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
)

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

// An agent whose NQN prefix nests inside another's (two agents sharing one
// kernel target, "...:sn1:" and "...:sn1:b:") must not take the other's
// exports for strays: only a subsystem whose NQN is its prefix and a valid
// replica ID is one it may have created.
func TestReconcileLeavesNestedPrefixAlone(t *testing.T) {
	e := newEnv(t)
	e.create("r1", mib, Thin, hostA)
	others := []string{
		DefaultNQNPrefix + "b:rep-1",    // an agent with prefix DefaultNQNPrefix+"b:"
		DefaultNQNPrefix + "x.y",        // not a replica ID either
		DefaultNQNPrefix + "Rep",        // capitals: never an ID this agent creates
		DefaultNQNPrefix + "sub:deeper", // nested twice
	}
	for _, n := range others {
		if err := e.exp.EnsureSubsystem(n, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.restart(); err != nil {
		t.Fatal(err)
	}
	for _, n := range others {
		if _, ok := e.exp.exported(n); !ok {
			t.Errorf("another agent's subsystem %s was removed", n)
		}
	}
	e.checkExported("r1", hostA)
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
