// Command livenessprobe is a test stand-in for kubernetes-csi's livenessprobe
// v2.19.0, the sidecar of deploy/base/node.yaml and controller.yaml that
// turns kubelet's HTTP liveness probe into the driver's CSI Probe. The real
// one is not a Go module the proxy serves, and the VM test of a real kubelet
// node only needs its HTTP answer, so this is a small rewrite of that:
//
//   - GET /healthz on 0.0.0.0:--health-port dials --csi-address and calls
//     Identity.Probe, the whole bounded by --probe-timeout: 200 "ok" when
//     the driver is ready (or leaves ready unset, which the CSI spec says
//     means ready), 500 with the reason otherwise (not ready, the call's
//     error, the timeout, no socket).
//
// Not implemented: --http-endpoint and --metrics-address/--metrics-path
// (deploy/ sets neither: no metrics), the driver's name asked for at start
// (upstream only logs it), and component-base's logging flags (klog's own
// flags, --v among them, are there). A flag the manifests add that this
// does not know fails at start, loudly.
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
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"
)

type options struct {
	csiAddress   string
	healthPort   string
	probeTimeout time.Duration
}

func (o *options) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.csiAddress, "csi-address", "/run/csi/socket", "path (or unix:// URL) of the CSI driver's socket")
	fs.StringVar(&o.healthPort, "health-port", "9808", "TCP port of /healthz, on every address")
	fs.DurationVar(&o.probeTimeout, "probe-timeout", 3*time.Second, "bound on one probe: connecting to the driver and its Probe call")
}

func main() {
	klog.InitFlags(nil)
	var o options
	o.addFlags(flag.CommandLine)
	flag.Parse()
	if o.probeTimeout <= 0 {
		fmt.Fprintln(os.Stderr, "livenessprobe: --probe-timeout must be positive")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := &http.Server{
		Addr:              net.JoinHostPort("0.0.0.0", o.healthPort),
		Handler:           handler(o.csiAddress, o.probeTimeout),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	klog.InfoS("Serving /healthz", "address", srv.Addr, "csiAddress", o.csiAddress, "probeTimeout", o.probeTimeout)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		klog.ErrorS(err, "HTTP server failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

// handler serves /healthz for the driver at csiAddress.
func handler(csiAddress string, timeout time.Duration) http.Handler {
	// "unix:" takes relative paths too, "unix://" only absolute ones.
	target := "unix:" + strings.TrimPrefix(csiAddress, "unix://")
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), timeout)
		defer cancel()
		if err := probe(ctx, target); err != nil {
			klog.ErrorS(err, "Health check failed", "csiAddress", csiAddress)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		klog.V(5).InfoS("Health check succeeded")
		w.Write([]byte("ok"))
	})
	return mux
}

// probe asks the driver whether it is ready. A connection of its own each
// time, as upstream: a restarted driver is seen at once, with no client
// backoff in between.
func probe(ctx context.Context, target string) error {
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	// WaitForReady: a driver still creating its socket gets the whole
	// timeout rather than failing on the first refused connection.
	resp, err := csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("probe of the CSI driver: %w", err)
	}
	if r := resp.GetReady(); r != nil && !r.GetValue() {
		return errors.New("driver responded but is not ready")
	}
	return nil
}
