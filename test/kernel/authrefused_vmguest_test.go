//go:build vmguest

package kernel

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
)

// TestPublishAuthenticatedVolumeWithoutKernelSupport runs on the 6.1 kernel,
// built without NVMe in-band authentication: a volume asking for it must
// not attach, with an error naming the missing kernel feature, and the host
// must not have been allowed on any replica (never a silent fallback to no
// authentication).
func TestPublishAuthenticatedVolumeWithoutKernelSupport(t *testing.T) {
	s := startStackWith(t, stackOptions{storageNodes: 2})
	c := dialCSI(t, s.csiSocket)
	p := dialProvisioner(t, s)
	ctx := ctxTimeout(t, 2*time.Minute)
	info, err := c.node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cv, err := c.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name: "auth-on-6-1", CapacityRange: &csi.CapacityRange{RequiredBytes: 32 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{mountRW}, Parameters: map[string]string{"numReplicas": "2", "authentication": "host"},
	})
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	id := cv.GetVolume().GetVolumeId()
	t.Cleanup(func() {
		if _, err := c.ctrl.DeleteVolume(ctxTimeout(t, time.Minute), &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Errorf("DeleteVolume: %v", err)
		}
	})
	_, err = c.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: info.GetNodeId(), VolumeCapability: mountRW})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "CONFIG_NVME_TARGET_AUTH") {
		t.Fatalf("ControllerPublishVolume: %v; want FailedPrecondition naming CONFIG_NVME_TARGET_AUTH", err)
	}
	t.Logf("refused as expected: %v", err)
	vol := getVolume(t, p, id)
	for _, r := range vol.Replicas {
		hosts, _ := os.ReadDir(filepath.Join(nvmet.DefaultRoot, "subsystems", r.NQN, "allowed_hosts"))
		if len(hosts) != 0 {
			t.Errorf("replica %s admits %d hosts although authentication could not be set up", r.ID, len(hosts))
		}
	}
	if _, err := c.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: info.GetNodeId()}); err != nil {
		t.Errorf("ControllerUnpublishVolume after the refusal: %v", err)
	}
}
