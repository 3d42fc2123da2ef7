package vm

import (
	"fmt"
	"os"
	"strings"
)

// A boot can have one scratch disk (GuestTests.DiskMiB): a sparse raw file
// in the test's temporary directory on the host, attached as a virtio disk.
// It is for guest tests whose data does not fit in guest RAM (every other
// pool in the guest is a tmpfs), e.g. the drain benchmark, where md copies
// whole replicas. The file is new and empty at every boot and removed with
// the test's temporary directory, so the guest may format it without a
// second thought.

// GuestDisk is the scratch disk's device in the guest: the VM's only
// virtio block device.
const GuestDisk = "/dev/vda"

// EnvDisk is set to GuestDisk in the guest test binary's environment when
// the boot has a scratch disk, so that a guest test can tell (and skip
// without one).
const EnvDisk = "NVMIRROR_VM_DISK"

// diskModuleCandidates are what a virtio disk needs, in load order. As for
// the NIC (netModuleCandidates), Debian 6.1 has the virtio PCI transport as
// modules and 6.12 builds it in; virtio_blk is a module in both, and does not
// depend on virtio_pci in modules.dep, so the transport is named here.
var diskModuleCandidates = []string{"virtio_pci", "virtio_blk"}

// DiskModules returns the modules a VM with a scratch disk must load on
// kernel k: the candidates that k does not build in.
func DiskModules(k Kernel) ([]string, error) {
	return modulesNotBuiltin(k, diskModuleCandidates)
}

// newSparseDisk creates a raw disk image of mib MiB at path that takes no
// space on the host until the guest writes to it. It refuses to reuse a
// file: the guest formats the disk.
func newSparseDisk(path string, mib int) error {
	if mib <= 0 {
		return fmt.Errorf("disk of %d MiB", mib)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(int64(mib) << 20); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// driveArgs attach file as the VM's virtio disk. cache=unsafe: the file is
// scratch, so the guest's flushes need not reach the host's disk (they
// would cost the shared build machine I/O for nothing). discard=unmap and
// detect-zeroes=unmap: what the guest discards or fills with zeros (md
// copies the unwritten part of a thin replica as zeros) stays a hole on the
// host, so a benchmark that writes many GiB in the guest takes only its
// real data's space there. qemu's option syntax escapes a comma as two.
func driveArgs(file string) []string {
	return []string{"-drive", "file=" + strings.ReplaceAll(file, ",", ",,") +
		",format=raw,if=virtio,cache=unsafe,discard=unmap,detect-zeroes=unmap"}
}

// readOnlyDriveArgs attach file read-only as a further virtio disk
// (Machine.ReadOnlyDisks).
func readOnlyDriveArgs(file string) []string {
	return []string{"-drive", "file=" + strings.ReplaceAll(file, ",", ",,") + ",format=raw,if=virtio,readonly=on"}
}

// initDisk waits in the guest's /init, after the modules loaded, for the
// disk's device node (devtmpfs makes it when virtio_blk probes the disk),
// so that a missing disk is a clear setup failure rather than a guest
// test's puzzling one.
const initDisk = `n=0
while [ ! -b ` + GuestDisk + ` ]; do
	n=$((n+1))
	[ $n -le 200 ] || fail "no ` + GuestDisk + ` 20 s after loading virtio_blk: does the VM have a disk?"
	sleep 0.1
done
`
