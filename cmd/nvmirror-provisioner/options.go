package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/kubeevents"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// Options are the process's configuration, filled from flags. Every field is
// checked by Validate, whose errors name the flag.
type Options struct {
	// Listen is the gRPC address (host:port) of the provisioner API.
	Listen string
	// TLSCertFile/TLSKeyFile are the server certificate; TLSClientCAFile
	// the CA bundle every caller's client certificate must chain to (the
	// certificate names the caller and its role, which NewAuthorizer's
	// table checks).
	TLSCertFile, TLSKeyFile, TLSClientCAFile string
	// TokenFile, when set, holds a bearer token callers must also send.
	TokenFile string
	// ShutdownTimeout bounds how long SIGTERM waits for running calls.
	ShutdownTimeout time.Duration
	// HTTPAddress (host:port) serves /healthz, /readyz and /metrics over
	// plain HTTP for kubelet probes and Prometheus; empty disables it.
	HTTPAddress string

	// Store is "bolt" (one file, one provisioner replica; the default) or
	// "etcd" (several replicas, leader election).
	Store    string
	BoltPath string
	// EtcdEndpoints, EtcdPrefix and the etcd client TLS/credentials.
	EtcdEndpoints                         listFlag
	EtcdPrefix                            string
	EtcdCAFile, EtcdCertFile, EtcdKeyFile string
	EtcdUsername, EtcdPasswordFile        string
	// LeaderID names this process in the election (default: host name,
	// which is the pod name in Kubernetes).
	LeaderID string
	// EventRetention is how many events the registry keeps.
	EventRetention int

	// StorageNodes are the agents to use (NAME=HOST:PORT), from repeated
	// --storage-node flags and StorageNodesFile (one per line).
	StorageNodes     listFlag
	StorageNodesFile string
	// Agent client: CA verifying the agents, the one name in all their
	// certificates (default: each agent's storage node name), the optional
	// token, and the provisioner's client certificate (role provisioner).
	AgentCAFile, AgentServerName, AgentTokenFile string
	AgentCertFile, AgentKeyFile                  string
	// AgentTimeout bounds each agent call of a capacity survey.
	AgentTimeout time.Duration

	// Syslog forwarding (disabled when SyslogAddress is empty).
	SyslogAddress, SyslogTransport string
	SyslogCAFile, SyslogServerName string
	SyslogFacility, SyslogQueueDir string
	SyslogQueueLimit               int

	// Kubernetes events on the PVCs and PVs of volumes: KubeEvents is
	// auto, true or false (kubeevents.Mode); Kubeconfig the client's
	// configuration (empty: the pod's service account).
	KubeEvents, Kubeconfig string
	KubeEventsQueue        int

	// SweepInterval: how often replicas of deleted volumes and host
	// allow-lists on storage nodes that were away are reconciled.
	SweepInterval time.Duration
	// RepairInterval: how often volumes no host has staged are checked
	// for offline repair (0 disables offline repair); RepairLease: how long
	// a storage node's repair runs without being asked about.
	RepairInterval, RepairLease time.Duration
	// CreatingTimeout: the age past which a volume still "creating" (its
	// create interrupted) is rolled back by the sweeper.
	CreatingTimeout time.Duration
	// FreezeTimeout bounds how long a snapshot holds a published volume's
	// writes on its node (the node thaws by itself after it).
	FreezeTimeout time.Duration
	// OrphanScanInterval: how often the agents' replicas are compared with
	// the registry (0 disables the scan); OrphanGrace: how long a replica
	// the registry let go of stays orphaned before it is deleted;
	// TombstoneRetention: how long deleted volumes are remembered for it.
	OrphanScanInterval, OrphanGrace, TombstoneRetention time.Duration
	// HealTimeUnit is the unit of maxReplicaDownTime for offline repairs.
	HealTimeUnit time.Duration
	// DrainInterval: how often draining storage nodes get their next
	// moves; MaxConcurrentMoves: how many moves drains keep in flight.
	DrainInterval      time.Duration
	MaxConcurrentMoves int
	// MaxReplacementsPerNode bounds concurrent replica replacements onto
	// one storage node (rebuild storms).
	MaxReplacementsPerNode int
	// ThinOvercommit lets placement promise thin replicas more than the
	// pools hold (1 = never).
	ThinOvercommit float64
	// CredentialScope: DH-HMAC-CHAP secrets per host and storage node, or
	// one set per host.
	CredentialScope string
}

