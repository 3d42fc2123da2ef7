// Command registrar is a test stand-in for kubernetes-csi's
// node-driver-registrar v2.16.0, the sidecar of deploy/base/node.yaml that
// announces the node plugin to kubelet. The real one is not a Go module the
// proxy serves (its images are built from its own repository), and the VM
// test of a real kubelet node only needs what kubelet sees of it, so this is
// a small rewrite of that:
//
//   - --csi-address: it waits for the driver's socket, retrying, and asks
//     Identity.GetPluginInfo for the driver's name;
//   - it serves kubelet's plugin registration API v1
//     (k8s.io/kubelet/pkg/apis/pluginregistration/v1) on
//     <--plugin-registration-path>/<driver name>-reg.sock, a stale socket
//     removed first: GetInfo answers Type "CSIPlugin", the driver's name,
//     --kubelet-registration-path as the endpoint and versions ["1.0.0"];
//     NotifyRegistrationStatus is logged, and a failed registration ends
//     the process with status 1 so that the container restarts and kubelet
//     tries again, as upstream does;
//   - --http-endpoint (off by default, as upstream): GET /healthz answers
//     200 "ok" while the registration socket exists and answers GetInfo
//     with the driver's name;
//   - SIGTERM or SIGINT: the socket is removed and the process exits 0.
//
// Not implemented: the deprecated --health-port, --mode, --connection-timeout
// and --timeout, --enable-pprof, Windows, and the logging configuration
// flags of component-base (klog's own flags, --v among them, are there).
// A flag the manifests add that this does not know fails at start, loudly.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// supportedVersions are the versions of kubelet's CSI plugin API the driver
// speaks, as upstream announces them.
var supportedVersions = []string{"1.0.0"}

type options struct {
	csiAddress              string
	kubeletRegistrationPath string
	pluginRegistrationPath  string
	httpEndpoint            string
	// retryInterval is how often the driver's socket is looked for and
	// GetPluginInfo retried while the driver is not up yet.
	retryInterval time.Duration
}

func (o *options) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.csiAddress, "csi-address", "/run/csi/socket", "path (or unix:// URL) of the CSI driver's socket, as this container sees it")
	fs.StringVar(&o.kubeletRegistrationPath, "kubelet-registration-path", "", "path of the CSI driver's socket on the host, which kubelet dials (required)")
	fs.StringVar(&o.pluginRegistrationPath, "plugin-registration-path", "/registration", "kubelet's plugin registration directory, as this container sees it")
	fs.StringVar(&o.httpEndpoint, "http-endpoint", "", "host:port of the HTTP server answering /healthz (whether the registration socket answers); empty: no HTTP server")
}

func (o *options) validate() error {
	if o.kubeletRegistrationPath == "" {
		return errors.New("--kubelet-registration-path is required")
	}
	if o.csiAddress == "" {
		return errors.New("--csi-address must not be empty")
	}
	return nil
}

func main() {
	klog.InitFlags(nil)
	o := options{retryInterval: time.Second}
	o.addFlags(flag.CommandLine)
	flag.Parse()
	if err := o.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "registrar: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o); err != nil {
		klog.ErrorS(err, "Registrar failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

// run waits for the driver, serves the registration socket until ctx ends
// (nil) or kubelet reports a failed registration (an error), and removes the
// socket in both cases.
func run(ctx context.Context, o options) error {
	name, err := driverName(ctx, o.csiAddress, o.retryInterval)
	if ctx.Err() != nil {
		return nil // stopped before the driver came up
	}
	if err != nil {
		return err
	}
	klog.InfoS("CSI driver found", "driver", name, "csiAddress", o.csiAddress)

	socket := filepath.Join(o.pluginRegistrationPath, name+"-reg.sock")
	// A socket left by a killed predecessor would make Listen fail.
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale registration socket: %w", err)
	}
	lis, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	defer os.Remove(socket)
	// Upstream creates it for its user only; kubelet runs as root.
	if err := os.Chmod(socket, 0o600); err != nil {
		lis.Close()
		return err
	}

	failed := make(chan error, 1)
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, &registration{
		driver:   name,
		endpoint: o.kubeletRegistrationPath,
		failed:   failed,
	})
	defer srv.Stop()
	served := make(chan error, 2)
	go func() { served <- srv.Serve(lis) }()
	klog.InfoS("Registration server started", "socket", socket, "endpoint", o.kubeletRegistrationPath)

	if o.httpEndpoint != "" {
		hs := &http.Server{Addr: o.httpEndpoint, Handler: healthHandler(socket, name), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := hs.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				served <- fmt.Errorf("http endpoint: %w", err)
			}
		}()
		defer hs.Close()
	}

	select {
	case <-ctx.Done():
		klog.InfoS("Stopping: removing the registration socket", "socket", socket)
		return nil
	case err := <-failed:
		// Let kubelet have its answer before the socket goes.
		srv.GracefulStop()
		return err
	case err := <-served:
		return err
	}
}

