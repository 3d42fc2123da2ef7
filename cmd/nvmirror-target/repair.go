package main

import (
	"fmt"
	"path/filepath"

	"github.com/google/uuid"
	"k8s.io/utils/clock"
	utilexec "k8s.io/utils/exec"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/repair"
)

// repairNQNPrefix names the host identity of a storage node's offline
// repairs: one per storage node, so the replicas' allowed-host lists say
// which storage node a repair connection comes from.
const repairNQNPrefix = "nqn.2026-11.io.nvmirror:repair:"

// repairJournal, in the pool directory, lists the running repairs so that
// the next start undoes what a crash left.
const repairJournal = "repairs.json"

type repairFlags struct {
	enabled bool
	hostNQN string
}

// runner builds the offline repair runner on the real system.
func (f repairFlags) runner(nodeName, poolDir string) (*repair.Runner, error) {
	nqn := f.hostNQN
	if nqn == "" {
		if nodeName == "" {
			return nil, fmt.Errorf("--offline-repair needs --repair-host-nqn or --node-name")
		}
		nqn = repairNQNPrefix + nodeName
	}
	if err := nvmeof.ValidateNQN(nqn); err != nil {
		return nil, fmt.Errorf("--repair-host-nqn %q: %w", nqn, err)
	}
	tmpl := host.ConnectOptions{
		Transport: "tcp",
		HostNQN:   nqn,
		// Stable per identity, so the target sees the same host each time.
		HostID: uuid.NewSHA1(uuid.NameSpaceURL, []byte(nqn)).String(),
		// A member that stops answering fails the repair soon; the
		// provisioner starts a new one.
		CtrlLossTmo: intPtr(10),
	}
	return repair.NewRunner(host.NewInitiator(""), mdraid.NewManager(utilexec.New(), ""), repair.SysDisk{}, clock.RealClock{},
		repair.Config{Template: tmpl, JournalFile: filepath.Join(poolDir, repairJournal)}), nil
}

func intPtr(v int) *int { return &v }
