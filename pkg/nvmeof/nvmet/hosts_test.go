package nvmet

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

func TestAllowRevokeHost(t *testing.T) {
	const nqn2 = "nqn.2024-01.io.nvmirror:pvc-1.r1"
	tg, f := newFakeTarget(t)
	for _, n := range []string{testNQN, nqn2} {
		if err := tg.EnsureSubsystem(n, ""); err != nil {
			t.Fatal(err)
		}
	}
	link := "subsystems/" + testNQN + "/allowed_hosts/" + hostA
	steps := []struct {
		name string
		op   func() error
		want error
		link bool // link exists afterwards
		host bool // hosts/<hostA> exists afterwards
	}{
		{"allow", func() error { return tg.AllowHost(testNQN, hostA) }, nil, true, true},
		{"allow again", func() error { return tg.AllowHost(testNQN, hostA) }, nil, true, true},
		{"allow on second subsystem", func() error { return tg.AllowHost(nqn2, hostA) }, nil, true, true},
		{"revoke keeps host used elsewhere", func() error { return tg.RevokeHost(testNQN, hostA) }, nil, false, true},
		{"revoke again", func() error { return tg.RevokeHost(testNQN, hostA) }, nil, false, true},
		{"revoke last removes host", func() error { return tg.RevokeHost(nqn2, hostA) }, nil, false, false},
		{"revoke on missing subsystem", func() error { return tg.RevokeHost("nqn.2024-01.io.nvmirror:none", hostA) }, nil, false, false},
		{"allow on missing subsystem", func() error { return tg.AllowHost("nqn.2024-01.io.nvmirror:none", hostA) }, nvmeof.ErrNotFound, false, false},
		{"bad host nqn", func() error { return tg.AllowHost(testNQN, "nqn.x/../../y") }, nvmeof.ErrInvalidArgument, false, false},
		{"host nqn injection", func() error { return tg.AllowHost(testNQN, "nqn.x,y") }, nvmeof.ErrInvalidArgument, false, false},
	}
	for _, s := range steps {
		err := s.op()
		if (s.want == nil && err != nil) || (s.want != nil && !errors.Is(err, s.want)) {
			t.Fatalf("%s: %v, want %v", s.name, err, s.want)
		}
		if got := f.exists(link); got != s.link {
			t.Errorf("%s: link exists = %v, want %v", s.name, got, s.link)
		}
		if got := f.exists("hosts/" + hostA); got != s.host {
			t.Errorf("%s: host exists = %v, want %v", s.name, got, s.host)
		}
	}
	// allow_any_host=1 (kernel default, or someone's edit) is reset first,
	// otherwise the kernel refuses the link.
	if err := f.writeRaw(filepath.Join(f.root, "subsystems", testNQN, "attr_allow_any_host"), "1"); err != nil {
		t.Fatal(err)
	}
	if err := tg.AllowHost(testNQN, hostB); err != nil {
		t.Fatalf("AllowHost with allow_any_host=1: %v", err)
	}
	if target, err := os.Readlink(filepath.Join(f.root, "subsystems", testNQN, "allowed_hosts", hostB)); err != nil || target != filepath.Join(f.root, "hosts", hostB) {
		t.Errorf("link target = %q, %v; want absolute path to the host item", target, err)
	}
	s, err := tg.GetSubsystem(testNQN)
	if err != nil || s.AllowAnyHost || !slices.Equal(s.AllowedHosts, []string{hostB}) {
		t.Errorf("GetSubsystem = %+v, %v", s, err)
	}
}

// Another process on the same kernel removes the host entry it saw
// unreferenced between AllowHost creating it and linking it: the link is
// retried with the entry created again.
func TestAllowHostWhenTheHostEntryVanishes(t *testing.T) {
	tg, f := newFakeTarget(t)
	if err := tg.EnsureSubsystem(testNQN, ""); err != nil {
		t.Fatal(err)
	}
	vanished := 0
	f.onSymlink = func(target, _ string) {
		if vanished == 0 {
			vanished++
			if err := os.Remove(target); err != nil {
				t.Errorf("removing %s: %v", target, err)
			}
		}
	}
	if err := tg.AllowHost(testNQN, hostA); err != nil {
		t.Fatalf("AllowHost after the host entry vanished: %v", err)
	}
	if vanished != 1 {
		t.Fatal("the host entry was never removed: the test proves nothing")
	}
	if _, err := os.Lstat(filepath.Join(f.root, "subsystems", testNQN, "allowed_hosts", hostA)); err != nil {
		t.Errorf("host not linked: %v", err)
	}
}
