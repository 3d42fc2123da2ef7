package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/nvmirror/nvmirror/test/standins/internal/deployargs"
)

const driver = "csi.nvmirror.io"

type fakeIdentity struct {
	csi.UnimplementedIdentityServer
	name string
}

func (f *fakeIdentity) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: f.name, VendorVersion: "test"}, nil
}

// serveIdentity serves a fake CSI identity service on a unix socket at path.
func serveIdentity(t *testing.T, path, name string) {
	t.Helper()
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	csi.RegisterIdentityServer(srv, &fakeIdentity{name: name})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
}

// socketDir is a short temporary directory: a unix socket's path is limited
// to 108 bytes, which t.TempDir's long names can exceed.
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "reg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

type running struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when run returned err
	err    error
}

func start(t *testing.T, o options) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = run(ctx, o)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("run did not return after cancel")
		}
	})
	return r
}

func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return")
		return nil
	}
}

func registrationClient(t *testing.T, socket string) registerapi.RegistrationClient {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("registration socket %s never appeared", socket)
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return registerapi.NewRegistrationClient(conn)
}

func testOptions(dir string) options {
	return options{
		csiAddress:              filepath.Join(dir, "csi.sock"),
		kubeletRegistrationPath: "/var/lib/kubelet/plugins/csi.nvmirror.io/csi.sock",
		pluginRegistrationPath:  filepath.Join(dir, "registration"),
		retryInterval:           50 * time.Millisecond,
	}
}

// The driver's socket appears after the registrar started (its container may
// start later); the registrar waits for it, then answers kubelet's GetInfo
// with the driver's name and the host path of its socket, and removes its
// socket when stopped.
func TestRegistersDriverStartedLater(t *testing.T) {
	dir := socketDir(t)
	o := testOptions(dir)
	if err := os.Mkdir(o.pluginRegistrationPath, 0o755); err != nil {
		t.Fatal(err)
	}
	// A socket file left by a killed predecessor.
	socket := filepath.Join(o.pluginRegistrationPath, driver+"-reg.sock")
	if err := os.WriteFile(socket, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := start(t, o)
	time.Sleep(200 * time.Millisecond) // several retries with no driver
	serveIdentity(t, o.csiAddress, driver)

	client := registrationClient(t, socket)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := client.GetInfo(ctx, &registerapi.InfoRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != "CSIPlugin" || info.Name != driver || info.Endpoint != o.kubeletRegistrationPath ||
		len(info.SupportedVersions) != 1 || info.SupportedVersions[0] != "1.0.0" {
		t.Errorf("GetInfo = %v", info)
	}
	if fi, err := os.Stat(socket); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("registration socket: %v, %v; want a socket with mode 0600", fi.Mode(), err)
	}
	if _, err := client.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.done:
		t.Fatalf("run returned after a successful registration: %v", r.err)
	case <-time.After(100 * time.Millisecond):
	}

	r.cancel()
	if err := r.wait(t); err != nil {
		t.Errorf("run after cancel = %v, want nil", err)
	}
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("registration socket after stop: %v, want it removed", err)
	}
}

// kubelet reporting a failed registration ends the registrar with an error
// (the container restarts, as upstream's does).
func TestFailedRegistrationEndsRun(t *testing.T) {
	dir := socketDir(t)
	o := testOptions(dir)
	o.csiAddress = "unix://" + o.csiAddress // the URL form is accepted too
	os.Mkdir(o.pluginRegistrationPath, 0o755)
	serveIdentity(t, strings.TrimPrefix(o.csiAddress, "unix://"), driver)
	r := start(t, o)
	socket := filepath.Join(o.pluginRegistrationPath, driver+"-reg.sock")
	client := registrationClient(t, socket)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: false, Error: "version 9.9.9 unsupported"}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	err := r.wait(t)
	if err == nil || !strings.Contains(err.Error(), "version 9.9.9 unsupported") {
		t.Errorf("run = %v, want kubelet's error", err)
	}
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("registration socket after failure: %v, want it removed", err)
	}
}

// --http-endpoint's /healthz checks the registration socket answers.
func TestHealthz(t *testing.T) {
	dir := socketDir(t)
	o := testOptions(dir)
	os.Mkdir(o.pluginRegistrationPath, 0o755)
	serveIdentity(t, o.csiAddress, driver)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.httpEndpoint = lis.Addr().String()
	lis.Close()
	start(t, o)
	registrationClient(t, filepath.Join(o.pluginRegistrationPath, driver+"-reg.sock"))

	var code int
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + o.httpEndpoint + "/healthz")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		code, body = resp.StatusCode, string(b)
		if code == http.StatusOK {
			break
		}
	}
	if code != http.StatusOK || body != "ok" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}

	// A handler for a socket that is gone, or names another driver.
	h := healthHandler(filepath.Join(dir, "absent.sock"), driver)
	if got := get(t, h); got != http.StatusNotFound {
		t.Errorf("/healthz without socket = %d, want 404", got)
	}
	h = healthHandler(filepath.Join(o.pluginRegistrationPath, driver+"-reg.sock"), "other.example.com")
	if got := get(t, h); got != http.StatusInternalServerError {
		t.Errorf("/healthz of another driver's name = %d, want 500", got)
	}
}

func get(t *testing.T, h http.Handler) int {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	return rec.Code
}

// Stopped before the driver ever appeared: a clean stop too (SIGTERM is how
// kubelet ends a pod whose driver never came up).
func TestStopWhileWaitingForDriver(t *testing.T) {
	o := testOptions(socketDir(t))
	r := start(t, o)
	time.Sleep(100 * time.Millisecond)
	r.cancel()
	if err := r.wait(t); err != nil {
		t.Errorf("run = %v, want nil", err)
	}
}

func TestValidate(t *testing.T) {
	o := options{csiAddress: "/csi/csi.sock", pluginRegistrationPath: "/registration"}
	if err := o.validate(); err == nil || !strings.Contains(err.Error(), "--kubelet-registration-path") {
		t.Errorf("validate without --kubelet-registration-path = %v", err)
	}
	o.kubeletRegistrationPath = "/var/lib/kubelet/plugins/csi.nvmirror.io/csi.sock"
	if err := o.validate(); err != nil {
		t.Errorf("validate = %v", err)
	}
}

// The arguments deploy/ gives node-driver-registrar are flags of this
// stand-in, and valid.
func TestDeployArgsParse(t *testing.T) {
	argLists := deployargs.Of(t, "sig-storage/csi-node-driver-registrar:")
	if len(argLists) != 1 {
		t.Fatalf("found the registrar in %d workloads of deploy/base, want the node's", len(argLists))
	}
	fs := flag.NewFlagSet("registrar", flag.ContinueOnError)
	klog.InitFlags(fs)
	var o options
	o.addFlags(fs)
	if err := fs.Parse(argLists[0]); err != nil {
		t.Fatalf("%q: %v", argLists[0], err)
	}
	if err := o.validate(); err != nil {
		t.Errorf("%q: %v", argLists[0], err)
	}
	if o.kubeletRegistrationPath != "/var/lib/kubelet/plugins/csi.nvmirror.io/csi.sock" || o.pluginRegistrationPath != "/registration" {
		t.Errorf("%q parsed to %+v", argLists[0], o)
	}
}
