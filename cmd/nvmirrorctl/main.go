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
//	nvmirrorctl [global flags] orphans [reclaim REPLICA_ID...]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc/status"

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
  move VOLUME_ID REPLICA_ID [--to STORAGE_NODE]
                              move a replica live: a new one is added (placed by the volume's
                              rules, or on --to if it satisfies them) and filled; the old one
                              leaves only when the new one is in sync
  replace VOLUME_ID REPLICA_ID
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
		fmt.Fprintf(os.Stderr, "nvmirrorctl: %s\n", esc(err.Error()))
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nvmirrorctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("provisioner", envOr("NVMIRROR_PROVISIONER", "127.0.0.1:9500"), "provisioner API address host:port ($NVMIRROR_PROVISIONER)")
	caFile := fs.String("ca-file", os.Getenv("NVMIRROR_CA_FILE"), "CA certificate (PEM) of the provisioner ($NVMIRROR_CA_FILE; empty: system roots)")
	certFile := fs.String("cert-file", os.Getenv("NVMIRROR_CERT_FILE"), "your client certificate (PEM, Subject O=admin) ($NVMIRROR_CERT_FILE)")
	keyFile := fs.String("key-file", os.Getenv("NVMIRROR_KEY_FILE"), "the key of --cert-file (PEM) ($NVMIRROR_KEY_FILE)")
	tokenFile := fs.String("token-file", os.Getenv("NVMIRROR_TOKEN_FILE"), "optional: file holding the API bearer token, for a provisioner started with --token-file ($NVMIRROR_TOKEN_FILE)")
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
	if *certFile == "" || *keyFile == "" {
		return usagef("--cert-file and --key-file are required (the provisioner identifies its callers by their client certificates)")
	}
	conn, err := rpcauth.Dial(*addr, rpcauth.ClientConfig{CAFile: *caFile, ServerName: *serverName, CertFile: *certFile, KeyFile: *keyFile, TokenFile: *tokenFile})
	if err != nil {
		return err
	}
	defer conn.Close()
	c := api.NewProvisionerClient(conn)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	cmd, ok := commands[rest[0]]
	if !ok {
		fs.Usage()
		return usagef("unknown command %q", rest[0])
	}
	return cmd(cmdEnv{ctx: ctx, c: c, args: rest[1:], stdout: stdout, stderr: stderr, json: *output == "json", now: time.Now()})
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
