package healer

import (
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
)

func TestEventID(t *testing.T) {
	e := events.Event{Type: events.VolumeDegraded, Volume: "vol-1", Node: "node-a", Time: t0, Replicas: []string{"r2", "r3"}}
	same := e
	same.Replicas = []string{"r3", "r2"}
	same.Message = "other words"
	if EventID(e) != EventID(same) || len(EventID(e)) != 32 {
		t.Fatal("ID depends on message or order")
	}
	for _, f := range []func(*events.Event){
		func(x *events.Event) { x.Time = x.Time.Add(time.Nanosecond) },
		func(x *events.Event) { x.Type = events.VolumeHealed },
		func(x *events.Event) { x.Volume = "vol-2" },
		func(x *events.Event) { x.Replicas = []string{"r2"} },
		func(x *events.Event) { x.StorageNode = "sn-2" },
	} {
		x := e
		f(&x)
		if EventID(x) == EventID(e) {
			t.Fatalf("distinct events share an ID: %+v", x)
		}
	}
}
