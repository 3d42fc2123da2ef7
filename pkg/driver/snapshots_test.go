package driver_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/nvmirror/nvmirror/pkg/volume"
)

func TestSnapshotMetadataStreamsEveryPage(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cv, err := e.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{mountCap}})
	must(t, err)
	snap, err := e.ctl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: cv.GetVolume().GetVolumeId()})
	must(t, err)
	for i := int64(0); i < 2500; i++ {
		e.prov.Ranges = append(e.prov.Ranges, volume.ByteRange{Offset: i << 20, Length: 4096})
	}
	read := func(req *csi.GetMetadataDeltaRequest) ([]int64, int, error) {
		st, err := e.meta.GetMetadataDelta(ctx, req)
		if err != nil {
			return nil, 0, err
		}
		var offs []int64
		msgs := 0
		for {
			m, err := st.Recv()
			if errors.Is(err, io.EOF) {
				return offs, msgs, nil
			}
			if err != nil {
				return nil, 0, err
			}
			msgs++
			if m.GetBlockMetadataType() != csi.BlockMetadataType_VARIABLE_LENGTH || m.GetVolumeCapacityBytes() != cv.GetVolume().GetCapacityBytes() {
				t.Errorf("message %d: type %v capacity %d", msgs, m.GetBlockMetadataType(), m.GetVolumeCapacityBytes())
			}
			for _, b := range m.GetBlockMetadata() {
				offs = append(offs, b.GetByteOffset())
			}
		}
	}
	id := snap.GetSnapshot().GetSnapshotId()
	offs, msgs, err := read(&csi.GetMetadataDeltaRequest{BaseSnapshotId: id, TargetSnapshotId: id})
	must(t, err)
	if len(offs) != 2500 || msgs != 3 || !slices.IsSorted(offs) {
		t.Errorf("%d ranges in %d messages, want 2500 in 3 (1000 a message)", len(offs), msgs)
	}
	offs, msgs, err = read(&csi.GetMetadataDeltaRequest{BaseSnapshotId: id, TargetSnapshotId: id, StartingOffset: 2000 << 20, MaxResults: 100})
	must(t, err)
	if len(offs) != 500 || msgs != 5 || offs[0] != 2000<<20 {
		t.Errorf("from 2000 MiB by 100: %d ranges in %d messages starting at %d", len(offs), msgs, offs[0])
	}
	_, _, err = read(&csi.GetMetadataDeltaRequest{TargetSnapshotId: id})
	wantCode(t, err, codes.InvalidArgument)
	_, _, err = read(&csi.GetMetadataDeltaRequest{BaseSnapshotId: id, TargetSnapshotId: "nope"})
	wantCode(t, err, codes.NotFound)
	_, _, err = read(&csi.GetMetadataDeltaRequest{BaseSnapshotId: id, TargetSnapshotId: id, StartingOffset: -1})
	wantCode(t, err, codes.InvalidArgument)
}

// groupOfTwo creates volumes a and b and group snapshot g of both.
func groupOfTwo(t *testing.T, e *env) (volumeIDs []string, g *csi.VolumeGroupSnapshot) {
	t.Helper()
	ctx := context.Background()
	for _, n := range []string{"a", "b"} {
		cv, err := e.ctl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: n, VolumeCapabilities: []*csi.VolumeCapability{mountCap}})
		must(t, err)
		volumeIDs = append(volumeIDs, cv.GetVolume().GetVolumeId())
	}
	resp, err := e.group.CreateVolumeGroupSnapshot(ctx, &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: volumeIDs})
	must(t, err)
	return volumeIDs, resp.GetGroupSnapshot()
}

func TestGroupSnapshotChecksSnapshotIDs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ids, g := groupOfTwo(t, e)
	var err error
	if len(g.GetSnapshots()) != 2 || !g.GetReadyToUse() {
		t.Fatalf("group %v", g)
	}
	for _, s := range g.GetSnapshots() {
		if s.GetGroupSnapshotId() != g.GetGroupSnapshotId() {
			t.Errorf("member %v does not name its group", s)
		}
	}
	_, err = e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: g.GetGroupSnapshotId(), SnapshotIds: []string{"other"}})
	wantCode(t, err, codes.InvalidArgument)
	_, err = e.group.CreateVolumeGroupSnapshot(ctx, &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: ids[:1]})
	wantCode(t, err, codes.AlreadyExists)
	_, err = e.group.CreateVolumeGroupSnapshot(ctx, &csi.CreateVolumeGroupSnapshotRequest{Name: "h", SourceVolumeIds: []string{ids[0], ""}})
	wantCode(t, err, codes.InvalidArgument)
	var members []string
	for _, s := range g.GetSnapshots() {
		members = append(members, s.GetSnapshotId())
	}
	_, err = e.group.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: g.GetGroupSnapshotId(), SnapshotIds: members})
	must(t, err)
	_, err = e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: g.GetGroupSnapshotId()})
	wantCode(t, err, codes.NotFound)
}

// A DeleteVolumeGroupSnapshot that failed after deleting some members (the
// provisioner deletes them one by one) is retried by the CO with the same
// snapshot_ids: they are still the group's, and the retry deletes the rest.
// A list that is not the group's is still refused.
func TestGroupSnapshotDeleteRetriedAfterPartialDeletion(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, g := groupOfTwo(t, e)
	var members []string
	for _, s := range g.GetSnapshots() {
		members = append(members, s.GetSnapshotId())
	}
	// The first attempt's progress: one member gone.
	must(t, e.prov.DeleteSnapshot(ctx, members[0]))

	got, err := e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: g.GetGroupSnapshotId(), SnapshotIds: members})
	must(t, err)
	if n := len(got.GetGroupSnapshot().GetSnapshots()); n != 1 {
		t.Errorf("the group half deleted lists %d snapshots, want the 1 left", n)
	}
	_, err = e.group.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: g.GetGroupSnapshotId(), SnapshotIds: []string{members[1], "other"}})
	wantCode(t, err, codes.InvalidArgument)
	_, err = e.group.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: g.GetGroupSnapshotId(), SnapshotIds: members})
	must(t, err)
	_, err = e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: g.GetGroupSnapshotId()})
	wantCode(t, err, codes.NotFound)
	_, err = e.ctl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: members[1]})
	must(t, err)
	if _, err := e.prov.GetSnapshot(ctx, members[1]); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("the member left after the retry: %v", err)
	}
}
