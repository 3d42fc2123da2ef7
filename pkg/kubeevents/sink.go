// Package kubeevents records nvmirror's events about volumes as Kubernetes
// events on the volume's PersistentVolumeClaim and PersistentVolume, where
// `kubectl describe pvc` shows them: a second sink beside syslog in the
// provisioner, behind its EventSink interface, so the provisioner's core
// does not link client-go.
//
// Enqueue never blocks and never fails: events go to a bounded queue and
// are dropped, counted, when it is full, so an API server that is slow or
// away delays nothing and syslog still gets every event. Writing to the
// API server is client-go's event recorder (k8s.io/client-go/tools/record),
// with its conventions: per-object rate limiting (a burst of 25, then one
// every 5 minutes), repeated events counted on one Event (patched), similar
// ones combined after 10 in 10 minutes, and retries while the API server
// cannot be reached.
package kubeevents

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// Defaults of Options.
const (
	DefaultQueueSize     = 1000
	DefaultLookupTimeout = 10 * time.Second
	// dedupeWindow is how many recent events are remembered to record a
	// resend once (the provisioner hands a resent event to its sinks again).
	dedupeWindow = 4096
)

// Options configure a Sink.
type Options struct {
	// Client is the core API group's (PVs, events).
	Client  typedcorev1.CoreV1Interface
	Volumes Volumes
	// Driver is the CSI driver name PVs of nvmirror volumes carry.
	Driver string
	// Component and Host are the events' source (reportingController and
	// reportingInstance): the program and its pod.
	Component, Host string
	// QueueSize bounds the events waiting (DefaultQueueSize when 0).
	QueueSize int
	// LookupTimeout bounds reading the registry and the PV for one event
	// (DefaultLookupTimeout when 0).
	LookupTimeout time.Duration
	// Metrics, when nil, are created unregistered.
	Metrics *Metrics
	// RetrySleep is client-go's pause between attempts to write an event
	// (10 s when 0); tests shorten it.
	RetrySleep time.Duration
}

// Sink records nvmirror events on Kubernetes objects. Enqueue hands events
// to it; Run does the work until its context ends.
type Sink struct {
	o           Options
	queue       chan events.Event
	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder

	mu     sync.Mutex
	seen   map[string]bool
	recent []string // ring of seen's keys, oldest overwritten
	next   int
}

// New returns a sink; call Run to start it.
func New(o Options) (*Sink, error) {
	switch {
	case o.Client == nil:
		return nil, errors.New("kubeevents: no Kubernetes client")
	case o.Volumes == nil:
		return nil, errors.New("kubeevents: no volume registry")
	case o.Driver == "":
		return nil, errors.New("kubeevents: no CSI driver name")
	case o.Component == "":
		return nil, errors.New("kubeevents: no component name")
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.LookupTimeout <= 0 {
		o.LookupTimeout = DefaultLookupTimeout
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	var bo []record.BroadcasterOption
	if o.RetrySleep > 0 {
		bo = append(bo, record.WithSleepDuration(o.RetrySleep))
	}
	b := record.NewBroadcaster(bo...)
	return &Sink{
		o: o, queue: make(chan events.Event, o.QueueSize), broadcaster: b,
		recorder: b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: o.Component, Host: o.Host}),
		seen:     map[string]bool{}, recent: make([]string, dedupeWindow),
	}, nil
}

// Enqueue queues the events that concern a volume and go to Kubernetes
// (see kubeType). It never blocks and never fails: an event that finds
// the queue full is dropped and counted (outcome dropped). An event already
// queued once (the same sequence number or ID: a reporter's resend) is not
// queued again.
func (s *Sink) Enqueue(es ...events.Event) error {
	for _, e := range es {
		if e.Volume == "" || kubeType(e) == "" {
			continue
		}
		key := dedupeKey(e)
		if s.wasSeen(key) {
			continue
		}
		select {
		case s.queue <- e:
			s.o.Metrics.queued.Inc()
			s.markSeen(key)
		default:
			s.o.Metrics.events.WithLabelValues(OutcomeDropped).Inc()
			klog.V(2).InfoS("Kubernetes event queue full: event not recorded on the PVC (syslog has it)",
				"type", e.Type, "volume", e.Volume, "queueSize", s.o.QueueSize)
		}
	}
	return nil
}

