package healer

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
)

// Reference mistake 3: Host Disconnected once, not at every poll, and Host
// Reconnected when the connection is back.
func TestDecideHostEventsOncePerTransition(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "0", "r1", "r2")
	mem := Memory{}
	var all []events.Event
	now := t0
	step := func(states map[string]rs) {
		var evs []events.Event
		_, evs, mem = Decide(obsOf(observeVol(cfg, true, states)), c, mem, now)
		all = append(all, evs...)
		now = now.Add(c.Interval)
	}
	step(nil)
	for range 20 {
		step(map[string]rs{"r2": {"connecting", "U"}})
	}
	for range 5 {
		step(nil)
	}
	if count(all, events.HostDisconnected) != 1 || count(all, events.HostReconnected) != 1 {
		t.Fatalf("events %v", types(all))
	}
	if count(all, events.VolumeDegraded) != 1 || count(all, events.VolumeHealed) != 1 {
		t.Fatalf("events %v", types(all))
	}
	for _, e := range all {
		if (e.Type == events.HostDisconnected || e.Type == events.HostReconnected) && (e.StorageNode != "sn-2" || !slices.Equal(e.Replicas, []string{"r2"})) {
			t.Fatalf("host event %+v", e)
		}
	}
}

func sessionsOnly(evs []events.Event) []string {
	var out []string
	for _, e := range evs {
		switch e.Type {
		case events.SessionEstablished:
			out = append(out, "established:"+e.Replica)
		case events.SessionClosed:
			out = append(out, "closed:"+e.Replica)
		}
	}
	return out
}

// Session events (audit) are edges per replica controller: one Established
// per new live controller, one Closed when it stops being live, nothing while
// nothing changes, nothing repeated after a restart.
func TestDecideSessions(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "60", "r1", "r2", "r3")
	steps := []struct {
		name    string
		r2      rs
		cycles  int
		restart bool // round-trip the memory through its file form first
		want    []string
	}{
		{name: "stage, r2 not connected yet", r2: rs{"gone", "-"}, cycles: 1, want: []string{"established:r1", "established:r3"}},
		{name: "r2 connects", r2: rs{"live", "S"}, cycles: 1, want: []string{"established:r2"}},
		{name: "20 cycles live", r2: rs{"live", "U"}, cycles: 20},
		{name: "cut", r2: rs{"connecting", "U"}, cycles: 1, want: []string{"closed:r2"}},
		{name: "still reconnecting", r2: rs{"connecting", "U"}, cycles: 5},
		{name: "back", r2: rs{"live", "U"}, cycles: 1, want: []string{"established:r2"}},
		{name: "live", r2: rs{"live", "U"}, cycles: 3},
		{name: "plugin restart with memory", r2: rs{"live", "U"}, cycles: 1, restart: true},
		{name: "gone after ctrl_loss_tmo, then reconnected", r2: rs{"gone", "U"}, cycles: 1, want: []string{"closed:r2"}},
		{name: "reconnected", r2: rs{"live", "U"}, cycles: 1, want: []string{"established:r2"}},
	}
	mem := Memory{}
	now := t0
	for _, st := range steps {
		if st.restart {
			b, err := json.Marshal(mem)
			if err != nil {
				t.Fatal(err)
			}
			mem = Memory{}
			if err := json.Unmarshal(b, &mem); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		var evs []events.Event
		for range st.cycles {
			now = now.Add(time.Second)
			var all []events.Event
			_, all, mem = Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": st.r2})), c, mem, now)
			got = append(got, sessionsOnly(all)...)
			evs = append(evs, all...)
		}
		if !slices.Equal(got, st.want) {
			t.Fatalf("%s: session events %v, want %v", st.name, got, st.want)
		}
		for _, e := range evs {
			if e.Type != events.SessionEstablished && e.Type != events.SessionClosed {
				continue
			}
			if e.Type.Level() != events.Info || e.Volume != "vol-1" || e.Node != "node-a" || e.StorageNode != "sn-"+strings.TrimPrefix(e.Replica, "r") ||
				!slices.Equal(e.Replicas, []string{e.Replica}) || !e.Time.Equal(now) {
				t.Fatalf("%s: event %+v", st.name, e)
			}
			n := strings.TrimPrefix(e.Replica, "r")
			if !strings.Contains(e.Message, "10.0.0."+n+":4420") || !strings.Contains(e.Message, "replica "+e.Replica) {
				t.Fatalf("%s: message %q", st.name, e.Message)
			}
		}
	}
	// The cut's Closed event names the controller's state and the
	// session's length.
	_, evs, _ := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"connecting", "U"}})), c, mem, now.Add(90*time.Second))
	if !slices.Equal(types(evs), []events.Type{events.SessionClosed, events.HostDisconnected, events.VolumeDegraded}) ||
		!strings.Contains(evs[0].Message, "after 1m30s; controller connecting") || !strings.Contains(evs[0].Message, "controller nvme1") {
		t.Fatalf("cut: %v %q", types(evs), evs[0].Message)
	}
	// NodeUnstage: the volume is no longer observed, its sessions closed.
	_, evs, next := Decide(Observation{}, c, mem, now.Add(time.Minute))
	if got := sessionsOnly(evs); !slices.Equal(got, []string{"closed:r1", "closed:r2", "closed:r3"}) || len(evs) != 3 {
		t.Fatalf("unstage: %v", types(evs))
	}
	if _, ok := next.Volumes["vol-1"]; ok {
		t.Fatal("unstaged volume kept in memory")
	}
}

