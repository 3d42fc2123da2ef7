package driver_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

func TestCreateVolume(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	req := &csi.CreateVolumeRequest{Name: "pvc-1", CapacityRange: &csi.CapacityRange{RequiredBytes: 100<<20 + 1},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap}, Parameters: map[string]string{storageclass.KeyNumReplicas: "3"},
		MutableParameters: map[string]string{storageclass.KeyMaxReplicaDownTime: "15"}}
	first, err := e.ctl.CreateVolume(ctx, req)
	must(t, err)
	v := first.GetVolume()
	if v.GetCapacityBytes() != 101<<20 {
		t.Fatalf("capacity %d, want rounded up to 101 MiB", v.GetCapacityBytes())
	}
	if v.GetVolumeContext()[driver.VolumeContextNumReplicas] != "3" || v.GetVolumeContext()[driver.VolumeContextFSType] != "ext4" || v.GetVolumeContext()[driver.VolumeContextMDUUID] == "" {
		t.Fatalf("volume context %v", v.GetVolumeContext())
	}
	if got := e.volume(v.GetVolumeId()).Parameters[storageclass.KeyMaxReplicaDownTime]; got != "15" {
		t.Fatalf("mutable parameter not passed to the provisioner: %q", got)
	}
	again, err := e.ctl.CreateVolume(ctx, req)
	must(t, err)
	if again.GetVolume().GetVolumeId() != v.GetVolumeId() {
		t.Fatal("retry created a second volume")
	}
	req.CapacityRange.RequiredBytes = 200 << 20
	_, err = e.ctl.CreateVolume(ctx, req)
	wantCode(t, err, codes.AlreadyExists)

	_, err = e.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "bad", VolumeCapabilities: []*csi.VolumeCapability{mountCap},
		Parameters: map[string]string{"numReplica": "3"}})
	wantCode(t, err, codes.InvalidArgument)
	if !strings.Contains(err.Error(), "numReplica") {
		t.Fatalf("error does not name the parameter: %v", err)
	}

	multi := &csi.VolumeCapability{AccessType: mountCap.AccessType, AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}}
	_, err = e.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "rwx", VolumeCapabilities: []*csi.VolumeCapability{multi}})
	wantCode(t, err, codes.InvalidArgument)
	if !strings.Contains(err.Error(), "one node at a time") {
		t.Fatalf("multi-node refusal does not say why: %v", err)
	}
	_, err = e.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "huge", VolumeCapabilities: []*csi.VolumeCapability{mountCap},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 50}})
	wantCode(t, err, codes.ResourceExhausted)
}

func TestControllerPublishFence(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.create("fenced", "2")
	node := e.nodeID()
	resp, err := e.ctl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: node, VolumeCapability: mountCap})
	must(t, err)
	v := e.volume(id)
	if v.PublishedNode != node || !strings.HasSuffix(node, "/"+v.PublishedHost) || resp.GetPublishContext()[driver.PublishContextHostNQN] != v.PublishedHost {
		t.Fatalf("published %q/%q, context %v", v.PublishedNode, v.PublishedHost, resp.GetPublishContext())
	}
	for _, r := range v.Replicas {
		if ns, _ := e.fabric.Get(r.NQN); ns.AllowedHost != v.PublishedHost {
			t.Fatalf("replica %s admits %q", r.ID, ns.AllowedHost)
		}
	}
	_, err = e.ctl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: node, VolumeCapability: mountCap})
	must(t, err)
	other := "worker-2/nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000002"
	_, err = e.ctl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: other, VolumeCapability: mountCap})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = e.ctl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: "not-ours", VolumeCapability: mountCap})
	wantCode(t, err, codes.NotFound)
	_, err = e.ctl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: "nope", NodeId: node, VolumeCapability: mountCap})
	wantCode(t, err, codes.NotFound)

	// Unpublishing another node leaves the fence in place; our node lifts it.
	_, err = e.ctl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: other})
	must(t, err)
	if e.volume(id).PublishedHost == "" {
		t.Fatal("unpublish of another node revoked ours")
	}
	for range 2 {
		_, err = e.ctl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: node})
		must(t, err)
	}
	if e.volume(id).PublishedHost != "" {
		t.Fatal("still published")
	}
	_, err = e.ctl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: "gone", NodeId: "junk"})
	must(t, err)
}

