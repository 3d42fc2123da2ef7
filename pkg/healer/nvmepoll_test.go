//go:build linux

package healer

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
)

// kernelLogHarness runs a healer over a one-volume tree with CachedNVMe and
// the kernel log followed from a pipe standing in for /dev/kmsg.
type kernelLogHarness struct {
	*harness
	log    *os.File // the writing end: what the kernel logs
	cancel context.CancelFunc
	done   chan error
}

func newKernelLogHarness(t *testing.T) *kernelLogHarness {
	h := newHarness(t, 1)
	hl, _ := h.healer(t)
	c := NewCachedNVMe(h.tr.root)
	t.Cleanup(func() { c.Close() })
	hl.deps.Observer.NVMe = c
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	kl, err := host.OpenControllerLog(fmt.Sprintf("/proc/self/fd/%d", r.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	hl.deps.KernelLog = kl
	ctx, cancel := context.WithCancel(context.Background())
	k := &kernelLogHarness{harness: h, log: w, cancel: cancel, done: make(chan error, 1)}
	go func() { k.done <- hl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-k.done
		kl.Close()
	})
	// The first cycle ran; the interval and the backstop tickers wait.
	waitFor(t, func() bool { _, err := os.Stat(MemoryFile(h.dir)); return err == nil && h.clk.Waiters() >= 2 })
	return k
}

func (k *kernelLogHarness) logs(t *testing.T, msg string) {
	t.Helper()
	if _, err := fmt.Fprintf(k.log, "4,%d,1000,-;%s\n", time.Now().UnixNano(), msg); err != nil {
		t.Fatal(err)
	}
}

// degradedAt waits for the Degraded event and returns its time (the fake
// clock's at detection).
func (k *kernelLogHarness) degradedAt(t *testing.T) time.Time {
	t.Helper()
	waitFor(t, func() bool { return count(k.prov.delivered(), events.VolumeDegraded) == 1 })
	for _, e := range k.prov.delivered() {
		if e.Type == events.VolumeDegraded {
			return e.Time
		}
	}
	return time.Time{}
}

// The kernel logs the controller's error recovery: the controller is read
// and the loss detected at once, with no poll tick (the fake clock does not
// move).
func TestNVMePollWokenByKernelLog(t *testing.T) {
	k := newKernelLogHarness(t)
	k.tr.ctrlState(1, "resetting")
	k.logs(t, "nvme nvme1: starting error recovery")
	if at := k.degradedAt(t); !at.Equal(t0) {
		t.Fatalf("detected at %v, want at once (%v)", at, t0)
	}
	if got := reportTypes(noSessions(k.prov.delivered())); !slices.Equal(got, []events.Type{events.HostDisconnected, events.VolumeDegraded}) {
		t.Fatalf("events %v", got)
	}
}

// The kernel logs a step just before it changes the state: the named
// controller is read again kernelLogRecheck later.
func TestNVMePollRechecksLoggedControllers(t *testing.T) {
	k := newKernelLogHarness(t)
	k.logs(t, "nvme nvme2: Removing controller...")
	// The poll read nvme2 (still live) and armed the recheck.
	waitFor(t, func() bool { return k.clk.Waiters() >= 3 })
	k.tr.ctrlState(2, "deleting")
	k.clk.Step(kernelLogRecheck)
	if at := k.degradedAt(t); !at.Equal(t0.Add(kernelLogRecheck)) {
		t.Fatalf("detected at %v, want at the recheck (%v)", at, t0.Add(kernelLogRecheck))
	}
}

// A state change the kernel did not log is seen by the backstop, every
// controller read every NVMeBackstopInterval, not every NVMePollInterval.
func TestNVMePollBackstop(t *testing.T) {
	k := newKernelLogHarness(t)
	k.logs(t, "md: md0 stopped.") // names no controller: nothing read
	k.tr.ctrlState(0, "connecting")
	cfg := testConfig()
	for d := cfg.NVMePollInterval; d < cfg.NVMeBackstopInterval; d += cfg.NVMePollInterval {
		k.clk.Step(cfg.NVMePollInterval)
		time.Sleep(20 * time.Millisecond)
		if n := count(k.prov.delivered(), events.VolumeDegraded); n != 0 {
			t.Fatalf("detected after %v, before the backstop (%v) and with no kernel log record", d, cfg.NVMeBackstopInterval)
		}
	}
	k.clk.Step(cfg.NVMePollInterval)
	if at := k.degradedAt(t); !at.Equal(t0.Add(cfg.NVMeBackstopInterval)) {
		t.Fatalf("detected at %v, want at the backstop (%v)", at, t0.Add(cfg.NVMeBackstopInterval))
	}
}

// When the kernel log ends (cannot be read any more), every controller is
// read every NVMePollInterval again.
func TestNVMePollWithoutKernelLog(t *testing.T) {
	k := newKernelLogHarness(t)
	k.log.Close()
	cfg := testConfig()
	k.tr.ctrlState(0, "connecting")
	stepped := time.Duration(0)
	for count(k.prov.delivered(), events.VolumeDegraded) == 0 && stepped < cfg.NVMeBackstopInterval {
		// The fallback ticker may start after a step: step until seen.
		k.clk.Step(cfg.NVMePollInterval)
		stepped += cfg.NVMePollInterval
		time.Sleep(50 * time.Millisecond)
	}
	at := k.degradedAt(t)
	if d := at.Sub(t0); d >= cfg.NVMeBackstopInterval {
		t.Fatalf("detected %v after the change without a kernel log, want within a few %v polls", d, cfg.NVMePollInterval)
	}
}
