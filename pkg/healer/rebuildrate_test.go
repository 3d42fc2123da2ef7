package healer

import (
	"context"
	"slices"
	"strconv"
	"testing"
)

// rateVol is a staged 2-replica volume whose array copies (or not) under
// limit have (KiB/s; 0: the system's).
func rateVol(id string, limitMiB int, copying bool, have uint64) VolumeObservation {
	v := volCfg(id, "60", "r1", "r2")
	v.Policy.RebuildBandwidthMiBps = limitMiB
	o := observeVol(v, true, nil)
	o.Array.SyncSpeedMaxKiB, o.Array.SyncSpeedMaxSystem = have, have == 0
	if have == 0 {
		o.Array.SyncSpeedMaxKiB = 200000
	}
	if copying {
		o.Array.SyncAction = "recover"
	}
	return o
}

func rates(acts []Action) []string {
	var out []string
	for _, a := range acts {
		if a.Kind == ActSetRebuildRate {
			limit := "system"
			if a.RebuildKiBps > 0 {
				limit = strconv.FormatUint(a.RebuildKiBps, 10)
			}
			out = append(out, a.VolumeID+"="+limit)
		}
	}
	return out
}

func TestDecideRebuildRates(t *testing.T) {
	for _, tc := range []struct {
		name    string
		nodeCap int
		vols    []VolumeObservation
		want    []string
	}{
		{"no limits anywhere: nothing to set", 0, []VolumeObservation{rateVol("a", 0, true, 0)}, nil},
		{"the volume's limit is set before any rebuild", 0, []VolumeObservation{rateVol("a", 4, false, 0)}, []string{"a=4096"}},
		{"already right", 0, []VolumeObservation{rateVol("a", 4, true, 4096)}, nil},
		{"a lifted limit goes back to the system's", 0, []VolumeObservation{rateVol("a", 0, true, 4096)}, []string{"a=system"}},
		{"the node's cap is shared by the arrays copying", 100, []VolumeObservation{
			rateVol("a", 0, true, 0), rateVol("b", 30, true, 0), rateVol("c", 0, false, 0), rateVol("d", 10, false, 0)},
			// a and b copy: 50 MiB/s each, b under its own 30; c idle keeps
			// the system's; d idle gets its own limit.
			[]string{"a=51200", "b=30720", "d=10240"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig()
			c.MaxRebuildBandwidthMiBps = tc.nodeCap
			acts, _, _ := Decide(obsOf(tc.vols...), c, Memory{}, t0)
			if got := rates(acts); !slices.Equal(got, tc.want) {
				t.Errorf("rates %v, want %v", got, tc.want)
			}
		})
	}
}

func TestActSetRebuildRate(t *testing.T) {
	raid, _, _, a, _ := actFixture()
	out := a.Do(context.Background(), Action{Kind: ActSetRebuildRate, VolumeID: "vol-1", MDDevice: "/dev/md127", MDUUID: actUUID, RebuildKiBps: 2048})
	if out.Err != nil || !slices.Equal(raid.calls, []string{"sync-speed-max md127 2048"}) {
		t.Fatalf("outcome %v, calls %v", out.Err, raid.calls)
	}
	raid.calls = nil
	out = a.Do(context.Background(), Action{Kind: ActSetRebuildRate, VolumeID: "vol-1", MDDevice: "/dev/md127", MDUUID: "00000000:00000000:00000000:00000001"})
	if out.Err == nil || len(raid.calls) != 0 {
		t.Fatalf("another array's limit changed: %v %v", out.Err, raid.calls)
	}
}
