package healer

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const testMDUUID = "8b298196:48aa4550:d7d4d20e:9af2a785"

func testConfig() Config {
	c := DefaultConfig()
	c.NodeID = "node-a"
	return c
}

func nsUUID(id string) string { return nvmeof.NamespaceUUID(id) }
func nqnOf(id string) string  { return "nqn.2026-01.io.nvmirror:" + id }

// volCfg is the provisioner's record of a volume with active replicas on
// storage nodes sn-<n> for replica r<n>.
func volCfg(id string, maxDown string, replicas ...string) *volume.Volume {
	v := &volume.Volume{ID: id, MDUUID: testMDUUID, Parameters: map[string]string{}, Policy: storageclass.DefaultPolicy()}
	if maxDown != "" {
		n, err := strconv.Atoi(maxDown)
		if err != nil {
			panic(err)
		}
		v.Policy.MaxReplicaDownTimeMinutes = n
	}
	for _, r := range replicas {
		v.Replicas = append(v.Replicas, volume.Replica{ID: r, StorageNode: "sn-" + strings.TrimPrefix(r, "r"),
			NQN: nqnOf(id + "-" + r), NamespaceUUID: nsUUID(id + "-" + r), State: volume.ReplicaActive,
			Endpoints: []volume.Endpoint{{Address: "10.0.0." + strings.TrimPrefix(r, "r"), Port: "4420"}}})
	}
	return v
}

func setState(v *volume.Volume, id string, state volume.ReplicaState) *volume.Volume {
	for i := range v.Replicas {
		if v.Replicas[i].ID == id {
			v.Replicas[i].State = state
		}
	}
	return v
}

// rs is one replica's observed state. link: live, connecting, gone. md: U
// (in sync), F (faulty), S (syncing spare), X (in sync but its device is
// gone, so no identity), - (not a member).
type rs struct{ link, md string }

// observeVol builds a volume observation from the replicas' states; replica
// rN's md member device is nvme<N>n1 unless dev overrides it.
func observeVol(cfg *volume.Volume, fresh bool, states map[string]rs) VolumeObservation {
	v := VolumeObservation{VolumeID: cfg.ID, Staged: true, MDUUID: testMDUUID, Record: cfg, RecordFresh: fresh,
		Controllers: map[string][]ControllerObservation{}}
	a := &ArrayObservation{Name: "md127", Device: "/dev/md127", UUID: testMDUUID, State: "clean", RaidDisks: len(cfg.Replicas), SyncAction: "idle"}
	for i, r := range cfg.Replicas {
		v.StagedReplicas = append(v.StagedReplicas, stagestate.Replica{ID: r.ID, NQN: r.NQN, NamespaceUUID: r.NamespaceUUID})
		st, ok := states[r.ID]
		if !ok {
			st = rs{"live", "U"}
		}
		var addr, port string
		if len(r.Endpoints) > 0 {
			addr, port = r.Endpoints[0].Address, r.Endpoints[0].Port
		}
		switch st.link {
		case "live":
			v.Controllers[r.NQN] = []ControllerObservation{{Name: fmt.Sprintf("nvme%d", i), State: host.StateLive, TrAddr: addr, TrSvcID: port}}
		case "connecting":
			v.Controllers[r.NQN] = []ControllerObservation{{Name: fmt.Sprintf("nvme%d", i), State: host.StateConnecting, TrAddr: addr, TrSvcID: port}}
		}
		m := MemberObservation{Device: fmt.Sprintf("nvme%dn1", i+1), Identities: []string{r.NamespaceUUID}, Slot: i}
		switch st.md {
		case "U":
			m.InSync = true
		case "X":
			m.InSync, m.Identities = true, nil
		case "F":
			m.Faulty, m.Slot = true, -1
		case "S":
			m.Spare = true
			a.SyncAction = "recover"
		case "-":
			continue
		}
		if st.md != "U" {
			a.Degraded++
		}
		a.Members = append(a.Members, m)
	}
	v.Array = a
	return v
}

func obsOf(vs ...VolumeObservation) Observation { return Observation{Volumes: vs} }