func TestListVolumesPaging(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	want := map[string]bool{}
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		want[e.create(n, "1")] = true
	}
	pub := e.create("published", "1")
	want[pub] = true
	e.publish(pub)
	seen := map[string]bool{}
	token := ""
	for pages := 0; ; pages++ {
		resp, err := e.ctl.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: 4, StartingToken: token})
		must(t, err)
		for _, en := range resp.GetEntries() {
			seen[en.GetVolume().GetVolumeId()] = true
			nodes := en.GetStatus().GetPublishedNodeIds()
			if (en.GetVolume().GetVolumeId() == pub) != (len(nodes) == 1 && nodes[0] == e.nodeID()) {
				t.Fatalf("published nodes of %s: %v", en.GetVolume().GetVolumeId(), nodes)
			}
		}
		if token = resp.GetNextToken(); token == "" {
			break
		}
		if pages > 3 {
			t.Fatal("paging does not end")
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("listed %v, want %v", seen, want)
	}
	_, err := e.ctl.ListVolumes(ctx, &csi.ListVolumesRequest{StartingToken: "invalid-token"})
	wantCode(t, err, codes.Aborted)
	_, err = e.ctl.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: -1})
	wantCode(t, err, codes.InvalidArgument)
}

func TestVolumeHealthNamesMissingReplicas(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.create("healthy", "3")
	h, err := e.ctl.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{VolumeId: id})
	must(t, err)
	if len(h.GetVolumeHealth().GetHealthStatuses()) != 0 {
		t.Fatalf("healthy volume reports %v", h.GetVolumeHealth())
	}
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	e.prov.Update(id, func(v *volume.Volume) {
		v.Replicas[1].State = volume.ReplicaDeleting
		v.DegradedSince = since
	})
	h, err = e.ctl.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{VolumeId: id})
	must(t, err)
	var msgs []string
	for _, s := range h.GetVolumeHealth().GetHealthStatuses() {
		if s.GetStatus() != csi.VolumeHealthErrorType_DEGRADED {
			t.Fatalf("status %v", s)
		}
		msgs = append(msgs, s.GetReason()+": "+s.GetMessage())
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{id + "-r1 on sn2 is deleting", "2 of 3 replicas active", "2026-01-02T03:04:05Z"} {
		if !strings.Contains(all, want) {
			t.Errorf("health %q does not mention %q", all, want)
		}
	}
	list, err := e.ctl.ControllerListVolumeHealth(ctx, &csi.ControllerListVolumeHealthRequest{})
	must(t, err)
	if len(list.GetEntries()) != 1 || list.GetEntries()[0].GetVolumeId() != id {
		t.Fatalf("abnormal volumes %v", list.GetEntries())
	}
	_, err = e.ctl.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{VolumeId: "nope"})
	wantCode(t, err, codes.NotFound)
	got, err := e.ctl.ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: id})
	must(t, err)
	if got.GetVolume().GetVolumeId() != id {
		t.Fatalf("ControllerGetVolume %v", got)
	}
}

func TestExpandModifyCapacityDelete(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.create("grow", "2")
	r, err := e.ctl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 128 << 20}})
	must(t, err)
	if r.GetCapacityBytes() != 128<<20 || !r.GetNodeExpansionRequired() {
		t.Fatalf("expand %v", r)
	}
	_, err = e.ctl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id})
	wantCode(t, err, codes.InvalidArgument)

	_, err = e.ctl.ControllerModifyVolume(ctx, &csi.ControllerModifyVolumeRequest{VolumeId: id, MutableParameters: map[string]string{storageclass.KeyMaxReplicaDownTime: "0"}})
	must(t, err)
	if e.volume(id).Parameters[storageclass.KeyMaxReplicaDownTime] != "0" {
		t.Fatal("modify not applied")
	}
	_, err = e.ctl.ControllerModifyVolume(ctx, &csi.ControllerModifyVolumeRequest{VolumeId: id, MutableParameters: map[string]string{storageclass.KeyProvisioningType: "thick"}})
	wantCode(t, err, codes.InvalidArgument)
	_, err = e.ctl.ControllerModifyVolume(ctx, &csi.ControllerModifyVolumeRequest{VolumeId: "nope", MutableParameters: map[string]string{storageclass.KeyMaxReplicaDownTime: "1"}})
	wantCode(t, err, codes.NotFound)

	c, err := e.ctl.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: map[string]string{storageclass.KeyNumReplicas: "2"}})
	must(t, err)
	if c.GetAvailableCapacity() <= 0 || c.GetMinimumVolumeSize().GetValue() != driver.MinVolumeSizeBytes {
		t.Fatalf("capacity %v", c)
	}

	e.publish(id)
	_, err = e.ctl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = e.ctl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id})
	must(t, err)
	for range 2 {
		_, err = e.ctl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
		must(t, err)
	}
}

