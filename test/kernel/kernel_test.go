//go:build !vmguest

// Package kernel holds nvmirror's real-kernel tests. The files tagged vmguest
// run inside the test VM (see test/vm); this file is the host side, which
// boots the VM once and reports each guest test as a subtest.
package kernel

import (
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/test/vm"
)

// TestRealKernel boots one VM for every guest test in this package: a boot
// costs about 10 s under TCG, so scenarios share it.
func TestRealKernel(t *testing.T) {
	vm.GuestTests{
		Package: "./test/kernel",
		Commands: []string{
			"./cmd/nvmirror-target", "./cmd/nvmirror-provisioner", "./cmd/nvmirror-csi", "./cmd/nvmirrorctl",
			"github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity",
		},
		Timeout: 20 * time.Minute,
		// The demo's replacement syncs a 1 GiB replica into a tmpfs pool.
		MemoryMiB: 3072,
	}.Run(t)
}
