package driver_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/driver/fake"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

func TestNewDriverChecksDependencies(t *testing.T) {
	prov := fake.NewProvisioner(fake.NewFabric(), 1)
	o := driver.DefaultOptions()
	o.Mode = driver.ControllerMode
	if _, err := driver.NewDriver(o, prov, driver.NodeDeps{}); err != nil {
		t.Fatalf("controller mode needs no node deps: %v", err)
	}
	if _, err := driver.NewDriver(o, nil, driver.NodeDeps{}); err == nil {
		t.Fatal("nil provisioner accepted")
	}
	o.Mode = driver.NodeMode
	if _, err := driver.NewDriver(o, prov, driver.NodeDeps{}); err == nil {
		t.Fatal("node mode without initiator/md/mounter accepted")
	}
}

// TestRunServesOnlyTheModesServices: a controller-mode process must not
// answer Node calls (kubelet would think it can stage there).
func TestRunServesOnlyTheModesServices(t *testing.T) {
	e := newEnv(t, func(o *driver.Options) { o.Mode = driver.ControllerMode })
	_, err := e.node.NodeGetInfo(context.Background(), &csi.NodeGetInfoRequest{})
	wantCode(t, err, codes.Unimplemented)
	if _, err := e.ctl.ControllerGetCapabilities(context.Background(), &csi.ControllerGetCapabilitiesRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestRunRemovesStaleSocketOnly(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "csi.sock")
	l, err := net.Listen("unix", sock)
	must(t, err)
	// Leave the socket file behind, as a crashed process would.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	o := driver.DefaultOptions()
	o.Mode, o.Endpoint = driver.ControllerMode, "unix://"+sock
	d, err := driver.NewDriver(o, fake.NewProvisioner(fake.NewFabric(), 1), driver.NodeDeps{})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	conn, err := grpc.NewClient(o.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	callCtx, callCancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err = csi.NewIdentityClient(conn).GetPluginInfo(callCtx, &csi.GetPluginInfoRequest{}, grpc.WaitForReady(true))
	callCancel()
	conn.Close()
	cancel()
	if rerr := <-done; rerr != nil {
		t.Fatalf("Run: %v", rerr)
	}
	if err != nil {
		t.Fatalf("driver not serving after a stale socket: %v", err)
	}

	regular := filepath.Join(dir, "not-a-socket")
	must(t, os.WriteFile(regular, []byte("keep me"), 0o600))
	o.Endpoint = "unix://" + regular
	d, err = driver.NewDriver(o, fake.NewProvisioner(fake.NewFabric(), 1), driver.NodeDeps{})
	must(t, err)
	if err := d.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Run over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(regular); string(b) != "keep me" {
		t.Fatal("a regular file at the endpoint was touched")
	}
}

// TestAuditRecords: mutating calls are reported with their outcome, reads
// are not; delivery is asynchronous, and stopping the driver flushes it.
func TestAuditRecords(t *testing.T) {
	e := newEnv(t)
	id := e.create("audited", "2")
	_, err := e.ctl.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{})
	wantCode(t, err, codes.InvalidArgument)
	_, _ = e.ctl.ListVolumes(context.Background(), &csi.ListVolumesRequest{})
	e.stop()
	got := e.prov.Audits()
	if len(got) != 2 {
		t.Fatalf("audit records %+v, want 2 (CreateVolume, DeleteVolume)", got)
	}
	if got[0].Operation != "CreateVolume" || got[0].VolumeID != "" || got[0].Outcome != volume.AuditSuccess || got[0].Node != e.drv.NodeID() {
		t.Errorf("create record %+v (volume %s)", got[0], id)
	}
	if got[1].Operation != "DeleteVolume" || got[1].Outcome != volume.AuditFailure || !strings.Contains(got[1].Message, "InvalidArgument") {
		t.Errorf("delete record %+v", got[1])
	}
}
