package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// chunkMax bounds the data of one DataChunk (the API's 1 MiB).
const chunkMax = 1 << 20

// DataSource names the file ReadData reads: exactly one of the two.
type DataSource struct {
	SnapshotID string
	ReplicaID  string
}

// openSource opens a complete snapshot or a replica's backing file for
// reading.
func (s *Service) openSource(src DataSource) (*os.File, error) {
	switch {
	case src.SnapshotID != "" && src.ReplicaID != "":
		return nil, fieldError("source", "snapshot_id and replica_id are exclusive")
	case src.SnapshotID != "":
		if err := validateSnapshotID("snapshot_id", src.SnapshotID); err != nil {
			return nil, err
		}
		f, err := os.Open(s.pool.SnapshotPath(src.SnapshotID))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: snapshot %s", ErrNotFound, src.SnapshotID)
		}
		return f, err
	case src.ReplicaID != "":
		if err := validateReplicaID(src.ReplicaID); err != nil {
			return nil, err
		}
		if _, ok := s.get(src.ReplicaID); !ok {
			return nil, fmt.Errorf("%w: replica %s", ErrNotFound, src.ReplicaID)
		}
		f, err := os.Open(s.pool.Path(src.ReplicaID))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: backing file of replica %s", ErrNotFound, src.ReplicaID)
		}
		return f, err
	}
	return nil, fieldError("source", "snapshot_id or replica_id required")
}

// window validates [offset, offset+length) against a file of size bytes
// (length 0: to the end) and returns its end.
func window(offset, length, size int64) (int64, error) {
	switch {
	case offset < 0:
		return 0, fieldError("offset", "%d is negative", offset)
	case offset > size:
		return 0, fieldError("offset", "%d is beyond the end (%d bytes)", offset, size)
	case length < 0:
		return 0, fieldError("length", "%d is negative", length)
	case length == 0:
		return size, nil
	case length > size-offset:
		return 0, fieldError("length", "%d from offset %d is beyond the end (%d bytes)", length, offset, size)
	}
	return offset + length, nil
}