// listFlag is a repeatable, comma-separable flag.
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

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	host, _ := os.Hostname()
	return Options{
		Listen:                 ":9500",
		ShutdownTimeout:        30 * time.Second,
		Store:                  "bolt",
		BoltPath:               "/var/lib/nvmirror/provisioner/registry.db",
		EtcdPrefix:             "/nvmirror/",
		LeaderID:               host,
		EventRetention:         store.DefaultEventRetention,
		AgentTimeout:           5 * time.Second,
		SyslogTransport:        "tcp",
		SyslogFacility:         events.DefaultFacility,
		SyslogQueueDir:         "/var/lib/nvmirror/provisioner",
		SyslogQueueLimit:       events.DefaultQueueLimit,
		KubeEvents:             string(kubeevents.ModeAuto),
		KubeEventsQueue:        kubeevents.DefaultQueueSize,
		SweepInterval:          30 * time.Second,
		RepairInterval:         30 * time.Second,
		DrainInterval:          15 * time.Second,
		MaxConcurrentMoves:     2,
		RepairLease:            2 * time.Minute,
		CreatingTimeout:        provisioner.DefaultCreatingTimeout,
		FreezeTimeout:          provisioner.DefaultFreezeTimeout,
		OrphanScanInterval:     10 * time.Minute,
		OrphanGrace:            provisioner.DefaultOrphanGrace,
		TombstoneRetention:     provisioner.DefaultTombstoneRetention,
		HealTimeUnit:           time.Minute,
		MaxReplacementsPerNode: 2,
		ThinOvercommit:         1,
		CredentialScope:        string(provisioner.ScopeStorageNode),
	}
}

