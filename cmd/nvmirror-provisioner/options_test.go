package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/prometheus/client_golang/prometheus"
)

// valid returns options that pass Validate.
func valid() Options {
	o := DefaultOptions()
	o.TLSCertFile, o.TLSKeyFile, o.TLSClientCAFile = "/tls/tls.crt", "/tls/tls.key", "/ca/ca.crt"
	o.AgentCertFile, o.AgentKeyFile = "/agent/tls.crt", "/agent/tls.key"
	o.StorageNodes = listFlag{"sn-1=10.0.0.1:9400"}
	return o
}

func TestValidate(t *testing.T) {
	if err := func() error { o := valid(); return o.Validate() }(); err != nil {
		t.Fatalf("valid options: %v", err)
	}
	tests := []struct {
		name   string
		modify func(*Options)
		flag   string
	}{
		{"listen", func(o *Options) { o.Listen = "9500" }, "--listen"},
		{"no cert", func(o *Options) { o.TLSCertFile = "" }, "--tls-cert-file"},
		{"no client CA", func(o *Options) { o.TLSClientCAFile = "" }, "--tls-client-ca-file"},
		{"no agent certificate", func(o *Options) { o.AgentCertFile = "" }, "--agent-cert-file"},
		{"shutdown", func(o *Options) { o.ShutdownTimeout = 0 }, "--shutdown-timeout"},
		{"store", func(o *Options) { o.Store = "sqlite" }, "--store"},
		{"relative bolt path", func(o *Options) { o.BoltPath = "registry.db" }, "--bolt-path"},
		{"etcd endpoints with bolt", func(o *Options) { o.EtcdEndpoints = listFlag{"http://e:2379"} }, "--etcd-endpoints"},
		{"etcd without endpoints", func(o *Options) { o.Store = "etcd" }, "--etcd-endpoints"},
		{"etcd cert without key", func(o *Options) {
			o.Store, o.EtcdEndpoints, o.EtcdCertFile = "etcd", listFlag{"https://e:2379"}, "/c"
		}, "--etcd-key-file"},
		{"etcd user without password", func(o *Options) {
			o.Store, o.EtcdEndpoints, o.EtcdUsername = "etcd", listFlag{"https://e:2379"}, "nvmirror"
		}, "--etcd-password-file"},
		{"retention", func(o *Options) { o.EventRetention = 0 }, "--event-retention"},
		{"drain interval", func(o *Options) { o.DrainInterval = 0 }, "--drain-interval"},
		{"concurrent moves", func(o *Options) { o.MaxConcurrentMoves = -1 }, "--max-concurrent-moves"},
		{"no storage nodes", func(o *Options) { o.StorageNodes = nil }, "--storage-node"},
		{"storage node without address", func(o *Options) { o.StorageNodes = listFlag{"sn-1"} }, "--storage-node"},
		{"storage node bad name", func(o *Options) { o.StorageNodes = listFlag{"sn 1=10.0.0.1:9400"} }, "--storage-node"},
		{"storage node bad address", func(o *Options) { o.StorageNodes = listFlag{"sn-1=10.0.0.1"} }, "--storage-node"},
		{"storage node twice", func(o *Options) { o.StorageNodes = listFlag{"sn-1=a:1", "sn-1=b:1"} }, "twice"},
		{"storage nodes file missing", func(o *Options) { o.StorageNodesFile = "/nonexistent/nodes" }, "--storage-nodes-file"},
		{"agent cert without key", func(o *Options) { o.AgentKeyFile = "" }, "--agent-key-file"},
		{"agent timeout", func(o *Options) { o.AgentTimeout = -time.Second }, "--agent-timeout"},
		{"syslog address", func(o *Options) { o.SyslogAddress = "syslog" }, "--syslog-address"},
		{"syslog transport", func(o *Options) { o.SyslogAddress, o.SyslogTransport = "s:514", "relp" }, "--syslog-transport"},
		{"syslog CA without tls", func(o *Options) { o.SyslogAddress, o.SyslogCAFile = "s:514", "/ca" }, "--syslog-transport=tls"},
		{"syslog facility", func(o *Options) { o.SyslogAddress, o.SyslogFacility = "s:514", "local9" }, "--syslog-facility"},
		{"syslog queue dir", func(o *Options) { o.SyslogAddress, o.SyslogQueueDir = "s:514", "queue" }, "--syslog-queue-dir"},
		{"kube events", func(o *Options) { o.KubeEvents = "yes" }, "--kube-events"},
		{"kubeconfig with kube events off", func(o *Options) { o.KubeEvents, o.Kubeconfig = "false", "/kubeconfig" }, "--kubeconfig"},
		{"kube events queue", func(o *Options) { o.KubeEventsQueue = 0 }, "--kube-events-queue"},
		{"sweep interval", func(o *Options) { o.SweepInterval = 0 }, "--sweep-interval"},
		{"creating timeout", func(o *Options) { o.CreatingTimeout = 10 * time.Second }, "--creating-timeout"},
		{"freeze timeout", func(o *Options) { o.FreezeTimeout = 5 * time.Minute }, "--freeze-timeout"},
		{"orphan scan interval", func(o *Options) { o.OrphanScanInterval = -time.Second }, "--orphan-scan-interval"},
		{"orphan grace", func(o *Options) { o.OrphanGrace = 0 }, "--orphan-grace"},
		{"tombstone retention", func(o *Options) { o.TombstoneRetention = o.OrphanGrace }, "--tombstone-retention"},
		{"replacements", func(o *Options) { o.MaxReplacementsPerNode = 0 }, "--max-replacements-per-node"},
		{"overcommit", func(o *Options) { o.ThinOvercommit = 0.5 }, "--thin-overcommit"},
		{"credential scope", func(o *Options) { o.CredentialScope = "volume" }, "--credential-scope"},
	}
	for _, tc := range tests {
		o := valid()
		tc.modify(&o)
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.flag)
		}
	}
}

