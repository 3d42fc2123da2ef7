package provisioner

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// Metrics are the provisioner's event-driven Prometheus metrics: its gRPC
// API (requests by method and code, latency) and the events it accepts.
// The registry's content, the storage nodes and syslog forwarding are read
// at scrape time instead (RegistryCollector, ForwarderCollector), so they
// are exact whenever they are looked at and cost nothing in between.
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	events   *prometheus.CounterVec
}

// NewMetrics registers the metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nvmirror_provisioner_grpc_requests_total",
			Help: "gRPC calls handled, by service, method and status code (calls refused for a missing or wrong token count as Unauthenticated)."},
			[]string{"service", "method", "code"}),
		// From a millisecond (GetVolume on bolt) to over a minute
		// (CreateVolume waiting on agents near their timeouts).
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nvmirror_provisioner_grpc_request_duration_seconds",
			Help:    "Duration of unary gRPC calls, by service and method.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)}, []string{"service", "method"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nvmirror_provisioner_events_total",
			Help: "Events and audit records accepted from nodes and controllers, by type (a reporter's resend counts again)."},
			[]string{"type"}),
	}
	reg.MustRegister(m.requests, m.latency, m.events)
	return m
}

// splitMethod turns "/pkg.Service/Method" into its service and method.
func splitMethod(full string) (service, method string) {
	service, method, ok := strings.Cut(strings.TrimPrefix(full, "/"), "/")
	if !ok {
		return "unknown", full
	}
	return service, method
}

// UnaryServerInterceptor counts and times each call. Chain it first, ahead
// of the token check, so refused calls are counted too: a client with a
// stale token shows up as Unauthenticated here rather than nowhere.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		service, method := splitMethod(info.FullMethod)
		m.latency.WithLabelValues(service, method).Observe(time.Since(start).Seconds())
		m.requests.WithLabelValues(service, method, status.Code(err).String()).Inc()
		return resp, err
	}
}

// StreamServerInterceptor counts streaming calls (the health service's
// Watch) when they end. Their duration is how long a client watched, not a
// latency, so it is not observed.
func (m *Metrics) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srv, ss)
		service, method := splitMethod(info.FullMethod)
		m.requests.WithLabelValues(service, method, status.Code(err).String()).Inc()
		return err
	}
}

// CountEvents returns an EventSink that counts the events RecordEvents
// accepted and hands them on to next (the syslog forwarder; nil when
// forwarding is off).
func (m *Metrics) CountEvents(next EventSink) EventSink {
	return &countingSink{m: m, next: next}
}

type countingSink struct {
	m    *Metrics
	next EventSink
}

func (c *countingSink) Enqueue(es ...events.Event) error {
	if c.next != nil {
		if err := c.next.Enqueue(es...); err != nil {
			// RecordEvents fails and the reporter resends: count then.
			return err
		}
	}
	for _, e := range es {
		c.m.events.WithLabelValues(string(e.Type)).Inc()
	}
	return nil
}

// Label values, listed so that every state is exported (as 0) even when
// nothing is in it: a dashboard or alert on "deleting > 0" needs the series
// to exist.
var (
	volumeStates  = []store.VolumeState{store.VolumeCreating, store.VolumeReady, store.VolumeDeleting}
	replicaStates = []store.ReplicaState{store.ReplicaActive, store.ReplicaDeleting, store.ReplicaDeleted, store.ReplicaRemoved}
)

