package nvmet

import (
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

func TestPorts(t *testing.T) {
	tg, f := newFakeTarget(t)
	if err := tg.EnsureSubsystem(testNQN, ""); err != nil {
		t.Fatal(err)
	}
	p1 := Port{ID: 1, TrAddr: "127.0.0.1", TrSvcID: "4421"}
	steps := []struct {
		name string
		op   func() error
		want error
		has  []string
	}{
		{"create", func() error { return tg.EnsurePort(p1) }, nil, nil},
		{"again", func() error { return tg.EnsurePort(p1) }, nil, nil},
		{"create ipv6 with subsystem", func() error {
			return tg.EnsurePort(Port{ID: 2, TrAddr: "::1", TrSvcID: "4422", Subsystems: []string{testNQN}})
		}, nil, nil},
		{"same address on another port", func() error {
			return tg.EnsurePort(Port{ID: 3, TrAddr: "127.0.0.1", TrSvcID: "4421"})
		}, nvmeof.ErrBusy, []string{"port 1"}},
		{"readdress empty port", func() error { return tg.EnsurePort(Port{ID: 1, TrAddr: "127.0.0.5", TrSvcID: "4425"}) }, nil, nil},
		{"readdress busy port", func() error { return tg.EnsurePort(Port{ID: 2, TrAddr: "::2", TrSvcID: "4422"}) },
			nvmeof.ErrBusy, []string{"::1", "::2", testNQN}},
		{"port id too big", func() error { return tg.EnsurePort(Port{ID: 70000, TrAddr: "127.0.0.1", TrSvcID: "4421"}) }, nvmeof.ErrInvalidArgument, nil},
		{"rdma", func() error {
			return tg.EnsurePort(Port{ID: 4, Transport: "rdma", TrAddr: "127.0.0.1", TrSvcID: "4421"})
		}, nvmeof.ErrInvalidArgument, nil},
		{"hostname", func() error { return tg.EnsurePort(Port{ID: 4, TrAddr: "localhost", TrSvcID: "4421"}) }, nvmeof.ErrInvalidArgument, nil},
		{"adrfam mismatch", func() error { return tg.EnsurePort(Port{ID: 4, AdrFam: "ipv6", TrAddr: "127.0.0.1", TrSvcID: "4421"}) }, nvmeof.ErrInvalidArgument, nil},
		{"bad port", func() error { return tg.EnsurePort(Port{ID: 4, TrAddr: "127.0.0.1", TrSvcID: "0"}) }, nvmeof.ErrInvalidArgument, nil},
		{"missing subsystem", func() error {
			return tg.EnsurePort(Port{ID: 4, TrAddr: "127.0.0.4", TrSvcID: "4424", Subsystems: []string{"nqn.2024-01.io.nvmirror:none"}})
		}, nvmeof.ErrNotFound, nil},
	}
	for _, s := range steps {
		err := s.op()
		if (s.want == nil && err != nil) || (s.want != nil && !errors.Is(err, s.want)) {
			t.Fatalf("%s: %v, want %v", s.name, err, s.want)
		}
		for _, h := range s.has {
			if !strings.Contains(err.Error(), h) {
				t.Errorf("%s: error %q does not mention %q", s.name, err, h)
			}
		}
	}
	ports, err := tg.ListPorts()
	if err != nil {
		t.Fatal(err)
	}
	want := []Port{
		{ID: 1, Transport: "tcp", AdrFam: "ipv4", TrAddr: "127.0.0.5", TrSvcID: "4425", Subsystems: []string{}},
		{ID: 2, Transport: "tcp", AdrFam: "ipv6", TrAddr: "::1", TrSvcID: "4422", Subsystems: []string{testNQN}},
		{ID: 4, Transport: "tcp", AdrFam: "ipv4", TrAddr: "127.0.0.4", TrSvcID: "4424", Subsystems: []string{}},
	}
	if !reflect.DeepEqual(ports, want) {
		t.Errorf("ListPorts =\n%+v\nwant\n%+v", ports, want)
	}
	if _, err := tg.GetPort(9); !errors.Is(err, nvmeof.ErrNotFound) {
		t.Errorf("GetPort(9) = %v", err)
	}
	if err := tg.RemovePort(2); err != nil {
		t.Fatal(err)
	}
	if f.exists("ports/2") {
		t.Errorf("port 2 still there")
	}
	if err := tg.RemovePort(2); err != nil {
		t.Errorf("RemovePort(missing) = %v", err)
	}
	if s, _ := tg.GetSubsystem(testNQN); len(s.Ports) != 0 {
		t.Errorf("subsystem still exported on %v", s.Ports)
	}
}

func TestLinkUnlinkSubsystem(t *testing.T) {
	tg, f := newFakeTarget(t)
	if err := tg.EnsureSubsystem(testNQN, ""); err != nil {
		t.Fatal(err)
	}
	if err := tg.EnsurePort(Port{ID: 1, TrAddr: "127.0.0.1", TrSvcID: "4421"}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name   string
		op     func() error
		want   error
		linked bool
	}{
		{"link", func() error { return tg.LinkSubsystem(1, testNQN) }, nil, true},
		{"link again", func() error { return tg.LinkSubsystem(1, testNQN) }, nil, true},
		{"unlink", func() error { return tg.UnlinkSubsystem(1, testNQN) }, nil, false},
		{"unlink again", func() error { return tg.UnlinkSubsystem(1, testNQN) }, nil, false},
		{"missing port", func() error { return tg.LinkSubsystem(7, testNQN) }, nvmeof.ErrNotFound, false},
		{"missing subsystem", func() error { return tg.LinkSubsystem(1, "nqn.2024-01.io.nvmirror:none") }, nvmeof.ErrNotFound, false},
		{"bad nqn", func() error { return tg.LinkSubsystem(1, "nqn.a/b") }, nvmeof.ErrInvalidArgument, false},
	}
	for _, s := range steps {
		err := s.op()
		if (s.want == nil && err != nil) || (s.want != nil && !errors.Is(err, s.want)) {
			t.Fatalf("%s: %v, want %v", s.name, err, s.want)
		}
		if got := f.exists("ports/1/subsystems/" + testNQN); got != s.linked {
			t.Errorf("%s: linked = %v", s.name, got)
		}
	}
	f.transportMissing = true
	err := tg.LinkSubsystem(1, testNQN)
	if err == nil || !strings.Contains(err.Error(), "nvmet-tcp") || !strings.Contains(err.Error(), "127.0.0.1:4421") {
		t.Errorf("link without transport = %v", err)
	}
}

func TestCutSessions(t *testing.T) {
	tg, f := newFakeTarget(t)
	if err := tg.EnsureSubsystem(testNQN, ""); err != nil {
		t.Fatal(err)
	}
	for i, addr := range []string{"127.0.0.1", "127.0.0.2"} {
		if err := tg.EnsurePort(Port{ID: i + 1, TrAddr: addr, TrSvcID: "4420", Subsystems: []string{testNQN}}); err != nil {
			t.Fatal(err)
		}
	}
	before := len(f.Ops())
	if err := tg.CutSessions(testNQN); err != nil {
		t.Fatal(err)
	}
	ops := f.Ops()[before:]
	want := []string{
		"unlink ports/1/subsystems/" + testNQN, "unlink ports/2/subsystems/" + testNQN,
		"symlink ports/1/subsystems/" + testNQN, "symlink ports/2/subsystems/" + testNQN,
	}
	if !slices.Equal(ops, want) {
		t.Errorf("CutSessions did\n%v\nwant\n%v", ops, want)
	}
	// A failed relink is reported loudly: the subsystem is no longer served.
	f.failSymlink[filepath.Join(f.root, "ports/2/subsystems", testNQN)] = syscall.EADDRINUSE
	err := tg.CutSessions(testNQN)
	if err == nil || !strings.Contains(err.Error(), "NOT exported on port 2") || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("CutSessions with failing relink = %v", err)
	}
	if !f.exists("ports/1/subsystems/" + testNQN) {
		t.Errorf("port 1 not relinked")
	}
	if err := tg.CutSessions("nqn.2024-01.io.nvmirror:none"); !errors.Is(err, nvmeof.ErrNotFound) {
		t.Errorf("CutSessions(missing) = %v", err)
	}
}
