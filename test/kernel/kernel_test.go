//go:build !vmguest

// Package kernel holds nvmirror's real-kernel tests. The files tagged vmguest
// run inside the test VM (see test/vm); this file is the host side, which
// boots the VMs and reports each guest test as a subtest.
package kernel

import (
	"os"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/test/vm"
)

// authTests are the guest tests that need NVMe in-band authentication
// (DH-HMAC-CHAP), which Debian 6.1 is built without: they run in their own
// boot of the 6.12 backports kernel instead.
const authTests = "^TestAuth"

// TestMain removes the binaries the boots share (test/vm builds each
// once per process) when the tests are done.
func TestMain(m *testing.M) { os.Exit(vm.RunTests(m)) }

// TestRealKernel boots one VM (Debian 6.1) for every guest test in this
// package but the auth ones and the benchmarks (TestDatapathBenchmark's and
// TestDrainBenchmark's): a boot costs about 10 s under TCG, so scenarios
// share it.
func TestRealKernel(t *testing.T) {
	vm.GuestTests{
		Package: "./test/kernel",
		Commands: []string{
			"./cmd/nvmirror-target", "./cmd/nvmirror-provisioner", "./cmd/nvmirror-csi", "./cmd/nvmirrorctl",
			"github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity",
		},
		Skip: authTests + "|" + benchGuestTests + "|" + drainBenchGuestTests,
		// About 17 minutes alone under TCG; `make test` runs the host's
		// tests beside it, which slows the guest by a few minutes.
		Timeout: 30 * time.Minute,
		// The demo's replacement syncs a 1 GiB replica into a tmpfs pool
		// (at its real pace, `make demo`).
		MemoryMiB: 3072,
		Env:       map[string]string{envDemoPace: os.Getenv(envDemoPace)},
	}.Run(t)
}

// TestRealKernelAuth boots the 6.12 bookworm-backports kernel (`make
// vm-kernel-auth`) for the auth guest tests. It runs after TestRealKernel,
// never beside it: the machines have two cores and TCG uses both.
func TestRealKernelAuth(t *testing.T) {
	vm.GuestTests{
		Package:   "./test/kernel",
		KernelDir: vm.AuthKernelDir,
		Commands: []string{
			"./cmd/nvmirror-target", "./cmd/nvmirror-provisioner", "./cmd/nvmirror-csi", "./cmd/nvmirrorctl",
		},
		Pattern: authTests,
		Timeout: 15 * time.Minute,
	}.Run(t)
}
