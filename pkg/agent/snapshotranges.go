package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
)

// DefaultMaxRanges is SnapshotRanges' page size when the request gives
// none.
const DefaultMaxRanges = 1000

// RangesRequest is the input of SnapshotRanges.
type RangesRequest struct {
	SnapshotID     string
	BaseSnapshotID string
	Offset, Length int64
	MaxRanges      int
}

// rangeCollector gathers ascending ranges, merging adjacent ones, up to max
// ranges; the first range that does not fit sets next.
type rangeCollector struct {
	max  int
	out  []extent
	next int64
}

// add records [off, off+n); false once the page is full (next is set).
func (c *rangeCollector) add(off, n int64) bool {
	if c.next != 0 {
		return false
	}
	if k := len(c.out); k > 0 && c.out[k-1].end() >= off {
		c.out[k-1].Len = max(c.out[k-1].end(), off+n) - c.out[k-1].Off
		return true
	}
	if len(c.out) == c.max {
		c.next = off
		return false
	}
	c.out = append(c.out, extent{Off: off, Len: n})
	return true
}

// SnapshotRanges reports the allocated ranges of snapshot req.SnapshotID
// or, with a base, the ranges whose bytes differ from the base's: extents
// both files map to the same physical blocks (FIEMAP) are equal without
// reading; the rest of what either allocates is compared in 4 KiB blocks
// (a hole reads as zeros), and only blocks that differ are reported.
// Beyond the end of a smaller base, everything allocated is changed.
// Ranges are ascending and merged; next is where the next page starts (0:
// done).
func (s *Service) SnapshotRanges(ctx context.Context, req RangesRequest) ([]extent, int64, error) {
	if err := validateSnapshotID("snapshot_id", req.SnapshotID); err != nil {
		return nil, 0, err
	}
	if req.BaseSnapshotID != "" {
		if err := validateSnapshotID("base_snapshot_id", req.BaseSnapshotID); err != nil {
			return nil, 0, err
		}
	}
	if req.MaxRanges < 0 {
		return nil, 0, fieldError("max_ranges", "%d is negative", req.MaxRanges)
	}
	if req.MaxRanges == 0 {
		req.MaxRanges = DefaultMaxRanges
	}
	f, err := s.openSource(DataSource{SnapshotID: req.SnapshotID})
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	end, err := window(req.Offset, req.Length, fi.Size())
	if err != nil {
		return nil, 0, err
	}
	c := &rangeCollector{max: req.MaxRanges}
	changedFrom := req.Offset // from here on, allocated means changed
	if req.BaseSnapshotID != "" {
		b, err := s.openSource(DataSource{SnapshotID: req.BaseSnapshotID})
		if err != nil {
			return nil, 0, err
		}
		defer b.Close()
		bi, err := b.Stat()
		if err != nil {
			return nil, 0, err
		}
		if bi.Size() > fi.Size() {
			return nil, 0, fieldError("base_snapshot_id", "snapshot %s (%d bytes) is larger than %s (%d bytes)",
				req.BaseSnapshotID, bi.Size(), req.SnapshotID, fi.Size())
		}
		cmpEnd := min(end, bi.Size())
		changedFrom = max(req.Offset, cmpEnd)
		if req.Offset < cmpEnd {
			if err := diffRanges(ctx, c, f, b, req.Offset, cmpEnd); err != nil {
				return nil, 0, err
			}
		}
	}
	if changedFrom < end && c.next == 0 {
		exts, err := dataExtents(f, changedFrom, end)
		if err != nil {
			return nil, 0, err
		}
		for _, e := range exts {
			if !c.add(e.Off, e.Len) {
				break
			}
		}
	}
	return c.out, c.next, nil
}

// diffRanges adds to c the 4 KiB blocks of [start, end) whose bytes differ
// between f and base.
func diffRanges(ctx context.Context, c *rangeCollector, f, base *os.File, start, end int64) error {
	var candidates []extent
	fm, ferr := fiemap(f, start, end)
	bm, berr := fiemap(base, start, end)
	switch {
	case ferr == nil && berr == nil:
		candidates = subtractExtents(
			unionExtents(start, end, physExtentsToExtents(fm), physExtentsToExtents(bm)),
			sharedExtents(fm, bm, start, end))
	case errors.Is(ferr, errFiemapUnsupported) || errors.Is(berr, errFiemapUnsupported):
		// No block map: compare whatever either file holds.
		fd, err := dataExtents(f, start, end)
		if err != nil {
			return err
		}
		bd, err := dataExtents(base, start, end)
		if err != nil {
			return err
		}
		candidates = unionExtents(start, end, fd, bd)
	default:
		return errors.Join(ferr, berr)
	}
	a := make([]byte, chunkMax)
	b := make([]byte, chunkMax)
	done := start // compared up to here
	for _, e := range candidates {
		// Whole file blocks: a candidate may start or end inside one when
		// the filesystem's blocks are smaller; the shared part compares
		// equal anyway.
		lo := max(done, e.Off/BlockSize*BlockSize)
		hi := min(end, (e.end()+BlockSize-1)/BlockSize*BlockSize)
		for off := lo; off < hi; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(hi-off, chunkMax)
			if err := readFull(f, a[:n], off); err != nil {
				return err
			}
			if err := readFull(base, b[:n], off); err != nil {
				return err
			}
			for i := int64(0); i < n; {
				j := min(n, (off+i)/BlockSize*BlockSize+BlockSize-off)
				if !bytes.Equal(a[i:j], b[i:j]) && !c.add(off+i, j-i) {
					return nil
				}
				i = j
			}
			off += n
		}
		done = max(done, hi)
	}
	return nil
}

func readFull(f *os.File, b []byte, off int64) error {
	if _, err := f.ReadAt(b, off); err != nil {
		return fmt.Errorf("read %s at %d: %w", f.Name(), off, err)
	}
	return nil
}
