package nvmet

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

const (
	testHostNQN = "nqn.2014-08.org.nvmexpress:uuid:6a1f3c52-0d1e-4c57-9a3b-8f0e2d4c6b10"
	testNQN     = "nqn.2024-01.io.nvmirror:pvc-1.r0"
	hostA       = "nqn.2014-08.org.nvmexpress:uuid:6a1f3c52-0d1e-4c57-9a3b-8f0e2d4c6b10"
	hostB       = "nqn.2024-01.io.nvmirror:node-b"
)

func backingFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "replica.img")
	if err := os.WriteFile(p, make([]byte, 1<<16), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func indexOf(ops []string, prefix string) int {
	return slices.IndexFunc(ops, func(s string) bool { return strings.HasPrefix(s, prefix) })
}

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

func TestEnsureNamespace(t *testing.T) {
	uuid := nvmeof.NamespaceUUID("r0")
	nguid := nvmeof.NamespaceNGUID("r0")
	tests := []struct {
		name        string
		bufferedFS  bool // backing filesystem without O_DIRECT
		prepare     func(t *testing.T, tg *Target, f *fakeConfigFS, ns *Namespace)
		ns          func(ns Namespace) Namespace
		wantErr     []error
		errHas      []string
		wantEnabled bool
	}{
		{name: "block-like file", wantEnabled: true},
		{name: "tmpfs file needs buffered_io", bufferedFS: true,
			wantErr: []error{syscall.EINVAL}, errHas: []string{"BufferedIO", "replica.img"}},
		{name: "tmpfs file with buffered_io", bufferedFS: true,
			ns: func(ns Namespace) Namespace { ns.BufferedIO = true; return ns }, wantEnabled: true},
		{name: "missing backing file",
			ns:      func(ns Namespace) Namespace { ns.DevicePath = "/nonexistent/dev"; return ns },
			wantErr: []error{syscall.ENOENT}, errHas: []string{"/nonexistent/dev", testNQN}},
		{name: "no identity given keeps kernel's", ns: func(ns Namespace) Namespace { ns.UUID, ns.NGUID = "", ""; return ns }, wantEnabled: true},
		{name: "already enabled identically",
			prepare: func(t *testing.T, tg *Target, f *fakeConfigFS, ns *Namespace) {
				if err := tg.EnsureNamespace(testNQN, *ns); err != nil {
					t.Fatal(err)
				}
			}, wantEnabled: true},
		{name: "enabled with another device",
			prepare: func(t *testing.T, tg *Target, f *fakeConfigFS, ns *Namespace) {
				other := *ns
				other.DevicePath = backingFile(t)
				if err := tg.EnsureNamespace(testNQN, other); err != nil {
					t.Fatal(err)
				}
			}, wantErr: []error{nvmeof.ErrBusy}, errHas: []string{"device_path"}, wantEnabled: true},
		{name: "enabled with another uuid",
			prepare: func(t *testing.T, tg *Target, f *fakeConfigFS, ns *Namespace) {
				other := *ns
				other.UUID = nvmeof.NamespaceUUID("r1")
				if err := tg.EnsureNamespace(testNQN, other); err != nil {
					t.Fatal(err)
				}
			}, wantErr: []error{nvmeof.ErrBusy}, errHas: []string{"uuid", nvmeof.NamespaceUUID("r1")}, wantEnabled: true},
		{name: "disabled with another device is rewritten",
			prepare: func(t *testing.T, tg *Target, f *fakeConfigFS, ns *Namespace) {
				other := *ns
				other.DevicePath = backingFile(t)
				if err := tg.EnsureNamespace(testNQN, other); err != nil {
					t.Fatal(err)
				}
				if err := tg.SetNamespaceEnabled(testNQN, 1, false); err != nil {
					t.Fatal(err)
				}
			}, wantEnabled: true},
		{name: "subsystem missing",
			prepare: func(t *testing.T, tg *Target, f *fakeConfigFS, ns *Namespace) {
				if err := tg.RemoveSubsystem(testNQN); err != nil {
					t.Fatal(err)
				}
			}, wantErr: []error{nvmeof.ErrNotFound}},
		{name: "nsid 0", ns: func(ns Namespace) Namespace { ns.NSID = 0; return ns }, wantErr: []error{nvmeof.ErrInvalidArgument}},
		{name: "relative path", ns: func(ns Namespace) Namespace { ns.DevicePath = "dev/loop0"; return ns }, wantErr: []error{nvmeof.ErrInvalidArgument}},
		{name: "path with newline", ns: func(ns Namespace) Namespace { ns.DevicePath = "/dev/loop0\n"; return ns }, wantErr: []error{nvmeof.ErrInvalidArgument}},
		{name: "bad uuid", ns: func(ns Namespace) Namespace { ns.UUID = "r0"; return ns }, wantErr: []error{nvmeof.ErrInvalidArgument}},
		{name: "bad nguid", ns: func(ns Namespace) Namespace { ns.NGUID = "1234"; return ns }, wantErr: []error{nvmeof.ErrInvalidArgument}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg, f := newFakeTarget(t)
			f.requireBufferedIO = tc.bufferedFS
			if err := tg.EnsureSubsystem(testNQN, nvmeof.SerialFor("r0")); err != nil {
				t.Fatal(err)
			}
			ns := Namespace{NSID: 1, DevicePath: backingFile(t), UUID: uuid, NGUID: nguid}
			if tc.ns != nil {
				ns = tc.ns(ns)
			}
			if tc.prepare != nil {
				tc.prepare(t, tg, f, &ns)
			}
			before := len(f.Ops())
			err := tg.EnsureNamespace(testNQN, ns)
			for _, w := range tc.wantErr {
				if !errors.Is(err, w) {
					t.Fatalf("EnsureNamespace = %v, want %v", err, w)
				}
			}
			if len(tc.wantErr) == 0 && err != nil {
				t.Fatalf("EnsureNamespace = %v", err)
			}
			for _, s := range tc.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if errors.Is(err, nvmeof.ErrInvalidArgument) {
				if len(f.Ops()) != before {
					t.Errorf("invalid namespace reached configfs: %v", f.Ops()[before:])
				}
				return
			}
			if errors.Is(err, nvmeof.ErrNotFound) {
				return
			}
			nsDir := "subsystems/" + testNQN + "/namespaces/1/"
			if got := parseBool(f.attr(nsDir + "enable")); got != tc.wantEnabled {
				t.Errorf("enable = %v, want %v", got, tc.wantEnabled)
			}
			if err != nil || tc.prepare != nil {
				return
			}
			if got := f.attr(nsDir + "device_path"); got != ns.DevicePath {
				t.Errorf("device_path = %q", got)
			}
			if ns.UUID != "" && f.attr(nsDir+"device_uuid") != ns.UUID {
				t.Errorf("device_uuid = %q", f.attr(nsDir+"device_uuid"))
			}
			if ns.NGUID != "" && nvmeof.NormalizeID(f.attr(nsDir+"device_nguid")) != ns.NGUID {
				t.Errorf("device_nguid = %q", f.attr(nsDir+"device_nguid"))
			}
			// Order: every identity/config attribute before enable.
			ops := f.Ops()[before:]
			en := indexOf(ops, "write "+nsDir+"enable=1")
			for _, a := range []string{"device_path", "buffered_io"} {
				if i := indexOf(ops, "write "+nsDir+a); i < 0 || i > en {
					t.Errorf("%s written at %d, enable at %d: %v", a, i, en, ops)
				}
			}
			// Idempotent: a second call changes nothing.
			n := len(f.Ops())
			if err := tg.EnsureNamespace(testNQN, ns); err != nil {
				t.Fatalf("second EnsureNamespace = %v", err)
			}
			if extra := f.Ops()[n:]; len(extra) != 0 {
				t.Errorf("second EnsureNamespace wrote %v", extra)
			}
		})
	}
}

