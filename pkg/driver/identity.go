package driver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/nvmirror/nvmirror/pkg/version"
)

// probeTimeout bounds the provisioner ping inside Probe, so a hung
// provisioner makes the liveness probe fail instead of hang.
const probeTimeout = 5 * time.Second

// GetPluginInfo returns the driver name and the build's version. An empty
// version is refused: CSI requires one, and an unversioned build is a
// packaging mistake worth failing loudly on.
func (d *Driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	if version.Version == "" {
		return nil, status.Error(codes.Unavailable, "driver version is empty: build with -ldflags -X github.com/nvmirror/nvmirror/pkg/version.Version=...")
	}
	return &csi.GetPluginInfoResponse{Name: DriverName, VendorVersion: version.Version}, nil
}

// GetPluginCapabilities: a controller service with its group controller
// (group snapshots) and snapshot metadata (changed blocks) services, and
// online expansion (md and ext4/xfs grow while mounted). No topology:
// replicas are reached over the network from any node.
func (d *Driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{
		{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}},
		{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_GROUP_CONTROLLER_SERVICE}}},
		{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_SNAPSHOT_METADATA_SERVICE}}},
		{Type: &csi.PluginCapability_VolumeExpansion_{VolumeExpansion: &csi.PluginCapability_VolumeExpansion{Type: csi.PluginCapability_VolumeExpansion_ONLINE}}},
	}}, nil
}

// Probe reports real readiness: in controller mode the provisioner answers;
// in node mode the kernel's NVMe-oF fabrics device and md exist, mdadm is
// installed and the kernel accepts fast_io_fail_tmo (without it a lost
// replica would freeze the mirror). A missing dependency is
// FailedPrecondition naming it, so the liveness probe's log says what to fix.
func (d *Driver) Probe(ctx context.Context, _ *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	if d.opts.Mode.hasController() {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		defer cancel()
		if err := d.prov.Ping(pctx); err != nil {
			return nil, status.Errorf(codes.Unavailable, "provisioner unreachable: %v", err)
		}
	}
	if d.opts.Mode.hasNode() {
		if err := d.nodeReady(); err != nil {
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
	}
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}

func (d *Driver) nodeReady() error {
	root := d.opts.HostRoot
	if _, err := os.Stat(filepath.Join(root, "dev/nvme-fabrics")); err != nil {
		return fmt.Errorf("NVMe-oF initiator unavailable (load nvme-tcp): %w", err)
	}
	if _, err := os.Stat(filepath.Join(root, "proc/mdstat")); err != nil {
		return fmt.Errorf("md unavailable (load md_mod and raid1): %w", err)
	}
	if _, err := d.node.Mounter.Exec.LookPath("mdadm"); err != nil {
		return fmt.Errorf("mdadm not found in PATH: %w", err)
	}
	opts, err := d.node.Initiator.SupportedOptions()
	if err != nil {
		return fmt.Errorf("reading the kernel's fabrics options: %w", err)
	}
	for _, o := range []string{"fast_io_fail_tmo", "ctrl_loss_tmo", "reconnect_delay", "hostid"} {
		if !slices.Contains(opts, o) {
			return fmt.Errorf("kernel NVMe-oF initiator lacks option %s", o)
		}
	}
	return nil
}