var (
	descLeader = prometheus.NewDesc("nvmirror_provisioner_leader",
		"1 while this provisioner leads (bolt: always; etcd: while elected), else 0.", nil, nil)
	descRegistryUp = prometheus.NewDesc("nvmirror_provisioner_registry_up",
		"1 if this scrape could read the registry (bolt file or etcd), else 0 (and the volume metrics are absent).", nil, nil)
	descVolumes = prometheus.NewDesc("nvmirror_provisioner_volumes",
		"Volumes in the registry by state (creating, ready, deleting).", []string{"state"}, nil)
	descVolumesDegraded = prometheus.NewDesc("nvmirror_provisioner_volumes_degraded",
		"Volumes a node reported degraded (VolumeDegraded) and not healed since.", nil, nil)
	descReplicas = prometheus.NewDesc("nvmirror_provisioner_replicas",
		"Replicas in the registry by state (active, deleting, deleted, removed).", []string{"state"}, nil)
	descOfflineRepairs = prometheus.NewDesc("nvmirror_provisioner_offline_repairs",
		"Volumes published to no host that a storage node is repairing offline now.", nil, nil)
	descPendingDelete = prometheus.NewDesc("nvmirror_provisioner_replicas_pending_delete",
		"Replica copies still to be deleted from their storage node (the sweeper deletes them when the node is reachable).", nil, nil)
	descNodes = prometheus.NewDesc("nvmirror_provisioner_storage_nodes",
		"Registered storage nodes by whether their agent answered the last survey (reachable, unreachable).", []string{"state"}, nil)
	descNodeUp = prometheus.NewDesc("nvmirror_provisioner_storage_node_up",
		"1 if the storage node's agent answered the last survey, else 0.", []string{"storage_node"}, nil)
	descNodeBytes = prometheus.NewDesc("nvmirror_provisioner_storage_node_bytes",
		"Pool space of a reachable storage node as its agent reports it (total, available, provisioned).", []string{"storage_node", "kind"}, nil)
	descMoves = prometheus.NewDesc("nvmirror_provisioner_replica_moves",
		"Live replica moves not finished yet (a new replica filling beside the one it moves).", nil, nil)
	descNodeCordoned = prometheus.NewDesc("nvmirror_provisioner_storage_node_cordoned",
		"1 while no new replica is placed on the storage node (cordoned or draining).", []string{"storage_node"}, nil)
	descDrainLeft = prometheus.NewDesc("nvmirror_provisioner_drain_replicas_left",
		"Active replicas still on a draining storage node.", []string{"storage_node"}, nil)
	descDrainBytesLeft = prometheus.NewDesc("nvmirror_provisioner_drain_bytes_left",
		"Size of the volumes whose replicas are still on a draining storage node: what is left to copy.", []string{"storage_node"}, nil)
	descNodeReplicas = prometheus.NewDesc("nvmirror_provisioner_storage_node_replicas",
		"Replicas a reachable storage node's agent holds.", []string{"storage_node"}, nil)
)

// StorageNodeSurvey returns every registered storage node with what its
// agent reported just now (Service.ListStorageNodes).
type StorageNodeSurvey func(ctx context.Context) ([]StorageNodeStatus, error)

// DefaultSurveyMaxAge is how long a storage node survey is reused by later
// scrapes. Two Prometheus servers (or a person with curl) scraping at once
// must not double the calls every agent answers.
const DefaultSurveyMaxAge = 10 * time.Second

// RegistryCollector reads the registry and surveys the storage nodes at
// scrape time. A failed read makes the scrape report registry_up 0 rather
// than fail: the other metrics of the process stay visible.
type RegistryCollector struct {
	store   store.Store
	survey  StorageNodeSurvey
	timeout time.Duration
	maxAge  time.Duration
	now     func() time.Time

	mu         sync.Mutex // one survey at a time; guards the cache
	surveyedAt time.Time
	nodes      []StorageNodeStatus
	surveyErr  error
}

// NewRegistryCollector returns a collector over st and survey (nil: no
// storage node metrics). Each scrape is bounded by timeout (the survey's
// own per-agent bound still applies inside it).
func NewRegistryCollector(st store.Store, survey StorageNodeSurvey, timeout time.Duration) *RegistryCollector {
	return &RegistryCollector{store: st, survey: survey, timeout: timeout, maxAge: DefaultSurveyMaxAge, now: time.Now}
}