func TestParseStorageNodes(t *testing.T) {
	file := filepath.Join(t.TempDir(), "nodes")
	if err := os.WriteFile(file, []byte("# storage nodes\nsn-2=10.0.0.2:9400\n\n  sn-3=[fd00::3]:9400  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := valid()
	o.StorageNodesFile = file
	got, err := o.ParseStorageNodes()
	want := []StorageNodeAddr{{"sn-1", "10.0.0.1:9400"}, {"sn-2", "10.0.0.2:9400"}, {"sn-3", "[fd00::3]:9400"}}
	if err != nil || len(got) != len(want) {
		t.Fatalf("ParseStorageNodes = %v, %v", got, err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("node %d = %v, want %v", i, got[i], want[i])
		}
	}
	if err := os.WriteFile(file, []byte("sn-2=10.0.0.2:9400\nbroken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := o.ParseStorageNodes(); err == nil || !strings.Contains(err.Error(), file+":2") {
		t.Errorf("bad line: %v, want the file and line named", err)
	}
}

// TestKubeEventSinkModes: off and auto outside a cluster run without the
// sink; true without any cluster refuses to start, naming the flag; a
// kubeconfig turns it on.
func TestKubeEventSinkModes(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	reg := prometheus.NewRegistry()
	for _, mode := range []string{"false", "auto"} {
		o := valid()
		o.KubeEvents = mode
		if s, err := newKubeEventSink(o, nil, reg); s != nil || err != nil {
			t.Errorf("--kube-events=%s outside a cluster: %v %v", mode, s, err)
		}
	}
	o := valid()
	o.KubeEvents = "true"
	if _, err := newKubeEventSink(o, nil, reg); err == nil || !strings.Contains(err.Error(), "--kube-events") {
		t.Errorf("--kube-events=true outside a cluster: %v", err)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	o.KubeEvents, o.Kubeconfig = "auto", kc
	s, err := newKubeEventSink(o, fakeVolumes{}, reg)
	if err != nil || s == nil {
		t.Errorf("--kubeconfig: sink %v, %v", s, err)
	}
}

type fakeVolumes struct{}

func (fakeVolumes) GetVolume(context.Context, string) (*store.Volume, error) {
	return nil, store.ErrNotFound
}