// AddFlags registers the flags with o's values as defaults.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Listen, "listen", o.Listen, "gRPC listen address host:port")
	fs.StringVar(&o.TLSCertFile, "tls-cert-file", o.TLSCertFile, "server certificate (PEM)")
	fs.StringVar(&o.TLSKeyFile, "tls-key-file", o.TLSKeyFile, "server private key (PEM)")
	fs.StringVar(&o.TLSClientCAFile, "tls-client-ca-file", o.TLSClientCAFile, "CA bundle (PEM) every caller's client certificate must chain to (Subject CN: the caller, O: its role)")
	fs.StringVar(&o.TokenFile, "token-file", o.TokenFile, "optional: file holding a bearer token callers must also send")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", o.ShutdownTimeout, "how long SIGTERM waits for running calls")
	fs.StringVar(&o.HTTPAddress, "http-address", o.HTTPAddress, "host:port serving /healthz, /readyz and /metrics over plain HTTP (empty: off)")

	fs.StringVar(&o.Store, "store", o.Store, "registry backend: bolt (one file, one replica) or etcd (several replicas, leader election)")
	fs.StringVar(&o.BoltPath, "bolt-path", o.BoltPath, "[bolt] registry database file (absolute)")
	fs.Var(&o.EtcdEndpoints, "etcd-endpoints", "[etcd] endpoints, comma-separated or repeated (https://host:2379)")
	fs.StringVar(&o.EtcdPrefix, "etcd-prefix", o.EtcdPrefix, "[etcd] key prefix (two clusters may share an etcd)")
	fs.StringVar(&o.EtcdCAFile, "etcd-ca-file", o.EtcdCAFile, "[etcd] CA verifying etcd (PEM)")
	fs.StringVar(&o.EtcdCertFile, "etcd-cert-file", o.EtcdCertFile, "[etcd] client certificate (PEM)")
	fs.StringVar(&o.EtcdKeyFile, "etcd-key-file", o.EtcdKeyFile, "[etcd] client key (PEM)")
	fs.StringVar(&o.EtcdUsername, "etcd-username", o.EtcdUsername, "[etcd] user name")
	fs.StringVar(&o.EtcdPasswordFile, "etcd-password-file", o.EtcdPasswordFile, "[etcd] file holding the user's password")
	fs.StringVar(&o.LeaderID, "leader-id", o.LeaderID, "[etcd] this process's name in the leader election (default: host name)")
	fs.IntVar(&o.EventRetention, "event-retention", o.EventRetention, "events and audit records kept in the registry (oldest dropped)")

	fs.Var(&o.StorageNodes, "storage-node", "storage node agent NAME=HOST:PORT; repeat or comma-separate")
	fs.StringVar(&o.StorageNodesFile, "storage-nodes-file", o.StorageNodesFile, "file of storage nodes, one NAME=HOST:PORT per line (# comments)")
	fs.StringVar(&o.AgentCAFile, "agent-ca-file", o.AgentCAFile, "CA verifying the agents' certificates (PEM)")
	fs.StringVar(&o.AgentServerName, "agent-server-name", o.AgentServerName, "one name every agent's certificate must carry (default: each agent's storage node name, so that no storage node can answer for another)")
	fs.StringVar(&o.AgentTokenFile, "agent-token-file", o.AgentTokenFile, "optional: file holding the bearer token of agents started with --token-file")
	fs.StringVar(&o.AgentCertFile, "agent-cert-file", o.AgentCertFile, "the provisioner's client certificate for the agents (PEM, Subject O=provisioner)")
	fs.StringVar(&o.AgentKeyFile, "agent-key-file", o.AgentKeyFile, "the key of --agent-cert-file (PEM)")
	fs.DurationVar(&o.AgentTimeout, "agent-timeout", o.AgentTimeout, "bound on each agent call of a capacity survey")

	fs.StringVar(&o.SyslogAddress, "syslog-address", o.SyslogAddress, "syslog server host:port to forward events to (empty: no forwarding)")
	fs.StringVar(&o.SyslogTransport, "syslog-transport", o.SyslogTransport, "syslog transport: udp, tcp or tls")
	fs.StringVar(&o.SyslogCAFile, "syslog-ca-file", o.SyslogCAFile, "[tls] CA verifying the syslog server (PEM; default system roots)")
	fs.StringVar(&o.SyslogServerName, "syslog-server-name", o.SyslogServerName, "[tls] name expected in the syslog server's certificate (default: its host)")
	fs.StringVar(&o.SyslogFacility, "syslog-facility", o.SyslogFacility, "syslog facility (kern..local7 or 0-23)")
	fs.StringVar(&o.SyslogQueueDir, "syslog-queue-dir", o.SyslogQueueDir, "directory of the persistent forwarding queue (absolute; keep it on a volume)")
	fs.IntVar(&o.SyslogQueueLimit, "syslog-queue-limit", o.SyslogQueueLimit, "messages the queue holds before dropping the oldest")
	fs.StringVar(&o.KubeEvents, "kube-events", o.KubeEvents, "record volume events as Kubernetes events on their PVC and PV: auto (when in a pod or given --kubeconfig), true or false")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig of the Kubernetes API for --kube-events (empty: the pod's service account)")
	fs.IntVar(&o.KubeEventsQueue, "kube-events-queue", o.KubeEventsQueue, "events waiting for the Kubernetes API before new ones are dropped (counted)")

	fs.DurationVar(&o.SweepInterval, "sweep-interval", o.SweepInterval, "how often deletions and host allow-lists on returning storage nodes are reconciled")
	fs.DurationVar(&o.RepairInterval, "repair-interval", o.RepairInterval, "how often volumes published to no host are checked and repaired offline by a storage node (0 disables offline repair)")
	fs.DurationVar(&o.RepairLease, "repair-lease", o.RepairLease, "how long a storage node's offline repair runs without the provisioner asking before it stops itself (at least twice --repair-interval)")
	fs.DurationVar(&o.FreezeTimeout, "freeze-timeout", o.FreezeTimeout, "longest a snapshot holds a published volume's writes on its node while the copies are cut; the node thaws by itself after it, and a cut that takes longer fails and is retried (1s-30s; not above the nodes' --freeze-max-hold)")
	fs.DurationVar(&o.CreatingTimeout, "creating-timeout", o.CreatingTimeout, "age past which a volume still being created (its create interrupted, e.g. by a crash) is rolled back: replicas deleted, record removed (at least 1m)")
	fs.DurationVar(&o.OrphanScanInterval, "orphan-scan-interval", o.OrphanScanInterval, "how often the leader compares the replicas every storage node holds with the registry (0 disables the scan)")
	fs.DurationVar(&o.OrphanGrace, "orphan-grace", o.OrphanGrace, "how long a replica the registry let go of (deleted volume, removed replica) stays orphaned, from its first sight by the leader, before it is deleted")
	fs.DurationVar(&o.TombstoneRetention, "tombstone-retention", o.TombstoneRetention, "how long deleted volumes are remembered, so their orphan replicas may be reclaimed without an administrator (longer than --orphan-grace)")
	fs.DurationVar(&o.HealTimeUnit, "heal-time-unit", o.HealTimeUnit, "unit of the maxReplicaDownTime StorageClass parameter for offline repairs (tests shorten it; keep the node plugin's --heal-time-unit equal)")
	fs.DurationVar(&o.DrainInterval, "drain-interval", o.DrainInterval, "how often draining storage nodes (nvmirrorctl drain) get their next replica moves started")
	fs.IntVar(&o.MaxConcurrentMoves, "max-concurrent-moves", o.MaxConcurrentMoves, "replica moves drains keep in flight across the cluster (each is a full copy of a replica)")
	fs.IntVar(&o.MaxReplacementsPerNode, "max-replacements-per-node", o.MaxReplacementsPerNode, "concurrent replica replacements onto one storage node")
	fs.Float64Var(&o.ThinOvercommit, "thin-overcommit", o.ThinOvercommit, "ratio of thin provisioned bytes to pool size placement allows (>= 1)")
	fs.StringVar(&o.CredentialScope, "credential-scope", o.CredentialScope, "NVMe in-band authentication secrets: storage-node (one set per host and storage node) or host (one set per host, for storage-node agents sharing one kernel)")
}

