package agent

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

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
