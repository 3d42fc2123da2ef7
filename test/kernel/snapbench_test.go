//go:build !vmguest

package kernel

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/test/bench"
	"github.com/nvmirror/nvmirror/test/vm"
)

// snapBenchGuestTests is the snapshot benchmark's guest test. Its smoke
// variant runs in TestRealKernel's boot; TestSnapshotBenchmark boots for
// the full one.
const snapBenchGuestTests = "^TestBenchSnapshots$"

// TestSnapshotBenchmark boots a VM for the full snapshot benchmark
// (snapbench_vmguest_test.go): snapshot, restore and stage times of 1 GiB
// and 16 GiB volumes with 64 MiB written, on an XFS pool with reflinks
// and an ext4 one. It runs only when asked ($NVMIRROR_BENCH_MODE=full,
// `make bench-snapshots`, part of `make bench`), and with
// $NVMIRROR_BENCH_DOC rewrites the Snapshots section of that document
// between its markers; `make test` runs only the smoke variant, inside
// TestRealKernel.
func TestSnapshotBenchmark(t *testing.T) {
	if os.Getenv(envBenchMode) != "full" {
		t.Skipf("the snapshot benchmark boots a VM for about 15 minutes: run it with `make bench-snapshots` (%s=full); TestRealKernel runs its smoke variant", envBenchMode)
	}
	var result string
	vm.GuestTests{
		Package:  "./test/kernel",
		Commands: []string{"./cmd/nvmirror-target", "./cmd/nvmirror-provisioner", "./cmd/nvmirror-csi", "./cmd/nvmirrorctl"},
		Pattern:  snapBenchGuestTests,
		Timeout:  90 * time.Minute,
		Env:      map[string]string{envBenchMode: "full"},
		// The pools' data (the loop devices' tmpfs files: at most a few
		// hundred MiB at once, trimmed after each repetition) and the
		// page cache that md checks of 16 GiB arrays stream through.
		MemoryMiB: 4096,
		OnOutput: func(line string) {
			if i := strings.Index(line, bench.SnapshotResultMarker); i >= 0 {
				result = line[i+len(bench.SnapshotResultMarker):]
			}
		},
	}.Run(t)
	if t.Failed() || t.Skipped() {
		return
	}
	if result == "" {
		t.Fatal("the guest printed no snapshot benchmark result")
	}
	var rep bench.SnapshotReport
	if err := json.Unmarshal([]byte(result), &rep); err != nil {
		t.Fatalf("snapshot benchmark result: %v\n%s", err, result)
	}
	if err := rep.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot benchmark (%s run):\n%s", rep.Mode, rep.Table())
	if dir := os.Getenv(vm.EnvLogDir); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, "TestSnapshotBenchmark."+rep.Mode+".json"), []byte(result+"\n"), 0o644); err != nil {
			t.Error(err)
		}
	}
	docPath := os.Getenv(envBenchDoc)
	if docPath == "" {
		return
	}
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	out, err := bench.RewriteSection(doc, bench.SnapshotBeginMarker, bench.SnapshotEndMarker, rep.Generated())
	if err != nil {
		t.Fatalf("%s: %v", docPath, err)
	}
	if err := os.WriteFile(docPath, out, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", docPath)
}