// registration is kubelet's view of the driver.
type registration struct {
	registerapi.UnimplementedRegistrationServer
	driver, endpoint string
	// failed receives kubelet's error when it could not register the driver.
	failed chan<- error
}

func (r *registration) GetInfo(ctx context.Context, _ *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	klog.V(4).InfoS("GetInfo called")
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.driver,
		Endpoint:          r.endpoint,
		SupportedVersions: supportedVersions,
	}, nil
}

func (r *registration) NotifyRegistrationStatus(ctx context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	klog.InfoS("Registration status from kubelet", "registered", s.PluginRegistered, "error", s.Error)
	if !s.PluginRegistered {
		// Upstream exits so that the container restarts and kubelet's
		// plugin watcher sees a new socket to try again with.
		err := fmt.Errorf("kubelet did not register the driver: %s", s.Error)
		select {
		case r.failed <- err:
		default:
		}
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// driverName asks the driver at address for its name, waiting for its socket
// and retrying every interval until it answers or ctx ends: the driver's
// container may start after this one.
func driverName(ctx context.Context, address string, interval time.Duration) (string, error) {
	path := strings.TrimPrefix(address, "unix://")
	// "unix:" takes relative paths too, "unix://" only absolute ones.
	conn, err := grpc.NewClient("unix:"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// gRPC's default reconnect backoff grows to two minutes; the
		// driver's socket should be picked up as soon as it is there.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: interval / 4, Multiplier: 1.6, MaxDelay: interval}, MinConnectTimeout: interval}))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	identity := csi.NewIdentityClient(conn)
	lastLog := time.Time{}
	for {
		info, err := getPluginInfo(ctx, path, identity, interval)
		if err == nil {
			if info.GetName() == "" {
				// Nothing to retry: the driver answered.
				return "", errors.New("the CSI driver returned an empty name")
			}
			return info.GetName(), nil
		}
		if time.Since(lastLog) >= 10*time.Second {
			klog.InfoS("Waiting for the CSI driver", "csiAddress", address, "err", err)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(interval):
		}
	}
}

func getPluginInfo(ctx context.Context, path string, identity csi.IdentityClient, timeout time.Duration) (*csi.GetPluginInfoResponse, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, max(timeout, time.Second))
	defer cancel()
	return identity.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
}

// healthHandler answers /healthz: 200 while the registration socket exists
// and answers GetInfo with the driver's name, as upstream checks it.
func healthHandler(socket, driver string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, req *http.Request) {
		if _, err := os.Stat(socket); err != nil {
			http.Error(w, "registration socket does not exist", http.StatusNotFound)
			return
		}
		if err := checkSocket(req.Context(), socket, driver); err != nil {
			klog.ErrorS(err, "Health check failed")
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write([]byte("ok"))
	})
	return mux
}

func checkSocket(ctx context.Context, socket, driver string) error {
	conn, err := grpc.NewClient("unix:"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	info, err := registerapi.NewRegistrationClient(conn).GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		return fmt.Errorf("registration socket does not answer: %w", err)
	}
	if info.Name != driver {
		return fmt.Errorf("registration socket names driver %q, want %q", info.Name, driver)
	}
	return nil
}
