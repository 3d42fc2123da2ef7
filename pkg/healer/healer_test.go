package healer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
)

// treeRaid reads the fixture tree through the real mdraid reader and plays
// mdadm on it: fail and remove rewrite the member files.
type treeRaid struct {
	*mdraid.Manager
	tr    *tree
	mu    sync.Mutex
	calls []string
}

func (r *treeRaid) rec(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
}

func (r *treeRaid) Add(_ context.Context, d, m string) error   { r.rec("add " + m); return nil }
func (r *treeRaid) ReAdd(_ context.Context, d, m string) error { r.rec("re-add " + m); return nil }
func (r *treeRaid) Fail(_ context.Context, d, m string) error {
	r.rec("fail " + d + " " + m)
	r.tr.write(filepath.Join("sys/block", filepath.Base(d), "md", "dev-"+m, "state"), "faulty,failfast")
	return nil
}
func (r *treeRaid) Remove(_ context.Context, d, m string) error {
	r.rec("remove " + d + " " + m)
	return os.RemoveAll(filepath.Join(r.tr.root, "sys/block", filepath.Base(d), "md", "dev-"+m))
}
func (r *treeRaid) Examine(context.Context, string) (mdraid.Superblock, error) {
	return mdraid.Superblock{}, mdraid.ErrNoSuperblock
}

func (r *treeRaid) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

type harness struct {
	tr      *tree
	prov    *fakeProv
	raid    *treeRaid
	fab     *fakeFabric
	clk     *clocktesting.FakeClock
	dir     string
	reg     *prometheus.Registry
	locked  map[string]bool
	metrics *Metrics
	q       *EventQueue
}

func newHarness(t *testing.T, n int) *harness {
	tr := newTree(t, n)
	return &harness{tr: tr, prov: newFakeProv(tr.vols), raid: &treeRaid{Manager: mdraid.NewManager(nil, tr.root), tr: tr},
		fab: &fakeFabric{reachable: map[string]host.Device{}}, clk: clocktesting.NewFakeClock(t0), dir: t.TempDir(), locked: map[string]bool{}}
}

