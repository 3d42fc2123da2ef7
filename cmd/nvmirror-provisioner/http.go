package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// readyCheckTimeout bounds the registry read of one /readyz: longer than an
// etcd quorum read on a healthy cluster, shorter than a kubelet probe's
// usual timeoutSeconds, so a hung etcd makes the probe fail rather than
// time out.
const readyCheckTimeout = 3 * time.Second

// statusServer is the plain-HTTP endpoint of --http-address, for kubelet
// probes and Prometheus: the gRPC API (and its health service) is behind
// TLS and the bearer token, which neither can present.
//
//   - /healthz: 200 while the process serves HTTP at all. Liveness must not
//     depend on etcd: restarting the provisioner does not bring etcd back,
//     and restarting every replica at once during an etcd outage only adds
//     a thundering herd when it returns.
//   - /readyz: 200 once the registry is open and a read of it succeeds
//     (bolt: the file; etcd: a linearizable read, so a partitioned or
//     quorum-less etcd fails it); 503 before that and from SIGTERM on.
//     Leadership is reported in the body but is not a readiness condition:
//     with etcd a rolling update starts the new pod while the old one still
//     leads, and the old one only resigns after the new one is Ready, so
//     "ready = leader" would stall every rollout. A standby answers calls
//     that need the leader with Unavailable, and a CSI driver keeps its one
//     connection to whichever pod it reached, so deploy/ runs a single
//     replica and a standby exists only for the length of a rollout.
//   - /metrics: the Prometheus registry.
type statusServer struct {
	store    atomic.Pointer[storeRef]
	stopping atomic.Bool
	reg      prometheus.Gatherer
	srv      *http.Server
	addr     string
	done     chan struct{}
}

// storeRef wraps the interface so it fits an atomic.Pointer.
type storeRef struct{ store.Store }

// newStatusServer returns the handler side of the status endpoint; serve
// it with start, or use Handler directly (tests).
func newStatusServer(reg prometheus.Gatherer) *statusServer {
	return &statusServer{reg: reg}
}

// startStatusServer listens on addr and serves until Close. An empty addr
// returns nil: every method of a nil *statusServer is a no-op, so run needs
// no conditionals.
func startStatusServer(addr string, reg prometheus.Gatherer) (*statusServer, error) {
	if addr == "" {
		return nil, nil
	}
	s := newStatusServer(reg)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http-address: %w", err)
	}
	s.addr = ln.Addr().String()
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "HTTP status endpoint stopped", "address", s.addr)
		}
	}()
	klog.InfoS("Serving /healthz, /readyz and /metrics", "address", s.addr)
	return s, nil
}

// Handler routes the three paths.
func (s *statusServer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	return mux
}

func (s *statusServer) readyz(w http.ResponseWriter, r *http.Request) {
	notReady := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		klog.V(2).InfoS("Not ready", "reason", msg)
		http.Error(w, msg, http.StatusServiceUnavailable)
	}
	if s.stopping.Load() {
		notReady("stopping: SIGTERM received, finishing running calls")
		return
	}
	ref := s.store.Load()
	if ref == nil {
		notReady("starting: the registry is not open yet")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyCheckTimeout)
	defer cancel()
	// The storage node list is small and read by every CreateVolume
	// anyway: the cheapest read that proves the registry answers.
	if _, err := ref.ListStorageNodes(ctx); err != nil {
		notReady("registry unreachable: %v", err)
		return
	}
	role := "standby (another provisioner leads; calls that change volumes are refused with Unavailable until this one is elected)"
	if ref.IsLeader() {
		role = "leader"
	}
	fmt.Fprintf(w, "ok\nrole: %s\n", role)
}

// SetStore makes /readyz check st from now on.
func (s *statusServer) SetStore(st store.Store) {
	if s != nil {
		s.store.Store(&storeRef{st})
	}
}

// SetStopping makes /readyz fail from now on, so the Service stops sending
// new connections while running calls finish.
func (s *statusServer) SetStopping() {
	if s != nil {
		s.stopping.Store(true)
	}
}

// Close stops serving; probes in flight may finish for a short while.
func (s *statusServer) Close() {
	if s == nil || s.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	<-s.done
}

// Addr is the address served (tests pass port 0).
func (s *statusServer) Addr() string {
	if s == nil {
		return ""
	}
	return s.addr
}
