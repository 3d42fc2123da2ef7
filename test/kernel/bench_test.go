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

// benchGuestTests are the guest tests only TestDatapathBenchmark's boot runs
// (TestRealKernel skips them): they need fio and drbd in the VM.
const benchGuestTests = "^TestBenchDatapath$"

// The bench's environment: NVMIRROR_BENCH_MODE=full runs the whole
// benchmark (`make bench-datapath`), anything else the smoke run `make
// test` keeps; NVMIRROR_BENCH_DOC names the Markdown file whose generated
// section a full run rewrites, with the chart written beside it as
// performance.svg.
const (
	envBenchMode = "NVMIRROR_BENCH_MODE"
	envBenchDoc  = "NVMIRROR_BENCH_DOC"
	benchChart   = "performance.svg"
	// envDRBDDiskOpts adds disk options to both DRBD nodes, to try DRBD
	// tuned; the committed figures are DRBD's defaults.
	envDRBDDiskOpts = "NVMIRROR_BENCH_DRBD_DISK_OPTS"
	// envFastIOFailTmo replaces nvmirror's fast_io_fail_tmo, to try one
	// the driver does not offer (0); the committed figures use its default.
	envFastIOFailTmo = "NVMIRROR_BENCH_FAST_IO_FAIL_TMO"
)

// benchTools are what the benchmark adds to the guest: fio, util-linux's
// losetup (--find --show), and DRBD 8.4's userspace for the kernel's drbd
// module (drbd-utils ships it beside its DRBD 9 tools).
var benchTools = []string{"/usr/bin/fio", "/usr/sbin/losetup", "/usr/lib/drbd/drbdsetup-84", "/usr/sbin/drbdmeta"}

// TestDatapathBenchmark boots a VM for the data-path benchmark
// (bench_vmguest_test.go): in a full run it writes the report into the doc
// and the chart beside it; in the smoke run it only checks that every setup
// produced its figures and that they render.
func TestDatapathBenchmark(t *testing.T) {
	full := os.Getenv(envBenchMode) == "full"
	var result string
	timeout := 5 * time.Minute
	if full {
		timeout = 40 * time.Minute
	}
	vm.GuestTests{
		Package: "./test/kernel",
		Pattern: benchGuestTests,
		Timeout: timeout,
		Tools:   benchTools,
		Modules: []string{"drbd"},
		Env: map[string]string{
			envBenchMode: os.Getenv(envBenchMode), envDRBDDiskOpts: os.Getenv(envDRBDDiskOpts), envFastIOFailTmo: os.Getenv(envFastIOFailTmo),
			"PATH": "/nvmirror/bin:/usr/lib/drbd:/usr/sbin:/usr/bin:/sbin:/bin",
		},
		OnOutput: func(line string) {
			if i := strings.Index(line, bench.ResultMarker); i >= 0 {
				result = line[i+len(bench.ResultMarker):]
			}
		},
		MemoryMiB: 5120, // every setup's pool files at once, in RAM
	}.Run(t)
	if t.Failed() || t.Skipped() {
		return
	}
	if result == "" {
		t.Fatal("the guest printed no benchmark result")
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(result), &rep); err != nil {
		t.Fatalf("benchmark result: %v\n%s", err, result)
	}
	if err := rep.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{bench.Floor, bench.Nvmirror2, bench.Nvmirror3, bench.DRBD2} {
		s, ok := rep.Setup(key)
		if !ok {
			t.Errorf("no figures for %s", key)
			continue
		}
		if key != bench.Floor {
			for _, f := range []string{bench.ResyncBytes, bench.ResyncSeconds, bench.StallSeconds} {
				if _, ok := s.Values[f]; !ok {
					t.Errorf("%s has no %s", key, f)
				}
			}
		}
	}
	t.Logf("benchmark (%s run):\n%s", rep.Mode, rep.Table())
	if dir := os.Getenv(vm.EnvLogDir); dir != "" {
		// The run's figures as measured, to compare runs or redraw.
		if err := os.WriteFile(filepath.Join(dir, "TestDatapathBenchmark."+rep.Mode+".json"), []byte(result+"\n"), 0o644); err != nil {
			t.Error(err)
		}
	}

	docPath := os.Getenv(envBenchDoc)
	if !full || docPath == "" {
		// The smoke run renders into a scratch copy: the pipeline works,
		// the committed doc keeps the full run's figures.
		dir := t.TempDir()
		docPath = filepath.Join(dir, "performance.md")
		if err := os.WriteFile(docPath, []byte("# x\n"+bench.BeginMarker+"\n"+bench.EndMarker+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	out, err := bench.RewriteDoc(doc, rep.Generated(benchChart))
	if err != nil {
		t.Fatalf("%s: %v", docPath, err)
	}
	if err := os.WriteFile(docPath, out, 0o644); err != nil {
		t.Fatal(err)
	}
	chart := filepath.Join(filepath.Dir(docPath), benchChart)
	if err := os.WriteFile(chart, rep.SVG(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s and %s", docPath, chart)
}
