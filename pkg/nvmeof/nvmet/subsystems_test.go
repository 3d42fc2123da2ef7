package nvmet

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

func TestEnsureSubsystem(t *testing.T) {
	tg, f := newFakeTarget(t)
	serial := nvmeof.SerialFor("r0")
	if err := tg.EnsureSubsystem(testNQN, serial); err != nil {
		t.Fatal(err)
	}
	// The kernel's default would let any host connect.
	if got := f.attr("subsystems/" + testNQN + "/attr_allow_any_host"); got != "0" {
		t.Errorf("attr_allow_any_host = %q, want 0", got)
	}
	if got := f.attr("subsystems/" + testNQN + "/attr_serial"); got != serial {
		t.Errorf("attr_serial = %q, want %q", got, serial)
	}
	// Idempotent; someone flipped allow_any_host back to 1: fixed.
	if err := f.writeRaw(filepath.Join(f.root, "subsystems", testNQN, "attr_allow_any_host"), "1"); err != nil {
		t.Fatal(err)
	}
	n := len(f.Ops())
	if err := tg.EnsureSubsystem(testNQN, strings.ToUpper(serial)); err != nil {
		t.Fatal(err)
	}
	if got := f.attr("subsystems/" + testNQN + "/attr_allow_any_host"); got != "0" {
		t.Errorf("attr_allow_any_host = %q after second Ensure", got)
	}
	if ops := f.Ops()[n:]; len(ops) != 1 || !strings.Contains(ops[0], "attr_allow_any_host=0") {
		t.Errorf("second Ensure did %v, want only the allow_any_host write", ops)
	}
	// Empty serial keeps whatever the kernel has.
	if err := tg.EnsureSubsystem(testNQN, ""); err != nil || f.attr("subsystems/"+testNQN+"/attr_serial") != serial {
		t.Errorf("EnsureSubsystem with empty serial = %v, serial %q", err, f.attr("subsystems/"+testNQN+"/attr_serial"))
	}
	// Another serial while nothing is enabled and no host identified: rewritten.
	if err := tg.EnsureSubsystem(testNQN, "abcdef"); err != nil || f.attr("subsystems/"+testNQN+"/attr_serial") != "abcdef" {
		t.Errorf("serial rewrite = %v", err)
	}
	// Serial frozen by the kernel (a host identified the subsystem).
	f.mu.Lock()
	f.discovered[testNQN] = true
	f.mu.Unlock()
	if err := tg.EnsureSubsystem(testNQN, serial); !errors.Is(err, nvmeof.ErrBusy) || !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), testNQN) {
		t.Errorf("frozen serial = %v, want nvmeof.ErrBusy", err)
	}
	f.mu.Lock()
	f.discovered[testNQN] = false
	f.mu.Unlock()
	// Serial change with an enabled namespace: refused before touching it.
	if err := tg.EnsureNamespace(testNQN, Namespace{NSID: 1, DevicePath: backingFile(t)}); err != nil {
		t.Fatal(err)
	}
	if err := tg.EnsureSubsystem(testNQN, serial); !errors.Is(err, nvmeof.ErrBusy) {
		t.Errorf("serial change with enabled namespace = %v, want nvmeof.ErrBusy", err)
	}
	if got := f.attr("subsystems/" + testNQN + "/attr_serial"); got != "abcdef" {
		t.Errorf("serial changed to %q", got)
	}
}

func TestEnsureSubsystemInvalid(t *testing.T) {
	tests := []struct {
		name, nqn, serial string
	}{
		{"bad nqn", "iqn.x", ""},
		{"nqn with slash", "nqn.2024-01.io.nvmirror:../../ports", ""},
		{"nqn with comma", "nqn.2024-01.io.nvmirror:a,b", ""},
		{"discovery", nvmeof.DiscoveryNQN, ""},
		{"serial too long", testNQN, strings.Repeat("a", 21)},
		{"serial not hex", testNQN, "serial-1"},
		{"serial newline", testNQN, "abc\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg, f := newFakeTarget(t)
			if err := tg.EnsureSubsystem(tc.nqn, tc.serial); !errors.Is(err, nvmeof.ErrInvalidArgument) {
				t.Fatalf("EnsureSubsystem = %v, want nvmeof.ErrInvalidArgument", err)
			}
			if len(f.Ops()) != 0 {
				t.Errorf("invalid input reached configfs: %v", f.Ops())
			}
		})
	}
}

func TestEnsureSubsystemCleansUpOnFailure(t *testing.T) {
	tg, f := newFakeTarget(t)
	f.failWrite[filepath.Join(f.root, "subsystems", testNQN, "attr_allow_any_host")] = syscall.EIO
	if err := tg.EnsureSubsystem(testNQN, ""); !errors.Is(err, syscall.EIO) {
		t.Fatalf("EnsureSubsystem = %v", err)
	}
	if f.exists("subsystems/" + testNQN) {
		t.Errorf("half-created subsystem left behind (it would allow any host)")
	}
}

