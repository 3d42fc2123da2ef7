package agent

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// extent is a byte range of a file: [Off, Off+Len).
type extent struct{ Off, Len int64 }

func (e extent) end() int64 { return e.Off + e.Len }

// dataExtents returns the allocated ranges of f within [start, end),
// clipped to it, by SEEK_DATA/SEEK_HOLE: what a sparse copy must copy.
// A filesystem without them (it reports the whole file as data) makes
// this the whole range, which is still correct.
func dataExtents(f *os.File, start, end int64) ([]extent, error) {
	var out []extent
	fd := int(f.Fd())
	for off := start; off < end; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) { // no data after off
			break
		}
		if err != nil {
			return nil, fmt.Errorf("SEEK_DATA %s at %d: %w", f.Name(), off, err)
		}
		if data >= end {
			break
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("SEEK_HOLE %s at %d: %w", f.Name(), data, err)
		}
		out = append(out, extent{Off: data, Len: min(hole, end) - data})
		off = hole
	}
	return out, nil
}

// FIEMAP (linux/fiemap.h, linux/fs.h): the ioctl and its structures are
// not in x/sys/unix, so they are laid out here.
//
//	struct fiemap {                      struct fiemap_extent {
//	  __u64 fm_start;          0           __u64 fe_logical;      0
//	  __u64 fm_length;         8           __u64 fe_physical;     8
//	  __u32 fm_flags;         16           __u64 fe_length;      16
//	  __u32 fm_mapped_extents;20           __u64 fe_reserved64[2];24
//	  __u32 fm_extent_count;  24           __u32 fe_flags;       40
//	  __u32 fm_reserved;      28           __u32 fe_reserved[3]; 44
//	  struct fiemap_extent fm_extents[];   };                    56
//	};                        32
const (
	fsIocFiemap          = 0xc020660b // _IOWR('f', 11, struct fiemap)
	fiemapHeaderSize     = 32
	fiemapExtentSize     = 56
	fiemapExtentsPerCall = 256
	fiemapBufSize        = fiemapHeaderSize + fiemapExtentsPerCall*fiemapExtentSize
	fiemapFlagSync       = 0x1 // FIEMAP_FLAG_SYNC: flush dirty data first

	fiemapExtentLast       = 0x1
	fiemapExtentUnknown    = 0x2
	fiemapExtentDelalloc   = 0x4
	fiemapExtentEncoded    = 0x8
	fiemapExtentNotAligned = 0x100
	fiemapExtentDataInline = 0x200
	fiemapExtentDataTail   = 0x400
	// The extent flags under which fe_physical does not name the blocks.
	fiemapNoPhysicalIdentity = fiemapExtentUnknown | fiemapExtentDelalloc | fiemapExtentEncoded |
		fiemapExtentDataInline | fiemapExtentDataTail | fiemapExtentNotAligned
)

// physExtent is one extent of FIEMAP: file bytes [Logical, Logical+Len)
// stored at Physical on the device.
type physExtent struct {
	Logical, Physical, Len int64
	Flags                  uint32
}

// identifiable reports whether the extent's physical address names its
// blocks: an extent the filesystem has not placed yet (delalloc), or
// stores packed or encoded, cannot be compared by address.
func (e physExtent) identifiable() bool {
	return e.Flags&fiemapNoPhysicalIdentity == 0 && e.Physical != 0
}

// errFiemapUnsupported: the filesystem has no FIEMAP (tmpfs, some FUSE).
var errFiemapUnsupported = errors.New("FIEMAP not supported")

