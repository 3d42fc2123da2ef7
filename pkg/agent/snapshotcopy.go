package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// copyMethod says how a copy was made.
type copyMethod int

const (
	// copyReflink: FICLONE/FICLONERANGE, the copy shares the source's
	// blocks (copy on write); cost independent of the size.
	copyReflink copyMethod = iota + 1
	// copySparse: the allocated ranges were copied (copy_file_range or
	// read/write), holes stay holes; cost follows the allocated data.
	copySparse
)

func (m copyMethod) String() string {
	switch m {
	case copyReflink:
		return "reflink"
	case copySparse:
		return "sparse-copy"
	}
	return "none"
}

// reflinkUnsupported reports the errors with which FICLONE and
// FICLONERANGE say the filesystem (or this pair of files) cannot share
// blocks, after which a plain copy is the way: no reflink support
// (EOPNOTSUPP, ENOTTY, ENOSYS, EINVAL for an unaligned range or a
// filesystem that rejects it), different filesystems (EXDEV), or a source
// the filesystem will not share (ETXTBSY, EPERM on some, EBADF on a
// filesystem without the operation).
func reflinkUnsupported(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.ENOTTY, unix.ENOSYS, unix.EINVAL, unix.EXDEV, unix.ETXTBSY} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// copyFile makes dst (open for writing, empty) a copy of all of src: a
// reflink when the filesystem can, else a sparse copy. beforeSparse, when
// set, runs before a sparse copy (the space check: a reflink needs no
// space) and may refuse it. dst is not fsynced.
func copyFile(dst, src *os.File, beforeSparse func(allocated int64) error) (copyMethod, error) {
	err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
	if err == nil {
		return copyReflink, nil
	}
	if !reflinkUnsupported(err) {
		return 0, fmt.Errorf("FICLONE %s to %s: %w", src.Name(), dst.Name(), err)
	}
	fi, err := src.Stat()
	if err != nil {
		return 0, err
	}
	if beforeSparse != nil {
		if err := beforeSparse(fileAllocated(fi)); err != nil {
			return 0, err
		}
	}
	if err := dst.Truncate(fi.Size()); err != nil {
		return 0, fmt.Errorf("size %s: %w", dst.Name(), err)
	}
	if err := sparseCopy(dst, src, 0, fi.Size(), 0); err != nil {
		return 0, err
	}
	return copySparse, nil
}

// copyRange copies src's [srcOff, srcOff+n) to dst at dstOff, a reflink
// (FICLONERANGE) when the filesystem can, else a sparse copy. dst must
// already be at least dstOff+n long; what the range holds in dst before
// is replaced (a hole of src stays a hole only if dst had one there).
func copyRange(dst, src *os.File, srcOff, n, dstOff int64) (copyMethod, error) {
	err := unix.IoctlFileCloneRange(int(dst.Fd()), &unix.FileCloneRange{
		Src_fd: int64(src.Fd()), Src_offset: uint64(srcOff), Src_length: uint64(n), Dest_offset: uint64(dstOff),
	})
	if err == nil {
		return copyReflink, nil
	}
	if !reflinkUnsupported(err) {
		return 0, fmt.Errorf("FICLONERANGE %s to %s: %w", src.Name(), dst.Name(), err)
	}
	return copySparse, sparseCopy(dst, src, srcOff, n, dstOff)
}

// sparseCopy copies the allocated ranges of src within [srcOff,
// srcOff+n) to dst at dstOff + (their offset - srcOff); holes are skipped,
// so the copy costs what the source allocates.
func sparseCopy(dst, src *os.File, srcOff, n, dstOff int64) error {
	exts, err := dataExtents(src, srcOff, srcOff+n)
	if err != nil {
		return err
	}
	for _, e := range exts {
		if err := copyBytes(dst, src, e.Off, e.Len, dstOff+e.Off-srcOff); err != nil {
			return err
		}
	}
	return nil
}

// copyBytes copies n bytes from src at off to dst at doff with
// copy_file_range (in the kernel, no user copy), falling back to
// read/write where the kernel refuses it for this pair.
func copyBytes(dst, src *os.File, off, n, doff int64) error {
	for n > 0 {
		so, do := off, doff
		w, err := unix.CopyFileRange(int(src.Fd()), &so, int(dst.Fd()), &do, int(min(n, 1<<30)), 0)
		if err != nil {
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
				return rwCopy(dst, src, off, n, doff)
			}
			return fmt.Errorf("copy_file_range %s to %s at %d: %w", src.Name(), dst.Name(), off, err)
		}
		if w == 0 { // source shorter than it was
			return fmt.Errorf("copy %s at %d: %w", src.Name(), off, io.ErrUnexpectedEOF)
		}
		off, doff, n = off+int64(w), doff+int64(w), n-int64(w)
	}
	return nil
}

func rwCopy(dst, src *os.File, off, n, doff int64) error {
	buf := make([]byte, min(n, chunkMax))
	for n > 0 {
		b := buf[:min(n, int64(len(buf)))]
		if _, err := src.ReadAt(b, off); err != nil {
			return fmt.Errorf("read %s at %d: %w", src.Name(), off, err)
		}
		if _, err := dst.WriteAt(b, doff); err != nil {
			return fmt.Errorf("write %s at %d: %w", dst.Name(), doff, err)
		}
		off, doff, n = off+int64(len(b)), doff+int64(len(b)), n-int64(len(b))
	}
	return nil
}

// fileAllocated is what a file takes in its filesystem (st_blocks).
func fileAllocated(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}