func TestValidateVolumeCapabilities(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.create("vvc", "2")
	r, err := e.ctl.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: id, VolumeCapabilities: []*csi.VolumeCapability{mountCap, blockCap}})
	must(t, err)
	if r.GetConfirmed() == nil {
		t.Fatalf("not confirmed: %s", r.GetMessage())
	}
	multi := &csi.VolumeCapability{AccessType: blockCap.AccessType, AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY}}
	r, err = e.ctl.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: id, VolumeCapabilities: []*csi.VolumeCapability{multi}})
	must(t, err)
	if r.GetConfirmed() != nil || !strings.Contains(r.GetMessage(), "one node at a time") {
		t.Fatalf("multi-node confirmed or unexplained: %v", r)
	}
	_, err = e.ctl.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "nope", VolumeCapabilities: []*csi.VolumeCapability{mountCap}})
	wantCode(t, err, codes.NotFound)
}

// An xfs volume is never smaller than mkfs.xfs accepts (it would be created
// and then fail every NodeStage): a smaller request is rounded up to
// driver.MinXFSVolumeSizeBytes, whether the fstype comes from the mount
// capability or the class's parameter, and a limit below it is refused
// naming the minimum. ext4 and block volumes keep the driver's minimum.
func TestCreateVolumeFilesystemMinimum(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	xfsCap := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: storageclass.FSXFS}},
		AccessMode: mountCap.AccessMode,
	}
	small := &csi.CapacityRange{RequiredBytes: 64 << 20}
	for _, tt := range []struct {
		name   string
		caps   *csi.VolumeCapability
		params map[string]string
		want   int64
	}{
		{"xfs-capability", xfsCap, nil, driver.MinXFSVolumeSizeBytes},
		{"xfs-parameter", mountCap, map[string]string{storageclass.KeyFSType: " XFS"}, driver.MinXFSVolumeSizeBytes},
		{"ext4", mountCap, nil, 64 << 20},
		{"block", blockCap, map[string]string{storageclass.KeyFSType: "xfs"}, 64 << 20},
	} {
		resp, err := e.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: tt.name, CapacityRange: small,
			VolumeCapabilities: []*csi.VolumeCapability{tt.caps}, Parameters: tt.params})
		must(t, err)
		if got := resp.GetVolume().GetCapacityBytes(); got != tt.want {
			t.Errorf("%s: capacity %d, want %d", tt.name, got, tt.want)
		}
		if got := e.volume(resp.GetVolume().GetVolumeId()).SizeBytes; got != tt.want {
			t.Errorf("%s: the provisioner was asked for %d bytes, want %d", tt.name, got, tt.want)
		}
	}
	_, err := e.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "xfs-limited", VolumeCapabilities: []*csi.VolumeCapability{xfsCap},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20, LimitBytes: 200 << 20}})
	wantCode(t, err, codes.OutOfRange)
	if !strings.Contains(err.Error(), fmt.Sprint(driver.MinXFSVolumeSizeBytes)) {
		t.Fatalf("the refusal does not name the minimum: %v", err)
	}
	vols, _, err := e.prov.ListVolumes(ctx, "", 0)
	must(t, err)
	for _, v := range vols {
		if v.Name == "xfs-limited" {
			t.Fatalf("a refused volume was created: %+v", v)
		}
	}
}