func types(evs []events.Event) []events.Type {
	var out []events.Type
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

// repairs leaves out the sync records, for tests of the repair rules (the
// records have tests of their own, TestDecideRecordsSync).
func repairs(acts []Action) []Action {
	var out []Action
	for _, a := range acts {
		if a.Kind != ActRecordSync {
			out = append(out, a)
		}
	}
	return out
}

func kinds(acts []Action) []string {
	var out []string
	for _, a := range acts {
		s := string(a.Kind) + ":" + a.Replica.ID
		if a.Connect {
			s += "+connect"
		}
		if a.Mark {
			s += "+mark"
		}
		out = append(out, s)
	}
	return out
}

// noSessions drops the Session events (audit), for tests about the others;
// TestDecideSessions and TestDecideHealthyIsQuiet assert full lists.
func noSessions(evs []events.Event) []events.Event {
	var out []events.Event
	for _, e := range evs {
		if e.Type != events.SessionEstablished && e.Type != events.SessionClosed {
			out = append(out, e)
		}
	}
	return out
}

func count(evs []events.Event, t events.Type) int {
	n := 0
	for _, e := range evs {
		if e.Type == t {
			n++
		}
	}
	return n
}

func TestDecideHealthyIsQuiet(t *testing.T) {
	cfg := volCfg("vol-1", "60", "r1", "r2", "r3")
	acts, evs, mem := Decide(obsOf(observeVol(cfg, true, nil)), testConfig(), Memory{}, t0)
	// The first sighting of the volume reports its sessions (the connects
	// of NodeStage), and nothing else.
	want := []events.Type{events.SessionEstablished, events.SessionEstablished, events.SessionEstablished}
	if len(acts) != 0 || !slices.Equal(types(evs), want) {
		t.Fatalf("healthy volume: actions %v events %v", kinds(acts), types(evs))
	}
	if !mem.Volumes["vol-1"].DegradedSince.IsZero() || len(mem.Hosts) != 3 {
		t.Fatalf("memory %+v", mem)
	}
	// And again: still nothing.
	acts, evs, _ = Decide(obsOf(observeVol(cfg, true, nil)), testConfig(), mem, t0.Add(time.Minute))
	if len(acts) != 0 || len(evs) != 0 {
		t.Fatalf("second cycle: %v %v", kinds(acts), types(evs))
	}
}

// An idle md keeps a lost leg in sync: the controller state alone makes the
// replica down and the volume degraded, at the first sighting.
func TestDecideIdleArrayLostLegIsDown(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "60", "r1", "r2", "r3")
	_, _, mem := Decide(obsOf(observeVol(cfg, true, nil)), c, Memory{}, t0)
	acts, evs, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"connecting", "U"}})), c, mem, t0.Add(time.Second))
	if !slices.Equal(types(evs), []events.Type{events.SessionClosed, events.HostDisconnected, events.VolumeDegraded}) {
		t.Fatalf("events %v", types(evs))
	}
	evs = noSessions(evs)
	if len(repairs(acts)) != 0 {
		t.Fatalf("a reconnecting controller is left to the kernel, got %v", kinds(repairs(acts)))
	}
	deg := evs[1]
	if deg.Volume != "vol-1" || deg.Replica != "r2" || deg.StorageNode != "sn-2" || deg.Node != "node-a" || !deg.Time.Equal(t0.Add(time.Second)) {
		t.Fatalf("degraded event %+v", deg)
	}
	if got := mem.Volumes["vol-1"].Replicas["r2"].DownSince; !got.Equal(t0.Add(time.Second)) {
		t.Fatalf("down since %v", got)
	}
	// ctrl_loss_tmo expires: the controller is deleted, md still says in
	// sync. Fail it in md, and try to connect again.
	acts, evs, _ = Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "U"}})), c, mem, t0.Add(20*time.Second))
	if len(evs) != 0 {
		t.Fatalf("no new transition, got %v", types(evs))
	}
	if want := []string{"fail:r2", "join:r2+connect"}; !slices.Equal(kinds(repairs(acts)), want) {
		t.Fatalf("actions %v, want %v", kinds(repairs(acts)), want)
	}
	if repairs(acts)[0].Member != "nvme2n1" || repairs(acts)[0].MDDevice != "/dev/md127" || repairs(acts)[0].MDUUID != testMDUUID {
		t.Fatalf("fail action %+v", repairs(acts)[0])
	}
	c.FailGoneMembers = false
	acts, _, _ = Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "U"}})), c, mem, t0.Add(20*time.Second))
	if slices.Contains(kinds(repairs(acts)), "fail:r2") {
		t.Fatal("failed a member with FailGoneMembers off")
	}
}

// Reference mistake 2: the Degraded event names every missing replica.
func TestDecideDegradedNamesEveryMissingReplica(t *testing.T) {
	cfg := volCfg("vol-1", "60", "r1", "r2", "r3")
	_, evs, _ := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"connecting", "U"}, "r3": {"gone", "F"}})), testConfig(), Memory{}, t0)
	if count(evs, events.VolumeDegraded) != 1 || count(evs, events.HostDisconnected) != 2 {
		t.Fatalf("events %v", types(evs))
	}
	for _, e := range evs {
		if e.Type == events.VolumeDegraded {
			if !slices.Equal(e.Replicas, []string{"r2", "r3"}) || e.StorageNode != "sn-2,sn-3" || e.Replica != "" {
				t.Fatalf("degraded event %+v", e)
			}
			if !slices.Equal(StorageNodes(e), []string{"sn-2", "sn-3"}) {
				t.Fatalf("storage nodes %v", StorageNodes(e))
			}
			if !strings.Contains(e.Message, "r2 (sn-2, reconnecting)") || !strings.Contains(e.Message, "r3 (sn-3, gone)") {
				t.Fatalf("message %q", e.Message)
			}
		}
	}
}

