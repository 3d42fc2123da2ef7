package repair

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/nvmirror/nvmirror/pkg/sysfs"
)

// blankProbe is how much of each end of a device Blank reads: filesystems,
// partition tables, LVM and md (0.90 and 1.0 at the end, 1.1 and 1.2 at the
// start) keep their signatures within it.
const blankProbe = 1 << 20

// SysDisk is Disk on the real system, with system files under Root ("" is
// /), so a test can point it at a temporary tree.
type SysDisk struct {
	Root string
}

// nvmeHead matches an NVMe multipath head, nvme<subsystem>n<namespace>.
var nvmeHead = regexp.MustCompile(`^nvme(\d+)n(\d+)$`)

// WrittenBytes reads sectors written (the 7th field) of /sys/block/NAME/stat.
// An NVMe multipath head does no I/O accounting (6.1 and later); its paths,
// nvme<S>c<C>n<N>, do, so for a head their sum is returned.
func (d SysDisk) WrittenBytes(name string) (uint64, error) {
	if name == "" || strings.ContainsAny(name, "/") || name == "." || name == ".." {
		return 0, fmt.Errorf("block device name %q", name)
	}
	if m := nvmeHead.FindStringSubmatch(name); m != nil {
		paths, err := filepath.Glob(filepath.Join(d.root(), "sys", "block", "nvme"+m[1]+"c*n"+m[2]))
		if err != nil {
			return 0, err
		}
		if len(paths) > 0 {
			var total uint64
			for _, p := range paths {
				n, err := d.statWritten(filepath.Base(p))
				if err != nil {
					return 0, err
				}
				total += n
			}
			return total, nil
		}
	}
	return d.statWritten(name)
}

func (d SysDisk) statWritten(name string) (uint64, error) {
	s, err := sysfs.Reader{}.ReadAttr(filepath.Join(d.root(), "sys", "block", name, "stat"))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(s)
	if len(f) < 7 {
		return 0, fmt.Errorf("/sys/block/%s/stat: %d fields, want at least 7", name, len(f))
	}
	sectors, err := strconv.ParseUint(f[6], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/sys/block/%s/stat: sectors written %q: %w", name, f[6], err)
	}
	return sectors * 512, nil
}

// Blank reads the first and last blankProbe bytes of the device at path
// (size bytes long) and reports whether they are all zeros.
func (d SysDisk) Blank(path string, size uint64) (bool, error) {
	if size == 0 {
		return false, fmt.Errorf("%s: size unknown (0)", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	n := min(size, blankProbe)
	for _, off := range []uint64{0, size - n} {
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, int64(off)); err != nil && err != io.EOF {
			return false, fmt.Errorf("read %s at %d: %w", path, off, err)
		}
		if !bytes.Equal(buf, make([]byte, n)) {
			return false, nil
		}
	}
	return true, nil
}

func (d SysDisk) root() string {
	if d.Root == "" {
		return "/"
	}
	return d.Root
}
