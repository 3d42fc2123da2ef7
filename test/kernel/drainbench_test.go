//go:build !vmguest

package kernel

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/test/vm"
)

// drainBenchGuestTests are the guest tests only TestDrainBenchmark's boot
// runs (TestRealKernel skips them): they need the scratch disk.
const drainBenchGuestTests = "^TestBenchDrain$"

// TestDrainBenchmark boots a VM with a 20 GiB scratch disk for the drain
// benchmark (drainbench_vmguest_test.go): draining a storage node of 10
// thin 1 GiB volumes makes md write about 10 GiB of new replicas, which
// guest RAM (the tmpfs pools of the other tests) cannot hold. It runs only
// when asked ($NVMIRROR_BENCH_MODE=full, `make bench-drain`), taking
// about half an hour of both cores under TCG; `make test` skips it.
func TestDrainBenchmark(t *testing.T) {
	if os.Getenv(envBenchMode) != "full" {
		t.Skipf("the drain benchmark boots a VM for about half an hour: run it with `make bench-drain` (%s=full)", envBenchMode)
	}
	var result string
	vm.GuestTests{
		Package:  "./test/kernel",
		Commands: []string{"./cmd/nvmirror-target", "./cmd/nvmirror-provisioner", "./cmd/nvmirror-csi", "./cmd/nvmirrorctl"},
		Pattern:  drainBenchGuestTests,
		Timeout:  45 * time.Minute,
		// The pools are on the disk; guest RAM holds the page cache the
		// copies stream through, the processes and the logs.
		DiskMiB:   20 << 10,
		MemoryMiB: 2048,
		OnOutput: func(line string) {
			if i := strings.Index(line, drainBenchMarker); i >= 0 {
				result = line[i+len(drainBenchMarker):]
			}
		},
	}.Run(t)
	if t.Failed() || t.Skipped() {
		return
	}
	if result == "" {
		t.Fatal("the guest printed no drain figures")
	}
	t.Logf("drain benchmark: %s", result)
}
