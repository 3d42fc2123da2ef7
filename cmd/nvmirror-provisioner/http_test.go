package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/boltstore"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/etcdstore"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/etcdstore/etcdtest"
	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

// standby is a store another provisioner leads.
type standby struct{ store.Store }

func (standby) IsLeader() bool { return false }

// unreachable is an etcd that does not answer.
type unreachable struct{ store.Store }

func (unreachable) ListStorageNodes(context.Context) ([]*store.StorageNode, error) {
	return nil, errors.New("context deadline exceeded")
}

func TestStatusEndpoints(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "registry.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "nvmirror_provisioner_test_total", Help: "test"})
	reg.MustRegister(c)
	s := newStatusServer(reg)
	h := s.Handler()

	for _, tc := range []struct {
		name     string
		setup    func()
		code     int
		contains string
	}{
		{"before the registry opens", func() {}, 503, "starting"},
		{"bolt (always leads)", func() { s.SetStore(st) }, 200, "role: leader"},
		{"etcd standby: ready, not leader", func() { s.SetStore(standby{st}) }, 200, "role: standby"},
		{"registry unreachable", func() { s.SetStore(unreachable{st}) }, 503, "registry unreachable: context deadline exceeded"},
		{"after SIGTERM", func() { s.SetStore(st); s.SetStopping() }, 503, "stopping"},
	} {
		tc.setup()
		code, body := get(t, h, "/readyz")
		if code != tc.code || !strings.Contains(body, tc.contains) {
			t.Errorf("%s: /readyz = %d %q, want %d containing %q", tc.name, code, body, tc.code, tc.contains)
		}
		// Liveness never depends on the registry or on shutdown.
		if code, body := get(t, h, "/healthz"); code != 200 || body != "ok\n" {
			t.Errorf("%s: /healthz = %d %q", tc.name, code, body)
		}
	}
	if code, body := get(t, h, "/metrics"); code != 200 || !strings.Contains(body, "nvmirror_provisioner_test_total 0") {
		t.Errorf("/metrics = %d %q", code, body)
	}
	if code, _ := get(t, h, "/"); code != 404 {
		t.Errorf("/ = %d, want 404", code)
	}

	// --http-address empty: a nil server, every call a no-op.
	var off *statusServer
	off, err = startStatusServer("", reg)
	if off != nil || err != nil {
		t.Fatalf("startStatusServer(\"\") = %v, %v", off, err)
	}
	off.SetStore(st)
	off.SetStopping()
	off.Close()

	// A taken port is an error naming the flag.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := startStatusServer(ln.Addr().String(), reg); err == nil || !strings.Contains(err.Error(), "--http-address") {
		t.Errorf("taken port: %v, want an error naming --http-address", err)
	}
}

