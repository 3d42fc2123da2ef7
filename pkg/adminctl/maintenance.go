package adminctl

import (
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"

	api "github.com/nvmirror/nvmirror/pkg/provisionerapi"
)

// Storage node maintenance: move or replace a replica, cordon a node.

// interspersed parses fs's flags wherever they come among the positional
// arguments, and returns those.
func interspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// cmdMove adds a replica on another storage node, lets md fill it, and only
// then removes the old one.
func cmdMove(e cmdEnv) error {
	fs := flag.NewFlagSet("move", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	to := fs.String("to", "", "the storage node to move to (it must satisfy the volume's placement rules); default: chosen by them")
	pos, err := interspersed(fs, e.args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("move takes %s REPLICA_ID [--to STORAGE_NODE], got %d arguments", e.volumeArg, len(pos))
	}
	id, err := e.volume(pos[0])
	if err != nil {
		return err
	}
	resp, err := e.c.MoveReplica(e.ctx, &api.MoveReplicaRequest{VolumeId: id, ReplicaId: pos[1], ToStorageNode: *to})
	if err != nil {
		return err
	}
	if e.json {
		return renderJSON(e.stdout, resp)
	}
	nr := resp.GetNewReplica()
	fmt.Fprintf(e.stdout, "volume %s: moving replica %s to storage node %s as %s; %s leaves once %s is in sync (%s volume %s)\n",
		esc(id), esc(pos[1]), esc(nr.GetStorageNode()), esc(nr.GetId()), esc(pos[1]), esc(nr.GetId()), e.program, esc(pos[0]))
	return nil
}

// cmdReplace replaces a replica at once: it leaves the volume now and a new
// one is filled from the others (refused for the last in-sync replica).
func cmdReplace(e cmdEnv) error {
	if len(e.args) != 2 {
		return usagef("replace takes %s REPLICA_ID, got %d arguments", e.volumeArg, len(e.args))
	}
	id, err := e.volume(e.args[0])
	if err != nil {
		return err
	}
	resp, err := e.c.ReplaceReplica(e.ctx, &api.ReplaceReplicaRequest{VolumeId: id, MissingReplicaId: e.args[1]})
	if err != nil {
		return err
	}
	if e.json {
		return renderJSON(e.stdout, resp)
	}
	nr := resp.GetNewReplica()
	fmt.Fprintf(e.stdout, "volume %s: replica %s replaced by %s on storage node %s; it is filled from the other replicas\n",
		esc(id), esc(e.args[1]), esc(nr.GetId()), esc(nr.GetStorageNode()))
	return nil
}

func cmdCordon(e cmdEnv) error   { return cordon(e, "cordon", true) }
func cmdUncordon(e cmdEnv) error { return cordon(e, "uncordon", false) }

func cordon(e cmdEnv, name string, cordoned bool) error {
	if len(e.args) != 1 {
		return usagef("%s takes one STORAGE_NODE, got %d arguments", name, len(e.args))
	}
	n, err := e.c.CordonStorageNode(e.ctx, &api.CordonStorageNodeRequest{StorageNode: e.args[0], Cordoned: cordoned})
	if err != nil {
		return err
	}
	if e.json {
		return renderJSON(e.stdout, n)
	}
	what := "uncordoned: new replicas may be placed on it"
	if n.GetCordoned() {
		what = "cordoned: no new replica is placed on it; its replicas keep serving"
	}
	fmt.Fprintf(e.stdout, "storage node %s %s\n", esc(n.GetName()), what)
	return nil
}

// cmdDrain starts draining a storage node (or, with --stop, stops) and
// prints where the drain stands; run again to follow it.
func cmdDrain(e cmdEnv) error {
	fs := flag.NewFlagSet("drain", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	stop := fs.Bool("stop", false, "stop draining (the node stays cordoned; moves in flight finish)")
	pos, err := interspersed(fs, e.args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("drain takes one STORAGE_NODE [--stop], got %d arguments", len(pos))
	}
	st, err := e.c.DrainStorageNode(e.ctx, &api.DrainStorageNodeRequest{StorageNode: pos[0], Drain: !*stop})
	if err != nil {
		return err
	}
	if e.json {
		return renderJSON(e.stdout, st)
	}
	renderDrain(e.stdout, st)
	return nil
}

func renderDrain(w io.Writer, st *api.DrainStatus) {
	n := st.GetNode()
	state := "not draining"
	switch {
	case n.GetDraining() && st.GetReplicasLeft() == 0:
		state = "drained: it holds no active replica (uncordon it to use it again)"
	case n.GetDraining():
		state = "draining"
	case n.GetCordoned():
		state = "cordoned, not draining"
	}
	fmt.Fprintf(w, "storage node %s: %s\n", esc(n.GetName()), state)
	fmt.Fprintf(w, "  replicas left:    %d (%s of volumes)\n", st.GetReplicasLeft(), size(st.GetBytesLeft()))
	fmt.Fprintf(w, "  moves in flight:  %d\n", st.GetMovesInFlight())
	for _, v := range slices.Sorted(maps.Keys(st.GetStuck())) {
		fmt.Fprintf(w, "  cannot move:      volume %s: %s\n", esc(v), esc(st.GetStuck()[v]))
	}
}
