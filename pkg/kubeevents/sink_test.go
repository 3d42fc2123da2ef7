package kubeevents

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

const driver = "csi.nvmirror.io"

// registry is a Volumes of fixed records.
type registry map[string]*store.Volume

func (r registry) GetVolume(_ context.Context, id string) (*store.Volume, error) {
	if v, ok := r[id]; ok {
		return v, nil
	}
	return nil, fmt.Errorf("volume %s: %w", id, store.ErrNotFound)
}

func volumeOf(id string, md storageclass.Metadata) *store.Volume {
	v := &store.Volume{ID: id, Name: "pvc-of-" + id, Parameters: storageclass.Defaults()}
	v.Parameters.Metadata = md
	return v
}

// boundPV is the PV the external-provisioner makes for a claim.
func boundPV(name, volumeID, ns, claim string, claimUID types.UID) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)},
		Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: driver, VolumeHandle: volumeID}},
			ClaimRef:               &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: ns, Name: claim, UID: claimUID},
		},
	}
}

func startSink(t *testing.T, client typedcorev1.CoreV1Interface, vols Volumes, queue int) (*Sink, *Metrics) {
	t.Helper()
	m := NewMetrics(prometheus.NewRegistry())
	s, err := New(Options{Client: client, Volumes: vols, Driver: driver, Component: "nvmirror-provisioner", Host: "prov-0",
		QueueSize: queue, LookupTimeout: 2 * time.Second, Metrics: m, RetrySleep: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, m
}

// eventsOn lists the Kubernetes events whose involved object is name in ns.
func eventsOn(t *testing.T, c *fake.Clientset, ns, kind, name string) []corev1.Event {
	t.Helper()
	l, err := c.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range l.Items {
		if e.InvolvedObject.Kind == kind && e.InvolvedObject.Name == name {
			out = append(out, e)
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func outcome(m *Metrics, o string) int { return int(testutil.ToFloat64(m.events.WithLabelValues(o))) }

func TestDegradedIsAWarningAndHealedNormalOnPVCAndPV(t *testing.T) {
	md := storageclass.Metadata{PVName: "pvc-1111", PVCName: "data-db-0", PVCNamespace: "app"}
	client := fake.NewClientset(boundPV("pvc-1111", "vol-1", "app", "data-db-0", "uid-claim"))
	s, m := startSink(t, client.CoreV1(), registry{"vol-1": volumeOf("vol-1", md)}, 10)
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

	s.Enqueue(events.Event{Seq: 1, Time: t0, Type: events.VolumeDegraded, Volume: "vol-1", Node: "cn1",
		StorageNode: "sn2", Replicas: []string{"rep-b"}, Message: "1 of 3 replicas missing: rep-b (sn2, reconnecting)"})
	waitFor(t, "the Degraded event on the PVC and the PV", func() bool {
		return len(eventsOn(t, client, "app", "PersistentVolumeClaim", "data-db-0")) == 1 &&
			len(eventsOn(t, client, "default", "PersistentVolume", "pvc-1111")) == 1
	})
	ev := eventsOn(t, client, "app", "PersistentVolumeClaim", "data-db-0")[0]
	if ev.Type != corev1.EventTypeWarning || ev.Reason != "VolumeDegraded" || ev.InvolvedObject.UID != "uid-claim" {
		t.Errorf("PVC event: type %q reason %q object UID %q, want Warning VolumeDegraded on uid-claim", ev.Type, ev.Reason, ev.InvolvedObject.UID)
	}
	for _, want := range []string{"Replicated Volume Degraded", "volume vol-1", "replica rep-b", "storage node sn2", "node cn1", "1 of 3 replicas missing"} {
		if !strings.Contains(ev.Message, want) {
			t.Errorf("PVC event message %q lacks %q", ev.Message, want)
		}
	}
	if ev.Source.Component != "nvmirror-provisioner" || ev.ReportingController != "nvmirror-provisioner" || ev.ReportingInstance != "prov-0" {
		t.Errorf("source %+v, reporting %q/%q", ev.Source, ev.ReportingController, ev.ReportingInstance)
	}
	pv := eventsOn(t, client, "default", "PersistentVolume", "pvc-1111")[0]
	if pv.Type != corev1.EventTypeWarning || pv.Reason != "VolumeDegraded" || pv.InvolvedObject.UID != "uid-pvc-1111" {
		t.Errorf("PV event: %q %q on %q", pv.Type, pv.Reason, pv.InvolvedObject.UID)
	}

	// A resend (same sequence number) is recorded once.
	s.Enqueue(events.Event{Seq: 1, Time: t0, Type: events.VolumeDegraded, Volume: "vol-1", Replicas: []string{"rep-b"}})
	s.Enqueue(events.Event{Seq: 2, Time: t0.Add(time.Minute), Type: events.VolumeHealed, Volume: "vol-1", Node: "cn1",
		Replicas: []string{"rep-b"}, Message: "healed after 1m0s"})
	waitFor(t, "the Healed event", func() bool {
		return len(eventsOn(t, client, "app", "PersistentVolumeClaim", "data-db-0")) == 2
	})
	for _, e := range eventsOn(t, client, "app", "PersistentVolumeClaim", "data-db-0") {
		switch e.Reason {
		case "VolumeHealed":
			if e.Type != corev1.EventTypeNormal {
				t.Errorf("VolumeHealed is %s, want Normal", e.Type)
			}
		case "VolumeDegraded":
			if e.Count != 1 {
				t.Errorf("VolumeDegraded count %d: the resend was recorded again", e.Count)
			}
		default:
			t.Errorf("unexpected event %s", e.Reason)
		}
	}
	if got := outcome(m, OutcomeRecorded); got != 2 {
		t.Errorf("recorded %d, want 2", got)
	}
	waitFor(t, "4 writes counted", func() bool { return testutil.ToFloat64(m.writes.WithLabelValues("ok")) == 4 })
}

func TestEventsWithoutAClaimAreNotRecorded(t *testing.T) {
	client := fake.NewClientset(
		boundPV("pvc-other", "vol-9", "app", "x", "uid-x"),                       // the PV of another volume
		&corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-nfs"}}, // not a CSI volume
	)
	vols := registry{
		"vol-nometa": volumeOf("vol-nometa", storageclass.Metadata{}),
		"vol-stolen": volumeOf("vol-stolen", storageclass.Metadata{PVName: "pvc-other", PVCName: "x", PVCNamespace: "app"}),
		"vol-nfs":    volumeOf("vol-nfs", storageclass.Metadata{PVName: "pvc-nfs"}),
		"vol-gone":   volumeOf("vol-gone", storageclass.Metadata{PVName: "pvc-deleted"}),
	}
	s, m := startSink(t, client.CoreV1(), vols, 10)
	now := time.Now()
	for i, id := range []string{"vol-nometa", "vol-stolen", "vol-nfs", "vol-gone", "vol-unknown"} {
		s.Enqueue(events.Event{Seq: uint64(i + 1), Time: now, Type: events.VolumeDegraded, Volume: id})
	}
	// Not for Kubernetes at all: no volume, or a CSI command's audit record.
	s.Enqueue(events.Event{Seq: 10, Time: now, Type: events.HostDisconnected, StorageNode: "sn1"},
		events.Event{Seq: 11, Time: now, Type: events.Audit, Method: "NodeStageVolume", Outcome: "OK", Volume: "vol-stolen"})
	waitFor(t, "five events without a claim", func() bool { return outcome(m, OutcomeNoClaim) == 5 })
	l, err := client.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
	if err != nil || len(l.Items) != 0 {
		t.Errorf("events recorded: %v %v", l.Items, err)
	}
	if got := outcome(m, OutcomeRecorded) + outcome(m, OutcomeFailed) + outcome(m, OutcomeDropped); got != 0 {
		t.Errorf("other outcomes: %d", got)
	}
}

func TestPromotionIsAWarning(t *testing.T) {
	md := storageclass.Metadata{PVName: "pvc-2", PVCName: "c", PVCNamespace: "ns"}
	client := fake.NewClientset(boundPV("pvc-2", "vol-2", "ns", "c", "uid-c"))
	s, _ := startSink(t, client.CoreV1(), registry{"vol-2": volumeOf("vol-2", md)}, 10)
	s.Enqueue(events.Event{Seq: 1, Time: time.Now(), Type: events.Audit, Method: "PromoteReplicas", Outcome: "OK",
		Volume: "vol-2", Replicas: []string{"rep-x"}, Message: "WARNING: data loss accepted"})
	waitFor(t, "the promotion on the PVC", func() bool { return len(eventsOn(t, client, "ns", "PersistentVolumeClaim", "c")) == 1 })
	e := eventsOn(t, client, "ns", "PersistentVolumeClaim", "c")[0]
	if e.Type != corev1.EventTypeWarning || e.Reason != "PromoteReplicas" || !strings.Contains(e.Message, "data loss") {
		t.Errorf("promotion event %s %s %q", e.Type, e.Reason, e.Message)
	}
}

// silentServer accepts connections and never answers: an API server that
// hangs.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestUnreachableAPIServerDoesNotBlock: with an API server that never
// answers, Enqueue still returns at once; what the queue cannot hold is
// dropped and counted.
func TestUnreachableAPIServerDoesNotBlock(t *testing.T) {
	client, err := typedcorev1.NewForConfig(&rest.Config{Host: "http://" + silentServer(t), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	md := storageclass.Metadata{PVName: "pvc-3", PVCName: "c", PVCNamespace: "ns"}
	const queue = 5
	s, m := startSink(t, client, registry{"vol-3": volumeOf("vol-3", md)}, queue)
	start := time.Now()
	const sent = 50
	for i := 1; i <= sent; i++ {
		s.Enqueue(events.Event{Seq: uint64(i), Time: start, Type: events.VolumeDegraded, Volume: "vol-3"})
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Enqueue of %d events took %v with the API server hanging", sent, d)
	}
	// The worker holds one event (its PV lookup hangs), the queue five.
	waitFor(t, "the drops counted", func() bool { return outcome(m, OutcomeDropped) >= sent-queue-1 })
	if d, q := outcome(m, OutcomeDropped), int(testutil.ToFloat64(m.queued)); d+q > sent || q > queue {
		t.Errorf("dropped %d, queued %d of %d (queue %d)", d, q, sent, queue)
	}
	// The lookup times out (LookupTimeout): counted as failed, the next
	// event taken.
	waitFor(t, "a lookup failure", func() bool { return outcome(m, OutcomeFailed) >= 1 })
}

func TestNewRefusesMissingDependencies(t *testing.T) {
	client := fake.NewClientset().CoreV1()
	for name, o := range map[string]Options{
		"client":    {Volumes: registry{}, Driver: driver, Component: "c"},
		"registry":  {Client: client, Driver: driver, Component: "c"},
		"driver":    {Client: client, Volumes: registry{}, Component: "c"},
		"component": {Client: client, Volumes: registry{}, Driver: driver},
	} {
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), strings.TrimSuffix(name, "istry")) {
			t.Errorf("without %s: %v", name, err)
		}
	}
}