// A memory written before sessions were tracked: the sessions alive at the
// upgrade are recorded without events; later edges are reported.
func TestDecideSessionsAfterUpgrade(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "60", "r1", "r2")
	_, _, mem := Decide(obsOf(observeVol(cfg, true, nil)), c, Memory{}, t0)
	vm := mem.Volumes["vol-1"]
	vm.SessionsTracked = false
	for id, rm := range vm.Replicas {
		rm.Sessions = nil
		vm.Replicas[id] = rm
	}
	mem.Volumes["vol-1"] = vm
	_, evs, mem := Decide(obsOf(observeVol(cfg, true, nil)), c, mem, t0.Add(time.Second))
	if len(evs) != 0 {
		t.Fatalf("upgrade: %v", types(evs))
	}
	if !mem.Volumes["vol-1"].SessionsTracked || len(mem.Volumes["vol-1"].Replicas["r1"].Sessions) != 1 {
		t.Fatalf("memory %+v", mem.Volumes["vol-1"])
	}
	_, evs, _ = Decide(obsOf(observeVol(cfg, true, map[string]rs{"r1": {"connecting", "U"}})), c, mem, t0.Add(2*time.Second))
	if got := sessionsOnly(evs); !slices.Equal(got, []string{"closed:r1"}) {
		t.Fatalf("after upgrade: %v", got)
	}
}

// A replica reached through two controllers (two paths) has two sessions:
// both reported, with distinct IDs; Decide does not write into its input.
func TestDecideSessionsTwoControllers(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "60", "r1", "r2")
	obs := observeVol(cfg, true, nil)
	nqn := cfg.Replicas[0].NQN
	obs.Controllers[nqn] = append(obs.Controllers[nqn], ControllerObservation{Name: "nvme7", State: host.StateLive, TrAddr: "10.1.0.1", TrSvcID: "4420"})
	_, evs, mem := Decide(obsOf(obs), c, Memory{}, t0)
	if got := sessionsOnly(evs); !slices.Equal(got, []string{"established:r1", "established:r1", "established:r2"}) {
		t.Fatalf("sessions %v", got)
	}
	if EventID(evs[0]) == EventID(evs[1]) {
		t.Fatal("two sessions of one replica share an event ID")
	}
	before, _ := json.Marshal(mem)
	obs.Controllers[nqn][1].State = host.StateResetting
	_, evs, _ = Decide(obsOf(obs), c, mem, t0.Add(time.Second))
	if got := sessionsOnly(evs); !slices.Equal(got, []string{"closed:r1"}) || !strings.Contains(evs[0].Message, "nvme7") {
		t.Fatalf("one path lost: %v", types(evs))
	}
	if after, _ := json.Marshal(mem); string(before) != string(after) {
		t.Fatal("Decide modified its input memory")
	}
}
