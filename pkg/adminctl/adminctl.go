// Package adminctl is nvmirror's admin commands (volumes, volume, events,
// nodes, set, rotate-keys, promote, move, replace, cordon, uncordon, drain,
// orphans) and how they print, over the
// provisioner's gRPC API: one implementation for nvmirrorctl, which names
// volumes by ID, and kubectl-nvmirror, which names them by PVC.
package adminctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/status"

	api "github.com/nvmirror/nvmirror/pkg/provisionerapi"
)

// UsageError is a mistake on the command line: exit status 2.
type UsageError struct{ msg string }

func (e UsageError) Error() string { return e.msg }

// Usagef returns a UsageError.
func Usagef(format string, args ...any) error { return UsageError{fmt.Sprintf(format, args...)} }

func usagef(format string, args ...any) error { return Usagef(format, args...) }

// CommandsUsage lists the commands; VOLUME is what the program names
// volumes by ("VOLUME_ID", "PVC").
func CommandsUsage(volume string) string {
	return fmt.Sprintf(`commands:
  volumes                     every volume: PVC, PV, size, replicas healthy/total, state, degraded since, host
  volume %[1]s            one volume: replicas with storage node, zone, rack, state; recent events
  events [flags]              events and audit records (--volume %[1]s, --node, --type, --since, --limit)
  nodes                       storage nodes: address, zone, rack, capacity, replicas
  set %[1]s KEY=VALUE     change a mutable parameter (maxReplicaDownTime=MINUTES,
                              rebuildBandwidthLimit=MIBPS, numReplicas=2|3)
  rotate-keys %[1]s       new NVMe authentication secrets between the volume's host and its
                              storage nodes; the node re-authenticates its live connections with
                              them at its next healing check (no I/O stops). Rerun to complete a
                              rotation a storage node missed.
  promote %[1]s REPLICA_ID... --accept-data-loss [--reason TEXT]
                              DATA LOSS: mark out-of-sync replicas in sync so the volume can start
                              from them when its in-sync replicas are gone for good; the writes
                              acknowledged while they were out of sync are lost. Audited.
  move %[1]s REPLICA_ID [--to STORAGE_NODE]
                              move a replica live: a new one is added (placed by the volume's
                              rules, or on --to if it satisfies them) and filled; the old one
                              leaves only when the new one is in sync
  replace %[1]s REPLICA_ID
                              replace a replica you distrust at once: it leaves now and a new one
                              is filled from the others (never the last in-sync replica)
  cordon STORAGE_NODE         place no new replica on the node (before maintenance)
  uncordon STORAGE_NODE       place new replicas on it again (ends a drain)
  drain STORAGE_NODE [--stop] cordon the node and move every replica away, a few at a time
                              (resumed after any restart); run again to see the progress
  orphans                     replicas storage nodes hold that no volume owns (the provisioner's
                              last orphan scan): class, since when, when they are reclaimed, why
  orphans reclaim REPLICA_ID...
                              delete those orphans from their storage nodes now, unknown ones too
                              (after a registry restore they may hold a newer volume's only copy:
                              see docs/provisioner.md before you do)
  snapshots [%[1]s]       snapshots (of one volume): size, allocated bytes, copies complete/wanted,
                              state, group, when taken
  snapshot SNAPSHOT_ID        one snapshot: each copy's storage node, state, allocated bytes, and
                              whether it shares blocks with its source (reflink pool)
`, volume)
}

// OutputFlags are the flags every program running the commands has.
type OutputFlags struct {
	Output  string
	Timeout time.Duration
}

// AddOutputFlags registers -o and --timeout.
func AddOutputFlags(fs *flag.FlagSet) *OutputFlags {
	f := &OutputFlags{}
	fs.StringVar(&f.Output, "o", "table", "output format: table or json")
	fs.DurationVar(&f.Timeout, "timeout", 30*time.Second, "deadline of each call")
	return f
}

// Validate names a bad -o.
func (f *OutputFlags) Validate() error {
	if f.Output != "table" && f.Output != "json" {
		return usagef("-o %q: want table or json", f.Output)
	}
	return nil
}

// Env is what Run runs a command with.
type Env struct {
	Client         api.ProvisionerClient
	Args           []string // the command and its arguments
	Stdout, Stderr io.Writer
	Flags          *OutputFlags
	// VolumeID turns a command's volume argument into the volume's ID;
	// nil: the argument is the ID. VolumeArg is what usage messages call
	// that argument (VOLUME_ID when empty).
	VolumeID  func(ctx context.Context, arg string) (string, error)
	VolumeArg string
	// Program is how the user runs the commands ("kubectl nvmirror"),
	// for the commands that hints name (nvmirrorctl when empty).
	Program string
}

// Run runs the command Args names, within Flags.Timeout.
func Run(ctx context.Context, e Env) error {
	if len(e.Args) == 0 {
		return usagef("a command is required")
	}
	cmd, ok := commands[e.Args[0]]
	if !ok {
		return usagef("unknown command %q", e.Args[0])
	}
	if e.VolumeArg == "" {
		e.VolumeArg = "VOLUME_ID"
	}
	if e.Program == "" {
		e.Program = "nvmirrorctl"
	}
	ctx, cancel := context.WithTimeout(ctx, e.Flags.Timeout)
	defer cancel()
	return cmd(cmdEnv{ctx: ctx, c: e.Client, args: e.Args[1:], stdout: e.Stdout, stderr: e.Stderr,
		json: e.Flags.Output == "json", now: time.Now(), volumeID: e.VolumeID, volumeArg: e.VolumeArg, program: e.Program})
}

// Exit prints err for program prog and returns the exit status: 0, 2 for a
// usage error, 1 otherwise (a gRPC refusal as its code and message).
func Exit(prog string, err error, stderr io.Writer) int {
	var ue UsageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 2
	}
	if st, ok := status.FromError(err); ok {
		err = fmt.Errorf("%s: %s", st.Code(), st.Message())
	}
	fmt.Fprintf(stderr, "%s: %s\n", prog, esc(err.Error()))
	return 1
}
