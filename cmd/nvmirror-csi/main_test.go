package main

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/rpcauth/rpcauthtest"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// TestProvisionerClientChecksIdentity: the plugin refuses to start with a
// certificate the provisioner would refuse every call of, saying which flag.
func TestProvisionerClientChecksIdentity(t *testing.T) {
	ca := rpcauthtest.NewCA(t)
	dir := t.TempDir()
	write := func(name string, c rpcauthtest.Cert) (string, string) { return c.WriteNamed(t, dir, name) }
	nodeCrt, nodeKey := write("node", ca.Client(t, "worker-1", "node"))
	ctlCrt, ctlKey := write("controller", ca.Client(t, "nvmirror-controller", "controller"))
	allCrt, allKey := write("all", ca.Client(t, "worker-1", "controller", "node"))
	for _, tc := range []struct {
		name     string
		mode     driver.Mode
		crt, key string
		errPart  string // "": starts
	}{
		{"node", driver.NodeMode, nodeCrt, nodeKey, ""},
		{"controller", driver.ControllerMode, ctlCrt, ctlKey, ""},
		{"all", driver.AllMode, allCrt, allKey, ""},
		{"node with the controller's certificate", driver.NodeMode, ctlCrt, ctlKey, `has no role "node"`},
		{"controller with a node's certificate", driver.ControllerMode, nodeCrt, nodeKey, `has no role "controller"`},
		{"all with a node's certificate", driver.AllMode, nodeCrt, nodeKey, `has no role "controller"`},
		{"missing file", driver.NodeMode, filepath.Join(dir, "none.crt"), nodeKey, "--provisioner-cert-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, conn, err := newProvisionerClient(driver.Options{Mode: tc.mode, NodeName: "worker-1", ProvisionerAddress: "prov:9500",
				ProvisionerCertFile: tc.crt, ProvisionerKeyFile: tc.key})
			if tc.errPart == "" {
				if err != nil {
					t.Fatal(err)
				}
				conn.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("err = %v, want one saying %q", err, tc.errPart)
			}
		})
	}
	_, _, err := newProvisionerClient(driver.Options{Mode: driver.NodeMode, NodeName: "worker-2", ProvisionerAddress: "prov:9500",
		ProvisionerCertFile: nodeCrt, ProvisionerKeyFile: nodeKey})
	if err == nil || !strings.Contains(err.Error(), `certificate names node "worker-1" (Subject CN), not --node-name "worker-2"`) {
		t.Fatalf("another node's certificate: %v", err)
	}
}

// With nothing listening, the client still builds (dialling is lazy) and
// every call reports the provisioner unavailable.
func TestProvisionerClientUnreachableIsUnavailable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // a port nothing listens on
	crt, key := rpcauthtest.NewCA(t).Client(t, "worker-1", "node").WriteNamed(t, t.TempDir(), "node")
	p, conn, err := newProvisionerClient(driver.Options{Mode: driver.NodeMode, NodeName: "worker-1", ProvisionerAddress: addr,
		ProvisionerCertFile: crt, ProvisionerKeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Ping(ctx); !errors.Is(err, volume.ErrUnavailable) {
		t.Fatalf("Ping: %v, want ErrUnavailable", err)
	}
	if _, err := p.GetVolume(ctx, "v"); !errors.Is(err, volume.ErrUnavailable) {
		t.Fatalf("GetVolume: %v, want ErrUnavailable", err)
	}
}
