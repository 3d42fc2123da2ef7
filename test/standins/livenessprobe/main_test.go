package main

import (
	"context"
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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/test/standins/internal/deployargs"
)

type fakeIdentity struct {
	csi.UnimplementedIdentityServer
	probe func(context.Context) (*csi.ProbeResponse, error)
}

func (f *fakeIdentity) Probe(ctx context.Context, _ *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return f.probe(ctx)
}

// serveIdentity serves a fake CSI identity service answering Probe with
// probe, and returns the address to give --csi-address.
func serveIdentity(t *testing.T, probe func(context.Context) (*csi.ProbeResponse, error)) string {
	t.Helper()
	// Not t.TempDir: a unix socket's path is limited to 108 bytes.
	dir, err := os.MkdirTemp("", "probe")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "csi.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	csi.RegisterIdentityServer(srv, &fakeIdentity{probe: probe})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return path
}

func healthz(t *testing.T, h http.Handler) (int, string, time.Duration) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	start := time.Now()
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), time.Since(start)
}

func TestHealthz(t *testing.T) {
	const timeout = 500 * time.Millisecond
	hung := make(chan struct{})
	defer close(hung)
	for _, tc := range []struct {
		name     string
		probe    func(context.Context) (*csi.ProbeResponse, error)
		wantCode int
		wantBody string // a substring
	}{
		{
			name: "ready",
			probe: func(context.Context) (*csi.ProbeResponse, error) {
				return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
			},
			wantCode: http.StatusOK, wantBody: "ok",
		},
		{
			// The CSI spec: an unset ready means ready.
			name:     "ready unset",
			probe:    func(context.Context) (*csi.ProbeResponse, error) { return &csi.ProbeResponse{}, nil },
			wantCode: http.StatusOK, wantBody: "ok",
		},
		{
			name: "not ready",
			probe: func(context.Context) (*csi.ProbeResponse, error) {
				return &csi.ProbeResponse{Ready: wrapperspb.Bool(false)}, nil
			},
			wantCode: http.StatusInternalServerError, wantBody: "not ready",
		},
		{
			name: "error",
			probe: func(context.Context) (*csi.ProbeResponse, error) {
				return nil, status.Error(codes.FailedPrecondition, "nvme-tcp module not loaded")
			},
			wantCode: http.StatusInternalServerError, wantBody: "nvme-tcp module not loaded",
		},
		{
			// A hung driver: it answers only after the test.
			name: "timeout",
			probe: func(ctx context.Context) (*csi.ProbeResponse, error) {
				<-hung
				return &csi.ProbeResponse{}, nil
			},
			wantCode: http.StatusInternalServerError, wantBody: "DeadlineExceeded",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serveIdentity(t, tc.probe)
			code, body, took := healthz(t, handler(addr, timeout))
			if code != tc.wantCode || !strings.Contains(body, tc.wantBody) {
				t.Errorf("/healthz = %d %q, want %d with %q", code, body, tc.wantCode, tc.wantBody)
			}
			if took > timeout+2*time.Second {
				t.Errorf("/healthz took %v with a %v probe timeout", took, timeout)
			}
		})
	}
}

// No driver socket at all: 500 within the timeout. The unix:// form of the
// address works too.
func TestHealthzNoDriver(t *testing.T) {
	const timeout = 300 * time.Millisecond
	code, body, took := healthz(t, handler("unix://"+filepath.Join(t.TempDir(), "absent.sock"), timeout))
	if code != http.StatusInternalServerError || body == "" {
		t.Errorf("/healthz = %d %q, want 500 with the reason", code, body)
	}
	if took < timeout || took > timeout+2*time.Second {
		t.Errorf("/healthz took %v, want about the probe timeout %v (waiting for the socket)", took, timeout)
	}
	addr := serveIdentity(t, func(context.Context) (*csi.ProbeResponse, error) { return &csi.ProbeResponse{}, nil })
	if code, body, _ := healthz(t, handler("unix://"+addr, timeout)); code != http.StatusOK {
		t.Errorf("/healthz with a unix:// address = %d %q, want 200", code, body)
	}
}

// The arguments deploy/ gives livenessprobe (node and controller) are flags
// of this stand-in.
func TestDeployArgsParse(t *testing.T) {
	argLists := deployargs.Of(t, "sig-storage/livenessprobe:")
	if len(argLists) < 2 {
		t.Fatalf("found livenessprobe in %d workloads of deploy/base, want the node's and the controller's", len(argLists))
	}
	for _, args := range argLists {
		fs := flag.NewFlagSet("livenessprobe", flag.ContinueOnError)
		klog.InitFlags(fs)
		var o options
		o.addFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Errorf("%q: %v", args, err)
		}
		if o.csiAddress != "/csi/csi.sock" || o.probeTimeout != 8*time.Second {
			t.Errorf("%q parsed to %+v", args, o)
		}
	}
}

// A relative --csi-address is a path from the working directory.
func TestHealthzRelativeAddress(t *testing.T) {
	addr := serveIdentity(t, func(context.Context) (*csi.ProbeResponse, error) { return &csi.ProbeResponse{}, nil })
	t.Chdir(filepath.Dir(addr))
	if code, body, _ := healthz(t, handler(filepath.Base(addr), time.Second)); code != http.StatusOK {
		t.Errorf("/healthz with a relative address = %d %q, want 200", code, body)
	}
}
