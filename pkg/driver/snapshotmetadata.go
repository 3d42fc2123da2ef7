package driver

import (
	"context"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"
)

// The CSI SnapshotMetadata service: which ranges of a snapshot hold data,
// and which changed between two snapshots of a volume, so a backup copies
// only those. The storage nodes answer from their copies (on a reflink
// pool, extents two copies share are unchanged without being read).
// Ranges are variable length, in volume byte offsets, ascending; each
// message carries at most maxMetadataPerMessage of them (the CO's
// max_results when smaller).

const maxMetadataPerMessage = 1000

type snapshotMetadata struct {
	csi.UnimplementedSnapshotMetadataServer
	d *Driver
}

// metadataStream is what both calls send on.
type metadataStream interface {
	Send(size int64, ranges []*csi.BlockMetadata) error
}

type allocatedStream struct {
	csi.SnapshotMetadata_GetMetadataAllocatedServer
}

func (s allocatedStream) Send(size int64, ranges []*csi.BlockMetadata) error {
	return s.SnapshotMetadata_GetMetadataAllocatedServer.Send(&csi.GetMetadataAllocatedResponse{
		BlockMetadataType: csi.BlockMetadataType_VARIABLE_LENGTH, VolumeCapacityBytes: size, BlockMetadata: ranges})
}

type deltaStream struct {
	csi.SnapshotMetadata_GetMetadataDeltaServer
}

func (s deltaStream) Send(size int64, ranges []*csi.BlockMetadata) error {
	return s.SnapshotMetadata_GetMetadataDeltaServer.Send(&csi.GetMetadataDeltaResponse{
		BlockMetadataType: csi.BlockMetadataType_VARIABLE_LENGTH, VolumeCapacityBytes: size, BlockMetadata: ranges})
}

func (m snapshotMetadata) GetMetadataAllocated(req *csi.GetMetadataAllocatedRequest, stream csi.SnapshotMetadata_GetMetadataAllocatedServer) error {
	if err := required("snapshot_id", req.GetSnapshotId()); err != nil {
		return err
	}
	return m.stream(stream.Context(), req.GetSnapshotId(), "", req.GetStartingOffset(), req.GetMaxResults(), allocatedStream{stream})
}

func (m snapshotMetadata) GetMetadataDelta(req *csi.GetMetadataDeltaRequest, stream csi.SnapshotMetadata_GetMetadataDeltaServer) error {
	if err := required("base_snapshot_id", req.GetBaseSnapshotId()); err != nil {
		return err
	}
	if err := required("target_snapshot_id", req.GetTargetSnapshotId()); err != nil {
		return err
	}
	return m.stream(stream.Context(), req.GetTargetSnapshotId(), req.GetBaseSnapshotId(), req.GetStartingOffset(), req.GetMaxResults(), deltaStream{stream})
}

// stream pages through the provisioner's answer and sends it on.
func (m snapshotMetadata) stream(ctx context.Context, snapshotID, base string, start int64, maxResults int32, out metadataStream) error {
	if start < 0 {
		return invalid("starting_offset", "must not be negative")
	}
	if maxResults < 0 {
		return invalid("max_results", "must not be negative")
	}
	per := maxMetadataPerMessage
	if maxResults > 0 && int(maxResults) < per {
		per = int(maxResults)
	}
	sent := 0
	for {
		ranges, size, next, err := m.d.prov.SnapshotRanges(ctx, snapshotID, base, start, per)
		if err != nil {
			return grpcError(fmt.Errorf("snapshot metadata of %s (base %q) from %d: %w", snapshotID, base, start, err))
		}
		msg := make([]*csi.BlockMetadata, 0, len(ranges))
		for _, r := range ranges {
			msg = append(msg, &csi.BlockMetadata{ByteOffset: r.Offset, SizeBytes: r.Length})
		}
		if len(msg) > 0 || sent == 0 {
			if err := out.Send(size, msg); err != nil {
				return err
			}
			sent += len(msg)
		}
		if next == 0 {
			klog.V(2).InfoS("Sent snapshot metadata", "snapshotID", snapshotID, "base", base, "ranges", sent)
			return nil
		}
		start = next
	}
}
