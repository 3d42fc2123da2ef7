// Command nvmirror-csi serves nvmirror's CSI services on a unix socket:
// --mode=controller (Deployment, with the CSI sidecars), --mode=node
// (DaemonSet on compute nodes) or --mode=all. It stops gracefully on SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/exec"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/healer"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/version"
)

func main() {
	klog.InitFlags(nil)
	o := driver.DefaultOptions()
	o.AddFlags(flag.CommandLine)
	var h healerOptions
	h.addFlags(flag.CommandLine)
	var nc nodeCmdOptions
	nc.addFlags(flag.CommandLine)
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Version)
		return
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "nvmirror-csi: %v\n", err)
		os.Exit(2)
	}
	if err := h.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "nvmirror-csi: %v\n", err)
		os.Exit(2)
	}
	if err := nc.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "nvmirror-csi: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o, h, nc); err != nil {
		klog.ErrorS(err, "nvmirror-csi failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(ctx context.Context, o driver.Options, h healerOptions, nc nodeCmdOptions) error {
	klog.InfoS("Starting nvmirror-csi", "version", version.Version, "mode", o.Mode, "endpoint", o.Endpoint)
	prov, conn, err := newProvisionerClient(o)
	if err != nil {
		return err
	}
	defer conn.Close()
	var node driver.NodeDeps
	if o.Mode != driver.ControllerMode {
		identity, err := driver.LoadHostIdentity(o.HostRoot)
		if err != nil {
			return err
		}
		ex := exec.New()
		node = driver.NodeDeps{
			Host:      identity,
			Initiator: host.NewInitiator(o.HostRoot),
			Raid:      mdraid.NewManager(ex, o.HostRoot),
			Mounter:   driver.NewSafeFormatAndMount(ex),
		}
	}
	d, err := driver.NewDriver(o, prov, node)
	if err != nil {
		return err
	}
	if o.Mode != driver.ControllerMode {
		// The node's durable outbox: the healer's events and the CSI audit
		// records, delivered to the provisioner by one sender.
		queue, err := healer.OpenEventQueue(healer.EventQueueFile(o.StateDir), 0, prov, clock.RealClock{})
		if err != nil {
			return err
		}
		defer queue.Close()
		d.SetEventQueue(queue)
		if h.enabled {
			hl, reg, err := newHealer(o, h, d, prov, node, queue)
			if err != nil {
				return err
			}
			// NodeGetVolumeHealth reports the healer's view (md and every
			// replica's controller) once it has one.
			d.SetHealthSource(hl)
			go runHealer(ctx, hl, reg, h.metricsAddress) // its Run runs the queue's sender
		} else {
			go queue.Run(ctx)
		}
		if nc.enabled {
			stop, err := startNodeCommands(ctx, o, nc, d, prov, node)
			if err != nil {
				return err
			}
			// Writes a freeze holds are released before the process exits.
			defer stop()
		}
	}
	return d.Run(ctx)
}
