package driver

import (
	"math"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const mib = int64(1 << 20)

func mountCap(mode csi.VolumeCapability_AccessMode_Mode, fs string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fs}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func blockCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func TestVolumeSize(t *testing.T) {
	tests := []struct {
		name     string
		r        *csi.CapacityRange
		want     int64
		wantCode codes.Code
	}{
		{"nothing asked: default", nil, DefaultVolumeSizeBytes, codes.OK},
		{"exact MiB", &csi.CapacityRange{RequiredBytes: 64 * mib}, 64 * mib, codes.OK},
		{"rounded up to MiB", &csi.CapacityRange{RequiredBytes: 64*mib + 1}, 65 * mib, codes.OK},
		{"raised to minimum", &csi.CapacityRange{RequiredBytes: 1}, MinVolumeSizeBytes, codes.OK},
		{"limit only, below default", &csi.CapacityRange{LimitBytes: 100 * mib}, 100 * mib, codes.OK},
		{"limit equals rounded", &csi.CapacityRange{RequiredBytes: 20*mib - 5, LimitBytes: 20 * mib}, 20 * mib, codes.OK},
		{"rounding exceeds limit", &csi.CapacityRange{RequiredBytes: 20*mib + 1, LimitBytes: 20*mib + 2}, 0, codes.OutOfRange},
		{"minimum exceeds limit", &csi.CapacityRange{LimitBytes: mib}, 0, codes.OutOfRange},
		{"limit below required", &csi.CapacityRange{RequiredBytes: 64 * mib, LimitBytes: 32 * mib}, 0, codes.InvalidArgument},
		{"negative required", &csi.CapacityRange{RequiredBytes: -1}, 0, codes.InvalidArgument},
		{"negative limit", &csi.CapacityRange{LimitBytes: -1}, 0, codes.InvalidArgument},
		{"largest volume", &csi.CapacityRange{RequiredBytes: layout.MaxVolumeSize}, layout.MaxVolumeSize, codes.OK},
		{"above the largest volume", &csi.CapacityRange{RequiredBytes: layout.MaxVolumeSize + 1}, 0, codes.OutOfRange},
		{"MaxInt64 does not wrap", &csi.CapacityRange{RequiredBytes: math.MaxInt64}, 0, codes.OutOfRange},
		{"MaxInt64 - 1 MiB does not wrap", &csi.CapacityRange{RequiredBytes: math.MaxInt64 - mib + 2}, 0, codes.OutOfRange},
		{"MaxInt64 limit only", &csi.CapacityRange{LimitBytes: math.MaxInt64}, DefaultVolumeSizeBytes, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := volumeSize(tt.r, DefaultVolumeSizeBytes, MinVolumeSizeBytes)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tt.wantCode)
			}
			if got != tt.want {
				t.Fatalf("size %d, want %d", got, tt.want)
			}
		})
	}
}

func TestValidateCreateVolumeRequest(t *testing.T) {
	sw := csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	tests := []struct {
		name    string
		req     *csi.CreateVolumeRequest
		mention string // "" = valid
	}{
		{"valid mount", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{mountCap(sw, "xfs")}}, ""},
		{"valid block", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{blockCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER)}}, ""},
		{"valid mutable", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{mountCap(sw, "")}, MutableParameters: map[string]string{storageclass.KeyMaxReplicaDownTime: "5"}}, ""},
		{"no name", &csi.CreateVolumeRequest{VolumeCapabilities: []*csi.VolumeCapability{mountCap(sw, "")}}, "name: required"},
		{"name too long", &csi.CreateVolumeRequest{Name: strings.Repeat("n", 254), VolumeCapabilities: []*csi.VolumeCapability{mountCap(sw, "")}}, "name: "},
		{"name with a slash", &csi.CreateVolumeRequest{Name: "a/b", VolumeCapabilities: []*csi.VolumeCapability{mountCap(sw, "")}}, "name: "},
		{"name with a newline", &csi.CreateVolumeRequest{Name: "a\nb", VolumeCapabilities: []*csi.VolumeCapability{mountCap(sw, "")}}, "name: "},
		{"no capabilities", &csi.CreateVolumeRequest{Name: "v"}, "volume_capabilities"},
		{"no access type", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{{AccessMode: &csi.VolumeCapability_AccessMode{Mode: sw}}}}, "volume_capabilities[0].access_type"},
		{"no access mode", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}}}}, "access_mode"},
		{"multi-node", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "")}}, "one node at a time"},
		{"multi-node reader", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)}}, "one node at a time"},
		{"fs type", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{mountCap(sw, "btrfs")}}, "btrfs"},
		{"clone of no volume", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{mountCap(sw, "")},
			VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{}}}}, "volume_content_source.volume.volume_id"},
		{"restore of no snapshot", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{mountCap(sw, "")},
			VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{}}}}, "volume_content_source.snapshot.snapshot_id"},
		{"empty content source", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{mountCap(sw, "")},
			VolumeContentSource: &csi.VolumeContentSource{}}, "volume_content_source"},
		{"immutable in mutable", &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{mountCap(sw, "")}, MutableParameters: map[string]string{storageclass.KeyProvisioningType: "thick"}}, `"provisioningType" cannot be changed`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validateCreateVolumeRequest(tt.req)
			if tt.mention == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.mention) {
				t.Fatalf("got %v, want InvalidArgument mentioning %q", err, tt.mention)
			}
		})
	}
}