func TestGetSubsystem(t *testing.T) {
	tg, f := newFakeTarget(t)
	fullSubsystem(t, tg, testNQN, "r0", Port{ID: 3, TrAddr: "127.0.0.1", TrSvcID: "4421"}, hostB, hostA)
	if err := tg.EnsurePort(Port{ID: 1, TrAddr: "127.0.0.2", TrSvcID: "4421", Subsystems: []string{testNQN}}); err != nil {
		t.Fatal(err)
	}
	s, err := tg.GetSubsystem(testNQN)
	if err != nil {
		t.Fatal(err)
	}
	if s.NQN != testNQN || s.Serial != nvmeof.SerialFor("r0") || s.Model != "Linux" || s.AllowAnyHost ||
		!slices.Equal(s.AllowedHosts, []string{hostA, hostB}) || !slices.Equal(s.Ports, []int{1, 3}) || len(s.Namespaces) != 1 {
		t.Fatalf("GetSubsystem = %+v", s)
	}
	ns := s.Namespaces[0]
	if ns.NSID != 1 || !ns.Enabled || ns.BufferedIO || ns.UUID != nvmeof.NamespaceUUID("r0") || nvmeof.NormalizeID(ns.NGUID) != nvmeof.NamespaceNGUID("r0") {
		t.Errorf("namespace = %+v", ns)
	}
	if _, err := tg.GetSubsystem("nqn.2024-01.io.nvmirror:none"); !errors.Is(err, nvmeof.ErrNotFound) {
		t.Errorf("GetSubsystem(missing) = %v", err)
	}
	all, err := tg.ListSubsystems()
	if err != nil || len(all) != 1 || all[0].NQN != testNQN {
		t.Errorf("ListSubsystems = %+v, %v", all, err)
	}
	// A namespace without identity shows no NGUID (all zeros = none).
	if err := tg.EnsureNamespace(testNQN, Namespace{NSID: 2, DevicePath: backingFile(t)}); err != nil {
		t.Fatal(err)
	}
	s, _ = tg.GetSubsystem(testNQN)
	if len(s.Namespaces) != 2 || s.Namespaces[1].NGUID != "" {
		t.Errorf("namespaces = %+v", s.Namespaces)
	}
	// A namespace created but never configured: the kernel prints its
	// device_path as "(null)".
	if err := f.Mkdir(filepath.Join(f.root, "subsystems", testNQN, "namespaces", "3")); err != nil {
		t.Fatal(err)
	}
	s, _ = tg.GetSubsystem(testNQN)
	if len(s.Namespaces) != 3 || s.Namespaces[2].DevicePath != "" || s.Namespaces[2].Enabled {
		t.Errorf("unconfigured namespace = %+v", s.Namespaces[2])
	}
}

func TestRemoveSubsystem(t *testing.T) {
	const nqn2 = "nqn.2024-01.io.nvmirror:pvc-1.r1"
	tg, f := newFakeTarget(t)
	port := Port{ID: 1, TrAddr: "127.0.0.1", TrSvcID: "4421"}
	fullSubsystem(t, tg, testNQN, "r0", port, hostA, hostB)
	fullSubsystem(t, tg, nqn2, "r1", port, hostB)
	if err := tg.EnsureNamespace(testNQN, Namespace{NSID: 5, DevicePath: backingFile(t)}); err != nil {
		t.Fatal(err)
	}
	// configfs itself refuses to remove a populated subsystem: RemoveSubsystem
	// must take it apart in order.
	if err := f.Rmdir(filepath.Join(f.root, "subsystems", testNQN)); err == nil {
		t.Fatal("fake allowed rmdir of a populated subsystem")
	}
	if err := tg.RemoveSubsystem(testNQN); err != nil {
		t.Fatal(err)
	}
	if f.exists("subsystems/"+testNQN) || f.exists("ports/1/subsystems/"+testNQN) {
		t.Errorf("subsystem or its export left behind")
	}
	if f.exists("hosts/" + hostA) {
		t.Errorf("orphan host %s left behind", hostA)
	}
	if !f.exists("hosts/"+hostB) || !f.exists("ports/1/subsystems/"+nqn2) || !f.exists("ports/1") {
		t.Errorf("RemoveSubsystem touched what another subsystem uses")
	}
	if err := tg.RemoveSubsystem(testNQN); err != nil {
		t.Errorf("RemoveSubsystem(missing) = %v", err)
	}
	if err := tg.RemoveSubsystem("nqn.x,y"); !errors.Is(err, nvmeof.ErrInvalidArgument) {
		t.Errorf("RemoveSubsystem(bad) = %v", err)
	}
}
