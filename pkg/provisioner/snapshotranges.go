package provisioner

import (
	"context"
	"errors"
	"fmt"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// MaxRangesPage is the most ranges one GetSnapshotRanges answer carries.
const MaxRangesPage = 1000

// RangesRequest is a GetSnapshotRanges call: the allocated ranges of a
// snapshot, or (Base set) the ranges that changed since Base, in volume
// byte offsets from Start.
type RangesRequest struct {
	SnapshotID, Base string
	Start            int64
	Max              int
}

// SnapshotRanges answers RangesRequest from a storage node holding complete
// copies of both snapshots: on a reflink pool, extents the copies share are
// unchanged without being read; everything else is compared. When no
// storage node holds both, the snapshot's allocated ranges are returned (a
// superset of what changed: correct for a backup, only larger). next is the
// offset to continue from (0: done).
func (s *Service) SnapshotRanges(ctx context.Context, req RangesRequest) (ranges []ByteRange, size, next int64, err error) {
	snap, err := s.readySnapshot(ctx, req.SnapshotID, "snapshot_id")
	if err != nil {
		return nil, 0, 0, err
	}
	if req.Start < 0 || req.Start > snap.SizeBytes {
		return nil, 0, 0, fmt.Errorf("%w: starting_offset %d is outside the snapshot's %d bytes", ErrOutOfRange, req.Start, snap.SizeBytes)
	}
	if req.Max <= 0 || req.Max > MaxRangesPage {
		req.Max = MaxRangesPage
	}
	nodes := readyCopies(snap)
	base := ""
	if req.Base != "" {
		b, err := s.readySnapshot(ctx, req.Base, "base_snapshot_id")
		if err != nil {
			return nil, 0, 0, err
		}
		if b.SourceVolumeID != snap.SourceVolumeID || b.DataOffset != snap.DataOffset {
			return nil, 0, 0, fmt.Errorf("%w: base_snapshot_id %s is of volume %s, snapshot %s of volume %s", ErrInvalidArgument, b.ID, b.SourceVolumeID, snap.ID, snap.SourceVolumeID)
		}
		if both := common(nodes, readyCopies(b)); len(both) > 0 {
			nodes, base = both, b.ID
		}
	}
	var errs []error
	for _, node := range nodes {
		a, err := s.agentFor(ctx, node)
		if err == nil {
			var rs []ByteRange
			var n int64
			rs, n, err = a.SnapshotRanges(ctx, snap.ID, base, snap.DataOffset+req.Start, snap.SizeBytes-req.Start, req.Max)
			if err == nil {
				for _, r := range rs {
					if r.Offset -= snap.DataOffset; r.Offset+r.Length > snap.SizeBytes {
						r.Length = snap.SizeBytes - r.Offset
					}
					if r.Length > 0 {
						ranges = append(ranges, r)
					}
				}
				if n > 0 {
					next = n - snap.DataOffset
				}
				return ranges, snap.SizeBytes, next, nil
			}
		}
		errs = append(errs, fmt.Errorf("storage node %s: %w", node, err))
	}
	return nil, 0, 0, fmt.Errorf("snapshot %s: no storage node holding a copy answered: %w", snap.ID, errors.Join(errs...))
}

func (s *Service) readySnapshot(ctx context.Context, id, field string) (*store.Snapshot, error) {
	if id == "" {
		return nil, fmt.Errorf("%w: %s is required", ErrInvalidArgument, field)
	}
	snap, err := s.o.Store.GetSnapshot(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", field, id, err)
	}
	if snap.State != store.SnapshotReady {
		return nil, fmt.Errorf("snapshot %s is %s: %w", id, snap.State, ErrUnavailable)
	}
	return snap, nil
}

func common(a, b []string) []string {
	in := map[string]bool{}
	for _, x := range b {
		in[x] = true
	}
	var out []string
	for _, x := range a {
		if in[x] {
			out = append(out, x)
		}
	}
	return out
}
