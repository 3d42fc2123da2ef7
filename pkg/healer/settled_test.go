package healer

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
)

// incremental runs cycles the way the loop does: decideCycle with the last
// cycle's settled volumes, acting through outcome (nil: every action
// succeeds with nothing to record).
type incremental struct {
	mem     Memory
	settled map[string]settledVolume
	carried map[string]bool
}

func (c *incremental) cycle(obs Observation, now time.Time, outcome func(Action) Outcome) ([]Action, []events.Event) {
	d := decideCycle(obs, testConfig(), c.mem, now, c.settled)
	var outs []Outcome
	for _, a := range d.actions {
		if outcome != nil {
			o := outcome(a)
			o.Action = a
			outs = append(outs, o)
		}
	}
	c.mem, c.settled, c.carried = RecordOutcomes(d.mem, outs, testConfig(), now), d.settled, d.carried
	return d.actions, d.events
}

// Deciding only the volumes whose observation changed gives what deciding
// every volume gives, cycle after cycle, while a volume observed alike is
// carried over once it settled.
func TestDecideCycleMatchesDecide(t *testing.T) {
	a, b := volCfg("vol-a", "60", "r1", "r2", "r3"), volCfg("vol-b", "60", "r1", "r2")
	steps := []map[string]rs{
		nil, nil, nil,
		{"r2": {"connecting", "U"}}, {"r2": {"connecting", "U"}}, {"r2": {"connecting", "F"}},
		{"r2": {"live", "S"}}, {"r2": {"live", "S"}}, nil, nil, nil,
	}
	var inc incremental
	full := Memory{}
	for i, st := range steps {
		now := t0.Add(time.Duration(i) * 10 * time.Second)
		obs := obsOf(observeVol(a, true, nil), observeVol(b, true, st))
		acts, evs := inc.cycle(obs, now, nil)
		fActs, fEvs, fMem := Decide(obs, testConfig(), full, now)
		full = RecordOutcomes(fMem, nil, testConfig(), now)
		if !reflect.DeepEqual(acts, fActs) || !reflect.DeepEqual(evs, fEvs) || memoryChanged(inc.mem, full, nil) {
			t.Fatalf("step %d: incremental %v %v, full %v %v; memories\n%+v\n%+v", i, kinds(acts), types(evs), kinds(fActs), types(fEvs), inc.mem, full)
		}
		if i >= 2 && !inc.carried["vol-a"] {
			t.Errorf("step %d: vol-a, settled and observed alike, was decided again", i)
		}
		if i >= 3 && i <= 8 && inc.carried["vol-b"] {
			t.Errorf("step %d: vol-b (changed, or degraded) was carried over", i)
		}
	}
	if !inc.carried["vol-b"] {
		t.Error("vol-b, healed and settled, is still decided every cycle")
	}
}

// Whatever time alone makes due still happens to a volume observed exactly
// alike cycle after cycle: the replacement after maxReplicaDownTime, and
// a reconnect retried after its backoff.
func TestDecideCycleTimeDrivenActions(t *testing.T) {
	t.Run("replacement after maxReplicaDownTime", func(t *testing.T) {
		v := volCfg("vol-1", "1", "r1", "r2", "r3")
		obs := obsOf(observeVol(v, true, map[string]rs{"r2": {"connecting", "U"}}), observeVol(volCfg("vol-2", "1", "r1", "r2"), true, nil))
		var inc incremental
		for _, after := range []time.Duration{0, 10 * time.Second, 30 * time.Second, 50 * time.Second} {
			if acts, _ := inc.cycle(obs, t0.Add(after), nil); slices.ContainsFunc(acts, func(a Action) bool { return a.Kind == ActReplace }) {
				t.Fatalf("replaced after %v, before maxReplicaDownTime", after)
			}
		}
		if !inc.carried["vol-2"] {
			t.Fatal("the healthy volume is not carried over: the test would not tell")
		}
		acts, _ := inc.cycle(obs, t0.Add(time.Minute), nil)
		if got := kinds(repairs(acts)); !slices.Equal(got, []string{"replace:r2"}) {
			t.Fatalf("actions at maxReplicaDownTime %v, want the replacement of r2", got)
		}
	})
	t.Run("reconnect retried after its backoff", func(t *testing.T) {
		v := volCfg("vol-1", "60", "r1", "r2", "r3")
		v.Replicas[1].OutOfSyncSince = t0.Add(-time.Hour) // recorded so: no sync report each cycle
		obs := obsOf(observeVol(v, true, map[string]rs{"r2": {"gone", "F"}}))
		fail := func(Action) Outcome { return Outcome{Err: errors.New("unreachable")} }
		var inc incremental
		joins := func(acts []Action) int {
			n := 0
			for _, a := range acts {
				if a.Kind == ActJoin {
					n++
				}
			}
			return n
		}
		if acts, _ := inc.cycle(obs, t0, fail); joins(acts) != 1 {
			t.Fatalf("first cycle %v, want a reconnect", kinds(acts))
		}
		retry := testConfig().RetryBase
		if acts, _ := inc.cycle(obs, t0.Add(retry/2), fail); joins(acts) != 0 {
			t.Fatalf("retried within the backoff: %v", kinds(acts))
		}
		if acts, _ := inc.cycle(obs, t0.Add(retry), fail); joins(acts) != 1 {
			t.Fatalf("not retried when the backoff ended: %v", kinds(acts))
		}
	})
}

