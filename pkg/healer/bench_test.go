//go:build linux

package healer

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
)

// The healer's cost on a node with many staged volumes, on fixture trees of
// healthy three-replica arrays (sysfs and /proc/mdstat as regular files, a
// staging state file per volume, the provisioner answering from memory).
// Each benchmark runs the healer in its successive forms in the same run,
// so the ratios are the figures:
//   - naive: the observer as it was before the caches: every cycle reads
//     every attribute of every array, the NVMe poll reads three attributes
//     of every controller by path every second;
//   - cached: CachedNVMe and array readings reused while md notifications
//     are watched, every controller's state read every second and at every
//     cycle, every volume decided at every cycle, every staging state file
//     parsed at every cycle;
//   - kmsg: what cmd/nvmirror-csi runs now: the kernel log followed (an
//     idle pipe here: a quiet node logs nothing), every controller read
//     every 10 s, the cycle trusting the states the poll read, deciding
//     only the volumes whose observation changed, and parsing only the
//     staging state files that changed.

var benchSizes = []int{10, 100, 1000}

type benchMode string

const (
	naive  benchMode = "naive"
	cached benchMode = "cached"
	kmsg   benchMode = "kmsg"
)

// benchHealer is a healer over the tree as the node plugin wires it in the
// given mode.
func benchHealer(b *testing.B, tr *tree, mode benchMode, w MDWatcher, cfg Config) *Healer {
	b.Helper()
	quietOnce.Do(quiet)
	prov := newFakeProv(tr.vols)
	o := tr.observer(prov)
	o.ConfigMaxAge = 10 * time.Second
	stateDir := tr.writeStagingStates()
	o.Staged = func() ([]stagestate.Volume, error) { return stagestate.ListVolumes(stateDir) }
	var kl KernelLog
	if mode != naive {
		c := NewCachedNVMe(tr.root)
		b.Cleanup(func() { c.Close() })
		o.NVMe, o.ArrayReread = c, DefaultArrayReread
		if mode == kmsg {
			o.Staged = stagestate.NewLister(stateDir).Volumes
			kl = idleKernelLog(b)
			// What the NVMe poll sets while it follows the kernel log
			// (BenchmarkCycle runs cycles without the poll).
			c.TrustPolledStates(2 * cfg.NVMeBackstopInterval)
		}
	}
	dir := b.TempDir()
	q, err := OpenEventQueue(EventQueueFile(dir), 0, prov, clock.RealClock{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { q.Close() })
	h, err := New(cfg, dir, Deps{Observer: o, Actor: &Actor{Raid: mdraid.NewManager(nil, tr.root), Provisioner: prov},
		Queue: q, Watcher: w, KernelLog: kl, Clock: clock.RealClock{}, Metrics: NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		b.Fatal(err)
	}
	h.decideAll = mode != kmsg
	return h
}

// idleKernelLog is the kernel log of a quiet node: a pipe nothing is
// written to.
func idleKernelLog(b *testing.B) KernelLog {
	r, w, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	kl, err := host.OpenControllerLog(fmt.Sprintf("/proc/self/fd/%d", r.Fd()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { kl.Close(); r.Close(); w.Close() })
	return kl
}

var quietOnce sync.Once

// quiet silences klog for the benchmarks, unless NVMIRROR_TEST_LOG is set:
// the first cycle logs every session it reports, thousands of lines at 1000
// arrays.
func quiet() {
	if os.Getenv("NVMIRROR_TEST_LOG") != "" {
		return
	}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	klog.SetOutput(io.Discard)
}

// idleWatcher is md with nothing to report.
type idleWatcher struct{}

func (idleWatcher) Wait(ctx context.Context, _ []string) ([]string, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func variants(b *testing.B, modes []benchMode, f func(b *testing.B, n int, mode benchMode)) {
	for _, n := range benchSizes {
		for _, mode := range modes {
			b.Run(fmt.Sprintf("%s/arrays=%d", mode, n), func(b *testing.B) { f(b, n, mode) })
		}
	}
}

// BenchmarkCycle is one whole healer cycle (RunOnce: observe, decide, no
// action, memory compared, statuses and metrics) on a healthy node, after
// the first.
func BenchmarkCycle(b *testing.B) {
	variants(b, []benchMode{naive, cached, kmsg}, func(b *testing.B, n int, mode benchMode) {
		tr := newTree(b, n)
		h := benchHealer(b, tr, mode, idleWatcher{}, testConfig())
		ctx := context.Background()
		for i := 0; i < 2; i++ { // the first cycle reports the sessions
			if err := h.RunOnce(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		before := cpuTime(b)
		for i := 0; i < b.N; i++ {
			if err := h.RunOnce(ctx); err != nil {
				b.Fatal(err)
			}
		}
		reportCPUPerOp(b, cpuTime(b)-before)
		b.StopTimer()
		if st, ok := h.Status("vol-0000"); !ok || st.Health != HealthHealthy {
			b.Fatalf("vol-0000: %+v", st)
		}
	})
}

// BenchmarkNVMePoll is one NVMe state poll of every controller: naive, the
// listing with three attributes read per controller and the fingerprint;
// cached, CachedNVMe.Poll (the kmsg mode's backstop is the same poll, run
// every 10 s instead of every second).
func BenchmarkNVMePoll(b *testing.B) {
	variants(b, []benchMode{naive, cached}, func(b *testing.B, n int, mode benchMode) {
		tr := newTree(b, n)
		if mode != naive {
			c := NewCachedNVMe(tr.root)
			b.Cleanup(func() { c.Close() })
			if cs, err := c.Controllers(); err != nil || len(cs) != 3*n {
				b.Fatal(len(cs), err)
			}
			b.ResetTimer()
			before := cpuTime(b)
			for i := 0; i < b.N; i++ {
				if changed, err := c.Poll(); err != nil || changed {
					b.Fatal(changed, err)
				}
			}
			reportCPUPerOp(b, cpuTime(b)-before)
			return
		}
		r := SysfsNVMe{Root: tr.root}
		b.ResetTimer()
		before := cpuTime(b)
		for i := 0; i < b.N; i++ {
			cs, err := r.Controllers()
			if err != nil || len(cs) != 3*n {
				b.Fatal(len(cs), err)
			}
			_ = fingerprint(cs)
		}
		reportCPUPerOp(b, cpuTime(b)-before)
	})
}

// BenchmarkSteadyState is the CPU the healer's watch costs an idle node:
// Healer.Run with the default timers (a cycle every 30 s; the NVMe poll of
// every controller every second, or every 10 s with the kernel log
// followed; md notifications through the real watcher on the fixture
// files, which never signal) for one heal interval of wall-clock time after
// start-up (the first two cycles and the watcher's first arming), so the
// window holds 30 polls (kmsg: 3) and one periodic cycle. It reports the process's CPU time (user+system, getrusage) per
// second of the window as cpu-ms/s. The window starts once the first
// cycle's session events are delivered and the second cycle is done
// (start-up costs, not the watch's).
// Each run takes 30 s. NVMIRROR_BENCH_PROFILE=<dir> writes a CPU profile of
// each window there.
func BenchmarkSteadyState(b *testing.B) {
	variants(b, []benchMode{naive, cached, kmsg}, func(b *testing.B, n int, mode benchMode) {
		tr := newTree(b, n)
		w := &armingWatcher{w: mdraid.NewWatcher(tr.root)}
		defer w.w.Close()
		cfg := testConfig()
		h := benchHealer(b, tr, mode, w, cfg)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- h.Run(ctx) }()
		// Steady state: the first cycle is done, the sessions it
		// reported (one event per controller) are delivered, the md
		// watcher has armed every array's files, and a second cycle has
		// settled the volumes (the first reported their sessions, so
		// none settled; the third is the first that carries them over,
		// as every periodic cycle after start-up does).
		statusAt := func() time.Time {
			h.statusMu.RLock()
			defer h.statusMu.RUnlock()
			return h.statusAt
		}
		for statusAt().IsZero() || h.deps.Queue.Len() != 0 || w.armed.Load() != int64(n) {
			time.Sleep(10 * time.Millisecond)
		}
		first := statusAt()
		h.Trigger()
		for statusAt().Equal(first) {
			time.Sleep(10 * time.Millisecond)
		}
		b.ResetTimer()
		stopProfile := windowProfile(b)
		before, start := cpuTime(b), time.Now()
		time.Sleep(cfg.Interval)
		used, wall := cpuTime(b)-before, time.Since(start)
		stopProfile()
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(used.Microseconds())/1000/wall.Seconds(), "cpu-ms/s")
		b.ReportMetric(float64(used.Microseconds())/1000/wall.Seconds()/float64(n), "cpu-ms/s/array")
	})
}

// windowProfile starts a CPU profile of the steady-state window alone when
// NVMIRROR_BENCH_PROFILE names a directory (one file per sub-benchmark):
// -cpuprofile covers the whole run, mostly the building of the fixture
// tree, which dwarfs the window's few hundred milliseconds.
func windowProfile(b *testing.B) (stop func()) {
	dir := os.Getenv("NVMIRROR_BENCH_PROFILE")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "_")+".pprof"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Error(err)
		}
	}
}

// armingWatcher is the md watcher, arming the files of the arrays asked
// before it waits and counting them: the first Wait after the first cycle
// opens and reads every array's files (7000 at 1000 arrays), a start-up
// cost like the first cycle's that the steady-state window must not
// start in the middle of.
type armingWatcher struct {
	w     *mdraid.Watcher
	armed atomic.Int64
}

func (a *armingWatcher) Wait(ctx context.Context, arrays []string) ([]string, error) {
	if gone, err := a.w.Arm(arrays); err != nil || len(gone) > 0 {
		return gone, err
	}
	a.armed.Store(int64(len(arrays)))
	return a.w.Wait(ctx, arrays)
}

// reportCPUPerOp reports the process's CPU time per iteration as
// cpu-ms/op: on a machine shared with other work it moves less than the
// wall-clock ns/op.
func reportCPUPerOp(b *testing.B, used time.Duration) {
	b.ReportMetric(float64(used.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
