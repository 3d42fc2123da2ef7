// Command nvmirrorctl is the admin CLI of nvmirror: it asks the provisioner
// about volumes, replicas, storage nodes and events, and tunes healing.
//
//	nvmirrorctl [global flags] volumes
//	nvmirrorctl [global flags] volume VOLUME_ID
//	nvmirrorctl [global flags] events [--volume ID] [--node NAME] [--type TYPE] [--since DURATION|RFC3339] [--limit N]
//	nvmirrorctl [global flags] nodes
//	nvmirrorctl [global flags] set VOLUME_ID maxReplicaDownTime=MINUTES
//	nvmirrorctl [global flags] rotate-keys VOLUME_ID
//	nvmirrorctl [global flags] promote VOLUME_ID REPLICA_ID [REPLICA_ID...] --accept-data-loss [--reason TEXT]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	api "github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
)

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

const usageText = `usage: nvmirrorctl [global flags] COMMAND [ARGS]

commands:
  volumes                     every volume: PVC, size, replicas healthy/total, state, degraded since, host
  volume VOLUME_ID            one volume: replicas with storage node, zone, rack, state; recent events
  events [flags]              events and audit records (--volume, --node, --type, --since, --limit)
  nodes                       storage nodes: address, zone, rack, capacity, replicas
  set VOLUME_ID KEY=VALUE     change a mutable parameter (maxReplicaDownTime=MINUTES)
  rotate-keys VOLUME_ID       new NVMe authentication secrets between the volume's host and its
                              storage nodes; the node re-authenticates its live connections with
                              them at its next healing check (no I/O stops). Rerun to complete a
                              rotation a storage node missed.
  promote VOLUME_ID REPLICA_ID... --accept-data-loss [--reason TEXT]
                              DATA LOSS: mark out-of-sync replicas in sync so the volume can start
                              from them when its in-sync replicas are gone for good; the writes
                              acknowledged while they were out of sync are lost. Audited.

global flags:
`

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	var ue usageError
	switch {
	case err == nil:
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "nvmirrorctl: %v\n", err)
		os.Exit(2)
	default:
		if st, ok := status.FromError(err); ok {
			err = fmt.Errorf("%s: %s", st.Code(), st.Message())
		}
		fmt.Fprintf(os.Stderr, "nvmirrorctl: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nvmirrorctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("provisioner", envOr("NVMIRROR_PROVISIONER", "127.0.0.1:9500"), "provisioner API address host:port ($NVMIRROR_PROVISIONER)")
	caFile := fs.String("ca-file", os.Getenv("NVMIRROR_CA_FILE"), "CA certificate (PEM) of the provisioner ($NVMIRROR_CA_FILE; empty: system roots)")
	tokenFile := fs.String("token-file", os.Getenv("NVMIRROR_TOKEN_FILE"), "file holding the API bearer token ($NVMIRROR_TOKEN_FILE)")
	serverName := fs.String("server-name", "", "name expected in the provisioner's certificate (default: the host of --provisioner)")
	output := fs.String("o", "table", "output format: table or json")
	timeout := fs.Duration("timeout", 30*time.Second, "deadline of each call")
	fs.Usage = func() { fmt.Fprint(stderr, usageText); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if *output != "table" && *output != "json" {
		return usagef("-o %q: want table or json", *output)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return usagef("a command is required")
	}
	if *tokenFile == "" {
		return usagef("--token-file is required (the provisioner refuses calls without its token)")
	}
	conn, err := rpcauth.Dial(*addr, rpcauth.ClientConfig{CAFile: *caFile, ServerName: *serverName, TokenFile: *tokenFile})
	if err != nil {
		return err
	}
	defer conn.Close()
	c := api.NewProvisionerClient(conn)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	json := *output == "json"
	now := time.Now()

	switch cmd, cargs := rest[0], rest[1:]; cmd {
	case "volumes":
		if len(cargs) != 0 {
			return usagef("volumes takes no arguments, got %q", cargs)
		}
		var vols []*api.Volume
		token := ""
		for {
			resp, err := c.ListVolumes(ctx, &api.ListVolumesRequest{StartingToken: token, MaxEntries: 500})
			if err != nil {
				return err
			}
			vols = append(vols, resp.GetVolumes()...)
			if token = resp.GetNextToken(); token == "" {
				break
			}
		}
		if json {
			return renderJSON(stdout, &api.ListVolumesResponse{Volumes: vols})
		}
		renderVolumes(stdout, vols, now)
	case "volume":
		if len(cargs) != 1 {
			return usagef("volume takes one VOLUME_ID, got %d arguments", len(cargs))
		}
		resp, err := c.GetVolume(ctx, &api.GetVolumeRequest{VolumeId: cargs[0]})
		if err != nil {
			return err
		}
		if json {
			return renderJSON(stdout, resp.GetVolume())
		}
		nodes := map[string]*api.StorageNode{}
		if ns, err := c.ListStorageNodes(ctx, &api.ListStorageNodesRequest{}); err == nil {
			for _, n := range ns.GetNodes() {
				nodes[n.GetName()] = n
			}
		}
		evs, err := c.ListEvents(ctx, &api.ListEventsRequest{VolumeId: cargs[0]})
		if err != nil {
			return err
		}
		recent := evs.GetEvents()
		if len(recent) > 10 {
			recent = recent[len(recent)-10:]
		}
		renderVolume(stdout, resp.GetVolume(), nodes, recent, now)
	case "events":
		req, err := parseEventsFlags(cargs, now, stderr)
		if err != nil {
			return err
		}
		resp, err := c.ListEvents(ctx, req)
		if err != nil {
			return err
		}
		if json {
			return renderJSON(stdout, resp)
		}
		renderEvents(stdout, resp.GetEvents())
	case "nodes":
		if len(cargs) != 0 {
			return usagef("nodes takes no arguments, got %q", cargs)
		}
		resp, err := c.ListStorageNodes(ctx, &api.ListStorageNodesRequest{})
		if err != nil {
			return err
		}
		if json {
			return renderJSON(stdout, resp)
		}
		renderNodes(stdout, resp.GetNodes())
	case "set":
		id, params, err := parseSet(cargs)
		if err != nil {
			return err
		}
		resp, err := c.ModifyVolume(ctx, &api.ModifyVolumeRequest{VolumeId: id, MutableParameters: params})
		if err != nil {
			return err
		}
		if json {
			return renderJSON(stdout, resp.GetVolume())
		}
		for k := range params {
			fmt.Fprintf(stdout, "volume %s: %s=%s\n", id, k, resp.GetVolume().GetParameters()[k])
		}
	case "rotate-keys":
		if len(cargs) != 1 {
			return usagef("rotate-keys takes one VOLUME_ID, got %d arguments", len(cargs))
		}
		resp, err := c.RotateCredentials(ctx, &api.RotateCredentialsRequest{VolumeId: cargs[0]})
		if err != nil {
			return err
		}
		if json {
			if err := renderJSON(stdout, resp); err != nil {
				return err
			}
		} else {
			renderRotation(stdout, cargs[0], resp)
		}
		if failed := failedRotations(resp); len(failed) > 0 {
			return fmt.Errorf("rotation pending on storage nodes %s: run rotate-keys %s again when they are reachable", strings.Join(failed, ", "), cargs[0])
		}
	case "promote":
		pa, err := parsePromote(cargs, stderr)
		if err != nil {
			return err
		}
		if !pa.acceptDataLoss {
			// Read only, to say what would be lost; a volume that cannot
			// be read is still refused, with less detail.
			resp, _ := c.GetVolume(ctx, &api.GetVolumeRequest{VolumeId: pa.volumeID})
			return promoteRefusal(pa, resp.GetVolume())
		}
		resp, err := c.PromoteReplicas(ctx, &api.PromoteReplicasRequest{VolumeId: pa.volumeID, ReplicaIds: pa.replicaIDs, AcceptDataLoss: true, Reason: pa.reason})
		if err != nil {
			return err
		}
		if json {
			return renderJSON(stdout, resp.GetVolume())
		}
		renderPromoted(stdout, pa, resp.GetVolume())
	default:
		fs.Usage()
		return usagef("unknown command %q", cmd)
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

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