// A second replica lost while degraded is a new transition: one more
// Degraded event, naming both.
func TestDecideDegradedFurther(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "60", "r1", "r2", "r3")
	_, _, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"connecting", "U"}})), c, Memory{}, t0)
	_, evs, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"connecting", "U"}, "r3": {"connecting", "U"}})), c, mem, t0.Add(time.Second))
	if count(evs, events.VolumeDegraded) != 1 {
		t.Fatalf("events %v", types(evs))
	}
	for _, e := range evs {
		if e.Type == events.VolumeDegraded && !slices.Equal(e.Replicas, []string{"r2", "r3"}) {
			t.Fatalf("degraded further names %v", e.Replicas)
		}
	}
	if !mem.Volumes["vol-1"].DegradedSince.Equal(t0) {
		t.Fatal("degraded since moved")
	}
	_, evs, _ = Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"connecting", "U"}, "r3": {"connecting", "U"}})), c, mem, t0.Add(2*time.Second))
	if len(evs) != 0 {
		t.Fatalf("repeated %v", types(evs))
	}
}

// A target flapping several times within a minute: one Disconnected /
// Reconnected pair per flap, one Degraded / Healed pair per flap, no
// replacement even with maxReplicaDownTime of one minute, no repeats.
func TestDecideFlap(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "1", "r1", "r2", "r3")
	mem := Memory{}
	var all []events.Event
	var acts []Action
	now := t0
	for flap := range 6 {
		for range 5 { // down for 5 one-second polls
			a, evs, m := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"connecting", "U"}})), c, mem, now)
			acts, all, mem = append(acts, a...), append(all, evs...), m
			now = now.Add(time.Second)
		}
		for range 5 {
			a, evs, m := Decide(obsOf(observeVol(cfg, true, nil)), c, mem, now)
			acts, all, mem = append(acts, a...), append(all, evs...), m
			now = now.Add(time.Second)
		}
		_ = flap
	}
	for _, typ := range []events.Type{events.HostDisconnected, events.HostReconnected, events.VolumeDegraded, events.VolumeHealed} {
		if n := count(all, typ); n != 6 {
			t.Errorf("%s sent %d times for 6 flaps", typ, n)
		}
	}
	if len(acts) != 0 {
		t.Fatalf("flap caused actions %v", kinds(acts))
	}
	ids := map[string]bool{}
	for _, e := range all {
		id := EventID(e)
		if ids[id] {
			t.Fatalf("two events share ID %s: %+v", id, e)
		}
		ids[id] = true
	}
}

// A replica back from an outage: re-add (join), then Synch Started, Synch
// Ended, Healed, in that order.
func TestDecideReplicaBackIsReAdded(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "60", "r1", "r2", "r3")
	_, _, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"connecting", "F"}})), c, Memory{}, t0)
	acts, evs, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"live", "F"}})), c, mem, t0.Add(10*time.Second))
	if want := []string{"join:r2"}; !slices.Equal(kinds(repairs(acts)), want) {
		t.Fatalf("actions %v", kinds(repairs(acts)))
	}
	if repairs(acts)[0].Member != "nvme2n1" || repairs(acts)[0].Replica.NQN != nqnOf("vol-1-r2") || repairs(acts)[0].Replica.NamespaceUUID != nsUUID("vol-1-r2") {
		t.Fatalf("join action %+v", repairs(acts)[0])
	}
	if !slices.Equal(types(evs), []events.Type{events.HostReconnected, events.SessionEstablished}) {
		t.Fatalf("events %v", types(evs))
	}
	mem = RecordOutcomes(mem, []Outcome{{Action: repairs(acts)[0], Joined: true, ReAdded: true}}, c, t0.Add(11*time.Second))
	acts, evs, mem = Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"live", "S"}})), c, mem, t0.Add(12*time.Second))
	if len(repairs(acts)) != 0 || !slices.Equal(types(evs), []events.Type{events.SynchStarted}) {
		t.Fatalf("syncing: %v %v", kinds(repairs(acts)), types(evs))
	}
	if !evs[0].Time.Equal(t0.Add(11*time.Second)) || evs[0].Replica != "r2" {
		t.Fatalf("synch started %+v", evs[0])
	}
	_, evs, mem = Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"live", "S"}})), c, mem, t0.Add(13*time.Second))
	if len(evs) != 0 {
		t.Fatalf("repeated %v", types(evs))
	}
	_, evs, mem = Decide(obsOf(observeVol(cfg, true, nil)), c, mem, t0.Add(40*time.Second))
	if !slices.Equal(types(evs), []events.Type{events.SynchEnded, events.VolumeHealed}) {
		t.Fatalf("events %v", types(evs))
	}
	if evs[1].Replica != "r2" || !mem.Volumes["vol-1"].DegradedSince.IsZero() || !mem.Volumes["vol-1"].Replicas["r2"].JoinedAt.IsZero() {
		t.Fatalf("healed %+v, memory %+v", evs[1], mem.Volumes["vol-1"])
	}
}