func TestNamespaceEnableAndRevalidate(t *testing.T) {
	tg, f := newFakeTarget(t)
	if err := tg.EnsureSubsystem(testNQN, ""); err != nil {
		t.Fatal(err)
	}
	if err := tg.EnsureNamespace(testNQN, Namespace{NSID: 2, DevicePath: backingFile(t)}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		op   func() error
		want error
	}{
		{"revalidate enabled", func() error { return tg.RevalidateNamespace(testNQN, 2) }, nil},
		{"disable", func() error { return tg.SetNamespaceEnabled(testNQN, 2, false) }, nil},
		{"disable again", func() error { return tg.SetNamespaceEnabled(testNQN, 2, false) }, nil},
		{"revalidate disabled", func() error { return tg.RevalidateNamespace(testNQN, 2) }, syscall.EINVAL},
		{"enable", func() error { return tg.SetNamespaceEnabled(testNQN, 2, true) }, nil},
		{"missing namespace", func() error { return tg.SetNamespaceEnabled(testNQN, 3, true) }, nvmeof.ErrNotFound},
		{"missing subsystem", func() error { return tg.RevalidateNamespace("nqn.2024-01.io.nvmirror:none", 1) }, nvmeof.ErrNotFound},
		{"bad nsid", func() error { return tg.SetNamespaceEnabled(testNQN, 0, true) }, nvmeof.ErrInvalidArgument},
		{"bad nqn", func() error { return tg.RevalidateNamespace("x", 1) }, nvmeof.ErrInvalidArgument},
	}
	for _, tc := range tests {
		err := tc.op()
		if (tc.want == nil && err != nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if !parseBool(f.attr("subsystems/" + testNQN + "/namespaces/2/enable")) {
		t.Errorf("namespace not enabled at the end")
	}
	// The kernel refusing enable surfaces.
	if err := tg.SetNamespaceEnabled(testNQN, 2, false); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.attr("subsystems/" + testNQN + "/namespaces/2/device_path")); err != nil {
		t.Fatal(err)
	}
	if err := tg.SetNamespaceEnabled(testNQN, 2, true); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("enable with vanished backing file = %v", err)
	}
}

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