// Run records queued events until ctx ends, then stops client-go's
// broadcaster (events it still retries are abandoned).
func (s *Sink) Run(ctx context.Context) {
	s.broadcaster.StartRecordingToSink(&countingWriter{
		EventSinkImpl: typedcorev1.EventSinkImpl{Interface: s.o.Client.Events("")}, m: s.o.Metrics})
	defer s.broadcaster.Shutdown()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-s.queue:
			s.o.Metrics.queued.Dec()
			s.o.Metrics.events.WithLabelValues(s.record(ctx, e)).Inc()
		}
	}
}

// record finds the event's PV and PVC and hands the event to the recorder
// for each, returning the outcome.
func (s *Sink) record(ctx context.Context, e events.Event) string {
	ctx, cancel := context.WithTimeout(ctx, s.o.LookupTimeout)
	defer cancel()
	v, err := s.o.Volumes.GetVolume(ctx, e.Volume)
	if errors.Is(err, store.ErrNotFound) {
		klog.V(4).InfoS("Event of a volume the registry no longer has: not recorded in Kubernetes", "type", e.Type, "volume", e.Volume)
		return OutcomeNoClaim
	}
	if err != nil {
		klog.ErrorS(err, "Reading the volume for its Kubernetes event", "type", e.Type, "volume", e.Volume)
		return OutcomeFailed
	}
	objs, err := resolve(ctx, s.o.Client, s.o.Driver, e.Volume, v.Parameters.Metadata)
	if errors.Is(err, ErrNoClaim) {
		klog.V(4).InfoS("No Kubernetes object for the event", "type", e.Type, "volume", e.Volume, "reason", err.Error())
		return OutcomeNoClaim
	}
	if err != nil {
		klog.ErrorS(err, "Finding the PersistentVolume for a Kubernetes event", "type", e.Type, "volume", e.Volume)
		return OutcomeFailed
	}
	t, r, msg := kubeType(e), reason(e), message(e)
	if objs.PVC != nil {
		s.recorder.Event(objs.PVC, t, r, msg)
	}
	s.recorder.Event(objs.PV, t, r, msg)
	klog.V(3).InfoS("Recorded Kubernetes event", "type", t, "reason", r, "volume", e.Volume, "objects", objs.String())
	return OutcomeRecorded
}

// dedupeKey identifies a recorded event: its sequence number in the
// registry, else the reporter's ID; "" (never deduplicated) without both.
func dedupeKey(e events.Event) string {
	switch {
	case e.Seq != 0:
		return "seq:" + strconv.FormatUint(e.Seq, 10)
	case e.ID != "":
		return "id:" + e.ID
	}
	return ""
}

func (s *Sink) wasSeen(key string) bool {
	if key == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[key]
}

func (s *Sink) markSeen(key string) {
	if key == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.recent[s.next]; old != "" {
		delete(s.seen, old)
	}
	s.recent[s.next] = key
	s.next = (s.next + 1) % len(s.recent)
	s.seen[key] = true
}

// countingWriter is the API server's event endpoint, counting each write.
type countingWriter struct {
	typedcorev1.EventSinkImpl
	m *Metrics
}

func (w *countingWriter) Create(e *corev1.Event) (*corev1.Event, error) {
	return w.count(w.EventSinkImpl.Create(e))
}

func (w *countingWriter) Update(e *corev1.Event) (*corev1.Event, error) {
	return w.count(w.EventSinkImpl.Update(e))
}

func (w *countingWriter) Patch(e *corev1.Event, data []byte) (*corev1.Event, error) {
	return w.count(w.EventSinkImpl.Patch(e, data))
}

func (w *countingWriter) count(e *corev1.Event, err error) (*corev1.Event, error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	w.m.writes.WithLabelValues(result).Inc()
	return e, err
}

var _ record.EventSink = (*countingWriter)(nil)

// String is for logs.
func (o objects) String() string {
	if o.PVC == nil {
		return fmt.Sprintf("pv/%s", o.PV.Name)
	}
	return fmt.Sprintf("pv/%s pvc/%s/%s", o.PV.Name, o.PVC.Namespace, o.PVC.Name)
}
