package healer

import (
	"slices"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/volume"
)

// divergedCfg is a 3-replica volume whose r2 a promotion gave up.
func divergedCfg() *volume.Volume {
	cfg := volCfg("vol-1", "60", "r1", "r2", "r3")
	cfg.Replicas[1].OutOfSyncSince, cfg.Replicas[1].DivergedSince = t0, t0
	return cfg
}

// A replica a promotion gave up is never joined (md could re-add it by
// bitmap and keep the given-up writes on that leg) nor connected again,
// whatever its link; it is replaced after maxReplicaDownTime.
func TestDecideNeverJoinsADivergedReplica(t *testing.T) {
	c := testConfig()
	for _, link := range []string{"live", "gone", "connecting"} {
		t.Run(link, func(t *testing.T) {
			obs := func() Observation {
				return obsOf(observeVol(divergedCfg(), true, map[string]rs{"r2": {link, "-"}}))
			}
			acts, evs, mem := Decide(obs(), c, Memory{}, t0)
			if got := kinds(repairs(acts)); len(got) != 0 {
				t.Fatalf("actions on a diverged replica: %v", got)
			}
			if n := count(evs, "VolumeDegraded"); n != 1 {
				t.Errorf("%d VolumeDegraded events, want 1: the volume runs without a replica", n)
			}
			acts, _, mem = Decide(obs(), c, mem, t0.Add(59*time.Minute))
			if got := kinds(repairs(acts)); len(got) != 0 {
				t.Fatalf("actions before maxReplicaDownTime: %v", got)
			}
			acts, _, _ = Decide(obs(), c, mem, t0.Add(time.Hour))
			if got := kinds(repairs(acts)); !slices.Equal(got, []string{"replace:r2"}) {
				t.Fatalf("actions after maxReplicaDownTime: %v, want the diverged replica replaced", got)
			}
		})
	}
	// The same volume without the mark: a live replica is joined at once.
	acts, _, _ := Decide(obsOf(observeVol(volCfg("vol-1", "60", "r1", "r2", "r3"), true, map[string]rs{"r2": {"live", "-"}})), c, Memory{}, t0)
	if got := kinds(repairs(acts)); !slices.Equal(got, []string{"join:r2"}) {
		t.Fatalf("control: actions %v, want join:r2", got)
	}
}
