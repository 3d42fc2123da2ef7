package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/healer"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// healerOptions are the node plugin's healing flags.
type healerOptions struct {
	enabled        bool
	cfg            healer.Config
	metricsAddress string
	kmsgPath       string
}

func (h *healerOptions) addFlags(fs *flag.FlagSet) {
	h.cfg = healer.DefaultConfig()
	fs.BoolVar(&h.enabled, "heal", true, "[node] run the healer: re-add returning replicas, complete deletions, replace replicas away longer than maxReplicaDownTime")
	fs.DurationVar(&h.cfg.Interval, "heal-interval", h.cfg.Interval, "[node] periodic healing check; md and NVMe changes also trigger one at once")
	fs.DurationVar(&h.cfg.NVMePollInterval, "nvme-poll-interval", h.cfg.NVMePollInterval, "[node] how often every NVMe controller's state is read between checks when the kernel log cannot be followed (an idle md does not notice a lost replica)")
	fs.DurationVar(&h.cfg.NVMeBackstopInterval, "nvme-backstop-interval", h.cfg.NVMeBackstopInterval, "[node] how often every NVMe controller's state is read while the kernel log is followed (the controllers it names are read at once)")
	fs.StringVar(&h.kmsgPath, "kmsg-path", "/dev/kmsg", "[node] kernel log followed for NVMe controller changes; empty, or unreadable: read every controller every --nvme-poll-interval")
	fs.DurationVar(&h.cfg.HealTimeUnit, "heal-time-unit", h.cfg.HealTimeUnit, "[node] FOR TESTS ONLY: the unit of maxReplicaDownTime (1m in production)")
	fs.IntVar(&h.cfg.MaxConcurrentReplacements, "max-concurrent-replacements", h.cfg.MaxConcurrentReplacements, "[node] replacements this node runs at once (bounds rebuild storms)")
	fs.IntVar(&h.cfg.MaxRebuildBandwidthMiBps, "max-rebuild-bandwidth", h.cfg.MaxRebuildBandwidthMiBps, "[node] MiB/s that all md rebuilds on this node share (re-adds, replacements, resyncs; 0: no node-wide cap); each volume's rebuildBandwidthLimit applies too")
	fs.BoolVar(&h.cfg.FailGoneMembers, "fail-gone-members", h.cfg.FailGoneMembers, "[node] fail in md the member of a replica whose NVMe controller is gone, so the bitmap tracks what it misses")
	fs.DurationVar(&h.cfg.RetryBase, "heal-retry-base", h.cfg.RetryBase, "[node] first wait before retrying a failed reconnect or re-add (doubles up to --heal-retry-max)")
	fs.DurationVar(&h.cfg.RetryMax, "heal-retry-max", h.cfg.RetryMax, "[node] longest wait between retries of a failed reconnect or re-add")
	fs.StringVar(&h.metricsAddress, "metrics-address", "", "[node] address (host:port) serving Prometheus metrics at /metrics; empty disables")
}

func (h *healerOptions) validate() error {
	switch {
	case h.cfg.Interval < time.Second:
		return fmt.Errorf("--heal-interval %v: must be at least 1s", h.cfg.Interval)
	case h.cfg.NVMePollInterval < 100*time.Millisecond:
		return fmt.Errorf("--nvme-poll-interval %v: must be at least 100ms", h.cfg.NVMePollInterval)
	case h.cfg.NVMeBackstopInterval < h.cfg.NVMePollInterval:
		return fmt.Errorf("--nvme-backstop-interval %v: must be at least --nvme-poll-interval (%v)", h.cfg.NVMeBackstopInterval, h.cfg.NVMePollInterval)
	case h.cfg.HealTimeUnit < time.Second:
		return fmt.Errorf("--heal-time-unit %v: must be at least 1s", h.cfg.HealTimeUnit)
	case h.cfg.MaxConcurrentReplacements < 1:
		return fmt.Errorf("--max-concurrent-replacements %d: must be at least 1", h.cfg.MaxConcurrentReplacements)
	case h.cfg.RetryBase <= 0 || h.cfg.RetryMax < h.cfg.RetryBase:
		return fmt.Errorf("--heal-retry-base %v / --heal-retry-max %v: need 0 < base <= max", h.cfg.RetryBase, h.cfg.RetryMax)
	}
	if h.cfg.MaxRebuildBandwidthMiBps < 0 || h.cfg.MaxRebuildBandwidthMiBps > storageclass.MaxRebuildBandwidth {
		return fmt.Errorf("--max-rebuild-bandwidth %d: must be from 0 (no cap) to %d MiB/s", h.cfg.MaxRebuildBandwidthMiBps, storageclass.MaxRebuildBandwidth)
	}
	return nil
}

