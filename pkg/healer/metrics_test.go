package healer

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestVolumeStatus(t *testing.T) {
	cfg := volCfg("vol-1", "60", "r1", "r2")
	healthy := observeVol(cfg, true, nil)
	broken := observeVol(cfg, true, nil)
	broken.Array.State = "broken"
	syncing := observeVol(cfg, true, map[string]rs{"r2": {"live", "S"}})
	syncing.Array.SyncDone, syncing.Array.SyncTotal = 25, 100
	single := VolumeObservation{VolumeID: "vol-s"}
	for name, tc := range map[string]struct {
		v    VolumeObservation
		vm   VolumeMemory
		want Health
	}{
		"healthy":      {healthy, VolumeMemory{}, HealthHealthy},
		"degraded":     {healthy, VolumeMemory{DegradedSince: t0}, HealthDegraded},
		"syncing":      {syncing, VolumeMemory{DegradedSince: t0, Sync: SyncMemory{Active: true}}, HealthSyncing},
		"broken":       {broken, VolumeMemory{}, HealthUnavailable},
		"no array":     {VolumeObservation{VolumeID: "v", MDUUID: testMDUUID}, VolumeMemory{}, HealthUnavailable},
		"single, gone": {single, VolumeMemory{}, HealthUnavailable},
	} {
		if got := volumeStatus(tc.v, tc.vm); got.Health != tc.want {
			t.Errorf("%s: health %s, want %s", name, got.Health, tc.want)
		}
	}
	if s := volumeStatus(syncing, VolumeMemory{}); s.SyncProgress != 0.25 {
		t.Errorf("sync progress %v", s.SyncProgress)
	}
}

func TestMetricsUpdate(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	cfg := volCfg("vol-1", "60", "r1", "r2", "r3")
	obs := obsOf(observeVol(cfg, true, map[string]rs{"r2": {"connecting", "U"}, "r3": {"live", "S"}}))
	st := map[string]VolumeStatus{"vol-1": {VolumeID: "vol-1", Health: HealthSyncing, DegradedSince: t0, SyncProgress: 0.5}}
	m.update(obs, st, t0.Add(90*time.Second), nil)
	for state, want := range map[string]float64{"in_sync": 1, "link_down": 1, "syncing": 1, "faulty": 0} {
		if got := value(m.members.WithLabelValues(state)); got != want {
			t.Errorf("members %s = %v, want %v", state, got, want)
		}
	}
	if got := value(m.degradedSeconds.WithLabelValues("vol-1")); got != 90 {
		t.Errorf("degraded seconds %v", got)
	}
	if got := value(m.volumes.WithLabelValues("syncing")); got != 1 {
		t.Errorf("syncing volumes %v", got)
	}
	m.cycleDone(time.Millisecond, 3)
	if got := value(m.queued); got != 3 {
		t.Errorf("queued %v", got)
	}
	var nilMetrics *Metrics // a healer without metrics
	nilMetrics.update(obs, st, t0, nil)
	nilMetrics.repair(Outcome{}, false)
	if err := ServeMetrics(context.Background(), "", reg); err != nil {
		t.Fatal(err)
	}
}

// TestMetricsUpdateIncremental: series of a sync or degraded episode that
// ended, and of a volume no longer staged, are deleted; a carried volume
// keeps its contribution; a changed one is counted anew.
func TestMetricsUpdateIncremental(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	cfg := volCfg("vol-1", "60", "r1", "r2", "r3")
	syncing := observeVol(cfg, true, map[string]rs{"r3": {"live", "S"}})
	syncing.Array.SyncAction, syncing.Array.SyncDone, syncing.Array.SyncTotal, syncing.Array.SyncSpeedKiB = "recover", 1, 2, 100
	st := map[string]VolumeStatus{"vol-1": {VolumeID: "vol-1", Health: HealthSyncing, DegradedSince: t0, SyncProgress: 0.5}}
	m.update(obsOf(syncing), st, t0, nil)
	for name, vec := range map[string]*prometheus.GaugeVec{"progress": m.syncProgress, "degraded": m.degradedSeconds, "rate": m.syncRate, "limit": m.rebuildLimit} {
		if n := testutil.CollectAndCount(vec); n != 1 {
			t.Fatalf("%s: %d series while syncing, want 1", name, n)
		}
	}
	healthy := observeVol(cfg, true, nil)
	st = map[string]VolumeStatus{"vol-1": {VolumeID: "vol-1", Health: HealthHealthy, SyncProgress: -1}}
	m.update(obsOf(healthy), st, t0.Add(time.Minute), nil)
	for name, vec := range map[string]*prometheus.GaugeVec{"progress": m.syncProgress, "degraded": m.degradedSeconds, "rate": m.syncRate} {
		if n := testutil.CollectAndCount(vec); n != 0 {
			t.Errorf("%s: %d series once whole, want 0", name, n)
		}
	}
	if got := value(m.members.WithLabelValues("in_sync")); got != 3 {
		t.Errorf("in_sync members %v, want 3", got)
	}
	// Carried: the last contribution stands (the observation passed here
	// is not looked at).
	m.update(obsOf(VolumeObservation{VolumeID: "vol-1"}), map[string]VolumeStatus{"vol-1": {}}, t0.Add(2*time.Minute), map[string]bool{"vol-1": true})
	if got := value(m.members.WithLabelValues("in_sync")); got != 3 {
		t.Errorf("carried: in_sync members %v, want 3", got)
	}
	if got := value(m.volumes.WithLabelValues("healthy")); got != 1 {
		t.Errorf("carried: healthy volumes %v, want 1", got)
	}
	// Not carried: counted from what is observed.
	down := observeVol(cfg, true, map[string]rs{"r2": {"connecting", "U"}})
	m.update(obsOf(down), map[string]VolumeStatus{"vol-1": {VolumeID: "vol-1", Health: HealthDegraded, DegradedSince: t0, SyncProgress: -1}},
		t0.Add(3*time.Minute), map[string]bool{})
	if got := value(m.members.WithLabelValues("link_down")); got != 1 {
		t.Errorf("link_down members %v, want 1", got)
	}
	if got := value(m.degradedSeconds.WithLabelValues("vol-1")); got != 180 {
		t.Errorf("degraded seconds %v, want 180", got)
	}
	m.update(Observation{}, nil, t0.Add(4*time.Minute), nil)
	for name, vec := range map[string]*prometheus.GaugeVec{"progress": m.syncProgress, "degraded": m.degradedSeconds, "rate": m.syncRate, "limit": m.rebuildLimit} {
		if n := testutil.CollectAndCount(vec); n != 0 {
			t.Errorf("%s: %d series after unstage, want 0", name, n)
		}
	}
	if got := value(m.members.WithLabelValues("link_down")) + value(m.volumes.WithLabelValues("degraded")); got != 0 {
		t.Errorf("counts after unstage %v, want 0", got)
	}
}
