// Package sysfs reads and writes attribute files: the small text files,
// one value each, through which sysfs and configfs show and change a kernel
// object's state. It is the one place that knows how such a file is read
// (whitespace around the value is the kernel's padding) and written (one
// write(2) to an existing file, whose result is the kernel's answer).
//
// Packages differ in what an object going away must mean to them, so a
// Reader says it explicitly instead of each package keeping its own copy
// of the same few lines with a different twist.
package sysfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrMalformed is what ReadInt and ReadUint wrap for a value that is not a
// number, unless the Reader names its own sentinel.
var ErrMalformed = errors.New("malformed attribute")

// Reader reads attribute files. The zero Reader reads the real filesystem
// and returns the kernel's errors unchanged.
type Reader struct {
	// ReadFile reads one file; nil means os.ReadFile. configfs code passes
	// its filesystem seam's, so tests can run it on a fake tree.
	ReadFile func(path string) ([]byte, error)
	// NoDevIsGone makes a read failing with ENODEV fail with
	// fs.ErrNotExist instead: an NVMe controller being deleted keeps its
	// attribute files for a moment but every read fails with ENODEV (seen on
	// 6.12 while a controller is disconnected), and to its readers that is
	// the same as already gone.
	NoDevIsGone bool
	// MissingDirIsError makes ReadOptionalAttr (and the numbers, which are
	// optional) return the directory's error when the attribute's directory
	// is gone too: "this object has no such attribute" reads as "", "the
	// object itself is gone" stays an error (fs.ErrNotExist).
	MissingDirIsError bool
	// Malformed is the sentinel ReadInt and ReadUint wrap for a value that
	// is not a number; nil means ErrMalformed.
	Malformed error
}

// ReadAttr returns the attribute at path without the whitespace around it
// (the kernel's trailing newline, padding).
func (r Reader) ReadAttr(path string) (string, error) {
	read := r.ReadFile
	if read == nil {
		read = os.ReadFile
	}
	b, err := read(path)
	if r.NoDevIsGone && errors.Is(err, syscall.ENODEV) {
		return "", fmt.Errorf("%s: %w (device going away: %v)", path, fs.ErrNotExist, err)
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// ReadOptionalAttr is ReadAttr for attributes that only some objects,
// transports or kernels have: a missing one reads as "".
func (r Reader) ReadOptionalAttr(path string) (string, error) {
	v, err := r.ReadAttr(path)
	if errors.Is(err, fs.ErrNotExist) {
		if r.MissingDirIsError {
			if _, dirErr := os.Stat(filepath.Dir(path)); dirErr != nil {
				return "", dirErr
			}
		}
		return "", nil
	}
	return v, err
}

// ReadInt reads an optional count (a missing or empty attribute is 0).
// Only the first word counts: md's raid_disks reads "N (M)" during a
// reshape that changes the number of disks, and N is the new count.
func (r Reader) ReadInt(path string) (int, error) {
	s, err := r.ReadOptionalAttr(path)
	if err != nil || s == "" {
		return 0, err
	}
	first, _, _ := strings.Cut(s, " ")
	n, err := strconv.ParseInt(first, 10, 32)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: %s %q is not a count", r.malformed(), filepath.Base(path), s)
	}
	return int(n), nil
}

// ReadUint reads an optional unsigned number (a missing or empty attribute
// is 0).
func (r Reader) ReadUint(path string) (uint64, error) {
	s, err := r.ReadOptionalAttr(path)
	if err != nil || s == "" {
		return 0, err
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s %q is not a number", r.malformed(), filepath.Base(path), s)
	}
	return n, nil
}

func (r Reader) malformed() error {
	if r.Malformed != nil {
		return r.Malformed
	}
	return ErrMalformed
}

// WriteAttr writes value to the attribute at path. The file is opened
// write-only without O_CREATE or O_TRUNC: sysfs and configfs attributes
// exist or not, and the kernel reports the result of the store through
// write(2) and close(2), both of which are checked.
func WriteAttr(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write([]byte(value)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