func TestValidateNodeRequests(t *testing.T) {
	c := mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "")
	stage := []struct {
		req   *csi.NodeStageVolumeRequest
		field string
	}{
		{&csi.NodeStageVolumeRequest{StagingTargetPath: "/s", VolumeCapability: c}, "volume_id"},
		{&csi.NodeStageVolumeRequest{VolumeId: "v", VolumeCapability: c}, "staging_target_path"},
		{&csi.NodeStageVolumeRequest{VolumeId: "v", StagingTargetPath: "/s"}, "volume_capability"},
	}
	for _, tt := range stage {
		if err := validateNodeStageRequest(tt.req); status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tt.field) {
			t.Errorf("stage %v: got %v, want InvalidArgument on %s", tt.req, err, tt.field)
		}
	}
	publish := []struct {
		req   *csi.NodePublishVolumeRequest
		field string
	}{
		{&csi.NodePublishVolumeRequest{StagingTargetPath: "/s", TargetPath: "/t", VolumeCapability: c}, "volume_id"},
		{&csi.NodePublishVolumeRequest{VolumeId: "v", TargetPath: "/t", VolumeCapability: c}, "staging_target_path"},
		{&csi.NodePublishVolumeRequest{VolumeId: "v", StagingTargetPath: "/s", VolumeCapability: c}, "target_path"},
		{&csi.NodePublishVolumeRequest{VolumeId: "v", StagingTargetPath: "/s", TargetPath: "/t"}, "volume_capability"},
	}
	for _, tt := range publish {
		if err := validateNodePublishRequest(tt.req); status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tt.field) {
			t.Errorf("publish %v: got %v, want InvalidArgument on %s", tt.req, err, tt.field)
		}
	}
}

// FuzzVolumeSize: whatever the capacity range, a size that is accepted is
// a whole number of MiB between the minimum and the largest volume, within
// the limit, and never below what was required.
func FuzzVolumeSize(f *testing.F) {
	f.Add(int64(0), int64(0))
	f.Add(int64(math.MaxInt64), int64(0))
	f.Add(int64(math.MaxInt64-mib+2), int64(math.MaxInt64))
	f.Add(layout.MaxVolumeSize, layout.MaxVolumeSize)
	f.Add(int64(20*mib+1), int64(20*mib+2))
	f.Fuzz(func(t *testing.T, req, lim int64) {
		size, err := volumeSize(&csi.CapacityRange{RequiredBytes: req, LimitBytes: lim}, DefaultVolumeSizeBytes, MinVolumeSizeBytes)
		if err != nil {
			if c := status.Code(err); c != codes.InvalidArgument && c != codes.OutOfRange {
				t.Fatalf("volumeSize(%d, %d): code %v", req, lim, c)
			}
			return
		}
		if size%sizeGranularity != 0 || size < MinVolumeSizeBytes || size > layout.MaxVolumeSize || size < req || (lim > 0 && size > lim) {
			t.Fatalf("volumeSize(%d, %d) = %d", req, lim, size)
		}
	})
}

// FuzzValidateNodeStageFSType: whatever volume_context carries, NodeStage
// accepts only an fsType it formats with a supported mkfs.
func FuzzValidateNodeStageFSType(f *testing.F) {
	for _, s := range []string{"", "ext4", "xfs", "vfat", "EXT4", "ext4 ", "../x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, fs string) {
		req := &csi.NodeStageVolumeRequest{VolumeId: "v", StagingTargetPath: "/s",
			VolumeCapability: mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, ""), VolumeContext: map[string]string{VolumeContextFSType: fs}}
		err := validateNodeStageRequest(req)
		ok := fs == "" || fs == storageclass.FSExt4 || fs == storageclass.FSXFS
		if (err == nil) != ok {
			t.Fatalf("fsType %q: %v", fs, err)
		}
		if err != nil && (status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), "volume_context.fsType")) {
			t.Fatalf("fsType %q: %v", fs, err)
		}
	})
}
