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

// The syslog forwarder is the production sink.
var _ provisioner.EventSink = (*events.Forwarder)(nil)
