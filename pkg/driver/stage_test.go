package driver_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
)

func TestStageCreatesThenReuses(t *testing.T) {
	e := newEnv(t)
	id := e.create("v", "3")
	e.publish(id)
	must(t, e.stage(id, mountCap))

	v := e.volume(id)
	want, _ := mdraid.NormalizeUUID(v.MDUUID)
	arrays := e.raid.Arrays()
	if e.raid.Creates != 1 || len(arrays) != 1 {
		t.Fatalf("creates %d, arrays %v", e.raid.Creates, arrays)
	}
	a, err := e.raid.ReadArray(filepath.Base(arrays[0]))
	must(t, err)
	if a.UUID != want || a.RaidDisks != 3 {
		t.Fatalf("array %+v, want the provisioner's uuid %s with 3 members", a, want)
	}
	// New replicas are zeros on every leg: no initial resync.
	if lc := e.raid.LastCreate; !lc.AssumeClean || lc.DataOffset != layout.MetadataReserve || lc.BitmapChunk != driver.DefaultBitmapChunkBytes {
		t.Errorf("first-use create options %+v: want assume-clean, the metadata reserve and the default bitmap chunk", lc)
	}
	if len(e.ini.Connected()) != 3 {
		t.Fatalf("connected %v", e.ini.Connected())
	}
	o := e.ini.Options[0]
	if *o.FastIOFailTmo != 1 || *o.ReconnectDelay != 2 || *o.CtrlLossTmo != 300 || *o.KeepAliveTmo != 5 || o.HostID == "" || o.HostNQN != v.PublishedHost {
		t.Fatalf("connect options %+v", o)
	}
	if e.countCalls("mkfs.ext4") != 1 || !e.mounted(e.staging(id)) {
		t.Fatalf("format/mount: calls %v, mounted %v", e.exec.Calls, e.mounted(e.staging(id)))
	}
	for _, p := range []string{filepath.Join(e.opts.StateDir, id+".json"), e.staging(id) + ".nvmirror.json"} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("staging state: %v", err)
		}
	}

	// A retry (the CO lost the answer) changes nothing.
	connects := e.ini.Connects
	must(t, e.stage(id, mountCap))
	if e.raid.Creates != 1 || e.ini.Connects != connects || e.countCalls("mkfs") != 1 {
		t.Fatal("a repeated NodeStage redid work")
	}
	// Staged as mount, staging as block is refused.
	wantCode(t, e.stage(id, blockCap), codes.FailedPrecondition)

	for range 2 {
		must(t, e.unstage(id))
	}
	if len(e.raid.Arrays()) != 0 || len(e.ini.Connected()) != 0 || e.mounted(e.staging(id)) {
		t.Fatalf("after unstage: arrays %v, connected %v", e.raid.Arrays(), e.ini.Connected())
	}
	if _, err := os.Stat(filepath.Join(e.opts.StateDir, id+".json")); !os.IsNotExist(err) {
		t.Fatal("state left after unstage")
	}
}

func TestStageAssemblesDegradedAndKeepsData(t *testing.T) {
	e := newEnv(t)
	id := e.create("v", "3")
	e.publish(id)
	must(t, e.stage(id, mountCap))
	must(t, e.unstage(id))

	v := e.volume(id)
	e.fabric.SetDown(v.Replicas[2].NQN, true)
	e.fabric.SetUUID(v.Replicas[1].NQN, "00000000-0000-4000-8000-000000000000") // a wrong namespace behind the NQN
	must(t, e.stage(id, mountCap))
	if e.raid.Creates != 1 {
		t.Fatal("array re-created instead of assembled")
	}
	if e.countCalls("mkfs") != 1 {
		t.Fatal("existing filesystem formatted again")
	}
	a, err := e.raid.ReadArray(filepath.Base(e.raid.Arrays()[0]))
	must(t, err)
	if len(a.Members) != 1 || a.Degraded != 2 {
		t.Fatalf("array %+v, want 1 member (one replica away, one with the wrong identity)", a)
	}
	h, err := e.node.NodeGetVolumeHealth(context.Background(), &csi.NodeGetVolumeHealthRequest{VolumeId: id})
	must(t, err)
	st := h.GetVolumeHealth().GetHealthStatuses()
	if len(st) != 1 || st[0].GetStatus() != csi.VolumeHealthErrorType_DEGRADED || !strings.Contains(st[0].GetMessage(), "1 of 3 slots in sync") {
		t.Fatalf("health %v", h.GetVolumeHealth())
	}
	must(t, e.unstage(id))
	if len(e.ini.Connected()) != 0 {
		t.Fatalf("connections left: %v", e.ini.Connected())
	}
}

