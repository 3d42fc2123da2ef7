package nvmet

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

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
