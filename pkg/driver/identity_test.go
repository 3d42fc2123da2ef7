package driver_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/version"
)

func TestGetPluginInfo(t *testing.T) {
	e := newEnv(t)
	info, err := e.id.GetPluginInfo(context.Background(), &csi.GetPluginInfoRequest{})
	must(t, err)
	if info.GetName() != driver.DriverName || info.GetVendorVersion() != version.Version {
		t.Fatalf("info %v", info)
	}
	old := version.Version
	version.Version = ""
	defer func() { version.Version = old }()
	_, err = e.id.GetPluginInfo(context.Background(), &csi.GetPluginInfoRequest{})
	if err == nil {
		t.Fatal("empty version accepted")
	}
}

func TestGetPluginCapabilities(t *testing.T) {
	e := newEnv(t)
	caps, err := e.id.GetPluginCapabilities(context.Background(), &csi.GetPluginCapabilitiesRequest{})
	must(t, err)
	services := map[csi.PluginCapability_Service_Type]bool{}
	var online bool
	for _, c := range caps.GetCapabilities() {
		if s := c.GetService(); s != nil {
			services[s.GetType()] = true
		}
		online = online || c.GetVolumeExpansion().GetType() == csi.PluginCapability_VolumeExpansion_ONLINE
	}
	want := []csi.PluginCapability_Service_Type{csi.PluginCapability_Service_CONTROLLER_SERVICE,
		csi.PluginCapability_Service_GROUP_CONTROLLER_SERVICE, csi.PluginCapability_Service_SNAPSHOT_METADATA_SERVICE}
	for _, w := range want {
		if !services[w] {
			t.Errorf("no %s in %v", w, caps)
		}
	}
	// No topology: replicas are reached over the network from any node.
	if !online || len(services) != len(want) || len(caps.GetCapabilities()) != len(want)+1 {
		t.Fatalf("capabilities %v", caps)
	}
}

func TestProbe(t *testing.T) {
	tests := []struct {
		name     string
		mode     driver.Mode
		breakIt  func(e *env)
		wantCode codes.Code
		mention  string
	}{
		{"all ready", driver.AllMode, func(*env) {}, codes.OK, ""},
		{"provisioner down", driver.ControllerMode, func(e *env) { e.prov.PingErr = errors.New("connection refused") }, codes.Unavailable, "provisioner"},
		{"node ignores provisioner", driver.NodeMode, func(e *env) { e.prov.PingErr = errors.New("down") }, codes.OK, ""},
		{"no nvme-fabrics", driver.NodeMode, func(e *env) { os.Remove(filepath.Join(e.root, "dev/nvme-fabrics")) }, codes.FailedPrecondition, "nvme-tcp"},
		{"no md", driver.NodeMode, func(e *env) { os.Remove(filepath.Join(e.root, "proc/mdstat")) }, codes.FailedPrecondition, "raid1"},
		{"no mdadm", driver.NodeMode, func(e *env) { e.exec.Missing["mdadm"] = true }, codes.FailedPrecondition, "mdadm"},
		{"old kernel", driver.NodeMode, func(e *env) { e.ini.Supported = []string{"transport", "nqn", "ctrl_loss_tmo"} }, codes.FailedPrecondition, "fast_io_fail_tmo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(o *driver.Options) { o.Mode = tt.mode })
			tt.breakIt(e)
			resp, err := e.id.Probe(context.Background(), &csi.ProbeRequest{})
			wantCode(t, err, tt.wantCode)
			if err == nil && !resp.GetReady().GetValue() {
				t.Fatal("not ready without an error")
			}
			if err != nil && !strings.Contains(err.Error(), tt.mention) {
				t.Fatalf("error %v does not mention %q", err, tt.mention)
			}
		})
	}
}
