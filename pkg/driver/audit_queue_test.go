package driver_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/healer"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// reporter stands in for the provisioner's ReportEvents; down refuses.
type reporter struct {
	mu   sync.Mutex
	down bool
	got  []events.Event
}

func (r *reporter) ReportEvents(_ context.Context, es ...events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return volume.Errorf(volume.ErrUnavailable, "provisioner down")
	}
	r.got = append(r.got, es...)
	return nil
}

// An audit record of the node plugin goes into the node's durable event
// queue before the CSI call returns: a provisioner outage or a restart of
// the plugin loses none (the in-memory queue sent each once and dropped it
// on failure).
func TestAuditRecordsGoThroughTheDurableQueue(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "events.db")
	down := &reporter{down: true}
	q, err := healer.OpenEventQueue(path, 0, down, clocktesting.NewFakeClock(time.Now()))
	must(t, err)
	e.drv.SetEventQueue(q)

	id := e.create("v", "3")
	e.publish(id)
	must(t, e.stage(id, mountCap))
	if err := q.Flush(context.Background()); err == nil {
		t.Fatal("delivered while the provisioner is down")
	}
	if n := q.Len(); n != 3 {
		t.Fatalf("%d events queued, want the 3 audit records (create, publish, stage)", n)
	}
	if a := e.prov.Audits(); len(a) != 0 {
		t.Fatalf("audit records sent around the queue: %+v", a)
	}
	must(t, q.Close())

	// The plugin restarts; the provisioner is back.
	up := &reporter{}
	q, err = healer.OpenEventQueue(path, 0, up, clocktesting.NewFakeClock(time.Now()))
	must(t, err)
	defer q.Close()
	must(t, q.Flush(context.Background()))
	var methods []string
	for _, ev := range up.got {
		// CreateVolume's request names no volume ID yet.
		if ev.Type != events.Audit || ev.ID == "" || (ev.Method != "CreateVolume" && ev.Volume != id) || ev.Outcome != string(volume.AuditSuccess) {
			t.Errorf("event %+v", ev)
		}
		methods = append(methods, ev.Method)
	}
	if len(methods) != 3 || methods[0] != "CreateVolume" || methods[1] != "ControllerPublishVolume" || methods[2] != "NodeStageVolume" {
		t.Fatalf("delivered %v", methods)
	}
}
