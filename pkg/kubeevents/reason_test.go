package kubeevents

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/nvmirror/nvmirror/pkg/events"
)

func TestKubeTypeOfEveryEventType(t *testing.T) {
	want := map[events.Type]string{
		events.VolumeDegraded: corev1.EventTypeWarning, events.HostDisconnected: corev1.EventTypeWarning,
		events.VolumeHealed: corev1.EventTypeNormal, events.HostReconnected: corev1.EventTypeNormal,
		events.SynchStarted: corev1.EventTypeNormal, events.SynchEnded: corev1.EventTypeNormal,
		events.SessionEstablished: corev1.EventTypeNormal, events.SessionClosed: corev1.EventTypeNormal,
		events.Audit: "", events.CreateRolledBack: "", events.OrphanFound: "", events.OrphanReclaimed: "",
		events.SnapshotTaken: corev1.EventTypeNormal, events.SnapshotFailed: corev1.EventTypeWarning, events.SnapshotDeleted: "",
	}
	for _, ty := range events.Types() {
		w, ok := want[ty]
		if !ok {
			t.Errorf("event type %s has no Kubernetes type decided here", ty)
		}
		if got := kubeType(events.Event{Type: ty, Volume: "v"}); got != w {
			t.Errorf("%s: %q, want %q", ty, got, w)
		}
	}
}

func TestMessageEscapesAndIsBounded(t *testing.T) {
	m := message(events.Event{Type: events.SynchStarted, Volume: "v", Replica: "r1", Replicas: []string{"r2"},
		Message: "line\nforged\x1b[31m" + strings.Repeat("x", 2000)})
	if strings.ContainsAny(m, "\n\x1b") || len(m) > MaxMessageLength {
		t.Errorf("message of %d bytes: %q", len(m), m[:80])
	}
	if !strings.HasPrefix(m, "Replicated Volume Synch Started: volume v, replicas r1,r2: line\\x0aforged\\x1b[31m") {
		t.Errorf("message %q", m[:90])
	}
}
