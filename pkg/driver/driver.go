// Package driver implements nvmirror's CSI Identity, Controller and Node
// services. Every system and backend access goes through a dependency handed
// to NewDriver (the provisioner, the NVMe-oF initiator, md, mount and exec),
// so tests and csi-sanity run the real handlers against fakes.
package driver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"github.com/nvmirror/nvmirror/pkg/inflight"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
	"github.com/nvmirror/nvmirror/pkg/volume"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	"k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"
)

// NodeDeps are the node service's ties to the host. Controller mode needs
// none of them.
type NodeDeps struct {
	Host      HostIdentity
	Initiator Initiator
	Raid      RaidManager
	// Mounter mounts, formats (blkid-guarded) and resizes through its
	// Interface and Exec.
	Mounter *mount.SafeFormatAndMount
	// Health, when set, is asked first by NodeGetVolumeHealth (the node's
	// healer); see also Driver.SetHealthSource.
	Health volume.HealthSource
}

// Driver serves the CSI services of its mode.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	opts     Options
	prov     volume.Provisioner
	node     NodeDeps
	nodeID   string
	inflight *inflight.Set
	state    *stagestate.Store
	audit    *auditor
	// mdMu serializes choosing a free md number and creating or assembling
	// an array on it: two volumes staged at once would otherwise pick the
	// same /dev/mdN.
	mdMu sync.Mutex
	// healthMu guards health (SetHealthSource may run while serving).
	healthMu sync.RWMutex
	health   volume.HealthSource
}

// NewDriver checks that the dependencies the mode needs are present and
// returns the driver. opts must have passed Validate.
func NewDriver(opts Options, prov volume.Provisioner, node NodeDeps) (*Driver, error) {
	if prov == nil {
		return nil, errors.New("driver: a provisioner is required")
	}
	d := &Driver{opts: opts, prov: prov, node: node, inflight: &inflight.Set{}, health: node.Health}
	if opts.Mode.hasNode() {
		if node.Initiator == nil || node.Raid == nil || node.Mounter == nil || node.Mounter.Interface == nil || node.Mounter.Exec == nil {
			return nil, errors.New("driver: node mode needs an initiator, an md manager and a mounter with exec")
		}
		id, err := encodeNodeID(opts.NodeName, node.Host.NQN)
		if err != nil {
			return nil, err
		}
		if node.Host.ID == "" {
			return nil, errors.New("driver: node mode needs a host ID")
		}
		d.nodeID = id
		d.state = stagestate.New(opts.StateDir)
	}
	d.audit = newAuditor(prov)
	return d, nil
}

// NodeID is the CSI node ID this node reports ("" in controller mode).
func (d *Driver) NodeID() string { return d.nodeID }

// Run serves CSI on the endpoint's unix socket until ctx ends, then stops
// gracefully. A socket file left by a previous process is removed first;
// anything else at that path is an error, never deleted.
func (d *Driver) Run(ctx context.Context) error {
	path, err := socketPath(d.opts.Endpoint)
	if err != nil {
		return err
	}
	if err := removeStaleSocket(path); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	return d.Serve(ctx, lis)
}

// Serve serves on lis until ctx ends.
func (d *Driver) Serve(ctx context.Context, lis net.Listener) error {
	srv := grpc.NewServer(grpc.UnaryInterceptor(d.interceptor))
	csi.RegisterIdentityServer(srv, d)
	if d.opts.Mode.hasController() {
		csi.RegisterControllerServer(srv, d)
		csi.RegisterGroupControllerServer(srv, groupController{d: d})
		csi.RegisterSnapshotMetadataServer(srv, snapshotMetadata{d: d})
	}
	if d.opts.Mode.hasNode() {
		csi.RegisterNodeServer(srv, d)
	}
	auditCtx, stopAudit := context.WithCancel(context.WithoutCancel(ctx))
	auditDone := make(chan struct{})
	go func() { d.audit.run(auditCtx); close(auditDone) }()
	defer func() { stopAudit(); <-auditDone }()

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	klog.InfoS("Serving CSI", "endpoint", lis.Addr().String(), "mode", d.opts.Mode, "nodeID", d.nodeID)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	klog.InfoS("Stopping CSI server")
	srv.GracefulStop()
	return nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("endpoint %s exists and is not a socket; refusing to remove it", path)
	}
	klog.InfoS("Removing stale socket", "path", path)
	return os.Remove(path)
}

// interceptor logs every call: the method at V(3) (Probe, polled by the
// liveness probe, at V(5)), request and response with secrets stripped at
// V(5), and every error. It also reports mutating calls to the audit trail
// and maps any error that escaped a handler unmapped.
func (d *Driver) interceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	level := klog.Level(3)
	if info.FullMethod == "/csi.v1.Identity/Probe" {
		level = 5
	}
	klog.V(level).InfoS("GRPC call", "method", info.FullMethod)
	klog.V(5).InfoS("GRPC request", "method", info.FullMethod, "request", protosanitizer.StripSecrets(req))
	resp, err := handler(ctx, req)
	err = grpcError(err)
	if err != nil {
		klog.ErrorS(err, "GRPC error", "method", info.FullMethod)
	} else {
		klog.V(5).InfoS("GRPC response", "method", info.FullMethod, "response", protosanitizer.StripSecrets(resp))
	}
	d.audit.record(info.FullMethod, req, d.nodeID, err)
	return resp, err
}

// NewSafeFormatAndMount returns the production mounter: mount-utils over the
// host's mount and mkfs tools.
func NewSafeFormatAndMount(ex utilexec.Interface) *mount.SafeFormatAndMount {
	return &mount.SafeFormatAndMount{Interface: mount.New(""), Exec: ex}
}
