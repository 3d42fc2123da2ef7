package provisioner_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/boltstore"
)

type sink struct {
	got []events.Event
	err error
}

func (s *sink) Enqueue(es ...events.Event) error {
	if s.err != nil {
		return s.err
	}
	s.got = append(s.got, es...)
	return nil
}

func TestRecordEvents(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "r.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sk := &sink{}
	e := newEnvWithStore(t, st, threeRacks(), provisioner.Options{Events: sk})
	ctx := context.Background()
	now := time.Now()
	in := []events.Event{
		{Time: now, Type: events.VolumeDegraded, Volume: "v1", Node: "node-a", Replicas: []string{"r1", "r2"}},
		{Time: now, Type: events.Audit, Volume: "v1", Node: "ctrl", Method: "CreateVolume", Outcome: "OK"},
	}
	out, err := e.svc.RecordEvents(ctx, in...)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].Seq == 0 || out[1].Seq <= out[0].Seq {
		t.Errorf("recorded = %+v", out)
	}
	if len(sk.got) != 2 || sk.got[1].Method != "CreateVolume" {
		t.Errorf("forwarded = %+v", sk.got)
	}
	got, err := e.svc.ListEvents(ctx, events.Filter{Volume: "v1", Types: []events.Type{events.Audit}})
	if err != nil || len(got) != 1 || got[0].Outcome != "OK" {
		t.Errorf("ListEvents = %+v, %v", got, err)
	}

	// An invalid event rejects the whole batch before anything is stored.
	_, err = e.svc.RecordEvents(ctx, events.Event{Time: now, Type: events.VolumeHealed}, events.Event{Time: now, Type: "Bogus"})
	if !errors.Is(err, provisioner.ErrInvalidArgument) {
		t.Errorf("invalid event: %v", err)
	}
	if all, _ := e.svc.ListEvents(ctx, events.Filter{}); len(all) != 2 {
		t.Errorf("%d events stored after a rejected batch, want 2", len(all))
	}
	// A forwarding failure is reported so that the reporter retries.
	sk.err = errors.New("disk full")
	if _, err := e.svc.RecordEvents(ctx, events.Event{Time: now, Type: events.VolumeHealed}); err == nil {
		t.Error("forwarding failure not reported")
	}
}

func TestRecordEventsTracksDegradedSince(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, nil)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ev := func(id string, typ events.Type, at time.Duration) events.Event {
		return events.Event{ID: id, Time: t0.Add(at), Type: typ, Volume: v.ID, Node: "node-a"}
	}
	steps := []struct {
		name string
		e    events.Event
		want time.Time
	}{
		{"degraded sets", ev("d1", events.VolumeDegraded, 0), t0},
		{"degraded again keeps the first time", ev("d2", events.VolumeDegraded, time.Minute), t0},
		{"healed older than the degradation is ignored", ev("h0", events.VolumeHealed, -time.Minute), t0},
		{"healed clears", ev("h1", events.VolumeHealed, 2*time.Minute), time.Time{}},
		{"a resent degraded changes nothing", ev("d1", events.VolumeDegraded, 0), time.Time{}},
		{"other types change nothing", ev("s1", events.SynchStarted, 3*time.Minute), time.Time{}},
		{"degraded again", ev("d3", events.VolumeDegraded, 4*time.Minute), t0.Add(4 * time.Minute)},
		{"unknown volume is stored, changes nothing", events.Event{ID: "x", Time: t0, Type: events.VolumeHealed, Volume: "vol-gone"}, t0.Add(4 * time.Minute)},
	}
	for _, s := range steps {
		if _, err := e.svc.RecordEvents(e.ctx, s.e); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got, err := e.svc.GetVolume(e.ctx, v.ID)
		if err != nil || !got.DegradedSince.Equal(s.want) {
			t.Errorf("%s: DegradedSince = %v, %v; want %v", s.name, got.DegradedSince, err, s.want)
		}
	}
	if all, _ := e.svc.ListEvents(e.ctx, events.Filter{}); len(all) != len(steps)-1 {
		t.Errorf("%d events stored, want %d (one resend deduplicated)", len(all), len(steps)-1)
	}
}

// The syslog forwarder is the production sink.
var _ provisioner.EventSink = (*events.Forwarder)(nil)

// TestFanOutReachesEverySink: events go to syslog and to Kubernetes; a
// failing first sink fails the call (the reporter resends) before the
// next sink sees the batch.
func TestFanOutReachesEverySink(t *testing.T) {
	if provisioner.FanOut(nil, nil) != nil {
		t.Error("FanOut of no sink is not nil")
	}
	syslog, kube := &sink{}, &sink{}
	if got := provisioner.FanOut(nil, kube); got != kube {
		t.Errorf("FanOut of one sink is %T, want the sink itself", got)
	}
	e := newEnvOpts(t, threeRacks(), provisioner.Options{Events: provisioner.FanOut(syslog, nil, kube)})
	ev := events.Event{ID: "x", Time: time.Now(), Type: events.VolumeDegraded, Volume: "v1", Replicas: []string{"r1"}}
	if _, err := e.svc.RecordEvents(e.ctx, ev); err != nil {
		t.Fatal(err)
	}
	if len(syslog.got) != 1 || len(kube.got) != 1 || kube.got[0].Seq == 0 || kube.got[0].Seq != syslog.got[0].Seq {
		t.Errorf("syslog got %+v, kubernetes %+v", syslog.got, kube.got)
	}
	syslog.err = errors.New("disk full")
	if _, err := e.svc.RecordEvents(e.ctx, ev); err == nil {
		t.Error("a failing syslog queue did not fail the call")
	}
	if len(kube.got) != 1 {
		t.Errorf("kubernetes got the batch the syslog queue refused: %+v", kube.got)
	}
}