// A bitmap re-add of an idle array completes before the next look: the
// Started/Ended pair is still reported, before Healed.
func TestDecideInstantBitmapReAdd(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "60", "r1", "r2")
	_, _, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"live", "F"}})), c, Memory{}, t0)
	mem = RecordOutcomes(mem, []Outcome{{Action: Action{Kind: ActJoin, VolumeID: "vol-1", Replica: volume.Replica{ID: "r2"}}, Joined: true, ReAdded: true}}, c, t0)
	_, evs, _ := Decide(obsOf(observeVol(cfg, true, nil)), c, mem, t0.Add(time.Second))
	if !slices.Equal(types(evs), []events.Type{events.SynchStarted, events.SynchEnded, events.VolumeHealed}) {
		t.Fatalf("events %v", types(evs))
	}
}

// Replicas the provisioner took out of the configuration never rejoin.
func TestDecideNeverRejoinsReplicasOutOfConfiguration(t *testing.T) {
	for _, state := range []volume.ReplicaState{volume.ReplicaRemoved, volume.ReplicaDeleted, volume.ReplicaDeleting} {
		t.Run(string(state), func(t *testing.T) {
			cfg := setState(volCfg("vol-1", "60", "r1", "r2", "r3"), "r2", state)
			acts, _, _ := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"live", "-"}})), testConfig(), Memory{}, t0)
			for _, a := range acts {
				if a.Kind == ActJoin || a.Kind == ActReplace {
					t.Fatalf("actions %v", kinds(acts))
				}
			}
		})
	}
}

// Completing a deletion: deleted but still in md → retire with mark; once
// marked, never again; the last serving copy is never taken out.
func TestDecideCompletesDeletion(t *testing.T) {
	c := testConfig()
	cfg := setState(volCfg("vol-1", "60", "r1", "r2", "r3"), "r3", volume.ReplicaDeleted)
	acts, _, mem := Decide(obsOf(observeVol(cfg, true, nil)), c, Memory{}, t0)
	if want := []string{"retire:r3+mark"}; !slices.Equal(kinds(repairs(acts)), want) {
		t.Fatalf("actions %v", kinds(repairs(acts)))
	}
	// Two replicas stay: md's third slot goes with the deleted one.
	if repairs(acts)[0].Member != "nvme3n1" || repairs(acts)[0].Slots != 2 {
		t.Fatalf("retire %+v", repairs(acts)[0])
	}
	// Outage of the provisioner: no deletion is completed on a cached copy.
	if acts, _, _ := Decide(obsOf(observeVol(cfg, false, nil)), c, Memory{}, t0); len(repairs(acts)) != 0 {
		t.Fatalf("acted on a stale configuration: %v", kinds(repairs(acts)))
	}
	// A failed attempt backs off.
	failed := RecordOutcomes(mem, []Outcome{{Action: repairs(acts)[0], Err: fmt.Errorf("boom")}}, c, t0)
	if acts, _, _ := Decide(obsOf(observeVol(cfg, true, nil)), c, failed, t0.Add(time.Second)); len(repairs(acts)) != 0 {
		t.Fatalf("retried at once: %v", kinds(repairs(acts)))
	}
	if acts, _, _ := Decide(obsOf(observeVol(cfg, true, nil)), c, failed, t0.Add(c.RetryBase)); len(repairs(acts)) != 1 {
		t.Fatalf("not retried after backoff: %v", kinds(repairs(acts)))
	}
	mem = RecordOutcomes(mem, []Outcome{{Action: repairs(acts)[0]}}, c, t0)
	done := observeVol(cfg, true, map[string]rs{"r3": {"gone", "-"}})
	done.Array.RaidDisks = 2 // the retire dropped the slot
	if acts, _, _ := Decide(obsOf(done), c, mem, t0.Add(time.Second)); len(repairs(acts)) != 0 {
		t.Fatalf("after completion: %v", kinds(repairs(acts)))
	}
	// A slot left over (the retire found the member out already, or the
	// replica left while the array ran elsewhere): dropped on its own.
	done.Array.RaidDisks = 3
	if acts, _, _ := Decide(obsOf(done), c, mem, t0.Add(time.Second)); !slices.Equal(kinds(repairs(acts)), []string{"set-slots:"}) || repairs(acts)[0].Slots != 2 {
		t.Fatalf("leftover slot: %v", kinds(repairs(acts)))
	}
	// Deleted while not even connected: only the mark.
	acts, _, _ = Decide(obsOf(observeVol(cfg, true, map[string]rs{"r3": {"gone", "-"}})), c, Memory{}, t0)
	if want := []string{"retire:r3+mark"}; !slices.Equal(kinds(repairs(acts)), want) || repairs(acts)[0].Member != "" {
		t.Fatalf("actions %v", kinds(repairs(acts)))
	}
	// The deleted replica is the only serving copy: it stays.
	cfg2 := setState(volCfg("vol-1", "60", "r1", "r2"), "r2", volume.ReplicaDeleted)
	acts, _, _ = Decide(obsOf(observeVol(cfg2, true, map[string]rs{"r1": {"live", "S"}})), c, Memory{}, t0)
	if len(repairs(acts)) != 0 {
		t.Fatalf("took out the last good copy: %v", kinds(repairs(acts)))
	}
}

