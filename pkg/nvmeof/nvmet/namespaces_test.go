package nvmet

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

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