// Describe implements prometheus.Collector.
func (c *RegistryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLeader, descRegistryUp, descVolumes, descVolumesDegraded, descOfflineRepairs, descReplicas,
		descPendingDelete, descNodes, descNodeUp, descNodeBytes, descNodeReplicas, descMoves, descNodeCordoned, descDrainLeft, descDrainBytesLeft} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *RegistryCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descLeader, boolFloat(c.store.IsLeader()))

	vols, err := c.store.ListVolumes(ctx)
	gauge(descRegistryUp, boolFloat(err == nil))
	if err == nil {
		byState := map[store.VolumeState]int{}
		replicas := map[store.ReplicaState]int{}
		degraded, pending, repairing := 0, 0, 0
		for _, v := range vols {
			byState[v.State]++
			if !v.DegradedSince.IsZero() {
				degraded++
			}
			if v.Repair != nil {
				repairing++
			}
			for _, r := range v.Replicas {
				replicas[r.State]++
				if r.PendingDelete {
					pending++
				}
			}
		}
		for _, s := range volumeStates {
			gauge(descVolumes, float64(byState[s]), string(s))
		}
		for _, s := range replicaStates {
			gauge(descReplicas, float64(replicas[s]), string(s))
		}
		gauge(descVolumesDegraded, float64(degraded))
		gauge(descOfflineRepairs, float64(repairing))
		gauge(descPendingDelete, float64(pending))
		c.collectMaintenance(ctx, vols, gauge)
	}

	if c.survey == nil {
		return
	}
	nodes, err := c.surveyed(ctx)
	if err != nil {
		return
	}
	up := 0
	for _, n := range nodes {
		gauge(descNodeUp, boolFloat(n.Reachable), n.ID)
		if !n.Reachable {
			continue
		}
		up++
		gauge(descNodeBytes, float64(n.TotalBytes), n.ID, "total")
		gauge(descNodeBytes, float64(n.AvailableBytes), n.ID, "available")
		gauge(descNodeBytes, float64(n.ProvisionedBytes), n.ID, "provisioned")
		gauge(descNodeReplicas, float64(n.Replicas), n.ID)
	}
	gauge(descNodes, float64(up), "reachable")
	gauge(descNodes, float64(len(nodes)-up), "unreachable")
}

// collectMaintenance exports the moves in flight, the cordons and what each
// drain has left, from the registry (so a restart loses nothing).
func (c *RegistryCollector) collectMaintenance(ctx context.Context, vols []*store.Volume, gauge func(*prometheus.Desc, float64, ...string)) {
	moves := 0
	left, bytesLeft := map[string]int{}, map[string]int64{}
	for _, v := range vols {
		moves += movesInFlight(v)
		for _, r := range v.Replicas {
			if r.State == store.ReplicaActive {
				left[r.StorageNode]++
				bytesLeft[r.StorageNode] += v.SizeBytes
			}
		}
	}
	gauge(descMoves, float64(moves))
	nodes, err := c.store.ListStorageNodes(ctx)
	if err != nil {
		return
	}
	for _, n := range nodes {
		gauge(descNodeCordoned, boolFloat(n.Cordoned || n.Draining), n.ID)
		if n.Draining {
			gauge(descDrainLeft, float64(left[n.ID]), n.ID)
			gauge(descDrainBytesLeft, float64(bytesLeft[n.ID]), n.ID)
		}
	}
}

// surveyed returns the last survey if it is recent enough, else runs one.
func (c *RegistryCollector) surveyed(ctx context.Context) ([]StorageNodeStatus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.surveyedAt.IsZero() && c.now().Sub(c.surveyedAt) < c.maxAge {
		return c.nodes, c.surveyErr
	}
	c.nodes, c.surveyErr = c.survey(ctx)
	c.surveyedAt = c.now()
	return c.nodes, c.surveyErr
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var (
	descSyslogForwarded = prometheus.NewDesc("nvmirror_provisioner_syslog_forwarded_total",
		"Syslog messages whose delivery the server confirmed (TCP/TLS: acknowledged bytes; UDP: sent), since the process started.", nil, nil)
	descSyslogDropped = prometheus.NewDesc("nvmirror_provisioner_syslog_dropped_total",
		"Syslog messages dropped because the queue was full (--syslog-queue-limit), ever: the count is kept in the queue file across restarts.", nil, nil)
	descSyslogTruncated = prometheus.NewDesc("nvmirror_provisioner_syslog_truncated_total",
		"Syslog messages longer than the maximum message size (8 KiB) sent truncated, since the process started; only messages queued by a version without event size limits can be.", nil, nil)
	descSyslogDiscarded = prometheus.NewDesc("nvmirror_provisioner_syslog_discarded_total",
		"Syslog datagrams the kernel refused as too large (EMSGSIZE), set aside unsent so the queue moves on, since the process started.", nil, nil)
	descSyslogQueued = prometheus.NewDesc("nvmirror_provisioner_syslog_queue_length",
		"Syslog messages waiting for confirmed delivery.", nil, nil)
	descSyslogConnected = prometheus.NewDesc("nvmirror_provisioner_syslog_connected",
		"1 while the forwarder holds a connection to the syslog server, else 0.", nil, nil)
	descSyslogReconnects = prometheus.NewDesc("nvmirror_provisioner_syslog_reconnects_total",
		"Connections made to the syslog server since the process started (the first included; more mean connections were lost and re-dialled).", nil, nil)
)

// ForwarderCollector exports the syslog forwarder's statistics, read once
// per scrape (reading them reads the queue file).
type ForwarderCollector struct {
	stats func() events.ForwarderStats
}

// NewForwarderCollector returns a collector over stats
// (events.Forwarder.Stats).
func NewForwarderCollector(stats func() events.ForwarderStats) *ForwarderCollector {
	return &ForwarderCollector{stats: stats}
}

// Describe implements prometheus.Collector.
func (c *ForwarderCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSyslogForwarded, descSyslogDropped, descSyslogTruncated, descSyslogDiscarded, descSyslogQueued, descSyslogConnected, descSyslogReconnects} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *ForwarderCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(descSyslogForwarded, prometheus.CounterValue, float64(s.Sent))
	ch <- prometheus.MustNewConstMetric(descSyslogDropped, prometheus.CounterValue, float64(s.Dropped))
	ch <- prometheus.MustNewConstMetric(descSyslogTruncated, prometheus.CounterValue, float64(s.Truncated))
	ch <- prometheus.MustNewConstMetric(descSyslogDiscarded, prometheus.CounterValue, float64(s.Discarded))
	ch <- prometheus.MustNewConstMetric(descSyslogQueued, prometheus.GaugeValue, float64(s.Queued))
	ch <- prometheus.MustNewConstMetric(descSyslogConnected, prometheus.GaugeValue, boolFloat(s.Connected))
	ch <- prometheus.MustNewConstMetric(descSyslogReconnects, prometheus.CounterValue, float64(s.Reconnects))
}