// fullSubsystem sets up a subsystem the way the product does.
func fullSubsystem(t *testing.T, tg *Target, nqn, replica string, port Port, hosts ...string) {
	t.Helper()
	if err := tg.EnsureSubsystem(nqn, nvmeof.SerialFor(replica)); err != nil {
		t.Fatal(err)
	}
	if err := tg.EnsureNamespace(nqn, Namespace{NSID: 1, DevicePath: backingFile(t),
		UUID: nvmeof.NamespaceUUID(replica), NGUID: nvmeof.NamespaceNGUID(replica)}); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if err := tg.AllowHost(nqn, h); err != nil {
			t.Fatal(err)
		}
	}
	port.Subsystems = []string{nqn}
	if err := tg.EnsurePort(port); err != nil {
		t.Fatal(err)
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

func TestTeardown(t *testing.T) {
	const (
		prefixA = "nqn.2024-01.io.nvmirror.test-a:"
		prefixB = "nqn.2024-01.io.nvmirror.test-b:"
	)
	tg, f := newFakeTarget(t)
	fullSubsystem(t, tg, prefixA+"v1", "a1", Port{ID: 1, TrAddr: "127.0.0.1", TrSvcID: "4421"}, hostA)
	fullSubsystem(t, tg, prefixA+"v2", "a2", Port{ID: 2, TrAddr: "127.0.0.2", TrSvcID: "4421"}, hostA)
	fullSubsystem(t, tg, prefixB+"v1", "b1", Port{ID: 2, TrAddr: "127.0.0.2", TrSvcID: "4421"}, hostB)
	// An empty port not used by prefix A stays; an orphan host goes.
	if err := tg.EnsurePort(Port{ID: 9, TrAddr: "127.0.0.9", TrSvcID: "4429"}); err != nil {
		t.Fatal(err)
	}
	if err := f.Mkdir(filepath.Join(f.root, "hosts", "nqn.2024-01.io.nvmirror:orphan")); err != nil {
		t.Fatal(err)
	}

	if err := tg.Teardown(""); !errors.Is(err, nvmeof.ErrInvalidArgument) {
		t.Fatalf("Teardown(\"\") = %v", err)
	}
	if err := tg.Teardown(prefixA); err != nil {
		t.Fatal(err)
	}
	subs, _ := tg.ListSubsystems()
	if len(subs) != 1 || subs[0].NQN != prefixB+"v1" {
		t.Errorf("subsystems after teardown = %+v", subs)
	}
	ports, _ := tg.ListPorts()
	var ids []int
	for _, p := range ports {
		ids = append(ids, p.ID)
	}
	if !slices.Equal(ids, []int{2, 9}) {
		t.Errorf("ports after teardown = %v, want [2 9] (1 emptied by teardown, 2 still used, 9 not ours)", ids)
	}
	hosts, _ := os.ReadDir(filepath.Join(f.root, "hosts"))
	if len(hosts) != 1 || hosts[0].Name() != hostB {
		t.Errorf("hosts after teardown = %v", hosts)
	}
	if err := tg.Teardown(prefixB); err != nil {
		t.Fatal(err)
	}
	ports, _ = tg.ListPorts()
	if len(ports) != 1 || ports[0].ID != 9 {
		t.Errorf("ports after second teardown = %+v", ports)
	}
}

func TestAvailable(t *testing.T) {
	base := t.TempDir()
	tests := []struct {
		name   string
		setup  func(root string)
		want   error
		errHas string
	}{
		{"ok", func(root string) {
			for _, d := range []string{"subsystems", "ports", "hosts"} {
				_ = os.MkdirAll(filepath.Join(root, d), 0o755)
			}
		}, nil, ""},
		{"nvmet not loaded", func(root string) { _ = os.MkdirAll(filepath.Dir(root), 0o755) }, nvmeof.ErrNotFound, "nvmet"},
		{"configfs not mounted", func(root string) {}, nvmeof.ErrNotFound, "configfs"},
		{"not an nvmet tree", func(root string) { _ = os.MkdirAll(root, 0o755) }, nvmeof.ErrNotFound, "subsystems"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(base, string(rune('a'+i)), "config", "nvmet")
			tc.setup(root)
			err := newTargetWithFS(root, realConfigFS{}).Available()
			if (tc.want == nil && err != nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Available = %v, want %v", err, tc.want)
			}
			if tc.errHas != "" && !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("error %q does not mention %q", err, tc.errHas)
			}
		})
	}
	if got := NewTarget("").root; got != DefaultRoot {
		t.Errorf("NewTarget(\"\").root = %q", got)
	}
	// Creating anything without nvmet explains why.
	tg := newTargetWithFS(filepath.Join(base, "none", "config", "nvmet"), realConfigFS{})
	if err := tg.EnsureSubsystem(testNQN, ""); !errors.Is(err, nvmeof.ErrNotFound) || !strings.Contains(err.Error(), "configfs") {
		t.Errorf("EnsureSubsystem without nvmet = %v", err)
	}
}