// nodeName is what a storage node name may look like: a Kubernetes label
// value, since placement selectors (storageNodes=) name them.
var nodeName = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)

// StorageNodeAddr is one --storage-node.
type StorageNodeAddr struct{ Name, Address string }

// ParseStorageNodes reads the --storage-node values and the
// --storage-nodes-file, and checks every entry.
func (o *Options) ParseStorageNodes() ([]StorageNodeAddr, error) {
	type entry struct{ value, origin string }
	var entries []entry
	for _, v := range o.StorageNodes {
		entries = append(entries, entry{v, "--storage-node"})
	}
	if o.StorageNodesFile != "" {
		f, err := os.Open(o.StorageNodesFile)
		if err != nil {
			return nil, fmt.Errorf("--storage-nodes-file: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for line := 1; sc.Scan(); line++ {
			v := strings.TrimSpace(sc.Text())
			if v == "" || strings.HasPrefix(v, "#") {
				continue
			}
			entries = append(entries, entry{v, fmt.Sprintf("--storage-nodes-file %s:%d", o.StorageNodesFile, line)})
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("--storage-nodes-file: %w", err)
		}
	}
	var out []StorageNodeAddr
	seen := map[string]bool{}
	for _, e := range entries {
		name, addr, ok := strings.Cut(e.value, "=")
		if !ok || !nodeName.MatchString(name) {
			return nil, fmt.Errorf("%s %q: want NAME=HOST:PORT with NAME a label value (letters, digits, '-', '_', '.')", e.origin, e.value)
		}
		if host, port, err := net.SplitHostPort(addr); err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("%s %q: address %q is not HOST:PORT", e.origin, e.value, addr)
		}
		if seen[name] {
			return nil, fmt.Errorf("%s: storage node %s given twice", e.origin, name)
		}
		seen[name] = true
		out = append(out, StorageNodeAddr{Name: name, Address: addr})
	}
	return out, nil
}