// downFor runs a volume whose replica r2 is gone from t0 to t0+d and
// returns the actions of the last cycle.
func replaceDue(t *testing.T, c Config, cfg *volume.Volume, d time.Duration) []Action {
	t.Helper()
	_, _, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "F"}})), c, Memory{}, t0)
	// JSON round trip: the clock must survive a restart of the plugin.
	b, err := json.Marshal(mem)
	if err != nil {
		t.Fatal(err)
	}
	var back Memory
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	acts, _, _ := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "F"}})), c, back, t0.Add(d))
	var out []Action
	for _, a := range acts {
		if a.Kind == ActReplace {
			out = append(out, a)
		}
	}
	return out
}

// Reference mistake 1: maxReplicaDownTime of an hour or more fires; any
// value from a minute to more than a week, on absolute clocks.
func TestDecideReplaceAfterMaxReplicaDownTime(t *testing.T) {
	for _, tc := range []struct {
		param string
		after time.Duration
	}{
		{"1", time.Minute},
		{"59", 59 * time.Minute},
		{"60", time.Hour},
		{"61", 61 * time.Minute},
		{"120", 2 * time.Hour},
		{"4320", 3 * 24 * time.Hour},
		{"10080", 7 * 24 * time.Hour},
		{"20160", 14 * 24 * time.Hour},
	} {
		t.Run(tc.param, func(t *testing.T) {
			c := testConfig()
			cfg := volCfg("vol-1", tc.param, "r1", "r2", "r3")
			if got := replaceDue(t, c, cfg, tc.after-time.Second); len(got) != 0 {
				t.Fatalf("replaced %s early", time.Second)
			}
			got := replaceDue(t, c, cfg, tc.after)
			if len(got) != 1 || got[0].Replica.ID != "r2" || got[0].Member != "nvme2n1" {
				t.Fatalf("replace actions %v", kinds(got))
			}
			if got := replaceDue(t, c, cfg, tc.after+10*24*time.Hour); len(got) != 1 {
				t.Fatal("not replaced long after")
			}
		})
	}
}

func TestDecideReplaceRules(t *testing.T) {
	c := testConfig()
	t.Run("zero disables", func(t *testing.T) {
		if got := replaceDue(t, c, volCfg("vol-1", "0", "r1", "r2", "r3"), 30*24*time.Hour); len(got) != 0 {
			t.Fatal("replaced with maxReplicaDownTime 0")
		}
	})
	t.Run("default when parameter absent", func(t *testing.T) {
		if got := replaceDue(t, c, volCfg("vol-1", "", "r1", "r2", "r3"), 59*time.Minute); len(got) != 0 {
			t.Fatal("early")
		}
		if got := replaceDue(t, c, volCfg("vol-1", "", "r1", "r2", "r3"), 60*time.Minute); len(got) != 1 {
			t.Fatal("default 60 not applied")
		}
	})
	t.Run("four replicas in configuration", func(t *testing.T) {
		if got := replaceDue(t, c, volCfg("vol-1", "1", "r1", "r2", "r3", "r4"), time.Hour); len(got) != 0 {
			t.Fatal("replaced in a volume of four")
		}
	})
	t.Run("removed replica counts towards the four only while in configuration", func(t *testing.T) {
		cfg := setState(volCfg("vol-1", "1", "r1", "r2", "r3", "r4"), "r4", volume.ReplicaRemoved)
		if got := replaceDue(t, c, cfg, time.Hour); len(got) != 1 {
			t.Fatal("a removed replica blocked replacement")
		}
	})
	t.Run("heal time unit scales for tests", func(t *testing.T) {
		c := c
		c.HealTimeUnit = time.Second
		if got := replaceDue(t, c, volCfg("vol-1", "2", "r1", "r2", "r3"), 2*time.Second); len(got) != 1 {
			t.Fatal("not replaced after 2 units of 1s")
		}
	})
	t.Run("live replica is re-added, not replaced", func(t *testing.T) {
		cfg := volCfg("vol-1", "1", "r1", "r2", "r3")
		_, _, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "F"}})), c, Memory{}, t0)
		acts, _, _ := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"live", "F"}})), c, mem, t0.Add(time.Hour))
		if !slices.Equal(kinds(repairs(acts)), []string{"join:r2"}) {
			t.Fatalf("actions %v", kinds(repairs(acts)))
		}
	})
	t.Run("no other serving replica", func(t *testing.T) {
		cfg := volCfg("vol-1", "1", "r1", "r2")
		_, _, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r1": {"live", "S"}, "r2": {"gone", "F"}})), c, Memory{}, t0)
		acts, _, _ := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r1": {"live", "S"}, "r2": {"gone", "F"}})), c, mem, t0.Add(time.Hour))
		for _, a := range acts {
			if a.Kind == ActReplace {
				t.Fatal("replaced with nothing to sync from")
			}
		}
	})
	t.Run("provisioner outage postpones", func(t *testing.T) {
		cfg := volCfg("vol-1", "1", "r1", "r2", "r3")
		_, _, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "F"}})), c, Memory{}, t0)
		acts, evs, _ := Decide(obsOf(observeVol(cfg, false, map[string]rs{"r2": {"gone", "F"}})), c, mem, t0.Add(time.Hour))
		if len(repairs(acts)) != 0 || len(evs) != 0 {
			t.Fatalf("stale config: %v %v", kinds(repairs(acts)), types(evs))
		}
	})
	t.Run("failed request waits", func(t *testing.T) {
		cfg := volCfg("vol-1", "1", "r1", "r2", "r3")
		_, _, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "F"}})), c, Memory{}, t0)
		acts, _, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "F"}})), c, mem, t0.Add(time.Hour))
		var rep Action
		for _, a := range acts {
			if a.Kind == ActReplace {
				rep = a
			}
		}
		mem = RecordOutcomes(mem, []Outcome{{Action: rep, Err: fmt.Errorf("no room")}}, c, t0.Add(time.Hour))
		acts, _, _ = Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "F"}})), c, mem, t0.Add(time.Hour+time.Minute))
		for _, a := range acts {
			if a.Kind == ActReplace {
				t.Fatal("asked again at once")
			}
		}
		acts, _, _ = Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "F"}})), c, mem, t0.Add(time.Hour+c.ReplaceRetry))
		if !slices.Contains(kinds(repairs(acts)), "replace:r2") {
			t.Fatalf("not asked again after %s: %v", c.ReplaceRetry, kinds(repairs(acts)))
		}
	})
}