// healer builds a healer over the harness (a new one = a plugin restart).
func (h *harness) healer(t *testing.T) (*Healer, *EventQueue) {
	t.Helper()
	cfg := testConfig()
	if h.q != nil {
		h.q.Close() // the previous plugin process is gone
	}
	q, err := OpenEventQueue(EventQueueFile(h.dir), 0, h.prov, h.clk)
	if err != nil {
		t.Fatal(err)
	}
	h.q = q
	t.Cleanup(func() { q.Close() })
	h.reg = prometheus.NewRegistry()
	h.metrics = NewMetrics(h.reg)
	obs := h.tr.observer(h.prov)
	obs.ConfigMaxAge = time.Second
	hl, err := New(cfg, h.dir, Deps{
		Observer: obs,
		Actor:    &Actor{Raid: h.raid, Fabric: h.fab, Provisioner: h.prov, Connect: host.ConnectOptions{HostNQN: "nqn.host", HostID: "id"}},
		Queue:    q,
		Metrics:  h.metrics,
		Lock: func(id string) (func(), bool) {
			if h.locked[id] {
				return nil, false
			}
			return func() {}, true
		},
		Clock: h.clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	return hl, q
}

func reportTypes(rs []events.Event) []events.Type {
	var out []events.Type
	for _, r := range rs {
		out = append(out, r.Type)
	}
	return out
}

func TestHealerCycleRestartAndLock(t *testing.T) {
	h := newHarness(t, 2)
	hl, q := h.healer(t)
	ctx := context.Background()
	if err := hl.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	// A healthy node reports only its sessions, one per replica controller
	// (2 volumes of 3 replicas), at the first cycle.
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.prov.delivered(); len(got) != 6 || len(noSessions(got)) != 0 {
		t.Fatalf("healthy node delivered %v", reportTypes(got))
	}
	if s, ok := hl.Status("vol-0000"); !ok || s.Health != HealthHealthy {
		t.Fatalf("status %+v", s)
	}
	if _, err := os.Stat(MemoryFile(h.dir)); err != nil {
		t.Fatalf("memory not saved: %v", err)
	}

	// vol-0001's replica 2: the kernel deleted its controller; the idle
	// array still counts the member in sync. The volume is busy (CSI call).
	h.tr.ctrlState(4, "")
	h.locked["vol-0001"] = true
	h.clk.Step(30 * time.Second)
	if err := hl.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// sn-2 still serves vol-0000 through a live controller: the host's
	// connection to it is not lost, only this replica is.
	if got := reportTypes(noSessions(h.prov.delivered())); !slices.Equal(got, []events.Type{events.VolumeDegraded}) {
		t.Fatalf("events %v", got)
	}
	if n := count(h.prov.delivered(), events.SessionClosed); n != 1 {
		t.Fatalf("%d SessionClosed, want 1", n)
	}
	if len(h.raid.Calls()) != 0 {
		t.Fatalf("acted on a locked volume: %v", h.raid.Calls())
	}
	if s, _ := hl.Status("vol-0001"); s.Health != HealthDegraded || !s.DegradedSince.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("status %+v", s)
	}
	if v := value(h.metrics.repairs.WithLabelValues("fail", "skipped")); v != 1 {
		t.Fatalf("skipped repairs %v", v)
	}

	// Plugin restart: memory reloaded, no event repeated, the lock is free
	// now and the lost leg is failed in md; reconnecting is tried too.
	h.locked["vol-0001"] = false
	hl, q = h.healer(t)
	h.clk.Step(30 * time.Second)
	if err := hl.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if q.Len() != 0 {
		t.Fatalf("restart re-queued %d events", q.Len())
	}
	if got := h.raid.Calls(); !slices.Equal(got, []string{"fail /dev/md1 nvme4n1"}) {
		t.Fatalf("md calls %v", got)
	}
	if !slices.ContainsFunc(h.fab.calls, func(s string) bool { return strings.HasPrefix(s, "connect nqn.2026-01.io.nvmirror:vol-0001-r2") }) {
		t.Fatalf("no reconnect attempt: %v", h.fab.calls)
	}
	mem := hl.Memory()
	if !mem.Volumes["vol-0001"].DegradedSince.Equal(t0.Add(30*time.Second)) || mem.Volumes["vol-0001"].Replicas["vol-0001-r2"].Attempts != 1 {
		t.Fatalf("memory %+v", mem.Volumes["vol-0001"])
	}
	if v := value(h.metrics.volumes.WithLabelValues("degraded")); v != 1 {
		t.Fatalf("degraded volumes metric %v", v)
	}
	// Metrics describe what the cycle observed, before it acted.
	if v := value(h.metrics.members.WithLabelValues("link_down")); v != 1 {
		t.Fatalf("link_down members metric %v", v)
	}
	if err := hl.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if v := value(h.metrics.members.WithLabelValues("faulty")); v != 1 {
		t.Fatalf("faulty members metric %v", v)
	}
}

// Run: the NVMe poll notices a controller going away between two
// intervals, and the event reaches the provisioner.
func TestHealerRunReactsToNVMeChange(t *testing.T) {
	h := newHarness(t, 1)
	hl, _ := h.healer(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hl.Run(ctx) }()
	// The first cycle has run (it saves the memory), and the interval and
	// NVMe poll tickers wait.
	waitFor(t, func() bool { _, err := os.Stat(MemoryFile(h.dir)); return err == nil && h.clk.Waiters() >= 2 })
	h.tr.ctrlState(1, "connecting")
	h.clk.Step(time.Second) // one NVMe poll, well before the 30 s interval
	waitFor(t, func() bool { return len(noSessions(h.prov.delivered())) == 2 })
	if got := reportTypes(noSessions(h.prov.delivered())); !slices.Equal(got, []events.Type{events.HostDisconnected, events.VolumeDegraded}) {
		t.Fatalf("events %v", got)
	}
	if d := noSessions(h.prov.delivered())[1].Time; !d.Equal(t0.Add(time.Second)) {
		t.Fatalf("detected at %v", d)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type fakeWatcher struct{ ch chan []string }

func (w *fakeWatcher) Wait(ctx context.Context, arrays []string) ([]string, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case c := <-w.ch:
		return c, nil
	}
}

// Run: an md notification triggers a cycle at once.
func TestHealerRunReactsToMDChange(t *testing.T) {
	h := newHarness(t, 1)
	hl, _ := h.healer(t)
	w := &fakeWatcher{ch: make(chan []string)}
	hl.deps.Watcher = w
	hl.cfg.NVMePollInterval = 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hl.Run(ctx) }()
	waitFor(t, func() bool { _, err := os.Stat(MemoryFile(h.dir)); return err == nil && h.clk.Waiters() >= 1 })
	h.tr.memberState(0, 2, "faulty,failfast")
	w.ch <- []string{"md0"}
	waitFor(t, func() bool { return len(noSessions(h.prov.delivered())) == 1 })
	if got := reportTypes(noSessions(h.prov.delivered())); !slices.Equal(got, []events.Type{events.VolumeDegraded}) {
		t.Fatalf("events %v", got)
	}
	cancel()
	<-done
}

func TestMemoryFileVersion(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.json")
	if m, err := LoadMemory(p); err != nil || m.Version != MemoryVersion {
		t.Fatalf("missing file: %+v %v", m, err)
	}
	if err := os.WriteFile(p, []byte(fmt.Sprintf(`{"version":%d}`, MemoryVersion+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadMemory(p); err == nil {
		t.Fatal("newer memory layout accepted")
	}
	if err := os.WriteFile(p, []byte(`{`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadMemory(p); err == nil {
		t.Fatal("torn memory accepted")
	}
}

func TestStagedVolumesHealerFilesDoNotCollide(t *testing.T) {
	// The healer's files live in a subdirectory the staging state ignores.
	dir := t.TempDir()
	if err := SaveMemory(MemoryFile(dir), Memory{}); err != nil {
		t.Fatal(err)
	}
	vols, err := stagestate.ListVolumes(dir)
	if err != nil || len(vols) != 0 {
		t.Fatalf("%v %v", vols, err)
	}
}

// value reads one counter or gauge.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// VolumeHealth (volume.HealthSource): the last cycle's status rendered for
// NodeGetVolumeHealth, not blocked by a running cycle, and refused when stale.
func TestHealerVolumeHealth(t *testing.T) {
	h := newHarness(t, 2)
	hl, _ := h.healer(t)
	ctx := context.Background()
	if _, ok := hl.VolumeHealth("vol-0000"); ok {
		t.Fatal("a view before any cycle")
	}
	if err := hl.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if vh, ok := hl.VolumeHealth("vol-0000"); !ok || vh.Abnormal || vh.Inaccessible {
		t.Fatalf("healthy volume: %+v %v", vh, ok)
	}
	if _, ok := hl.VolumeHealth("vol-9999"); ok {
		t.Fatal("a view of a volume not staged")
	}
	h.tr.ctrlState(4, "")
	h.clk.Step(30 * time.Second)
	if err := hl.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	h.clk.Step(5 * time.Minute)
	if err := hl.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	vh, ok := hl.VolumeHealth("vol-0001")
	if !ok || !vh.Abnormal || vh.Inaccessible || vh.Reason != "MirrorDegraded" {
		t.Fatalf("degraded volume: %+v %v", vh, ok)
	}
	since := t0.Add(30 * time.Second).Format(time.RFC3339)
	for _, want := range []string{"vol-0001-r2 (sn-2, down since " + since + ")", "degraded since " + since + " (5m0s)"} {
		if !strings.Contains(vh.Message, want) {
			t.Fatalf("message %q lacks %q", vh.Message, want)
		}
	}
	// A cycle holding the loop's lock (acting for minutes) does not block
	// the CSI health call.
	hl.mu.Lock()
	done := make(chan struct{})
	go func() { hl.VolumeHealth("vol-0001"); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("VolumeHealth waits for the cycle")
	}
	hl.mu.Unlock()
	// No cycle for more than three intervals: stale, the driver reads md.
	h.clk.Step(91 * time.Second)
	if _, ok := hl.VolumeHealth("vol-0001"); ok {
		t.Fatal("a stale view")
	}
}

func TestHealthOf(t *testing.T) {
	s := VolumeStatus{VolumeID: "v", Health: HealthSyncing, DegradedSince: t0, SyncProgress: 0.425,
		Missing: []string{"r2"}, MissingReplicas: []MissingReplica{{ID: "r2", StorageNode: "sn-2"}}}
	vh := healthOf(s, t0.Add(time.Hour))
	want := "volume syncing: replicas not serving: r2 (sn-2, syncing); degraded since 2026-03-01T12:00:00Z (1h0m0s); resync 42.5% done"
	if !vh.Abnormal || vh.Inaccessible || vh.Reason != "MirrorSyncing" || vh.Message != want {
		t.Fatalf("syncing: %+v\nwant message %q", vh, want)
	}
	if vh := healthOf(VolumeStatus{Health: HealthUnavailable, SyncProgress: -1}, t0); !vh.Inaccessible || vh.Message != "volume unavailable" {
		t.Fatalf("unavailable: %+v", vh)
	}
}

// recordingWatcher records the arrays of each Wait, which waits for ctx.
type recordingWatcher struct {
	mu    sync.Mutex
	calls [][]string
}

func (w *recordingWatcher) Wait(ctx context.Context, arrays []string) ([]string, error) {
	w.mu.Lock()
	w.calls = append(w.calls, arrays)
	w.mu.Unlock()
	<-ctx.Done()
	return nil, ctx.Err()
}

func (w *recordingWatcher) last() (int, []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.calls) == 0 {
		return 0, nil
	}
	return len(w.calls), w.calls[len(w.calls)-1]
}

// The md watch waits on the arrays a cycle found as soon as they change,
// not at the next md notification: a watch started before the first cycle
// (with no array) moves to the arrays the cycle found, and that is not a
// failed watch.
func TestHealerWatchFollowsTheCycleArrays(t *testing.T) {
	h := newHarness(t, 2)
	hl, _ := h.healer(t)
	w := &recordingWatcher{}
	hl.deps.Watcher = w
	hl.deps.Observer.MDNotifications(true) // as New does with a watcher
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); hl.watchMD(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, func() bool { n, _ := w.last(); return n == 1 })
	if _, arrays := w.last(); len(arrays) != 0 {
		t.Fatalf("first Wait on %v before any cycle", arrays)
	}
	if err := hl.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, a := w.last(); return slices.Equal(a, []string{"md0", "md1"}) })
	if err := hl.RunOnce(ctx); err != nil { // the same arrays: the Wait goes on
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if n, _ := w.last(); n != 2 {
		t.Fatalf("%d Waits, want 2", n)
	}
	hl.deps.Observer.mdRead.mu.Lock()
	notified := hl.deps.Observer.mdRead.notified
	hl.deps.Observer.mdRead.mu.Unlock()
	if !notified {
		t.Fatal("moving the watch to new arrays counted as a failed watch")
	}
}