func TestHTTPAddressValidation(t *testing.T) {
	base := requiredFlags()
	if o, _, err := parse(append(base, "--http-address=:9501")...); err != nil || o.HTTPAddress != ":9501" {
		t.Errorf("--http-address=:9501: %+v, %v", o.HTTPAddress, err)
	}
	if o, _, err := parse(base...); err != nil || o.HTTPAddress != "" {
		t.Errorf("default --http-address %q, %v, want off", o.HTTPAddress, err)
	}
	for _, v := range []string{"nowhere", ":9500"} {
		if _, _, err := parse(append(base, "--http-address="+v)...); err == nil || !strings.Contains(err.Error(), "--http-address") {
			t.Errorf("--http-address=%s: %v, want an error naming the flag", v, err)
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func httpGet(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestRunServesStatusEndpoint runs the whole process with --http-address:
// the probes answer, and /metrics shows the registry, the storage node
// survey, syslog forwarding and the gRPC calls just made.
func TestRunServesStatusEndpoint(t *testing.T) {
	dir := t.TempDir()
	tlsFlags, client := testCredentials(t, dir)
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("client-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	httpAddr := freePort(t)
	o, _, err := parse(append(tlsFlags, "--listen=127.0.0.1:0", "--http-address="+httpAddr, "--token-file="+token,
		"--storage-node=sn-1=127.0.0.1:1", "--bolt-path="+filepath.Join(dir, "db", "registry.db"),
		"--syslog-address=127.0.0.1:1", "--syslog-queue-dir="+filepath.Join(dir, "queue"), "--agent-timeout=1s")...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, func(a string) { addrc <- a }) }()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("run ended before serving: %v", err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 15*time.Second)
	defer ccancel()
	base := "http://" + httpAddr
	if code, body, err := httpGet(cctx, base+"/healthz"); err != nil || code != 200 {
		t.Fatalf("/healthz = %d %q, %v", code, body, err)
	}
	if code, body, err := httpGet(cctx, base+"/readyz"); err != nil || code != 200 || !strings.Contains(body, "role: leader") {
		t.Fatalf("/readyz = %d %q, %v", code, body, err)
	}

	client.TokenFile = token
	conn, err := rpcauth.Dial(addr, client)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := provisionerclient.New(conn).ListStorageNodes(cctx); err != nil {
		t.Fatal(err)
	}
	client.TokenFile, client.Token = "", "wrong"
	bad, err := rpcauth.Dial(addr, client)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := provisionerclient.New(bad).ListStorageNodes(cctx); err == nil {
		t.Fatal("a wrong token was accepted")
	}

	code, body, err := httpGet(cctx, base+"/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics = %d, %v", code, err)
	}
	for _, want := range []string{
		`nvmirror_provisioner_grpc_requests_total{code="OK",method="ListStorageNodes",service="nvmirror.provisioner.v1.Provisioner"} 1`,
		`nvmirror_provisioner_grpc_requests_total{code="Unauthenticated",method="ListStorageNodes",service="nvmirror.provisioner.v1.Provisioner"} 1`,
		`nvmirror_provisioner_leader 1`,
		`nvmirror_provisioner_registry_up 1`,
		`nvmirror_provisioner_volumes{state="ready"} 0`,
		`nvmirror_provisioner_storage_node_up{storage_node="sn-1"} 0`,
		`nvmirror_provisioner_storage_nodes{state="unreachable"} 1`,
		`nvmirror_provisioner_syslog_connected 0`,
		`nvmirror_provisioner_syslog_dropped_total 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop after cancel")
	}
	// The endpoint goes away with the process.
	if _, _, err := httpGet(context.Background(), base+"/healthz"); err == nil {
		t.Error("/healthz still answers after run returned")
	}
}

// TestReadyzWithEtcd runs /readyz over a real etcd: ready as a standby
// (leadership is reported, not required), ready as the leader, and not
// ready once etcd is gone (a linearizable read fails within the check's
// timeout).
func TestReadyzWithEtcd(t *testing.T) {
	bin := etcdtest.Binary()
	if bin == "" {
		if os.Getenv(etcdtest.RequireEnv) == "1" {
			t.Fatal(etcdtest.RequireEnv + "=1 but no etcd binary (apt-get install etcd-server)")
		}
		t.Skip(etcdtest.ErrNoEtcd)
	}
	srv, err := etcdtest.Start(bin)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			srv.Stop()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: []string{srv.Endpoint}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := newStatusServer(prometheus.NewRegistry())
	s.SetStore(st)
	h := s.Handler()
	if code, body := get(t, h, "/readyz"); code != 200 || !strings.Contains(body, "role: standby") {
		t.Errorf("before the election: /readyz = %d %q, want 200 standby", code, body)
	}
	leader, err := st.Leader(ctx, "p-1")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-leader:
		if !l {
			t.Fatal("lost an election with no other candidate")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("not elected within 20s")
	}
	if code, body := get(t, h, "/readyz"); code != 200 || !strings.Contains(body, "role: leader") {
		t.Errorf("elected: /readyz = %d %q, want 200 leader", code, body)
	}
	srv.Stop()
	stopped = true
	start := time.Now()
	code, body := get(t, h, "/readyz")
	if code != 503 || !strings.Contains(body, "registry unreachable") {
		t.Errorf("etcd stopped: /readyz = %d %q, want 503 registry unreachable", code, body)
	}
	if d := time.Since(start); d > readyCheckTimeout+2*time.Second {
		t.Errorf("/readyz took %v with etcd gone, want at most about %v", d, readyCheckTimeout)
	}
	if code, _ := get(t, h, "/healthz"); code != 200 {
		t.Errorf("/healthz = %d with etcd gone: liveness must not depend on the registry", code)
	}
}