// Replacements per node are bounded; one ending frees a place.
func TestDecideReplacementBound(t *testing.T) {
	c := testConfig()
	c.MaxConcurrentReplacements = 2
	var cfgs []*volume.Volume
	down := func(fresh bool, extra map[string]map[string]rs) Observation {
		var o Observation
		for _, cfg := range cfgs {
			st := map[string]rs{"r2": {"gone", "F"}}
			for k, v := range extra[cfg.ID] {
				st[k] = v
			}
			o.Volumes = append(o.Volumes, observeVol(cfg, fresh, st))
		}
		return o
	}
	for _, id := range []string{"vol-1", "vol-2", "vol-3"} {
		cfgs = append(cfgs, volCfg(id, "1", "r1", "r2", "r3"))
	}
	_, _, mem := Decide(down(true, nil), c, Memory{}, t0)
	acts, _, mem := Decide(down(true, nil), c, mem, t0.Add(time.Minute))
	var reps []Action
	for _, a := range acts {
		if a.Kind == ActReplace {
			reps = append(reps, a)
		}
	}
	if len(reps) != 2 || reps[0].VolumeID != "vol-1" || reps[1].VolumeID != "vol-2" {
		t.Fatalf("replacements %v", reps)
	}
	var outs []Outcome
	for _, a := range reps {
		outs = append(outs, Outcome{Action: a, Joined: true, NewReplica: &volume.Replica{ID: "r9", StorageNode: "sn-9"}})
	}
	mem = RecordOutcomes(mem, outs, c, t0.Add(time.Minute))
	// The provisioner now has r2 removed and r9 syncing in vol-1 and vol-2.
	for _, cfg := range cfgs[:2] {
		setState(cfg, "r2", volume.ReplicaRemoved)
		cfg.Replicas = append(cfg.Replicas, volCfg(cfg.ID, "1", "r9").Replicas...)
	}
	syncing := map[string]map[string]rs{"vol-1": {"r9": {"live", "S"}}, "vol-2": {"r9": {"live", "S"}}}
	acts, _, mem = Decide(down(true, syncing), c, mem, t0.Add(2*time.Minute))
	for _, a := range acts {
		if a.Kind == ActReplace {
			t.Fatalf("third replacement while two run: %v", kinds(acts))
		}
	}
	// A restart in between changes nothing.
	b, _ := json.Marshal(mem)
	mem = Memory{}
	if err := json.Unmarshal(b, &mem); err != nil {
		t.Fatal(err)
	}
	syncing["vol-1"]["r9"] = rs{"live", "U"}
	acts, _, _ = Decide(down(true, syncing), c, mem, t0.Add(3*time.Minute))
	var got []string
	for _, a := range acts {
		if a.Kind == ActReplace {
			got = append(got, a.VolumeID+"/"+a.Replica.ID)
		}
	}
	if !slices.Equal(got, []string{"vol-3/r2"}) {
		t.Fatalf("after one replacement ended: %v (all %v)", got, kinds(acts))
	}
}

