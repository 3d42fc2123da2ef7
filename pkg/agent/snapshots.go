package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/atomicfile"
	"github.com/nvmirror/nvmirror/pkg/mdraid/superblock"
)

// Snapshot files live in <pool>/snapshots:
//
//	<id>.snap   the copy; it exists only once complete (renamed into place)
//	<id>.json   its record (written before the rename, removed after the
//	            .snap on delete)
//	.<id>.part  a copy being made or received; never a snapshot
//
// A crash leaves at worst a .part (removed at start, by DeleteSnapshot and
// overwritten by the next attempt) or a record without its .snap (ignored,
// removed at start and by DeleteSnapshot).
const (
	SnapshotDirName = "snapshots"
	snapSuffix      = ".snap"
	snapMetaSuffix  = ".json"
	partSuffix      = ".part"
)

// Snapshot is a snapshot copy held in the pool.
type Snapshot struct {
	ID        string `json:"id"`
	SizeBytes int64  `json:"sizeBytes"`
	// SourceReplicaID is the replica it was taken from ("" when received).
	SourceReplicaID string `json:"sourceReplicaID,omitempty"`
	VolumeID        string `json:"volumeID,omitempty"`
	// Reflinked: the copy shares its blocks with the source (FICLONE).
	Reflinked bool      `json:"reflinked"`
	Created   time.Time `json:"created"`
	// AllocatedBytes is read from the file (st_blocks), never stored.
	AllocatedBytes int64 `json:"-"`
}

// SnapshotDir is the pool's snapshot directory, created with the first
// snapshot (ensureSnapshotDir).
func (p *Pool) SnapshotDir() string { return filepath.Join(p.dir, SnapshotDirName) }

// ensureSnapshotDir creates the snapshot directory, durably, if missing.
func (p *Pool) ensureSnapshotDir() error {
	if _, err := os.Stat(p.SnapshotDir()); err == nil {
		return nil
	}
	if err := os.Mkdir(p.SnapshotDir(), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create snapshot directory: %w", err)
	}
	return syncDir(p.dir)
}

// SnapshotPath is the file of complete snapshot id (validated).
func (p *Pool) SnapshotPath(id string) string { return filepath.Join(p.SnapshotDir(), id+snapSuffix) }

func (p *Pool) snapshotMetaPath(id string) string {
	return filepath.Join(p.SnapshotDir(), id+snapMetaSuffix)
}

func (p *Pool) snapshotPartPath(id string) string {
	return filepath.Join(p.SnapshotDir(), "."+id+partSuffix)
}

