package nvmet

import (
	"io/fs"
	"os"

	"golang.org/x/sys/unix"

	"github.com/nvmirror/nvmirror/pkg/sysfs"
)

// configFS is the set of file operations the target uses on nvmet's
// configfs tree. configfs is not a normal filesystem: mkdir creates an
// object together with its attribute files, files cannot be created,
// attribute writes are calls into the kernel that can fail, rmdir works on
// a directory holding only attributes, and symlinks create associations
// (host allowed on subsystem, subsystem exported on port). Tests replace it
// with a fake that enforces those rules on a temp dir.
//
// All paths are absolute.
type configFS interface {
	Mkdir(path string) error
	Rmdir(path string) error
	// Symlink creates link pointing to target. target must be absolute:
	// configfs resolves a relative target against the caller's working
	// directory, not against the link's directory.
	Symlink(target, link string) error
	// Remove unlinks a symlink (attributes cannot be removed).
	Remove(path string) error
	ReadDir(path string) ([]fs.DirEntry, error)
	ReadFile(path string) ([]byte, error)
	// WriteFile stores value into an existing attribute.
	WriteFile(path string, value []byte) error
	Readlink(path string) (string, error)
	Lstat(path string) (fs.FileInfo, error)
}

// realConfigFS is configFS on the real filesystem.
type realConfigFS struct{}

var _ configFS = realConfigFS{}

func (realConfigFS) Mkdir(path string) error { return os.Mkdir(path, 0o755) }

// Rmdir uses rmdir(2) directly: os.Remove would first try unlink(2), and
// on configfs only the rmdir answer is meaningful.
func (realConfigFS) Rmdir(path string) error {
	if err := unix.Rmdir(path); err != nil {
		return &fs.PathError{Op: "rmdir", Path: path, Err: err}
	}
	return nil
}

func (realConfigFS) Symlink(target, link string) error { return os.Symlink(target, link) }

func (realConfigFS) Remove(path string) error {
	if err := unix.Unlink(path); err != nil {
		return &fs.PathError{Op: "unlink", Path: path, Err: err}
	}
	return nil
}

func (realConfigFS) ReadDir(path string) ([]fs.DirEntry, error) { return os.ReadDir(path) }
func (realConfigFS) ReadFile(path string) ([]byte, error)       { return os.ReadFile(path) }
func (realConfigFS) Readlink(path string) (string, error)       { return os.Readlink(path) }
func (realConfigFS) Lstat(path string) (fs.FileInfo, error)     { return os.Lstat(path) }

// WriteFile opens the attribute O_WRONLY only (no O_CREATE: attributes
// cannot be created; no O_TRUNC: meaningless on configfs) and checks both
// the write and the close, because the kernel reports a refused value (for
// example enable=1 with an unusable device_path) as the write's error.
func (realConfigFS) WriteFile(path string, value []byte) error {
	return sysfs.WriteAttr(path, string(value))
}
