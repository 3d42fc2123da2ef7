package kubeevents

import "github.com/prometheus/client_golang/prometheus"

// Outcomes of an nvmirror event in the Kubernetes sink (the outcome label).
const (
	// OutcomeRecorded: handed to client-go's recorder for the PVC and PV
	// (its writes are counted by nvmirror_provisioner_kube_event_writes_total).
	OutcomeRecorded = "recorded"
	// OutcomeNoClaim: the volume has no PV to record on (ErrNoClaim).
	OutcomeNoClaim = "no_claim"
	// OutcomeFailed: the registry or the API server could not be read.
	OutcomeFailed = "failed"
	// OutcomeDropped: the queue was full (the API server slow or away).
	OutcomeDropped = "dropped"
)

// Metrics are the Kubernetes event sink's counters.
type Metrics struct {
	events *prometheus.CounterVec
	writes *prometheus.CounterVec
	queued prometheus.Gauge
}

// NewMetrics registers the sink's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nvmirror_provisioner_kube_events_total",
			Help: "nvmirror events about a volume taken by the Kubernetes event sink, by outcome: recorded (on the PVC and PV), no_claim (no PV for the volume), failed (registry or API server unreadable), dropped (queue full).",
		}, []string{"outcome"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nvmirror_provisioner_kube_event_writes_total",
			Help: "Writes of Kubernetes events (creates, and patches of repeated events) to the API server, by result (ok, error); client-go retries an error up to 12 times.",
		}, []string{"result"}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nvmirror_provisioner_kube_events_queued",
			Help: "nvmirror events waiting in the Kubernetes event sink's queue.",
		}),
	}
	for _, o := range []string{OutcomeRecorded, OutcomeNoClaim, OutcomeFailed, OutcomeDropped} {
		m.events.WithLabelValues(o)
	}
	for _, r := range []string{"ok", "error"} {
		m.writes.WithLabelValues(r)
	}
	reg.MustRegister(m.events, m.writes, m.queued)
	return m
}