// Validate checks every option and returns all problems at once, each
// naming its flag.
func (o *Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		bad("--listen %q: want host:port", o.Listen)
	}
	for flagName, v := range map[string]string{"--tls-cert-file": o.TLSCertFile, "--tls-key-file": o.TLSKeyFile, "--tls-client-ca-file": o.TLSClientCAFile,
		"--agent-cert-file": o.AgentCertFile, "--agent-key-file": o.AgentKeyFile} {
		if v == "" {
			bad("%s is required", flagName)
		}
	}
	if o.HTTPAddress != "" {
		if _, _, err := net.SplitHostPort(o.HTTPAddress); err != nil {
			bad("--http-address %q: want host:port", o.HTTPAddress)
		} else if o.HTTPAddress == o.Listen {
			bad("--http-address %q: the gRPC API already listens there (--listen)", o.HTTPAddress)
		}
	}
	switch provisioner.CredentialScope(o.CredentialScope) {
	case provisioner.ScopeStorageNode, provisioner.ScopeHost:
	default:
		bad("--credential-scope %q: want %s or %s", o.CredentialScope, provisioner.ScopeStorageNode, provisioner.ScopeHost)
	}
	if o.ShutdownTimeout <= 0 {
		bad("--shutdown-timeout %s: must be positive", o.ShutdownTimeout)
	}
	switch o.Store {
	case "bolt":
		if !filepath.IsAbs(o.BoltPath) {
			bad("--bolt-path %q: must be an absolute path", o.BoltPath)
		}
		if len(o.EtcdEndpoints) > 0 {
			bad("--etcd-endpoints given with --store=bolt: choose one backend")
		}
	case "etcd":
		if len(o.EtcdEndpoints) == 0 {
			bad("--etcd-endpoints is required with --store=etcd")
		}
		if o.LeaderID == "" {
			bad("--leader-id is required with --store=etcd (no host name found)")
		}
		if (o.EtcdCertFile == "") != (o.EtcdKeyFile == "") {
			bad("--etcd-cert-file and --etcd-key-file go together")
		}
		if (o.EtcdUsername == "") != (o.EtcdPasswordFile == "") {
			bad("--etcd-username and --etcd-password-file go together")
		}
	default:
		bad("--store %q: want bolt or etcd", o.Store)
	}
	if o.EventRetention <= 0 {
		bad("--event-retention %d: must be positive", o.EventRetention)
	}
	if nodes, err := o.ParseStorageNodes(); err != nil {
		errs = append(errs, err)
	} else if len(nodes) == 0 {
		bad("no storage nodes: give --storage-node NAME=HOST:PORT or --storage-nodes-file")
	}
	if o.AgentTimeout <= 0 {
		bad("--agent-timeout %s: must be positive", o.AgentTimeout)
	}
	if o.SyslogAddress != "" {
		if _, _, err := net.SplitHostPort(o.SyslogAddress); err != nil {
			bad("--syslog-address %q: want host:port", o.SyslogAddress)
		}
		switch o.SyslogTransport {
		case "udp", "tcp", "tls":
		default:
			bad("--syslog-transport %q: want udp, tcp or tls", o.SyslogTransport)
		}
		if (o.SyslogCAFile != "" || o.SyslogServerName != "") && o.SyslogTransport != "tls" {
			bad("--syslog-ca-file/--syslog-server-name need --syslog-transport=tls")
		}
		if _, err := events.ParseFacility(o.SyslogFacility); err != nil {
			bad("--syslog-facility: %v", err)
		}
		if !filepath.IsAbs(o.SyslogQueueDir) {
			bad("--syslog-queue-dir %q: must be an absolute path", o.SyslogQueueDir)
		}
		if o.SyslogQueueLimit <= 0 {
			bad("--syslog-queue-limit %d: must be positive", o.SyslogQueueLimit)
		}
	}
	if mode, err := kubeevents.ParseMode(o.KubeEvents); err != nil {
		bad("--kube-events %v", err)
	} else if mode == kubeevents.ModeOff && o.Kubeconfig != "" {
		bad("--kubeconfig is for Kubernetes events, which --kube-events=false turns off")
	}
	if o.KubeEventsQueue <= 0 {
		bad("--kube-events-queue %d: must be positive", o.KubeEventsQueue)
	}
	if o.RepairInterval < 0 {
		bad("--repair-interval %s: must be positive, or 0 to disable offline repair", o.RepairInterval)
	}
	if o.RepairInterval > 0 && o.RepairLease < 2*o.RepairInterval {
		bad("--repair-lease %s: must be at least twice --repair-interval (%s), or every repair stops between two checks", o.RepairLease, o.RepairInterval)
	}
	if o.HealTimeUnit <= 0 {
		bad("--heal-time-unit %s: must be positive", o.HealTimeUnit)
	}
	if o.SweepInterval <= 0 {
		bad("--sweep-interval %s: must be positive", o.SweepInterval)
	}
	if o.FreezeTimeout < time.Second || o.FreezeTimeout > 30*time.Second {
		bad("--freeze-timeout %s: must be between 1s and 30s (writes are held that long at most; nodes hold them no longer than their --freeze-max-hold, 30s by default)", o.FreezeTimeout)
	}
	if o.CreatingTimeout < time.Minute {
		bad("--creating-timeout %s: must be at least 1m, longer than any create takes", o.CreatingTimeout)
	}
	if o.OrphanScanInterval < 0 {
		bad("--orphan-scan-interval %s: must be positive, or 0 to disable the orphan scan", o.OrphanScanInterval)
	}
	if o.OrphanGrace <= 0 {
		bad("--orphan-grace %s: must be positive", o.OrphanGrace)
	}
	if o.TombstoneRetention <= o.OrphanGrace {
		bad("--tombstone-retention %s: must be longer than --orphan-grace (%s), or no orphan of a deleted volume is ever reclaimed", o.TombstoneRetention, o.OrphanGrace)
	}
	if o.MaxReplacementsPerNode <= 0 {
		bad("--max-replacements-per-node %d: must be positive", o.MaxReplacementsPerNode)
	}
	if o.DrainInterval <= 0 {
		bad("--drain-interval %s: must be positive", o.DrainInterval)
	}
	if o.MaxConcurrentMoves <= 0 {
		bad("--max-concurrent-moves %d: must be positive", o.MaxConcurrentMoves)
	}
	if o.ThinOvercommit < 1 {
		bad("--thin-overcommit %g: must be at least 1", o.ThinOvercommit)
	}
	return errors.Join(errs...)
}
