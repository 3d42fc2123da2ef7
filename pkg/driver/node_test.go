package driver_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
)

func (e *env) countCalls(prefix string) int {
	n := 0
	for _, c := range e.exec.Calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func (e *env) mounted(path string) bool {
	m, _ := e.mounter.IsMountPoint(path)
	return m
}

func TestPublishUnpublish(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.create("v", "2")
	e.publish(id)
	target := filepath.Join(e.tmp, "pods", "a", "mount")
	pub := &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: e.staging(id), TargetPath: target, VolumeCapability: mountCap, Readonly: true}
	_, err := e.node.NodePublishVolume(ctx, pub)
	wantCode(t, err, codes.FailedPrecondition) // not staged yet
	must(t, e.stage(id, mountCap))
	for range 2 {
		_, err = e.node.NodePublishVolume(ctx, pub)
		must(t, err)
	}
	mps, _ := e.mounter.List()
	var bind []string
	for _, m := range mps {
		if m.Path == target {
			bind = m.Opts
		}
	}
	if !slices.Contains(bind, "bind") || !slices.Contains(bind, "ro") {
		t.Fatalf("target mount options %v", bind)
	}
	stats, err := e.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
	must(t, err)
	if len(stats.GetUsage()) != 2 || stats.GetUsage()[0].GetTotal() <= 0 {
		t.Fatalf("stats %v", stats)
	}
	_, err = e.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: "/elsewhere"})
	wantCode(t, err, codes.NotFound)

	// A second target is fine for SINGLE_NODE_WRITER, not for SINGLE_NODE_SINGLE_WRITER.
	ssw := &csi.VolumeCapability{AccessType: mountCap.AccessType, AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER}}
	_, err = e.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: e.staging(id), TargetPath: target + "2", VolumeCapability: ssw})
	wantCode(t, err, codes.FailedPrecondition)

	for range 2 {
		_, err = e.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
		must(t, err)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) || e.mounted(target) {
		t.Fatal("target not unmounted and removed")
	}
}

func TestBlockVolume(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.create("v", "2")
	e.publish(id)
	must(t, e.stage(id, blockCap))
	if e.countCalls("mkfs") != 0 || e.mounted(e.staging(id)) {
		t.Fatal("block volume formatted or mounted")
	}
	target := filepath.Join(e.tmp, "pods", "b", "dev")
	_, err := e.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: e.staging(id), TargetPath: target, VolumeCapability: blockCap})
	must(t, err)
	if fi, err := os.Stat(target); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("block target %v %v", fi, err)
	}
	mps, _ := e.mounter.List()
	if len(mps) != 1 || mps[0].Device != e.raid.Arrays()[0] {
		t.Fatalf("mounts %v, want the md device bound", mps)
	}
	stats, err := e.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
	must(t, err)
	if stats.GetUsage()[0].GetTotal() != 64<<20 {
		t.Fatalf("block size %v", stats.GetUsage())
	}
}

func TestNodeExpand(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.create("v", "2")
	e.publish(id)
	must(t, e.stage(id, mountCap))
	req := &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: e.staging(id), CapacityRange: &csi.CapacityRange{RequiredBytes: 128 << 20}}
	_, err := e.node.NodeExpandVolume(ctx, req)
	wantCode(t, err, codes.FailedPrecondition) // replicas not grown yet
	_, err = e.ctl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 128 << 20}})
	must(t, err)
	r, err := e.node.NodeExpandVolume(ctx, req)
	must(t, err)
	if r.GetCapacityBytes() != 128<<20 || e.countCalls("resize2fs") == 0 {
		t.Fatalf("expand %v, calls %v", r, e.exec.Calls)
	}
	_, err = e.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: "nope", VolumePath: "/x"})
	wantCode(t, err, codes.NotFound)
}

func TestUnstageBusyArrayIsRetried(t *testing.T) {
	e := newEnv(t)
	id := e.create("v", "2")
	e.publish(id)
	must(t, e.stage(id, mountCap))
	dev := e.raid.Arrays()[0]
	e.raid.Busy[dev] = true
	wantCode(t, e.unstage(id), codes.FailedPrecondition)
	if _, err := os.Stat(filepath.Join(e.opts.StateDir, id+".json")); err != nil {
		t.Fatal("state dropped while the array still runs")
	}
	// The healer sees the volume as being unstaged, not as degraded.
	staged, err := stagestate.ListVolumes(e.opts.StateDir)
	must(t, err)
	if len(staged) != 1 || staged[0].Staged {
		t.Fatalf("half-unstaged volume listed as %+v, want not staged", staged)
	}
	delete(e.raid.Busy, dev)
	must(t, e.unstage(id))
	if len(e.raid.Arrays()) != 0 || len(e.ini.Connected()) != 0 {
		t.Fatal("retry did not finish the unstage")
	}
}

func TestNodeInfoAndCapabilities(t *testing.T) {
	e := newEnv(t)
	ni, err := e.node.NodeGetInfo(context.Background(), &csi.NodeGetInfoRequest{})
	must(t, err)
	if !strings.HasPrefix(ni.GetNodeId(), "worker-1/nqn.2014-08.org.nvmexpress:uuid:") || ni.GetMaxVolumesPerNode() != 100 {
		t.Fatalf("node info %v", ni)
	}
	caps, err := e.node.NodeGetCapabilities(context.Background(), &csi.NodeGetCapabilitiesRequest{})
	must(t, err)
	var got []string
	for _, c := range caps.GetCapabilities() {
		got = append(got, c.GetRpc().GetType().String())
	}
	slices.Sort(got)
	want := []string{"EXPAND_VOLUME", "GET_VOLUME_HEALTH", "GET_VOLUME_STATS", "SINGLE_NODE_MULTI_WRITER", "STAGE_UNSTAGE_VOLUME"}
	if !slices.Equal(got, want) {
		t.Fatalf("capabilities %v, want %v", got, want)
	}
	_ = driver.DriverName
}

// TestStageXFSWithoutUUIDCheck: NodeStage mounts XFS with nouuid (a
// restore or clone has its source's filesystem UUID, which XFS refuses to
// mount twice on one node) and ext4 with the capability's flags alone.
func TestStageXFSWithoutUUIDCheck(t *testing.T) {
	e := newEnv(t)
	stagedOpts := func(id string) []string {
		mps, _ := e.mounter.List()
		for _, m := range mps {
			if m.Path == e.staging(id) {
				return m.Opts
			}
		}
		t.Fatalf("%s not mounted at %s", id, e.staging(id))
		return nil
	}
	for _, c := range []struct {
		fsType string
		flags  []string
		want   []string
	}{
		{"xfs", nil, []string{"nouuid"}},
		{"xfs", []string{"noatime", "nouuid"}, []string{"noatime", "nouuid"}},
		{"ext4", []string{"noatime"}, []string{"noatime"}},
	} {
		id := e.create("fs-"+c.fsType+strings.Join(c.flags, "-"), "2")
		e.publish(id)
		capability := &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: c.fsType, MountFlags: c.flags}},
			AccessMode: mountCap.AccessMode,
		}
		must(t, e.stage(id, capability))
		got := slices.DeleteFunc(stagedOpts(id), func(o string) bool { return o == "defaults" })
		if !slices.Equal(got, c.want) {
			t.Errorf("%s with flags %v staged with options %v, want %v", c.fsType, c.flags, got, c.want)
		}
	}
}
