package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nodecmd"
	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
)

// nodeCmdOptions are the flags of the provisioner's command channel.
type nodeCmdOptions struct {
	enabled bool
	maxHold time.Duration
}

func (n *nodeCmdOptions) addFlags(fs *flag.FlagSet) {
	fs.BoolVar(&n.enabled, "node-commands", true, "[node] keep the provisioner's command stream open and execute its commands (the freeze and thaw of snapshots); without it, snapshots of volumes staged here fail Unavailable")
	fs.DurationVar(&n.maxHold, "freeze-max-hold", nodecmd.DefaultMaxHold, "[node] longest a snapshot freeze holds a volume's writes, whatever the provisioner asks; a plugin restarted while holding releases them this long after its start")
}

func (n *nodeCmdOptions) validate() error {
	if n.maxHold < 100*time.Millisecond || n.maxHold > 10*time.Minute {
		return fmt.Errorf("--freeze-max-hold %v: must be from 100ms to 10m", n.maxHold)
	}
	return nil
}

// startNodeCommands runs the command loop until ctx ends or stop is
// called; stop returns once the loop has, every hold it made released.
func startNodeCommands(ctx context.Context, o driver.Options, n nodeCmdOptions, d *driver.Driver, prov *provisionerclient.Client, node driver.NodeDeps) (stop func(), err error) {
	loop, err := nodecmd.New(nodecmd.Config{
		NodeID:  d.NodeID(),
		HostNQN: node.Host.NQN,
		Client:  prov.API(),
		Staged:  func() ([]stagestate.Volume, error) { return stagestate.ListVolumes(o.StateDir) },
		Lock:    d.TryLockVolume,
		Arrays:  mdraid.NewManager(node.Mounter.Exec, o.HostRoot),
		InSync:  d.StagedInSyncReplicas,
		MaxHold: n.maxHold,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := loop.Run(ctx); err != nil {
			klog.ErrorS(err, "Provisioner command loop stopped")
		}
	}()
	klog.InfoS("Provisioner command channel started", "freezeMaxHold", n.maxHold)
	return func() { cancel(); <-done }, nil
}
