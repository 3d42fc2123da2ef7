package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// Provisioning says how a replica's backing file takes space.
type Provisioning string

const (
	// Thin replicas are sparse files: blocks are taken as the host writes.
	Thin Provisioning = "thin"
	// Thick replicas are fallocated in full at creation (and on growth), so
	// the pool cannot run out of space under them later.
	Thick Provisioning = "thick"
)

// BlockSize is the granularity of replica sizes: sizes must be multiples
// of it (rejected otherwise, never rounded silently: the provisioner owns
// the rounding of CSI capacity ranges and must know the exact size).
const BlockSize = 4096

// imageSuffix names backing files: <replica-id>.img. Nothing else in the
// pool directory ends in it (the state file is state.json).
const imageSuffix = ".img"

// Pool holds replica backing files in one directory.
//
// Space rule (what Capacity reports as available): the filesystem's free
// space for unprivileged users (statfs f_bavail). Thick replicas take their
// blocks at creation through fallocate, so statfs already counts them and no
// separate reservation is needed. Thin replicas are not reserved: a new
// replica of either kind must fit in the available space when it is created
// or grown (so a single request can never overcommit the pool), but the sum
// of thin sizes may exceed the pool (overcommit), and writes to thin
// replicas may then fail with ENOSPC on the target.
type Pool struct {
	dir string
}

// NewPool returns the pool in dir, creating the directory if needed.
func NewPool(dir string) (*Pool, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("pool directory %q must be absolute", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pool directory: %w", err)
	}
	return &Pool{dir: filepath.Clean(dir)}, nil
}

// Dir is the pool directory.
func (p *Pool) Dir() string { return p.dir }

// Path is the backing file of replica id. id must have been validated
// (validateReplicaID): it is then a single path element.
func (p *Pool) Path(id string) string { return filepath.Join(p.dir, id+imageSuffix) }

// Capacity is the pool filesystem's size and available space, in bytes.
type Capacity struct {
	TotalBytes     int64
	AvailableBytes int64
	// TmpFS is true when the pool is on tmpfs, which has no O_DIRECT: the
	// kernel target then needs buffered I/O.
	TmpFS bool
}

// Capacity reads statfs of the pool directory.
func (p *Pool) Capacity() (Capacity, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(p.dir, &st); err != nil {
		return Capacity{}, fmt.Errorf("statfs %s: %w", p.dir, err)
	}
	bs := int64(st.Bsize) //nolint:unconvert // Bsize is int64 on amd64 only
	return Capacity{
		TotalBytes:     int64(st.Blocks) * bs,
		AvailableBytes: int64(st.Bavail) * bs,
		TmpFS:          st.Type == unix.TMPFS_MAGIC,
	}, nil
}

// Size returns the size of replica id's file, or ErrNotFound.
func (p *Pool) Size(id string) (int64, error) {
	fi, err := os.Stat(p.Path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("%w: backing file of replica %s", ErrNotFound, id)
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Ensure makes replica id's file exist with at least size bytes: it
// creates it if missing and grows it if smaller (a file larger than size is
// left alone: shrinking would destroy data). Thick files are fallocated over
// the whole size, which is also what completes an interrupted thick create
// or growth. Idempotent. ENOSPC is reported as ErrResourceExhausted.
func (p *Pool) Ensure(id string, size int64, prov Provisioning) error {
	f, err := os.OpenFile(p.Path(id), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open backing file of replica %s: %w", id, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if prov == Thick {
		// mode 0 allocates [0,size) and extends the file size; blocks
		// already allocated are kept, so this is a no-op when complete.
		if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
			return p.spaceError(id, size, "fallocate", err)
		}
	} else if fi.Size() < size {
		if err := f.Truncate(size); err != nil {
			return p.spaceError(id, size, "truncate", err)
		}
	}
	// The file's existence and size must survive a crash before the state
	// says the replica is ready.
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync backing file of replica %s: %w", id, err)
	}
	return syncDir(p.dir)
}

func (p *Pool) spaceError(id string, size int64, op string, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		c, _ := p.Capacity()
		return fmt.Errorf("%w: %s of replica %s to %d bytes: pool %s has %d bytes available: %v",
			ErrResourceExhausted, op, id, size, p.dir, c.AvailableBytes, err)
	}
	return fmt.Errorf("%s backing file of replica %s to %d bytes: %w", op, id, size, err)
}

// Remove deletes replica id's file (and a part file of an interrupted
// create from a snapshot); a missing file is not an error.
func (p *Pool) Remove(id string) error {
	for _, path := range []string{p.Path(id), p.partPath(id)} {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove backing file of replica %s: %w", id, err)
		}
	}
	return syncDir(p.dir)
}

// partPath is where a replica created from a snapshot is built before it
// is renamed into place. Its name starts with '.' and does not end in
// imageSuffix, so List never takes it for a replica.
func (p *Pool) partPath(id string) string { return filepath.Join(p.dir, "."+id+imageSuffix+partSuffix) }

// EnsureFromSnapshot makes replica id's file, when it does not exist yet,
// a file of size bytes holding src's range of the snapshot (reflinked
// where the filesystem can, else a sparse copy) and zeros elsewhere. The
// file is built under partPath, fsynced and renamed into place, so a file
// at Path is always complete and an interrupted build is started over.
func (p *Pool) EnsureFromSnapshot(id string, size int64, prov Provisioning, src SnapshotSource) error {
	if _, err := os.Stat(p.Path(id)); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	snap, err := os.Open(p.SnapshotPath(src.SnapshotID))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: source snapshot %s of replica %s is not on this storage node", ErrFailedPrecondition, src.SnapshotID, id)
	}
	if err != nil {
		return err
	}
	defer snap.Close()
	f, err := os.OpenFile(p.partPath(id), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create backing file of replica %s: %w", id, err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return p.spaceError(id, size, "truncate", err)
	}
	start := time.Now()
	method, err := copyRange(f, snap, src.SourceOffset, src.Length, src.TargetOffset)
	if err != nil {
		return p.spaceError(id, size, "copy snapshot "+src.SnapshotID+" into", err)
	}
	if prov == Thick {
		if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
			return p.spaceError(id, size, "fallocate", err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync backing file of replica %s: %w", id, err)
	}
	if err := os.Rename(p.partPath(id), p.Path(id)); err != nil {
		return fmt.Errorf("rename backing file of replica %s into place: %w", id, err)
	}
	klog.InfoS("Replica file made from snapshot", "replica", id, "snapshot", src.SnapshotID, "method", method,
		"sourceOffset", src.SourceOffset, "length", src.Length, "targetOffset", src.TargetOffset, "duration", time.Since(start))
	return syncDir(p.dir)
}

// List returns the replica IDs that have a backing file, sorted.
func (p *Pool) List() ([]string, error) {
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), imageSuffix); ok && e.Type().IsRegular() && validateReplicaID(id) == nil {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// syncDir fsyncs a directory so that creations, renames and removals in it
// are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