// newHealer wires the healer to the real system, the provisioner client and
// the driver (its staging state, locks and connection settings).
func newHealer(o driver.Options, h healerOptions, d *driver.Driver, prov *provisionerclient.Client, node driver.NodeDeps, queue *healer.EventQueue) (*healer.Healer, *prometheus.Registry, error) {
	cfg := h.cfg
	cfg.NodeID = d.NodeID()
	reg := prometheus.NewRegistry()
	raid := mdraid.NewManager(node.Mounter.Exec, o.HostRoot)
	initiator := host.NewInitiator(o.HostRoot)
	deps := healer.Deps{
		Observer: &healer.Observer{
			// Each staging state is parsed again only when its file changed.
			Staged: stagestate.NewLister(o.StateDir).Volumes,
			Arrays: raid,
			// Only controller states and changed arrays are read per
			// look; see docs/healer.md#cost-per-volume.
			NVMe:         healer.NewCachedNVMe(o.HostRoot),
			ArrayReread:  healer.DefaultArrayReread,
			Provisioner:  prov,
			ConfigMaxAge: 10 * time.Second,
			CallTimeout:  10 * time.Second,
		},
		Actor: &healer.Actor{
			Raid:        raid,
			Fabric:      initiator,
			Provisioner: prov,
			Credentials: prov,
			Record: func(volumeID string, r stagestate.Replica) error {
				return stagestate.RecordReplica(o.StateDir, volumeID, r)
			},
			Connect:    d.ConnectTemplate(),
			DeviceWait: o.DeviceWaitTimeout,
			Timeout:    2 * time.Minute,
			NodeID:     d.NodeID(),
		},
		Rekeyer: &healer.Rekeyer{
			HostNQN: node.Host.NQN, NodeID: d.NodeID(), Credentials: prov, Secrets: initiator,
			ControllerState: func(name string) (host.ControllerState, error) {
				c, err := initiator.Controller(name)
				return c.State, err
			},
			Disconnect: initiator.Disconnect,
		},
		Queue:   queue,
		Metrics: healer.NewMetrics(reg),
		Watcher: mdraid.NewWatcher(o.HostRoot),
		Lock:    d.TryLockVolume,
	}
	if h.kmsgPath != "" {
		if kl, err := host.OpenControllerLog(h.kmsgPath); err != nil {
			klog.ErrorS(err, "Cannot follow the kernel log; reading every NVMe controller's state every --nvme-poll-interval", "path", h.kmsgPath, "interval", cfg.NVMePollInterval)
		} else {
			deps.KernelLog = kl // open for the process's life
		}
	}
	hl, err := healer.New(cfg, o.StateDir, deps)
	if err != nil {
		return nil, nil, err
	}
	klog.InfoS("Healer configured", "interval", cfg.Interval, "nvmePoll", cfg.NVMePollInterval, "nvmeBackstop", cfg.NVMeBackstopInterval,
		"kernelLog", deps.KernelLog != nil, "timeUnit", cfg.HealTimeUnit,
		"maxConcurrentReplacements", cfg.MaxConcurrentReplacements, "metrics", h.metricsAddress)
	return hl, reg, nil
}

// runHealer runs the loop (which runs the event queue's sender: one
// sender, see healer.EventQueue.Run) and the metrics endpoint until ctx
// ends; errors are logged: healing stopping must not take the CSI services
// down with it, and Probe keeps reporting the node's readiness.
func runHealer(ctx context.Context, hl *healer.Healer, reg *prometheus.Registry, metricsAddr string) {
	go func() {
		if err := healer.ServeMetrics(ctx, metricsAddr, reg); err != nil {
			klog.ErrorS(err, "Metrics endpoint stopped", "address", metricsAddr)
		}
	}()
	if err := hl.Run(ctx); err != nil && ctx.Err() == nil {
		klog.ErrorS(err, "Healer stopped")
	}
}