// The replaced replica returns while its replacement syncs: it is not added
// back, it is taken out (disconnected) instead, even if the provisioner
// cannot be asked.
func TestDecideReplacedReplicaReturningDuringSync(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "1", "r1", "r2", "r3")
	_, _, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "F"}})), c, Memory{}, t0)
	acts, _, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "F"}})), c, mem, t0.Add(time.Minute))
	var rep Action
	for _, a := range acts {
		if a.Kind == ActReplace {
			rep = a
		}
	}
	mem = RecordOutcomes(mem, []Outcome{{Action: rep, Joined: true, NewReplica: &volume.Replica{ID: "r4", StorageNode: "sn-4"}}}, c, t0.Add(time.Minute))
	next := volCfg("vol-1", "1", "r1", "r2", "r3", "r4")
	setState(next, "r2", volume.ReplicaRemoved)
	for _, fresh := range []bool{true, false} {
		// Stale cached copy from before the replacement: r2 still active.
		cfgSeen := next
		if !fresh {
			cfgSeen = volCfg("vol-1", "1", "r1", "r2", "r3", "r4")
		}
		o := observeVol(cfgSeen, fresh, map[string]rs{"r2": {"live", "-"}, "r4": {"live", "S"}})
		acts, evs, _ := Decide(obsOf(o), c, mem, t0.Add(2*time.Minute))
		if want := []string{"retire:r2"}; !slices.Equal(kinds(repairs(acts)), want) {
			t.Fatalf("fresh=%v: actions %v, want %v", fresh, kinds(repairs(acts)), want)
		}
		if count(evs, events.VolumeDegraded) != 0 {
			t.Fatalf("fresh=%v: replacement syncing reported as new degradation: %v", fresh, types(evs))
		}
	}
	// md still holds the returning replica's faulty member: out with it too.
	acts, _, _ = Decide(obsOf(observeVol(next, true, map[string]rs{"r2": {"live", "F"}, "r4": {"live", "S"}})), c, mem, t0.Add(2*time.Minute))
	if !slices.Equal(kinds(repairs(acts)), []string{"retire:r2"}) || repairs(acts)[0].Member != "nvme2n1" {
		t.Fatalf("actions %v", kinds(repairs(acts)))
	}
	// Sync done: Healed names the replica that was missing; the
	// replacement ends and no longer counts.
	_, evs, mem := Decide(obsOf(observeVol(next, true, map[string]rs{"r2": {"gone", "-"}})), c, mem, t0.Add(3*time.Minute))
	if count(evs, events.VolumeHealed) != 1 || len(mem.Volumes["vol-1"].Replacements) != 0 {
		t.Fatalf("events %v replacements %v", types(evs), mem.Volumes["vol-1"].Replacements)
	}
}

// A restart with memory reloaded: degraded-since kept, no duplicate events,
// no duplicate replacement.
func TestDecideRestart(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "1", "r1", "r2", "r3")
	_, evs, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "F"}})), c, Memory{}, t0)
	if count(evs, events.VolumeDegraded) != 1 {
		t.Fatal(types(evs))
	}
	acts, _, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "F"}})), c, mem, t0.Add(time.Minute))
	var rep Action
	for _, a := range acts {
		if a.Kind == ActReplace {
			rep = a
		}
	}
	mem = RecordOutcomes(mem, []Outcome{{Action: rep, Joined: true, NewReplica: &volume.Replica{ID: "r4", StorageNode: "sn-4"}}}, c, t0.Add(time.Minute))
	path := t.TempDir() + "/memory.json"
	if err := SaveMemory(path, mem); err != nil {
		t.Fatal(err)
	}
	back, err := LoadMemory(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, mem) {
		t.Fatalf("memory changed by the round trip:\n%+v\n%+v", back, mem)
	}
	// The provisioner cannot be asked after the restart: no replacement,
	// no event repeated.
	acts, evs, back = Decide(obsOf(observeVol(cfg, false, map[string]rs{"r2": {"gone", "F"}})), c, back, t0.Add(2*time.Minute))
	// The replacement joined just before the restart: its sync is reported
	// (once); nothing else.
	if !slices.Equal(types(evs), []events.Type{events.SynchStarted}) || evs[0].Replica != "r4" || !slices.Equal(kinds(acts), []string{"retire:r2"}) {
		t.Fatalf("after restart: %v %v (want only the replaced replica's member out)", kinds(acts), evs)
	}
	if !back.Volumes["vol-1"].DegradedSince.Equal(t0) {
		t.Fatal("degraded since lost")
	}
	// A ReplaceReplica whose answer was lost in the crash: the next
	// configuration shows the replacement, and nothing is requested again.
	next := setState(volCfg("vol-1", "1", "r1", "r2", "r3", "r4"), "r2", volume.ReplicaRemoved)
	acts, _, _ = Decide(obsOf(observeVol(next, true, map[string]rs{"r2": {"gone", "F"}, "r4": {"live", "S"}})), c, Memory{}, t0.Add(2*time.Minute))
	if slices.Contains(kinds(acts), "replace:r2") {
		t.Fatalf("replaced twice: %v", kinds(acts))
	}
}

