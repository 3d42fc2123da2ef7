package vm

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// newc cpio modes, from the kernel's Documentation/driver-api/early-userspace.
const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
)

// cpioEntry is one member of the archive. Only what an initramfs needs:
// directories, regular files and symlinks, all owned by root.
type cpioEntry struct {
	name string // path inside the archive, without a leading slash
	mode uint32 // type bits | permission bits
	data []byte // file content, or the target of a symlink
}

// cpioWriter writes the "newc" (070701) format that the kernel unpacks as
// initramfs. Writing it ourselves removes the dependency on the cpio tool and
// makes archives reproducible (fixed mtime, sorted entries).
type cpioWriter struct {
	w     io.Writer
	ino   uint32
	n     int64
	err   error
	names map[string]bool
}

func newCpioWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w, ino: 1, names: map[string]bool{}}
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) header(name string, mode uint32, size int, nlink uint32) {
	h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	c.ino++
	c.write([]byte(h))
	c.write([]byte(name))
	c.write([]byte{0})
	c.pad()
}

// Add writes one entry. Names must be unique: a second entry with the same
// name would silently replace the first when the kernel unpacks the archive.
func (c *cpioWriter) Add(e cpioEntry) error {
	name := strings.TrimPrefix(e.name, "/")
	if name == "" {
		return fmt.Errorf("cpio: empty entry name")
	}
	if c.names[name] {
		return fmt.Errorf("cpio: duplicate entry %q", name)
	}
	c.names[name] = true
	nlink := uint32(1)
	if e.mode&0o170000 == modeDir {
		nlink = 2
	}
	c.header(name, e.mode, len(e.data), nlink)
	c.write(e.data)
	c.pad()
	return c.err
}

// Close writes the trailer.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 0, 1)
	return c.err
}

// writeCpio writes entries sorted so that every directory precedes its
// content, which the kernel's unpacker requires.
func writeCpio(w io.Writer, entries []cpioEntry) error {
	sorted := append([]cpioEntry(nil), entries...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	cw := newCpioWriter(w)
	for _, e := range sorted {
		if err := cw.Add(e); err != nil {
			return err
		}
	}
	return cw.Close()
}
