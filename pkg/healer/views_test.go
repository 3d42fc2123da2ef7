package healer

import (
	"testing"
	"time"
)

// Members whose device vanished are still attributed to their replica.
func TestDecideMemberMapping(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "60", "r1", "r2", "r3")
	// First look: the member of r2 is known by identity, remembered by name.
	_, _, mem := Decide(obsOf(observeVol(cfg, true, nil)), c, Memory{}, t0)
	if mem.Volumes["vol-1"].Replicas["r2"].Member != "nvme2n1" {
		t.Fatalf("memory %+v", mem.Volumes["vol-1"].Replicas["r2"])
	}
	for _, m := range []Memory{mem, {}} { // by remembered name, then by elimination
		acts, _, _ := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "X"}})), c, m, t0.Add(time.Second))
		if len(repairs(acts)) == 0 || repairs(acts)[0].Kind != ActFail || repairs(acts)[0].Member != "nvme2n1" {
			t.Fatalf("actions %+v", acts)
		}
	}
}
