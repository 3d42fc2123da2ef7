package nvmet

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

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

// An entry being removed by another process still answers stat while
// configfs refuses links to it (ENOENT): AllowHost keeps trying, waiting
// longer each time, until the removal is over; and gives up with the
// error after hostLinkAttempts.
func TestAllowHostWaitsOutAHostEntryBeingRemoved(t *testing.T) {
	for _, c := range []struct {
		refusals int
		ok       bool
	}{{refusals: hostLinkAttempts - 1, ok: true}, {refusals: hostLinkAttempts, ok: false}} {
		tg, f := newFakeTarget(t)
		if err := tg.EnsureSubsystem(testNQN, ""); err != nil {
			t.Fatal(err)
		}
		var slept []time.Duration
		tg.sleep = func(d time.Duration) { slept = append(slept, d) }
		link := filepath.Join(f.root, "subsystems", testNQN, "allowed_hosts", hostA)
		refused := 0
		f.onSymlink = func(string, string) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if refused < c.refusals {
				refused++
				f.failSymlink[link] = syscall.ENOENT
			} else {
				delete(f.failSymlink, link)
			}
		}
		err := tg.AllowHost(testNQN, hostA)
		if c.ok != (err == nil) {
			t.Fatalf("AllowHost after %d refused links: %v", c.refusals, err)
		}
		if !c.ok && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("AllowHost gave up with %v; want the link's ENOENT", err)
		}
		if len(slept) != min(c.refusals, hostLinkAttempts-1) {
			t.Errorf("%d waits for %d refusals", len(slept), c.refusals)
		}
		var total time.Duration
		for i, d := range slept {
			if i > 0 && d < slept[i-1] {
				t.Errorf("wait %d (%v) shorter than the one before (%v)", i, d, slept[i-1])
			}
			total += d
		}
		if c.ok && (total < time.Second || total > 5*time.Second) {
			t.Errorf("AllowHost waited %v in all for a removal to end; want 1-5 s (tight retries lost a CI run)", total)
		}
	}
}