// loadSnapshot returns complete snapshot id, or ErrNotFound.
func (p *Pool) loadSnapshot(id string) (*Snapshot, error) {
	fi, err := os.Stat(p.SnapshotPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: snapshot %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	sn := &Snapshot{ID: id}
	b, err := os.ReadFile(p.snapshotMetaPath(id))
	switch {
	case err == nil:
		if err := json.Unmarshal(b, sn); err != nil {
			return nil, fmt.Errorf("snapshot record %s: %w", p.snapshotMetaPath(id), err)
		}
	case errors.Is(err, fs.ErrNotExist):
		// Written before the rename, so only an administrator removes
		// it: report what the file says.
		klog.InfoS("Snapshot without its record", "snapshot", id, "path", p.SnapshotPath(id))
		sn.Created = fi.ModTime()
	default:
		return nil, err
	}
	sn.ID = id
	sn.SizeBytes = fi.Size()
	sn.AllocatedBytes = fileAllocated(fi)
	return sn, nil
}

// commitSnapshot makes the fsynced part file of sn the complete snapshot:
// record first, then the rename, then the directory fsync.
func (p *Pool) commitSnapshot(sn *Snapshot) error {
	b, err := json.Marshal(sn)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(p.snapshotMetaPath(sn.ID), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("record snapshot %s: %w", sn.ID, err)
	}
	if err := os.Rename(p.snapshotPartPath(sn.ID), p.SnapshotPath(sn.ID)); err != nil {
		return fmt.Errorf("complete snapshot %s: %w", sn.ID, err)
	}
	return syncDir(p.SnapshotDir())
}

// removeSnapshot deletes everything of snapshot id: the copy first (the
// snapshot is then gone), its record, a part file. Reports whether
// anything was there.
func (p *Pool) removeSnapshot(id string) (bool, error) {
	found := false
	for _, path := range []string{p.SnapshotPath(id), p.snapshotMetaPath(id), p.snapshotPartPath(id)} {
		err := os.Remove(path)
		if err == nil {
			found = true
		} else if !errors.Is(err, fs.ErrNotExist) {
			return found, fmt.Errorf("remove %s: %w", path, err)
		}
	}
	if !found {
		return false, nil
	}
	return found, syncDir(p.SnapshotDir())
}

// listSnapshots returns the complete snapshots, by ID.
func (p *Pool) listSnapshots() ([]*Snapshot, error) {
	ents, err := os.ReadDir(p.SnapshotDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Snapshot
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), snapSuffix)
		if !ok || !e.Type().IsRegular() || validateReplicaID(id) != nil {
			continue
		}
		sn, err := p.loadSnapshot(id)
		if errors.Is(err, ErrNotFound) { // deleted meanwhile
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, sn)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// cleanSnapshotLeftovers removes, at start (no call is running), what
// interrupted snapshot calls left: part files (of copies and receives, whose
// streams are gone with the old process), temporary record files and
// records without their copy.
func (p *Pool) cleanSnapshotLeftovers() error {
	dir := p.SnapshotDir()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		remove := strings.HasPrefix(name, ".")
		if id, ok := strings.CutSuffix(name, snapMetaSuffix); ok && !remove {
			_, err := os.Stat(p.SnapshotPath(id))
			remove = errors.Is(err, fs.ErrNotExist)
		}
		if !remove {
			continue
		}
		klog.InfoS("Removing leftover of an interrupted snapshot call", "path", filepath.Join(dir, name))
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return syncDir(dir)
}

func (p *Pool) snapshotSpaceError(what string, need int64, err error) error {
	c, _ := p.Capacity()
	if err != nil {
		return fmt.Errorf("%w: %s: pool %s has %d bytes available: %v", ErrResourceExhausted, what, p.dir, c.AvailableBytes, err)
	}
	return fmt.Errorf("%w: %s needs %d bytes; pool %s has %d available", ErrResourceExhausted, what, need, p.dir, c.AvailableBytes)
}

func snapInFlightError(id string) error {
	return fmt.Errorf("%w: another call on snapshot %s is running; retry", ErrInFlight, id)
}

// CreateSnapshot copies replica replicaID's file into snapshot id and
// returns it with the md superblock the copy carries (nil: none). The same
// id from the same replica again returns the existing snapshot; from
// another replica (or received): ErrAlreadyExists.
//
// Order: (1) copy into the part file (FICLONE, else a sparse copy that
// must fit the available space), fsync, (2) write the record, (3) rename
// the part into place, fsync the directory. A crash before (3) leaves no
// snapshot (leftovers are removed at start, or overwritten by a retry).
func (s *Service) CreateSnapshot(ctx context.Context, id, replicaID string) (*Snapshot, *superblock.Superblock, error) {
	if err := validateSnapshotID("snapshot_id", id); err != nil {
		return nil, nil, err
	}
	if err := validateReplicaID(replicaID); err != nil {
		return nil, nil, err
	}
	if !s.snapInflight.Insert(id) {
		return nil, nil, snapInFlightError(id)
	}
	defer s.snapInflight.Delete(id)
	if sn, err := s.pool.loadSnapshot(id); err == nil {
		if sn.SourceReplicaID != replicaID {
			return nil, nil, fmt.Errorf("%w: snapshot %s exists, taken from replica %q, not %s", ErrAlreadyExists, id, sn.SourceReplicaID, replicaID)
		}
		sb, err := s.snapshotSuperblock(id)
		return sn, sb, err
	} else if !errors.Is(err, ErrNotFound) {
		return nil, nil, err
	}
	if !s.inflight.Insert(replicaID) {
		return nil, nil, inFlightError(replicaID)
	}
	defer s.inflight.Delete(replicaID)
	r, ok := s.get(replicaID)
	if !ok {
		return nil, nil, fmt.Errorf("%w: replica %s", ErrNotFound, replicaID)
	}
	if r.State != StateReady {
		return nil, nil, fmt.Errorf("%w: replica %s is %s, not ready", ErrFailedPrecondition, replicaID, r.State)
	}
	start := time.Now()
	method, err := s.copyReplicaToPart(id, replicaID)
	if err != nil {
		if _, rerr := s.pool.removeSnapshot(id); rerr != nil {
			klog.ErrorS(rerr, "Cannot remove partial snapshot copy", "snapshot", id)
		}
		return nil, nil, err
	}
	sn := &Snapshot{ID: id, SizeBytes: r.SizeBytes, SourceReplicaID: replicaID, VolumeID: r.VolumeID,
		Reflinked: method == copyReflink, Created: time.Now().UTC()}
	if err := s.pool.commitSnapshot(sn); err != nil {
		return nil, nil, err
	}
	sn, err = s.pool.loadSnapshot(id)
	if err != nil {
		return nil, nil, err
	}
	klog.InfoS("Created snapshot", "snapshot", id, "replica", replicaID, "volume", r.VolumeID, "method", method,
		"sizeBytes", sn.SizeBytes, "allocatedBytes", sn.AllocatedBytes, "duration", time.Since(start))
	sb, err := s.snapshotSuperblock(id)
	return sn, sb, err
}

// copyReplicaToPart does step (1) of CreateSnapshot.
func (s *Service) copyReplicaToPart(id, replicaID string) (copyMethod, error) {
	if err := s.pool.ensureSnapshotDir(); err != nil {
		return 0, err
	}
	src, err := os.Open(s.pool.Path(replicaID))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("%w: backing file of replica %s is missing", ErrFailedPrecondition, replicaID)
	}
	if err != nil {
		return 0, err
	}
	defer src.Close()
	dst, err := os.OpenFile(s.pool.snapshotPartPath(id), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	defer dst.Close()
	method, err := copyFile(dst, src, func(allocated int64) error {
		c, err := s.pool.Capacity()
		if err != nil {
			return err
		}
		if allocated > c.AvailableBytes {
			return s.pool.snapshotSpaceError(fmt.Sprintf("a copy of replica %s (no reflink on this pool) of %d allocated bytes", replicaID, allocated), allocated, nil)
		}
		return nil
	})
	if errors.Is(err, syscall.ENOSPC) {
		return 0, s.pool.snapshotSpaceError("copy of replica "+replicaID, 0, err)
	}
	if err != nil {
		return 0, err
	}
	if err := dst.Sync(); err != nil {
		return 0, fmt.Errorf("fsync snapshot copy %s: %w", dst.Name(), err)
	}
	return method, nil
}

// snapshotSuperblock reads the md superblock of snapshot id's copy.
func (s *Service) snapshotSuperblock(id string) (*superblock.Superblock, error) {
	return readSuperblockFile(s.pool.SnapshotPath(id))
}

// readSuperblockFile returns the md superblock of the file at path, nil
// when it carries none; a malformed one is ErrFailedPrecondition.
func readSuperblockFile(path string) (*superblock.Superblock, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sb, err := superblock.Read(f)
	if errors.Is(err, superblock.ErrNoSuperblock) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrFailedPrecondition, path, err)
	}
	return sb, nil
}

