package provisionerapi

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nvmirror/nvmirror/pkg/events"
)

func TestEventRoundTrip(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 5, time.UTC)
	for _, e := range []events.Event{
		{ID: "a", Seq: 7, Time: t0, Type: events.VolumeDegraded, Volume: "v", Node: "n", Replicas: []string{"r1", "r2"}, Message: "two legs missing"},
		{ID: "b", Time: t0, Type: events.HostDisconnected, Volume: "v", Replica: "r1", StorageNode: "sn-1"},
		{ID: "c", Time: t0, Type: events.Audit, Volume: "v", Node: "n", Method: "NodeStageVolume", Outcome: "failure", Message: "Internal: boom"},
		{Time: t0, Type: events.SynchStarted, StorageNode: "sn-1,sn-2"},
	} {
		p := EventToProto(e)
		got := EventFromProto(p)
		got.Seq = p.GetSeq() // Seq is the store's, not read from reports
		if !reflect.DeepEqual(got, e) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, e)
		}
	}
}

func TestEventFromProto(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		in   *Event
		want events.Event
	}{
		{"audit attributes fill empty fields",
			&Event{Id: "x", Type: "Audit", Time: timestamppb.New(t0), Attributes: map[string]string{AttrOperation: "CreateVolume", AttrOutcome: "success", AttrNode: "ctrl", AttrMessage: "ok", "future": "ignored"}},
			events.Event{ID: "x", Type: events.Audit, Time: t0, Method: "CreateVolume", Outcome: "success", Node: "ctrl", Message: "ok"}},
		{"fields win over attributes",
			&Event{Type: "Audit", Time: timestamppb.New(t0), Node: "n1", Message: "m1", Attributes: map[string]string{AttrOperation: "DeleteVolume", AttrNode: "n2", AttrMessage: "m2"}},
			events.Event{Type: events.Audit, Time: t0, Method: "DeleteVolume", Node: "n1", Message: "m1"}},
		{"severity is not read, no time stays zero",
			&Event{Type: "VolumeHealed", Severity: Severity_SEVERITY_FATAL},
			events.Event{Type: events.VolumeHealed}},
	}
	for _, tc := range tests {
		if got := EventFromProto(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
	if s := EventToProto(events.Event{Type: events.VolumeDegraded}).GetSeverity(); s != Severity_SEVERITY_FATAL {
		t.Errorf("VolumeDegraded severity %v", s)
	}
	if s := EventToProto(events.Event{Type: events.SynchStarted}).GetSeverity(); s != Severity_SEVERITY_WARNING {
		t.Errorf("SynchStarted severity %v", s)
	}
}

func TestEventToProtoNamesEachReplicaOnce(t *testing.T) {
	p := EventToProto(events.Event{Type: events.VolumeDegraded, Replica: "r1", Replicas: []string{"r1", "r2", "r1"}})
	if got := p.GetReplicaIds(); !slices.Equal(got, []string{"r1", "r2"}) {
		t.Fatalf("replica_ids = %v, want [r1 r2]", got)
	}
}