// The state directory was lost: the provisioner's degraded_since keeps the
// clocks.
func TestDecideDegradedSinceFromProvisioner(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "60", "r1", "r2", "r3")
	cfg.DegradedSince = t0.Add(-2 * time.Hour)
	acts, evs, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "F"}})), c, Memory{}, t0)
	if !mem.Volumes["vol-1"].DegradedSince.Equal(cfg.DegradedSince) || !slices.Contains(kinds(acts), "replace:r2") {
		t.Fatalf("memory %+v actions %v", mem.Volumes["vol-1"], kinds(acts))
	}
	for _, e := range evs {
		if e.Type == events.VolumeDegraded && !e.Time.Equal(cfg.DegradedSince) {
			t.Fatalf("degraded event time %v", e.Time)
		}
	}
	// With memory, the provisioner's (possibly stale) value is not used.
	_, _, mem = Decide(obsOf(observeVol(cfg, true, nil)), c, Memory{}, t0)
	acts, _, _ = Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "F"}})), c, mem, t0.Add(time.Second))
	if slices.Contains(kinds(acts), "replace:r2") {
		t.Fatal("stale provisioner degraded_since used while memory exists")
	}
}

func TestDecideNeverFailsLastServingMember(t *testing.T) {
	cfg := volCfg("vol-1", "0", "r1", "r2")
	acts, _, _ := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r1": {"gone", "U"}, "r2": {"live", "F"}})), testConfig(), Memory{}, t0)
	for _, a := range acts {
		if a.Kind == ActFail {
			t.Fatalf("failed the last in-sync member: %v", kinds(acts))
		}
	}
}

func TestDecideWatchOnlyVolumes(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "1", "r1", "r2", "r3")
	staging := observeVol(cfg, true, map[string]rs{"r2": {"live", "F"}})
	staging.Staged = false
	noArray := observeVol(cfg, true, map[string]rs{"r2": {"live", "F"}})
	noArray.Array = nil
	for name, o := range map[string]VolumeObservation{"staging": staging, "no array": noArray} {
		if acts, _, _ := Decide(obsOf(o), c, Memory{}, t0); len(acts) != 0 {
			t.Errorf("%s: actions %v", name, kinds(acts))
		}
	}
}

func TestDecideDoesNotModifyItsInputs(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "1", "r1", "r2", "r3")
	_, _, mem := Decide(obsOf(observeVol(cfg, true, map[string]rs{"r2": {"gone", "F"}})), c, Memory{}, t0)
	before, _ := json.Marshal(mem)
	o := obsOf(observeVol(cfg, true, map[string]rs{"r2": {"live", "S"}, "r3": {"connecting", "U"}}))
	obsBefore, _ := json.Marshal(o)
	a1, e1, m1 := Decide(o, c, mem, t0.Add(time.Hour))
	after, _ := json.Marshal(mem)
	obsAfter, _ := json.Marshal(o)
	if string(before) != string(after) || string(obsBefore) != string(obsAfter) {
		t.Fatal("Decide modified its inputs")
	}
	a2, e2, m2 := Decide(o, c, mem, t0.Add(time.Hour))
	if !reflect.DeepEqual(a1, a2) || !reflect.DeepEqual(e1, e2) || !reflect.DeepEqual(m1, m2) {
		t.Fatal("Decide is not deterministic")
	}
}

// md runs an array-level "recover" for a moment after a member fails (it
// looks for a spare); no replica is synced, so no Synch event is due.
func TestDecideNoSynchEventWithoutAReplica(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "60", "r1", "r2", "r3")
	obs := observeVol(cfg, true, map[string]rs{"r2": {"connecting", "F"}})
	obs.Array.SyncAction = "recover"
	_, evs, _ := Decide(obsOf(obs), c, Memory{}, t0)
	for _, e := range evs {
		if e.Type == events.SynchStarted || e.Type == events.SynchEnded {
			t.Errorf("sync event without a syncing replica: %+v", e)
		}
	}
	if !slices.Contains(types(evs), events.VolumeDegraded) {
		t.Errorf("events %v: want the degradation reported", types(evs))
	}
}

// While NodeStage or NodeUnstage works on a volume its members and
// controllers come and go: no degradation, host loss or repair.
func TestDecideLeavesVolumesInTransitionAlone(t *testing.T) {
	c := testConfig()
	cfg := volCfg("vol-1", "60", "r1", "r2", "r3")
	_, _, mem := Decide(obsOf(observeVol(cfg, true, nil)), c, Memory{}, t0)
	unstaging := observeVol(cfg, true, map[string]rs{"r1": {"gone", "-"}, "r2": {"gone", "-"}, "r3": {"gone", "-"}})
	unstaging.Staged = false
	acts, evs, _ := Decide(obsOf(unstaging), c, mem, t0.Add(time.Second))
	if len(acts) != 0 {
		t.Errorf("acted on a volume being unstaged: %v", kinds(acts))
	}
	for _, e := range noSessions(evs) {
		t.Errorf("event about a volume being unstaged: %s %s", e.Type, e.Message)
	}
}