// DeleteSnapshot removes snapshot id, or what a partial copy or receive
// left. Unknown: success. Replicas created from it are separate files.
func (s *Service) DeleteSnapshot(ctx context.Context, id string) error {
	if err := validateSnapshotID("snapshot_id", id); err != nil {
		return err
	}
	if !s.snapInflight.Insert(id) {
		return snapInFlightError(id)
	}
	defer s.snapInflight.Delete(id)
	found, err := s.pool.removeSnapshot(id)
	if err != nil {
		return err
	}
	if found {
		klog.InfoS("Deleted snapshot", "snapshot", id)
	}
	return nil
}

// GetSnapshot returns complete snapshot id or ErrNotFound.
func (s *Service) GetSnapshot(id string) (*Snapshot, error) {
	if err := validateSnapshotID("snapshot_id", id); err != nil {
		return nil, err
	}
	return s.pool.loadSnapshot(id)
}

// ListSnapshots returns the complete snapshots, by ID.
func (s *Service) ListSnapshots() ([]*Snapshot, error) { return s.pool.listSnapshots() }

// ReadSuperblock reads the md superblock replica id's file carries now
// (nil: none).
func (s *Service) ReadSuperblock(id string) (*superblock.Superblock, error) {
	if err := validateReplicaID(id); err != nil {
		return nil, err
	}
	if _, ok := s.get(id); !ok {
		return nil, fmt.Errorf("%w: replica %s", ErrNotFound, id)
	}
	sb, err := readSuperblockFile(s.pool.Path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: backing file of replica %s", ErrNotFound, id)
	}
	return sb, err
}