// fiemap returns the extents of f overlapping [start, end), in logical
// order (not clipped). FIEMAP_FLAG_SYNC flushes dirty data first, so
// delayed allocations get their blocks and written data is mapped.
func fiemap(f *os.File, start, end int64) ([]physExtent, error) {
	buf := make([]byte, fiemapBufSize)
	le := binary.LittleEndian
	var out []physExtent
	for off := start; off < end; {
		clear(buf)
		le.PutUint64(buf[0:], uint64(off))
		le.PutUint64(buf[8:], uint64(end-off))
		le.PutUint32(buf[16:], fiemapFlagSync)
		le.PutUint32(buf[24:], fiemapExtentsPerCall)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0])))
		if errno != 0 {
			if errno == unix.EOPNOTSUPP || errno == unix.ENOTTY || errno == unix.EINVAL {
				return nil, fmt.Errorf("%w on %s: %v", errFiemapUnsupported, f.Name(), errno)
			}
			return nil, fmt.Errorf("FIEMAP %s at %d: %w", f.Name(), off, errno)
		}
		n := int(le.Uint32(buf[20:]))
		if n == 0 {
			break
		}
		last := false
		for i := 0; i < n; i++ {
			e := buf[fiemapHeaderSize+i*fiemapExtentSize:]
			x := physExtent{
				Logical:  int64(le.Uint64(e[0:])),
				Physical: int64(le.Uint64(e[8:])),
				Len:      int64(le.Uint64(e[16:])),
				Flags:    le.Uint32(e[40:]),
			}
			if x.Len <= 0 {
				return nil, fmt.Errorf("FIEMAP %s: extent of length %d at %d", f.Name(), x.Len, x.Logical)
			}
			out = append(out, x)
			last = x.Flags&fiemapExtentLast != 0
		}
		next := out[len(out)-1].Logical + out[len(out)-1].Len
		if last || next <= off {
			break
		}
		off = next
	}
	return out, nil
}

// sharedExtents returns the file ranges within [start, end) that a and b
// map to the same physical blocks at the same file offset: their bytes
// are the same without reading them. Both lists are in logical order.
func sharedExtents(a, b []physExtent, start, end int64) []extent {
	var out []extent
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		x, y := a[i], b[j]
		lo := max(x.Logical, y.Logical, start)
		hi := min(x.Logical+x.Len, y.Logical+y.Len, end)
		if lo < hi && x.identifiable() && y.identifiable() &&
			x.Physical-x.Logical == y.Physical-y.Logical {
			if n := len(out); n > 0 && out[n-1].end() == lo {
				out[n-1].Len = hi - out[n-1].Off
			} else {
				out = append(out, extent{Off: lo, Len: hi - lo})
			}
		}
		if x.Logical+x.Len <= y.Logical+y.Len {
			i++
		} else {
			j++
		}
	}
	return out
}

// unionExtents merges two sorted extent lists, clipped to [start, end),
// into one sorted list of disjoint, non-adjacent extents.
func unionExtents(start, end int64, lists ...[]extent) []extent {
	var all []extent
	for _, l := range lists {
		for _, e := range l {
			lo, hi := max(e.Off, start), min(e.end(), end)
			if lo < hi {
				all = append(all, extent{Off: lo, Len: hi - lo})
			}
		}
	}
	sortExtents(all)
	var out []extent
	for _, e := range all {
		if n := len(out); n > 0 && e.Off <= out[n-1].end() {
			out[n-1].Len = max(out[n-1].end(), e.end()) - out[n-1].Off
			continue
		}
		out = append(out, e)
	}
	return out
}

// subtractExtents returns the parts of sorted disjoint list a not covered
// by sorted disjoint list b.
func subtractExtents(a, b []extent) []extent {
	var out []extent
	j := 0
	for _, e := range a {
		cur := e.Off
		for j < len(b) && b[j].end() <= cur {
			j++
		}
		for k := j; k < len(b) && b[k].Off < e.end(); k++ {
			if b[k].Off > cur {
				out = append(out, extent{Off: cur, Len: b[k].Off - cur})
			}
			cur = max(cur, b[k].end())
		}
		if cur < e.end() {
			out = append(out, extent{Off: cur, Len: e.end() - cur})
		}
	}
	return out
}

func sortExtents(l []extent) {
	slices.SortFunc(l, func(a, b extent) int { return cmp.Compare(a.Off, b.Off) })
}

func physExtentsToExtents(p []physExtent) []extent {
	out := make([]extent, 0, len(p))
	for _, e := range p {
		out = append(out, extent{Off: e.Logical, Len: e.Len})
	}
	return out
}