var (
	descOrphans = prometheus.NewDesc("nvmirror_provisioner_orphans",
		"Replicas storage nodes hold that no volume owns, as the leader's last orphan scan found them, by class (released, unknown, conflict).", []string{"class"}, nil)
	descOrphansFound = prometheus.NewDesc("nvmirror_provisioner_orphans_found_total",
		"Orphan replicas seen for the first time by this process's scans, by class, since the process started.", []string{"class"}, nil)
	descOrphansReclaimed = prometheus.NewDesc("nvmirror_provisioner_orphans_reclaimed_total",
		"Orphan replicas deleted from their storage node, by trigger (grace: by the scan after --orphan-grace; admin: nvmirrorctl orphans reclaim), since the process started.", []string{"trigger"}, nil)
	descOrphanReclaimFailures = prometheus.NewDesc("nvmirror_provisioner_orphan_reclaim_failures_total",
		"Orphan reclaims that failed or were refused by the checks before deletion (the scan retries), since the process started.", nil, nil)
	descCreatesRolledBack = prometheus.NewDesc("nvmirror_provisioner_creates_rolled_back_total",
		"Volumes left creating past --creating-timeout that were rolled back, since the process started.", nil, nil)
)

// OrphanCollector exports the orphan scan's and the create rollbacks'
// counters (Service.OrphanStats), read at scrape time.
type OrphanCollector struct {
	stats func() OrphanStats
}

// NewOrphanCollector returns a collector over stats.
func NewOrphanCollector(stats func() OrphanStats) *OrphanCollector {
	return &OrphanCollector{stats: stats}
}

// Describe implements prometheus.Collector.
func (c *OrphanCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOrphans, descOrphansFound, descOrphansReclaimed, descOrphanReclaimFailures, descCreatesRolledBack} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *OrphanCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	for _, class := range OrphanClasses {
		ch <- prometheus.MustNewConstMetric(descOrphans, prometheus.GaugeValue, float64(s.Known[class]), string(class))
		ch <- prometheus.MustNewConstMetric(descOrphansFound, prometheus.CounterValue, float64(s.Found[class]), string(class))
	}
	ch <- prometheus.MustNewConstMetric(descOrphansReclaimed, prometheus.CounterValue, float64(s.ReclaimedAutomatic), "grace")
	ch <- prometheus.MustNewConstMetric(descOrphansReclaimed, prometheus.CounterValue, float64(s.ReclaimedAdmin), "admin")
	ch <- prometheus.MustNewConstMetric(descOrphanReclaimFailures, prometheus.CounterValue, float64(s.ReclaimFailures))
	ch <- prometheus.MustNewConstMetric(descCreatesRolledBack, prometheus.CounterValue, float64(s.RolledBack))
}
