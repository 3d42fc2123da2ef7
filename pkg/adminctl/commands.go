package adminctl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	api "github.com/nvmirror/nvmirror/pkg/provisionerapi"
)

// cmdEnv is what a command runs with: the call's context (its deadline is
// --timeout), the provisioner, the arguments after the command's name, and
// the global output choice.
type cmdEnv struct {
	ctx            context.Context
	c              api.ProvisionerClient
	args           []string
	stdout, stderr io.Writer
	json           bool      // -o json
	now            time.Time // one instant for every age and --since
	// volumeID turns a volume argument into the volume's ID (Env.VolumeID);
	// volumeArg is what usage messages call that argument.
	volumeID  func(ctx context.Context, arg string) (string, error)
	volumeArg string
	program   string // how the user runs the commands, for hints
}

// volume resolves a command's volume argument.
func (e cmdEnv) volume(arg string) (string, error) {
	if e.volumeID == nil {
		return arg, nil
	}
	return e.volumeID(e.ctx, arg)
}

// onlyVolume is the ID of the volume that is cmd's one argument.
func (e cmdEnv) onlyVolume(cmd string) (string, error) {
	if len(e.args) != 1 {
		return "", usagef("%s takes one %s, got %d arguments", cmd, e.volumeArg, len(e.args))
	}
	return e.volume(e.args[0])
}

// commands are the subcommands by name; CommandsUsage lists them.
var commands = map[string]func(e cmdEnv) error{
	"volumes":     cmdVolumes,
	"volume":      cmdVolume,
	"events":      cmdEvents,
	"nodes":       cmdNodes,
	"set":         cmdSet,
	"rotate-keys": cmdRotateKeys,
	"promote":     cmdPromote,
	"move":        cmdMove,
	"replace":     cmdReplace,
	"cordon":      cmdCordon,
	"uncordon":    cmdUncordon,
	"drain":       cmdDrain,
	"orphans":     cmdOrphans,
	"snapshots":   cmdSnapshots,
	"snapshot":    cmdSnapshot,
}

func cmdVolumes(e cmdEnv) error {
	if len(e.args) != 0 {
		return usagef("volumes takes no arguments, got %q", e.args)
	}
	var vols []*api.Volume
	token := ""
	for {
		resp, err := e.c.ListVolumes(e.ctx, &api.ListVolumesRequest{StartingToken: token, MaxEntries: 500})
		if err != nil {
			return err
		}
		vols = append(vols, resp.GetVolumes()...)
		if token = resp.GetNextToken(); token == "" {
			break
		}
	}
	if e.json {
		return renderJSON(e.stdout, &api.ListVolumesResponse{Volumes: vols})
	}
	renderVolumes(e.stdout, vols, e.now)
	return nil
}

func cmdVolume(e cmdEnv) error {
	id, err := e.onlyVolume("volume")
	if err != nil {
		return err
	}
	resp, err := e.c.GetVolume(e.ctx, &api.GetVolumeRequest{VolumeId: id})
	if err != nil {
		return err
	}
	if e.json {
		return renderJSON(e.stdout, resp.GetVolume())
	}
	nodes := map[string]*api.StorageNode{}
	if ns, err := e.c.ListStorageNodes(e.ctx, &api.ListStorageNodesRequest{}); err == nil {
		for _, n := range ns.GetNodes() {
			nodes[n.GetName()] = n
		}
	}
	evs, err := e.c.ListEvents(e.ctx, &api.ListEventsRequest{VolumeId: id})
	if err != nil {
		return err
	}
	recent := evs.GetEvents()
	if len(recent) > 10 {
		recent = recent[len(recent)-10:]
	}
	renderVolume(e.stdout, resp.GetVolume(), nodes, recent, e.now)
	return nil
}

func cmdEvents(e cmdEnv) error {
	req, err := parseEventsFlags(e.args, e.now, e.stderr)
	if err != nil {
		return err
	}
	if req.VolumeId != "" {
		if req.VolumeId, err = e.volume(req.VolumeId); err != nil {
			return err
		}
	}
	resp, err := e.c.ListEvents(e.ctx, req)
	if err != nil {
		return err
	}
	if e.json {
		return renderJSON(e.stdout, resp)
	}
	renderEvents(e.stdout, resp.GetEvents())
	return nil
}