// sameObservation compares every field Decide could read: changing any one
// field of an observation (found by reflection, so that a field added later
// is covered) makes it differ.
func TestSameObservationComparesEveryField(t *testing.T) {
	base := func() VolumeObservation {
		return observeVol(volCfg("vol-1", "60", "r1", "r2"), true, nil)
	}
	if !sameObservation(base(), base()) {
		t.Fatal("equal observations differ")
	}
	// mutate changes the i-th field of the struct v points to.
	mutate := func(v reflect.Value) {
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Bool:
			v.SetBool(!v.Bool())
		case reflect.Int:
			v.SetInt(v.Int() + 1)
		case reflect.Uint64:
			v.SetUint(v.Uint() + 1)
		case reflect.Slice:
			if v.Type().Elem().Kind() == reflect.String {
				v.Set(reflect.Append(v, reflect.ValueOf("x")))
				return
			}
			v.Set(v.Slice(0, v.Len()-1))
		default:
			t.Fatalf("no mutation for %v", v.Type())
		}
	}
	check := func(name string, n int, field func(o *VolumeObservation, i int) reflect.Value) {
		for i := 0; i < n; i++ {
			o := base()
			f := field(&o, i)
			if !f.CanSet() {
				continue
			}
			mutate(f)
			if sameObservation(base(), o) {
				t.Errorf("%s field %d changed, observations still the same", name, i)
			}
		}
	}
	vt := reflect.TypeOf(VolumeObservation{})
	check("VolumeObservation", vt.NumField(), func(o *VolumeObservation, i int) reflect.Value {
		switch vt.Field(i).Name {
		case "Array", "Controllers":
			return reflect.Value{} // below, field by field
		case "Record":
			return reflect.Value{} // below: a changed copy of the record
		}
		return reflect.ValueOf(o).Elem().Field(i)
	})
	o := base()
	c := *o.Record
	c.Replicas = slices.Clone(c.Replicas)
	c.Replicas[1].State = "deleted"
	o.Record = &c
	if sameObservation(base(), o) {
		t.Error("a changed record is the same observation")
	}
	at := reflect.TypeOf(ArrayObservation{})
	check("ArrayObservation", at.NumField(), func(o *VolumeObservation, i int) reflect.Value {
		a := *o.Array
		a.Members = slices.Clone(a.Members)
		o.Array = &a
		return reflect.ValueOf(o.Array).Elem().Field(i)
	})
	mt := reflect.TypeOf(MemberObservation{})
	check("MemberObservation", mt.NumField(), func(o *VolumeObservation, i int) reflect.Value {
		a := *o.Array
		a.Members = slices.Clone(a.Members)
		o.Array = &a
		return reflect.ValueOf(&a.Members[0]).Elem().Field(i)
	})
	ct := reflect.TypeOf(ControllerObservation{})
	check("ControllerObservation", ct.NumField(), func(o *VolumeObservation, i int) reflect.Value {
		cs := map[string][]ControllerObservation{}
		for k, v := range o.Controllers {
			cs[k] = slices.Clone(v)
		}
		o.Controllers = cs
		return reflect.ValueOf(&cs[o.Record.Replicas[0].NQN][0]).Elem().Field(i)
	})
	rt := reflect.TypeOf(stagestate.Replica{})
	check("stagestate.Replica", rt.NumField(), func(o *VolumeObservation, i int) reflect.Value {
		o.StagedReplicas = slices.Clone(o.StagedReplicas)
		return reflect.ValueOf(&o.StagedReplicas[0]).Elem().Field(i)
	})
	o = base()
	o.Array = nil
	if sameObservation(base(), o) {
		t.Error("an array gone is the same observation")
	}
	o = base()
	o.Controllers["nqn.other"] = []ControllerObservation{{Name: "nvme9", State: host.StateLive}}
	if sameObservation(base(), o) {
		t.Error("one more controller is the same observation")
	}
}
