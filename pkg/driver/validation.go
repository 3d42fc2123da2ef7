package driver

import (
	"fmt"
	"sort"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Request validators. Each returns InvalidArgument with a message starting
// with the request field's CSI name, so a user reading a PVC event knows which
// input was wrong. They check shape only; whether a volume exists is the
// handlers' job.

func invalid(field, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, fmt.Sprintf(format, args...))
}

func required(field, value string) error {
	if value == "" {
		return invalid(field, "required")
	}
	return nil
}

// supportedAccessModes are the single-node modes. Multi-node modes are
// impossible by design: md has no cluster locking, so two hosts assembling
// the same replicas corrupt the data.
var supportedAccessModes = map[csi.VolumeCapability_AccessMode_Mode]bool{
	csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER:        true,
	csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY:   true,
	csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER: true,
	csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:  true,
}

var supportedFSTypes = map[string]bool{"": true, storageclass.FSExt4: true, storageclass.FSXFS: true}

// validateCapability checks that cap is well formed (InvalidArgument).
// validateSupportedCapability: a well-formed capability this driver can
// serve (validateCapability, then unsupportedReason).
func validateSupportedCapability(field string, c *csi.VolumeCapability) error {
	if err := validateCapability(field, c); err != nil {
		return err
	}
	if r := unsupportedReason(c); r != "" {
		return invalid(field, "%s", r)
	}
	return nil
}

func validateCapability(field string, c *csi.VolumeCapability) error {
	if c == nil {
		return invalid(field, "required")
	}
	if c.GetBlock() == nil && c.GetMount() == nil {
		return invalid(field+".access_type", "one of block or mount is required")
	}
	if c.GetAccessMode() == nil || c.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_UNKNOWN {
		return invalid(field+".access_mode", "required")
	}
	return nil
}

func validateCapabilities(field string, caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return invalid(field, "at least one capability is required")
	}
	for i, c := range caps {
		if err := validateCapability(fmt.Sprintf("%s[%d]", field, i), c); err != nil {
			return err
		}
	}
	return nil
}

// unsupportedReason says why a well-formed capability cannot be served, or
// returns "" when it can.
func unsupportedReason(c *csi.VolumeCapability) string {
	mode := c.GetAccessMode().GetMode()
	if !supportedAccessModes[mode] {
		return fmt.Sprintf("access mode %s is not supported: a RAID1 volume can only be assembled on one node at a time (md has no cluster locking), so only single-node access modes are offered", mode)
	}
	if m := c.GetMount(); m != nil && !supportedFSTypes[m.GetFsType()] {
		return fmt.Sprintf("filesystem %q is not supported: use ext4 or xfs", m.GetFsType())
	}
	return ""
}

func validateCreateVolumeRequest(req *csi.CreateVolumeRequest) error {
	if p := storageclass.VolumeNameProblem(req.GetName()); p != "" {
		return invalid("name", "%s", p)
	}
	if err := validateCapabilities("volume_capabilities", req.GetVolumeCapabilities()); err != nil {
		return err
	}
	for i, c := range req.GetVolumeCapabilities() {
		if r := unsupportedReason(c); r != "" {
			return invalid(fmt.Sprintf("volume_capabilities[%d]", i), "%s", r)
		}
	}
	if _, _, err := contentSource(req); err != nil {
		return err
	}
	if err := validateMutableParameters(req.GetMutableParameters()); err != nil {
		return err
	}
	return nil
}

func validateMutableParameters(p map[string]string) error {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !storageclass.IsMutable(k) {
			return invalid("mutable_parameters", "%q cannot be changed after creation (mutable: %s)", k, strings.Join(storageclass.MutableKeys(), ", "))
		}
	}
	return nil
}

// volumeSize turns a CSI capacity range into the size to create: the
// required bytes (or the default when none is asked for) rounded up to 1 MiB
// and raised to minimum, which must not exceed the limit. A required size
// above layout.MaxVolumeSize is OutOfRange, checked before rounding so a
// size near 2^63 cannot wrap.
func volumeSize(r *csi.CapacityRange, defaultSize, minimum int64) (int64, error) {
	req, lim := r.GetRequiredBytes(), r.GetLimitBytes()
	if req < 0 {
		return 0, invalid("capacity_range.required_bytes", "must not be negative")
	}
	if lim < 0 {
		return 0, invalid("capacity_range.limit_bytes", "must not be negative")
	}
	if lim > 0 && lim < req {
		return 0, invalid("capacity_range", "limit_bytes %d is below required_bytes %d", lim, req)
	}
	if req > layout.MaxVolumeSize {
		return 0, status.Errorf(codes.OutOfRange, "capacity_range.required_bytes: %d is above the largest volume, %d bytes", req, layout.MaxVolumeSize)
	}
	size := req
	if size == 0 {
		size = defaultSize
		if lim > 0 && lim < size {
			size = lim
		}
	}
	size = max(roundUp(size, sizeGranularity), minimum)
	if lim > 0 && size > lim {
		return 0, status.Errorf(codes.OutOfRange, "capacity_range: volumes are multiples of 1 MiB and at least %d bytes; %d does not fit limit_bytes %d", minimum, size, lim)
	}
	return size, nil
}

// minVolumeSize is the smallest mount volume formatted fsType: a
// filesystem's own minimum where it has one above the driver's (xfs), so
// that the volume made is one NodeStage can format.
func minVolumeSize(fsType string) int64 {
	if fsType == storageclass.FSXFS {
		return MinXFSVolumeSizeBytes
	}
	return MinVolumeSizeBytes
}

// roundUp rounds n up to a multiple of unit; n must be at most
// layout.MaxVolumeSize, so the sum cannot overflow.
func roundUp(n, unit int64) int64 {
	return (n + unit - 1) / unit * unit
}

func validateControllerPublishRequest(req *csi.ControllerPublishVolumeRequest) error {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return err
	}
	if err := required("node_id", req.GetNodeId()); err != nil {
		return err
	}
	return validateCapability("volume_capability", req.GetVolumeCapability())
}

func validateNodeStageRequest(req *csi.NodeStageVolumeRequest) error {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return err
	}
	if err := required("staging_target_path", req.GetStagingTargetPath()); err != nil {
		return err
	}
	if err := validateSupportedCapability("volume_capability", req.GetVolumeCapability()); err != nil {
		return err
	}
	// The fsType a mount volume falls back to comes from the PV, which an
	// admin may write by hand (a static PV): it names the mkfs NodeStage
	// runs, so it must be one this driver supports, exactly as CreateVolume
	// returns it.
	if m := req.GetVolumeCapability().GetMount(); m != nil && m.GetFsType() == "" {
		if fs := req.GetVolumeContext()[VolumeContextFSType]; !supportedFSTypes[fs] {
			return invalid("volume_context."+VolumeContextFSType, "filesystem %q is not supported: use %s or %s", fs, storageclass.FSExt4, storageclass.FSXFS)
		}
	}
	return nil
}

func validateNodePublishRequest(req *csi.NodePublishVolumeRequest) error {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return err
	}
	if err := required("staging_target_path", req.GetStagingTargetPath()); err != nil {
		return err
	}
	if err := required("target_path", req.GetTargetPath()); err != nil {
		return err
	}
	return validateSupportedCapability("volume_capability", req.GetVolumeCapability())
}
