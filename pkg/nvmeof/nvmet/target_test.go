package nvmet

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
