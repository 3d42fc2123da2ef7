// Command nvmirror-target is the storage node agent: it keeps replicas as
// files in a pool directory, exports each over NVMe/TCP through the kernel
// target (nvmet configfs), and serves the provisioner's gRPC API (mutual
// TLS: only the provisioner's certificate may call). Flags are documented in docs/nvmirror-target.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/agent"
	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/version"
)

// listFlag collects a repeatable, comma-separable flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func main() {
	klog.InitFlags(nil)
	var (
		o           agent.Options
		addrs       listFlag
		firstPortID int
		showVersion bool
		kmsgPath    string
		rep         repairFlags
	)
	flag.StringVar(&o.PoolDir, "pool-dir", "/var/lib/nvmirror/pool", "directory holding the replicas' backing files (absolute)")
	flag.StringVar(&o.StateFile, "state-file", "", "replica state file (default <pool-dir>/state.json; keep it on the pool's filesystem)")
	flag.StringVar(&o.NvmetRoot, "nvmet-root", nvmet.DefaultRoot, "nvmet configfs directory")
	flag.StringVar(&o.NQNPrefix, "nqn-prefix", agent.DefaultNQNPrefix, "subsystem NQN prefix; the agent owns every subsystem named prefix + replica ID (must end with ':')")
	flag.Var(&addrs, "nvme-address", "NVMe/TCP listen address ADDR:PORT (IPv6 as [ADDR]:PORT); repeat or comma-separate for several")
	flag.IntVar(&firstPortID, "nvme-port-id", 1, "nvmet port ID of the first --nvme-address; the next ones count up")
	flag.BoolVar(&o.BufferedIO, "buffered-io", false, "export backing files with buffered I/O (forced on when the pool is on tmpfs)")
	flag.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "node name reported by NodeInfo (default $NODE_NAME)")
	flag.StringVar(&o.Zone, "zone", "", "failure-domain zone reported by NodeInfo")
	flag.StringVar(&o.Rack, "rack", "", "failure-domain rack reported by NodeInfo")
	flag.StringVar(&o.Listen, "listen", ":9400", "gRPC listen address")
	flag.StringVar(&o.TLSCertFile, "tls-cert-file", "", "server certificate (PEM)")
	flag.StringVar(&o.TLSKeyFile, "tls-key-file", "", "server private key (PEM)")
	flag.StringVar(&o.TLSClientCAFile, "tls-client-ca-file", "", "CA bundle (PEM) client certificates must chain to; only the provisioner's (Subject O=provisioner) may call")
	flag.StringVar(&o.TokenFile, "token-file", "", "optional: file holding a bearer token callers must also send")
	flag.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long SIGTERM waits for running calls before closing connections")
	flag.StringVar(&kmsgPath, "kmsg-path", "/dev/kmsg", "kernel log to follow for NVMe-oF session audit events; empty disables")
	flag.BoolVar(&rep.enabled, "offline-repair", true, "repair volumes no compute node has staged when the provisioner asks: this storage node connects to their replicas as an NVMe host and lets md bring the out-of-sync ones up to date (needs the nvme-tcp and raid1 modules and mdadm)")
	flag.StringVar(&rep.hostNQN, "repair-host-nqn", "", "host NQN of this storage node's offline repairs (default "+repairNQNPrefix+"<node-name>)")
	flag.BoolVar(&showVersion, "version", false, "print the version and exit")
	flag.Parse()
	if showVersion {
		fmt.Println(version.Version)
		return
	}
	ports, err := agent.ParseNvmeAddresses(addrs, firstPortID)
	if err == nil {
		o.Ports = ports
		err = o.Validate()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "nvmirror-target: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o, kmsgPath, rep); err != nil {
		klog.ErrorS(err, "nvmirror-target failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(ctx context.Context, o agent.Options, kmsgPath string, rep repairFlags) error {
	klog.InfoS("Starting nvmirror-target", "version", version.Version, "node", o.NodeName, "pool", o.PoolDir, "listen", o.Listen)
	auth, err := rpcauth.NewServer(rpcauth.ServerConfig{CertFile: o.TLSCertFile, KeyFile: o.TLSKeyFile,
		ClientCAFile: o.TLSClientCAFile, TokenFile: o.TokenFile, Authorizer: agent.Authorizer()})
	if err != nil {
		return fmt.Errorf("--tls-cert-file, --tls-key-file, --tls-client-ca-file, --token-file: %w", err)
	}
	pool, err := agent.NewPool(o.PoolDir)
	if err != nil {
		return err
	}
	svc, err := agent.NewService(o, pool, agent.NewStore(o.StateFile), nvmet.NewTarget(o.NvmetRoot))
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		if !errors.Is(err, agent.ErrRestoreIncomplete) {
			return err
		}
		klog.ErrorS(err, "Serving with some replicas not restored")
	}
	if kmsgPath != "" {
		w := &agent.SessionWatcher{Path: kmsgPath, Prefix: o.NQNPrefix, Sink: agent.LogSessionEvent}
		if err := w.Open(); err != nil {
			klog.ErrorS(err, "NVMe-oF session audit events unavailable")
		} else {
			go w.Follow(ctx)
		}
	}
	lis, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(
		grpc.Creds(auth.Credentials()),
		grpc.ChainUnaryInterceptor(auth.UnaryServerInterceptor(), agent.LoggingInterceptor),
		grpc.ChainStreamInterceptor(auth.StreamServerInterceptor(), agent.StreamLoggingInterceptor),
	)
	var serverOpts []agent.ServerOption
	if rep.enabled {
		runner, err := rep.runner(o.NodeName, o.PoolDir)
		if err != nil {
			return err
		}
		if err := runner.Recover(ctx); err != nil {
			klog.ErrorS(err, "Undoing offline repairs an earlier run left")
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
			defer cancel()
			if err := runner.Close(cctx); err != nil {
				klog.ErrorS(err, "Stopping offline repairs")
			}
		}()
		serverOpts = append(serverOpts, agent.WithRepairs(runner))
		klog.InfoS("Offline repair enabled", "hostNQN", runner.HostNQN())
	}
	agentapi.RegisterTargetServer(srv, agent.NewServer(svc, serverOpts...))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	klog.InfoS("Serving the target API", "address", lis.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	klog.InfoS("Stopping: waiting for running calls", "timeout", o.ShutdownTimeout)
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(o.ShutdownTimeout):
		klog.InfoS("Shutdown timeout: closing remaining connections")
		srv.Stop()
	}
	// Exports stay in place: hosts keep their I/O while the agent is down.
	return nil
}
