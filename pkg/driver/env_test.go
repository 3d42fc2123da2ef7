package driver_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"k8s.io/mount-utils"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/driver/fake"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// env is a driver in "all" mode served on a unix socket, with the fakes
// behind it and CSI clients in front.
type env struct {
	t       *testing.T
	tmp     string
	root    string
	opts    driver.Options
	fabric  *fake.Fabric
	prov    *fake.Provisioner
	ini     *fake.Initiator
	raid    *fake.Raid
	exec    *fake.Exec
	mounter *mount.FakeMounter
	drv     *driver.Driver
	id      csi.IdentityClient
	ctl     csi.ControllerClient
	node    csi.NodeClient
	group   csi.GroupControllerClient
	meta    csi.SnapshotMetadataClient
	stop    func()
}

func newEnv(t *testing.T, mutate ...func(*driver.Options)) *env {
	t.Helper()
	e := &env{t: t, tmp: t.TempDir()}
	e.root = filepath.Join(e.tmp, "host")
	for _, f := range []string{"dev/nvme-fabrics", "proc/mdstat"} {
		p := filepath.Join(e.root, f)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, nil, 0o644))
	}
	host, err := driver.LoadHostIdentity(e.root)
	must(t, err)
	e.fabric = fake.NewFabric()
	e.prov = fake.NewProvisioner(e.fabric, 1<<40)
	e.ini = fake.NewInitiator(e.fabric, e.root)
	e.raid = fake.NewRaid(e.ini)
	e.exec = fake.NewExec(e.raid.ContentKey)
	e.mounter = mount.NewFakeMounter(nil)
	e.opts = driver.DefaultOptions()
	e.opts.Endpoint = "unix://" + filepath.Join(e.tmp, "csi.sock")
	e.opts.ProvisionerAddress = "fake:9500"
	e.opts.ProvisionerCertFile, e.opts.ProvisionerKeyFile = "/fake/tls.crt", "/fake/tls.key"
	e.opts.NodeName = "worker-1"
	e.opts.HostRoot = e.root
	e.opts.StateDir = filepath.Join(e.tmp, "state")
	for _, m := range mutate {
		m(&e.opts)
	}
	must(t, e.opts.Validate())
	e.drv, err = driver.NewDriver(e.opts, e.prov, driver.NodeDeps{Host: host, Initiator: e.ini, Raid: e.raid,
		Mounter: &mount.SafeFormatAndMount{Interface: e.mounter, Exec: e.exec}})
	must(t, err)
	// Listen before serving so that the clients never dial too early.
	lis, err := net.Listen("unix", strings.TrimPrefix(e.opts.Endpoint, "unix://"))
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.drv.Serve(ctx, lis) }()
	conn, err := grpc.NewClient(e.opts.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	e.id, e.ctl, e.node = csi.NewIdentityClient(conn), csi.NewControllerClient(conn), csi.NewNodeClient(conn)
	e.group, e.meta = csi.NewGroupControllerClient(conn), csi.NewSnapshotMetadataClient(conn)
	stopped := false
	e.stop = func() {
		if stopped {
			return
		}
		stopped = true
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("driver Run: %v", err)
		}
	}
	t.Cleanup(e.stop)
	return e
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantCode(t *testing.T, err error, c codes.Code) {
	t.Helper()
	if status.Code(err) != c {
		t.Fatalf("got %v, want code %v", err, c)
	}
}

var (
	sw       = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	mountCap = &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: sw},
	}
	blockCap = &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: sw},
	}
)

// create makes a volume with n replicas and returns its ID.
func (e *env) create(name string, n string) string {
	e.t.Helper()
	resp, err := e.ctl.CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: 64 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap}, Parameters: map[string]string{storageclass.KeyNumReplicas: n}})
	must(e.t, err)
	return resp.GetVolume().GetVolumeId()
}

func (e *env) nodeID() string {
	e.t.Helper()
	ni, err := e.node.NodeGetInfo(context.Background(), &csi.NodeGetInfoRequest{})
	must(e.t, err)
	return ni.GetNodeId()
}

func (e *env) publish(volID string) {
	e.t.Helper()
	_, err := e.ctl.ControllerPublishVolume(context.Background(), &csi.ControllerPublishVolumeRequest{VolumeId: volID, NodeId: e.nodeID(), VolumeCapability: mountCap})
	must(e.t, err)
}

func (e *env) staging(volID string) string { return filepath.Join(e.tmp, "pv", volID, "globalmount") }

func (e *env) stage(volID string, c *csi.VolumeCapability) error {
	_, err := e.node.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: volID, StagingTargetPath: e.staging(volID), VolumeCapability: c})
	return err
}

func (e *env) unstage(volID string) error {
	_, err := e.node.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: volID, StagingTargetPath: e.staging(volID)})
	return err
}

func (e *env) volume(id string) *volume.Volume {
	e.t.Helper()
	v, err := e.prov.GetVolume(context.Background(), id)
	must(e.t, err)
	return v
}
