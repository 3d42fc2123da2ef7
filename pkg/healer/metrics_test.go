package healer

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
	m.update(obs, st, t0.Add(90*time.Second))
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
	nilMetrics.update(obs, st, t0)
	nilMetrics.repair(Outcome{}, false)
	if err := ServeMetrics(context.Background(), "", reg); err != nil {
		t.Fatal(err)
	}
}