func cmdNodes(e cmdEnv) error {
	if len(e.args) != 0 {
		return usagef("nodes takes no arguments, got %q", e.args)
	}
	resp, err := e.c.ListStorageNodes(e.ctx, &api.ListStorageNodesRequest{})
	if err != nil {
		return err
	}
	if e.json {
		return renderJSON(e.stdout, resp)
	}
	renderNodes(e.stdout, resp.GetNodes())
	return nil
}

func cmdSet(e cmdEnv) error {
	arg, params, err := parseSet(e.args)
	if err != nil {
		return err
	}
	id, err := e.volume(arg)
	if err != nil {
		return err
	}
	resp, err := e.c.ModifyVolume(e.ctx, &api.ModifyVolumeRequest{VolumeId: id, MutableParameters: params})
	if err != nil {
		return err
	}
	if e.json {
		return renderJSON(e.stdout, resp.GetVolume())
	}
	for k := range params {
		fmt.Fprintf(e.stdout, "volume %s: %s=%s\n", esc(id), esc(k), esc(resp.GetVolume().GetParameters()[k]))
	}
	return nil
}

func cmdRotateKeys(e cmdEnv) error {
	id, err := e.onlyVolume("rotate-keys")
	if err != nil {
		return err
	}
	resp, err := e.c.RotateCredentials(e.ctx, &api.RotateCredentialsRequest{VolumeId: id})
	if err != nil {
		return err
	}
	if e.json {
		if err := renderJSON(e.stdout, resp); err != nil {
			return err
		}
	} else {
		renderRotation(e.stdout, id, resp)
	}
	if failed := failedRotations(resp); len(failed) > 0 {
		return fmt.Errorf("rotation pending on storage nodes %s: run rotate-keys %s again when they are reachable", strings.Join(failed, ", "), esc(e.args[0]))
	}
	return nil
}

// parseSet reads "VOLUME_ID KEY=VALUE..."; the provisioner validates keys
// and values and names what it refuses.
func parseSet(args []string) (string, map[string]string, error) {
	if len(args) < 2 {
		return "", nil, usagef("set takes VOLUME_ID KEY=VALUE, e.g. set vol-1 maxReplicaDownTime=120")
	}
	params := map[string]string{}
	for _, kv := range args[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return "", nil, usagef("set: %q is not KEY=VALUE", kv)
		}
		params[k] = v
	}
	return args[0], params, nil
}

func parseEventsFlags(args []string, now time.Time, stderr io.Writer) (*api.ListEventsRequest, error) {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	fs.SetOutput(stderr)
	volume := fs.String("volume", "", "only events of this volume")
	node := fs.String("node", "", "only events of this node or storage node")
	typ := fs.String("type", "", "only events of this type (VolumeDegraded, VolumeHealed, HostDisconnected, ..., Audit)")
	sinceFlag := fs.String("since", "", "only events since a duration ago (1h) or an RFC 3339 time")
	limit := fs.Int("limit", 0, "at most this many events (newest are kept by the provisioner's default)")
	if err := fs.Parse(args); err != nil {
		return nil, usagef("events: %v", err)
	}
	if fs.NArg() != 0 {
		return nil, usagef("events: unexpected arguments %q", fs.Args())
	}
	if *limit < 0 {
		return nil, usagef("events --limit %d: must not be negative", *limit)
	}
	req := &api.ListEventsRequest{VolumeId: *volume, Node: *node, Type: *typ, Limit: int32(*limit)}
	if *sinceFlag != "" {
		var t time.Time
		if d, err := time.ParseDuration(*sinceFlag); err == nil {
			t = now.Add(-d)
		} else if t, err = time.Parse(time.RFC3339, *sinceFlag); err != nil {
			return nil, usagef("events --since %q: want a duration (90m) or an RFC 3339 time", *sinceFlag)
		}
		req.Since = timestamppb.New(t)
	}
	return req, nil
}
