// Command nvmirror-provisioner is the volume registry: it serves the
// provisioner gRPC API (TLS and a bearer token) to the CSI driver and
// nvmirrorctl, drives the storage nodes' agents, sweeps deletions and
// allow-lists on nodes that were away, and forwards events to syslog.
// Flags are documented in docs/provisioner.md. It stops gracefully on
// SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/kubeevents"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/agentclient"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/boltstore"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/etcdstore"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/version"
)

func main() {
	klog.InitFlags(nil)
	o, showVersion, err := parseFlags(flag.CommandLine, os.Args[1:])
	if showVersion {
		fmt.Println(version.Version)
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "nvmirror-provisioner: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o, nil); err != nil {
		klog.ErrorS(err, "nvmirror-provisioner failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

// parseFlags parses args into validated Options.
func parseFlags(fs *flag.FlagSet, args []string) (Options, bool, error) {
	o := DefaultOptions()
	o.AddFlags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return o, false, err
	}
	if *showVersion {
		return o, true, nil
	}
	return o, false, o.Validate()
}

// run serves until ctx ends. ready, when set, is told the listen address
// once the server accepts calls (tests listen on port 0).
func run(ctx context.Context, o Options, ready func(addr string)) error {
	klog.InfoS("Starting nvmirror-provisioner", "version", version.Version, "listen", o.Listen, "store", o.Store)
	// The status endpoint starts first, so probes get answers (live, not
	// ready) while the registry opens.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := provisioner.NewMetrics(reg)
	status, err := startStatusServer(o.HTTPAddress, reg)
	if err != nil {
		return err
	}
	defer status.Close()
	var agentToken string
	if o.AgentTokenFile != "" {
		if agentToken, err = rpcauth.LoadToken(o.AgentTokenFile); err != nil {
			return fmt.Errorf("--agent-token-file: %w", err)
		}
	}
	agentTLS, err := rpcauth.NewClientCredentials(o.AgentCAFile, o.AgentServerName, o.AgentCertFile, o.AgentKeyFile)
	if err != nil {
		return fmt.Errorf("--agent-ca-file, --agent-cert-file, --agent-key-file: %w", err)
	}
	agents, err := agentclient.NewPool(agentTLS, agentToken)
	if err != nil {
		return err
	}
	defer agents.Close()

	st, err := openStore(ctx, o)
	if err != nil {
		return err
	}
	defer st.Close()
	status.SetStore(st)
	auth, err := rpcauth.NewServer(rpcauth.ServerConfig{CertFile: o.TLSCertFile, KeyFile: o.TLSKeyFile,
		ClientCAFile: o.TLSClientCAFile, TokenFile: o.TokenFile, Authorizer: provisioner.NewAuthorizer(st)})
	if err != nil {
		return fmt.Errorf("--tls-cert-file, --tls-key-file, --tls-client-ca-file, --token-file: %w", err)
	}
	if err := registerStorageNodes(ctx, st, o); err != nil {
		return err
	}

	// Background work ends with ctx (campaign, sweeper, forwarder); wait
	// for it before the store closes.
	var wg sync.WaitGroup
	defer wg.Wait()
	bgCtx, cancelBG := context.WithCancel(ctx)
	defer cancelBG()

	so := provisioner.Options{Store: st, Agents: agents, ThinOvercommit: o.ThinOvercommit,
		MaxReplacementsPerNode: o.MaxReplacementsPerNode, AgentTimeout: o.AgentTimeout,
		CredentialScope: provisioner.CredentialScope(o.CredentialScope), RepairLease: o.RepairLease, HealTimeUnit: o.HealTimeUnit,
		RepairRetry: 2 * o.RepairInterval, MaxConcurrentMoves: o.MaxConcurrentMoves,
		CreatingTimeout: o.CreatingTimeout, OrphanGrace: o.OrphanGrace, TombstoneRetention: o.TombstoneRetention, FreezeTimeout: o.FreezeTimeout}
	var syslog, kube provisioner.EventSink
	if o.SyslogAddress != "" {
		fwd, err := newForwarder(o)
		if err != nil {
			return err
		}
		syslog = fwd
		reg.MustRegister(provisioner.NewForwarderCollector(fwd.Stats))
		wg.Go(func() {
			if err := fwd.Run(bgCtx); err != nil && !errors.Is(err, context.Canceled) {
				klog.ErrorS(err, "Syslog forwarder stopped")
			}
			// Closed only after Run: the queue is in use until then.
			if err := fwd.Close(); err != nil {
				klog.ErrorS(err, "Closing the syslog queue")
			}
		})
	}
	if sink, err := newKubeEventSink(o, st, reg); err != nil {
		return err
	} else if sink != nil {
		kube = sink
		wg.Go(func() { sink.Run(bgCtx) })
	}
	// Syslog first: when its queue refuses a batch the reporter resends,
	// and Kubernetes gets the batch once, with the resend.
	so.Events = metrics.CountEvents(provisioner.FanOut(syslog, kube))
	svc, err := provisioner.New(so)
	if err != nil {
		return err
	}
	reg.MustRegister(provisioner.NewRegistryCollector(st, svc.ListStorageNodes, o.AgentTimeout+readyCheckTimeout))
	reg.MustRegister(provisioner.NewOrphanCollector(svc.OrphanStats))

	health := provisioner.NewHealth()
	leader, err := st.Leader(bgCtx, o.LeaderID)
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	wg.Go(func() { health.Follow(leader) })
	wg.Go(func() { svc.RunSweeper(bgCtx, o.SweepInterval) })
	if o.RepairInterval > 0 {
		wg.Go(func() { svc.RunRepairer(bgCtx, o.RepairInterval) })
	}
	wg.Go(func() { svc.RunDrainer(bgCtx, o.DrainInterval) })
	if o.OrphanScanInterval > 0 {
		wg.Go(func() { svc.RunOrphanScanner(bgCtx, o.OrphanScanInterval) })
	}

	lis, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	srv := grpc.NewServer(
		grpc.Creds(auth.Credentials()),
		grpc.ChainUnaryInterceptor(metrics.UnaryServerInterceptor(), auth.UnaryServerInterceptor(), provisioner.LoggingInterceptor),
		grpc.ChainStreamInterceptor(metrics.StreamServerInterceptor(), auth.StreamServerInterceptor()),
	)
	provisionerapi.RegisterProvisionerServer(srv, provisioner.NewServer(svc))
	healthpb.RegisterHealthServer(srv, health)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	klog.InfoS("Serving the provisioner API", "address", lis.Addr().String())
	if ready != nil {
		ready(lis.Addr().String())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	klog.InfoS("Stopping: waiting for running calls", "timeout", o.ShutdownTimeout)
	health.Shutdown() // NOT_SERVING from now on: clients go elsewhere
	status.SetStopping()
	svc.Nodes().Shutdown() // node command streams never end by themselves
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(o.ShutdownTimeout):
		klog.InfoS("Shutdown timeout: closing remaining connections")
		srv.Stop()
	}
	cancelBG() // resign leadership, stop the sweeper and the forwarder
	return nil
}

func openStore(ctx context.Context, o Options) (store.Store, error) {
	if o.Store == "bolt" {
		if err := os.MkdirAll(filepath.Dir(o.BoltPath), 0o700); err != nil {
			return nil, fmt.Errorf("--bolt-path: %w", err)
		}
		return boltstore.Open(o.BoltPath, boltstore.Options{EventRetention: o.EventRetention})
	}
	eo := etcdstore.Options{Endpoints: o.EtcdEndpoints, Prefix: o.EtcdPrefix, EventRetention: o.EventRetention, Username: o.EtcdUsername}
	if o.EtcdCAFile != "" || o.EtcdCertFile != "" {
		cfg, err := rpcauth.ClientTLSConfig(o.EtcdCAFile, "", o.EtcdCertFile, o.EtcdKeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		eo.TLS = cfg
	}
	if o.EtcdPasswordFile != "" {
		pw, err := os.ReadFile(o.EtcdPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-password-file: %w", err)
		}
		eo.Password = strings.TrimSpace(string(pw))
	}
	return etcdstore.Open(ctx, eo)
}

// registerStorageNodes records the configured agents. Existing records keep
// their labels. Registered nodes missing from the flags are left alone
// (their replicas still need the sweeper) but reported, since placement
// still considers them.
func registerStorageNodes(ctx context.Context, st store.Store, o Options) error {
	nodes, err := o.ParseStorageNodes()
	if err != nil {
		return err
	}
	configured := map[string]bool{}
	for _, n := range nodes {
		configured[n.Name] = true
		rec := &store.StorageNode{ID: n.Name, Address: n.Address}
		if cur, err := st.GetStorageNode(ctx, n.Name); err == nil {
			rec.Labels, rec.LastSeen, rec.Cordoned = cur.Labels, cur.LastSeen, cur.Cordoned
		}
		if err := st.PutStorageNode(ctx, rec); err != nil {
			return fmt.Errorf("register storage node %s: %w", n.Name, err)
		}
	}
	all, err := st.ListStorageNodes(ctx)
	if err != nil {
		return err
	}
	for _, n := range all {
		if !configured[n.ID] {
			klog.InfoS("Registered storage node not in the configuration; it stays registered and placement may still use it", "storageNode", n.ID, "address", n.Address)
		}
	}
	klog.InfoS("Storage nodes", "configured", len(nodes), "registered", len(all))
	return nil
}

// newKubeEventSink returns the sink recording volume events on their PVC
// and PV, or nil when --kube-events turns it off or, in auto mode, there is
// no cluster to talk to (or its client cannot be set up: logged, not fatal).
func newKubeEventSink(o Options, volumes kubeevents.Volumes, reg prometheus.Registerer) (*kubeevents.Sink, error) {
	mode, err := kubeevents.ParseMode(o.KubeEvents)
	if err != nil {
		return nil, fmt.Errorf("--kube-events %w", err)
	}
	client, err := kubeevents.NewClient(mode, o.Kubeconfig)
	switch {
	case err != nil && mode == kubeevents.ModeAuto:
		klog.InfoS("Kubernetes events off", "reason", err.Error())
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("--kube-events: %w", err)
	case client == nil:
		klog.InfoS("Kubernetes events off (--kube-events=false)")
		return nil, nil
	}
	host, _ := os.Hostname()
	klog.InfoS("Recording volume events on their PVCs and PVs", "kubeconfig", o.Kubeconfig, "queue", o.KubeEventsQueue)
	return kubeevents.New(kubeevents.Options{Client: client, Volumes: volumes, Driver: storageclass.DriverName,
		Component: "nvmirror-provisioner", Host: host, QueueSize: o.KubeEventsQueue, Metrics: kubeevents.NewMetrics(reg)})
}

func newForwarder(o Options) (*events.Forwarder, error) {
	f, err := events.NewFormatter(o.SyslogFacility, 0)
	if err != nil {
		return nil, fmt.Errorf("--syslog-facility: %w", err)
	}
	fo := events.ForwarderOptions{
		Network: o.SyslogTransport, Address: o.SyslogAddress, Formatter: f,
		QueuePath: filepath.Join(o.SyslogQueueDir, "syslog-queue.db"), QueueLimit: o.SyslogQueueLimit,
	}
	if o.SyslogTransport == "tls" {
		serverName := o.SyslogServerName
		if serverName == "" {
			serverName, _, _ = net.SplitHostPort(o.SyslogAddress)
		}
		cfg, err := rpcauth.ClientTLSConfig(o.SyslogCAFile, serverName, "", "")
		if err != nil {
			return nil, fmt.Errorf("syslog TLS: %w", err)
		}
		fo.TLS = cfg
	}
	if err := os.MkdirAll(o.SyslogQueueDir, 0o700); err != nil {
		return nil, fmt.Errorf("--syslog-queue-dir: %w", err)
	}
	return events.NewForwarder(fo)
}