// ReadData sends the allocated data of src in [offset, offset+length) to
// send, in offset order, at most chunkMax bytes a call. Holes are skipped
// (SEEK_DATA/SEEK_HOLE), and so are whole 4 KiB blocks of zeros inside
// data: the receiver reads what it was not sent as zeros. send must not
// keep the slice.
func (s *Service) ReadData(ctx context.Context, src DataSource, offset, length int64, send func(off int64, data []byte) error) error {
	f, err := s.openSource(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	end, err := window(offset, length, fi.Size())
	if err != nil {
		return err
	}
	exts, err := dataExtents(f, offset, end)
	if err != nil {
		return err
	}
	buf := make([]byte, chunkMax)
	for _, e := range exts {
		for off := e.Off; off < e.end(); {
			if err := ctx.Err(); err != nil {
				return err
			}
			// Chunks end on chunkMax boundaries of the file, so they stay
			// block aligned whatever offset the window starts at.
			n := min(e.end(), (off/chunkMax+1)*chunkMax) - off
			b := buf[:n]
			if _, err := f.ReadAt(b, off); err != nil {
				return fmt.Errorf("read %s at %d: %w", f.Name(), off, err)
			}
			for _, run := range nonZeroRuns(off, b) {
				if err := send(off+run.Off, b[run.Off:run.end()]); err != nil {
					return err
				}
			}
			off += n
		}
	}
	return nil
}

var zeroBlock [BlockSize]byte

// nonZeroRuns splits b, the file's bytes at off, at the file's 4 KiB block
// boundaries and returns the runs (offsets into b) that are not all zeros.
func nonZeroRuns(off int64, b []byte) []extent {
	var out []extent
	for i := int64(0); i < int64(len(b)); {
		j := min(int64(len(b)), (off+i)/BlockSize*BlockSize+BlockSize-off)
		if !bytes.Equal(b[i:j], zeroBlock[:j-i]) {
			if n := len(out); n > 0 && out[n-1].end() == i {
				out[n-1].Len = j - out[n-1].Off
			} else {
				out = append(out, extent{Off: i, Len: j - i})
			}
		}
		i = j
	}
	return out
}

// WriteHeader is the start of a WriteData stream: exactly one of
// SnapshotID and ReplicaID.
type WriteHeader struct {
	SnapshotID string
	ReplicaID  string
	SizeBytes  int64
	VolumeID   string
}

// DataWriter takes the chunks of one WriteData stream. Close releases it
// (an uncommitted snapshot copy stays a part file, which DeleteSnapshot,
// the next WriteData of its ID or the next start removes).
type DataWriter struct {
	s       *Service
	h       WriteHeader
	f       *os.File // nil: the snapshot is complete already, data ignored
	size    int64
	written int64
	done    bool
	release func()
	start   time.Time
}

// BeginWrite starts a WriteData stream. Into a snapshot: the copy is
// received in a part file of h.SizeBytes (started over if one is left),
// and a complete snapshot of that ID makes the stream a no-op (success).
// Into a replica: it must be ready with no host allowed.
func (s *Service) BeginWrite(h WriteHeader) (*DataWriter, error) {
	w := &DataWriter{s: s, h: h, start: time.Now()}
	switch {
	case h.SnapshotID != "" && h.ReplicaID != "":
		return nil, fieldError("header.target", "snapshot_id and replica_id are exclusive")
	case h.SnapshotID != "":
		if err := validateSnapshotID("header.snapshot_id", h.SnapshotID); err != nil {
			return nil, err
		}
		if err := validateSizeField("header.size_bytes", h.SizeBytes); err != nil {
			return nil, err
		}
		if h.VolumeID != "" && !volumeIDPattern.MatchString(h.VolumeID) {
			return nil, fieldError("header.volume_id", "%q is not a volume ID", h.VolumeID)
		}
		if !s.snapInflight.Insert(h.SnapshotID) {
			return nil, snapInFlightError(h.SnapshotID)
		}
		w.release = func() { s.snapInflight.Delete(h.SnapshotID) }
		sn, err := s.pool.loadSnapshot(h.SnapshotID)
		if err == nil {
			if sn.SizeBytes != h.SizeBytes {
				w.release()
				return nil, fmt.Errorf("%w: snapshot %s exists with %d bytes, not %d", ErrAlreadyExists, h.SnapshotID, sn.SizeBytes, h.SizeBytes)
			}
			w.size = sn.SizeBytes
			return w, nil // complete: the data is ignored
		}
		if !errors.Is(err, ErrNotFound) {
			w.release()
			return nil, err
		}
		if err := s.pool.ensureSnapshotDir(); err != nil {
			w.release()
			return nil, err
		}
		f, err := os.OpenFile(s.pool.snapshotPartPath(h.SnapshotID), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err == nil {
			err = f.Truncate(h.SizeBytes)
		}
		if err != nil {
			w.release()
			return nil, fmt.Errorf("receive snapshot %s: %w", h.SnapshotID, err)
		}
		w.f, w.size = f, h.SizeBytes
		return w, nil
	case h.ReplicaID != "":
		if err := validateSnapshotID("header.replica_id", h.ReplicaID); err != nil {
			return nil, err
		}
		if !s.inflight.Insert(h.ReplicaID) {
			return nil, inFlightError(h.ReplicaID)
		}
		w.release = func() { s.inflight.Delete(h.ReplicaID) }
		r, ok := s.get(h.ReplicaID)
		var err error
		switch {
		case !ok:
			err = fmt.Errorf("%w: replica %s", ErrNotFound, h.ReplicaID)
		case r.State != StateReady:
			err = fmt.Errorf("%w: replica %s is %s, not ready", ErrFailedPrecondition, h.ReplicaID, r.State)
		case len(r.AllowedHosts) > 0:
			err = fmt.Errorf("%w: replica %s has allowed hosts %v; WriteData writes only replicas no host can reach", ErrFailedPrecondition, h.ReplicaID, r.AllowedHosts)
		case h.SizeBytes != 0 && h.SizeBytes != r.SizeBytes:
			err = fieldError("header.size_bytes", "%d differs from replica %s's %d bytes", h.SizeBytes, h.ReplicaID, r.SizeBytes)
		}
		if err == nil {
			w.f, err = os.OpenFile(s.pool.Path(h.ReplicaID), os.O_RDWR, 0)
		}
		if err != nil {
			w.release()
			return nil, err
		}
		w.size = r.SizeBytes
		return w, nil
	}
	return nil, fieldError("header.target", "snapshot_id or replica_id required")
}

// Write writes one chunk. Zero 4 KiB blocks of a snapshot copy are
// punched rather than written, so the copy stays as sparse as its source.
func (w *DataWriter) Write(off int64, data []byte) error {
	switch {
	case w.done:
		return fieldError("chunk", "after commit")
	case off < 0:
		return fieldError("chunk.offset", "%d is negative", off)
	case len(data) > chunkMax:
		return fieldError("chunk.data", "%d bytes exceed the %d a chunk carries", len(data), chunkMax)
	case off > w.size-int64(len(data)):
		return fieldError("chunk.offset", "%d+%d bytes is beyond the end (%d bytes)", off, len(data), w.size)
	}
	if w.f == nil {
		return nil
	}
	if w.h.SnapshotID == "" {
		if _, err := w.f.WriteAt(data, off); err != nil {
			return w.spaceErr(err)
		}
		w.written += int64(len(data))
		return nil
	}
	prev := int64(0)
	for _, run := range nonZeroRuns(off, data) {
		if err := w.punch(off+prev, run.Off-prev); err != nil {
			return err
		}
		if _, err := w.f.WriteAt(data[run.Off:run.end()], off+run.Off); err != nil {
			return w.spaceErr(err)
		}
		prev = run.end()
	}
	if err := w.punch(off+prev, int64(len(data))-prev); err != nil {
		return err
	}
	w.written += int64(len(data))
	return nil
}

// punch makes [off, off+n) of the copy read as zeros without allocating
// (a no-op on a hole, which a fresh copy is).
func (w *DataWriter) punch(off, n int64) error {
	if n <= 0 {
		return nil
	}
	if err := unix.Fallocate(int(w.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		return fmt.Errorf("punch hole in %s at %d: %w", w.f.Name(), off, err)
	}
	return nil
}

func (w *DataWriter) spaceErr(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return w.s.pool.snapshotSpaceError("WriteData to "+w.f.Name(), 0, err)
	}
	return fmt.Errorf("write %s: %w", w.f.Name(), err)
}

// Commit fsyncs the data and, for a snapshot copy, makes it the complete
// snapshot (record, rename, directory fsync). It returns the bytes written
// and the snapshot (nil for a replica).
func (w *DataWriter) Commit() (int64, *Snapshot, error) {
	if w.done {
		return 0, nil, fieldError("commit", "sent twice")
	}
	if w.h.SnapshotID != "" && w.f == nil {
		w.done = true
		sn, err := w.s.pool.loadSnapshot(w.h.SnapshotID)
		return 0, sn, err
	}
	if err := w.f.Sync(); err != nil {
		return 0, nil, fmt.Errorf("fsync %s: %w", w.f.Name(), err)
	}
	w.done = true
	if w.h.ReplicaID != "" {
		klog.InfoS("Wrote replica data", "replica", w.h.ReplicaID, "bytes", w.written, "duration", time.Since(w.start))
		return w.written, nil, nil
	}
	sn := &Snapshot{ID: w.h.SnapshotID, SizeBytes: w.size, VolumeID: w.h.VolumeID, Created: time.Now().UTC()}
	if err := w.s.pool.commitSnapshot(sn); err != nil {
		return 0, nil, err
	}
	sn, err := w.s.pool.loadSnapshot(sn.ID)
	if err != nil {
		return 0, nil, err
	}
	klog.InfoS("Received snapshot", "snapshot", sn.ID, "volume", sn.VolumeID, "bytes", w.written,
		"allocatedBytes", sn.AllocatedBytes, "duration", time.Since(w.start))
	return w.written, sn, nil
}

// Close ends the stream, committed or not.
func (w *DataWriter) Close() {
	if w.f != nil {
		w.f.Close()
	}
	if w.release != nil {
		w.release()
		w.release = nil
	}
}
