package healer

import (
	"slices"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// A live move (or a higher replica count) gives the volume one replica
// more than md has slots: the join grows the array to the configuration's
// count, so the new member fills a slot instead of idling as a spare; when
// the old replica leaves, its retire shrinks the array back.
func TestDecideMoveGrowsThenShrinksTheArray(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "60", "r1", "r2", "r3") // r3 moves r1 here
	cfg.Replicas[2].Move = true
	obs := observeVol(cfg, true, map[string]rs{"r3": {"gone", "-"}})
	obs.Array.RaidDisks, obs.Array.Degraded = 2, 0 // md knows r1 and r2 only
	acts, evs, mem := Decide(obsOf(obs), c, Memory{}, t0)
	if got := kinds(repairs(acts)); !slices.Equal(got, []string{"join:r3+connect"}) || repairs(acts)[0].Slots != 3 {
		t.Fatalf("actions %v (%+v): want the new replica connected and joined into 3 slots", got, repairs(acts))
	}
	if n := count(evs, events.VolumeDegraded); n != 0 {
		t.Errorf("%d VolumeDegraded events: a move's new replica is extra until it serves, nothing is missing", n)
	}
	// Once the move is done the replica is an ordinary one: its loss degrades.
	ordinary := volCfg("vol-1", "60", "r2", "r3")
	if _, evs, _ := Decide(obsOf(observeVol(ordinary, true, map[string]rs{"r3": {"gone", "F"}})), c, Memory{}, t0); count(evs, events.VolumeDegraded) != 1 {
		t.Errorf("loss of a moved-in replica after the move: events %v, want VolumeDegraded", types(evs))
	}

	// Added as a spare but the array could not grow then: the spare gets
	// its slot.
	spare := observeVol(cfg, true, map[string]rs{"r3": {"live", "S"}})
	spare.Array.RaidDisks, spare.Array.SyncAction = 2, "idle"
	acts, _, _ = Decide(obsOf(spare), c, mem, t0.Add(c.RetryBase))
	if got := kinds(repairs(acts)); !slices.Equal(got, []string{"set-slots:"}) || repairs(acts)[0].Slots != 3 {
		t.Fatalf("spare waiting for a slot: actions %v", got)
	}

	// Filled; the provisioner removed r1 (the move is complete).
	done := setState(volCfg("vol-1", "60", "r1", "r2", "r3"), "r1", volume.ReplicaRemoved)
	obs = observeVol(done, true, nil)
	acts, _, _ = Decide(obsOf(obs), c, mem, t0.Add(c.RetryBase))
	if got := kinds(repairs(acts)); !slices.Equal(got, []string{"retire:r1"}) || repairs(acts)[0].Slots != 2 || repairs(acts)[0].Member != "nvme1n1" {
		t.Fatalf("actions %v (%+v): want r1 taken out and md back to 2 slots", got, repairs(acts))
	}
}