func TestFirstUseNeedsEveryReplica(t *testing.T) {
	e := newEnv(t)
	id := e.create("v", "3")
	e.publish(id)
	e.fabric.SetDown(e.volume(id).Replicas[0].NQN, true)
	wantCode(t, e.stage(id, mountCap), codes.Unavailable)
	if e.raid.Creates != 0 || len(e.ini.Connected()) != 0 {
		t.Fatalf("failed stage left creates=%d connected=%v", e.raid.Creates, e.ini.Connected())
	}
	if _, err := os.Stat(filepath.Join(e.opts.StateDir, id+".json")); !os.IsNotExist(err) {
		t.Fatal("state left after a rolled back stage")
	}
}

func TestNeverCreatesOverUnexpectedData(t *testing.T) {
	tests := []struct {
		name  string
		plant func(e *env, namespace string)
	}{
		{"foreign md superblock", func(e *env, dev string) {
			e.raid.SetSuperblock(dev, mdraid.Superblock{UUID: "11111111:22222222:33333333:44444444", Name: "other"})
		}},
		{"filesystem without superblock", func(e *env, dev string) { e.exec.SetFS(dev, "xfs") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			id := e.create("v", "2")
			e.publish(id)
			// Data lives on the namespace, whatever device name it gets.
			tt.plant(e, "ns:"+e.volume(id).Replicas[1].NQN)
			err := e.stage(id, mountCap)
			wantCode(t, err, codes.FailedPrecondition)
			if !strings.Contains(err.Error(), "refusing to create") {
				t.Fatalf("error %v", err)
			}
			if e.raid.Creates != 0 || e.countCalls("mkfs") != 0 || len(e.ini.Connected()) != 0 {
				t.Fatalf("creates=%d mkfs=%d connected=%v", e.raid.Creates, e.countCalls("mkfs"), e.ini.Connected())
			}
		})
	}
}

func TestStageRefusesUnpublishedVolume(t *testing.T) {
	e := newEnv(t)
	id := e.create("v", "2")
	err := e.stage(id, mountCap)
	wantCode(t, err, codes.FailedPrecondition)
	if len(e.ini.Connected()) != 0 {
		t.Fatal("connected to an unpublished volume")
	}
	wantCode(t, e.stage("nope", mountCap), codes.NotFound)
}

func TestSingleReplicaVolumeWithoutMD(t *testing.T) {
	e := newEnv(t)
	id := e.create("v", "1")
	e.publish(id)
	must(t, e.stage(id, mountCap))
	if len(e.raid.Arrays()) != 0 {
		t.Fatal("md used for a single replica")
	}
	if e.countCalls("mkfs.ext4 -F -m0 "+filepath.Join(e.root, "dev/nvme0n1")) != 1 {
		t.Fatalf("calls %v", e.exec.Calls)
	}
	must(t, e.unstage(id))
	if len(e.ini.Connected()) != 0 {
		t.Fatal("replica left connected")
	}
}

// The fsType of volume_context comes from the PV, which an admin may write
// by hand (a static PV): it must name a supported filesystem, or NodeStage
// would run whatever mkfs.<fsType> the host has.
func TestStageRefusesUnsupportedVolumeContextFSType(t *testing.T) {
	e := newEnv(t)
	id := e.create("v", "3")
	e.publish(id)
	for _, fs := range []string{"vfat", "btrfs", "EXT4", "ext4 -E root_owner=0:0", "../../tmp/x", "xfs\n"} {
		_, err := e.node.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: e.staging(id),
			VolumeCapability: mountCap, VolumeContext: map[string]string{driver.VolumeContextFSType: fs}})
		wantCode(t, err, codes.InvalidArgument)
		if !strings.Contains(err.Error(), "volume_context."+driver.VolumeContextFSType) {
			t.Errorf("fsType %q: error %v does not name volume_context.fsType", fs, err)
		}
	}
	if n := e.countCalls("mkfs"); n != 0 || len(e.ini.Connected()) != 0 {
		t.Fatalf("mkfs calls %d, connected %v after refused stages", n, e.ini.Connected())
	}
	_, err := e.node.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: e.staging(id),
		VolumeCapability: mountCap, VolumeContext: map[string]string{driver.VolumeContextFSType: "xfs"}})
	must(t, err)
	if e.countCalls("mkfs.xfs") != 1 {
		t.Fatalf("calls %v", e.exec.Calls)
	}
}
