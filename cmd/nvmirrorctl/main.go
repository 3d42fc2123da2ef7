// Command nvmirrorctl is the admin CLI of nvmirror: it asks the provisioner
// about volumes, replicas, storage nodes and events, and tunes healing. The
// commands are pkg/adminctl's; this names volumes by ID and reaches the
// provisioner with an address, a CA and the admin's client certificate
// (a bearer token optional).
//
//	nvmirrorctl [global flags] volumes
//	nvmirrorctl [global flags] volume VOLUME_ID
//	nvmirrorctl [global flags] events [--volume ID] [--node NAME] [--type TYPE] [--since DURATION|RFC3339] [--limit N]
//	nvmirrorctl [global flags] nodes
//	nvmirrorctl [global flags] set VOLUME_ID maxReplicaDownTime=MINUTES
//	nvmirrorctl [global flags] rotate-keys VOLUME_ID
//	nvmirrorctl [global flags] promote VOLUME_ID REPLICA_ID [REPLICA_ID...] --accept-data-loss [--reason TEXT]
//	nvmirrorctl [global flags] move VOLUME_ID REPLICA_ID [--to STORAGE_NODE]
//	nvmirrorctl [global flags] replace VOLUME_ID REPLICA_ID
//	nvmirrorctl [global flags] cordon|uncordon STORAGE_NODE
//	nvmirrorctl [global flags] drain STORAGE_NODE [--stop]
//	nvmirrorctl [global flags] orphans [reclaim REPLICA_ID...]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/nvmirror/nvmirror/pkg/adminctl"
	api "github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
)

func main() {
	os.Exit(adminctl.Exit("nvmirrorctl", run(context.Background(), os.Args[1:], os.Stdout, os.Stderr), os.Stderr))
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
	out := adminctl.AddOutputFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: nvmirrorctl [global flags] COMMAND [ARGS]\n\n"+adminctl.CommandsUsage("VOLUME_ID")+"\nglobal flags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return adminctl.Usagef("%v", err)
	}
	if err := out.Validate(); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return adminctl.Usagef("a command is required")
	}
	if *certFile == "" || *keyFile == "" {
		return adminctl.Usagef("--cert-file and --key-file are required (the provisioner identifies its callers by their client certificates)")
	}
	conn, err := rpcauth.Dial(*addr, rpcauth.ClientConfig{CAFile: *caFile, ServerName: *serverName, CertFile: *certFile, KeyFile: *keyFile, TokenFile: *tokenFile})
	if err != nil {
		return err
	}
	defer conn.Close()
	return adminctl.Run(ctx, adminctl.Env{Client: api.NewProvisionerClient(conn), Args: fs.Args(), Stdout: stdout, Stderr: stderr, Flags: out})
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
