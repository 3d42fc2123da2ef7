package healer

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
)

// Health of a volume as the healer sees it; also what the driver's
// VolumeCondition reports.
type Health string

const (
	HealthHealthy Health = "healthy"
	// HealthDegraded: a replica of the configuration does not serve.
	HealthDegraded Health = "degraded"
	// HealthSyncing: degraded, and md is resynchronising a replica.
	HealthSyncing Health = "syncing"
	// HealthUnavailable: the array does not run (or the only replica of a
	// single-replica volume is not connected).
	HealthUnavailable Health = "unavailable"
)

var allHealth = [...]Health{HealthHealthy, HealthDegraded, HealthSyncing, HealthUnavailable}

// VolumeStatus is one volume's state after the last cycle.
type VolumeStatus struct {
	VolumeID      string
	Health        Health
	DegradedSince time.Time
	// SyncProgress is the running sync's fraction done (0..1), -1 when none.
	SyncProgress float64
	// Missing are the replicas not serving.
	Missing []string
	// MissingReplicas details Missing: storage node and down clock.
	MissingReplicas []MissingReplica
}

// MissingReplica is one replica of a degraded volume that does not serve.
type MissingReplica struct {
	ID, StorageNode string
	// DownSince is zero for a replica that is syncing (not down).
	DownSince time.Time
}

// volumeStatus derives a volume's status from the cycle's observation and
// the memory Decide returned.
func volumeStatus(v VolumeObservation, vm VolumeMemory) VolumeStatus {
	s := VolumeStatus{VolumeID: v.VolumeID, Health: HealthHealthy, DegradedSince: vm.DegradedSince, SyncProgress: -1, Missing: vm.Named}
	for _, id := range vm.Named {
		rm := vm.Replicas[id]
		s.MissingReplicas = append(s.MissingReplicas, MissingReplica{ID: id, StorageNode: rm.StorageNode, DownSince: rm.DownSince})
	}
	if v.MDUUID == "" {
		for _, cs := range v.Controllers {
			if linkOf(cs) == linkLive {
				return s
			}
		}
		s.Health = HealthUnavailable
		return s
	}
	a := v.Array
	switch {
	case a == nil || a.State == "broken" || a.State == "inactive" || a.State == "clear":
		s.Health = HealthUnavailable
	case vm.Sync.Active:
		s.Health = HealthSyncing
	case !vm.DegradedSince.IsZero():
		s.Health = HealthDegraded
	}
	if a != nil && a.SyncTotal > 0 {
		s.SyncProgress = float64(a.SyncDone) / float64(a.SyncTotal)
	}
	return s
}

// Metrics are the healer's Prometheus metrics.
type Metrics struct {
	volumes         *prometheus.GaugeVec
	members         *prometheus.GaugeVec
	syncProgress    *prometheus.GaugeVec
	syncRate        *prometheus.GaugeVec
	rebuildLimit    *prometheus.GaugeVec
	degradedSeconds *prometheus.GaugeVec
	repairs         *prometheus.CounterVec
	cycle           prometheus.Histogram
	queued          prometheus.Gauge

	// last is each volume's contribution as the last update set it.
	last map[string]volumeGauges
}

// NewMetrics registers the metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		volumes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nvmirror_node_volumes",
			Help: "Volumes staged on this node by health (healthy, degraded, syncing, unavailable)."}, []string{"health"}),
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nvmirror_node_md_members",
			Help: "md members of staged volumes by state (in_sync, syncing, faulty, link_down: in md but its NVMe controller is not live)."}, []string{"state"}),
		syncProgress: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nvmirror_node_volume_sync_progress_ratio",
			Help: "Fraction done of the running resync of a volume's array."}, []string{"volume"}),
		syncRate: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nvmirror_node_volume_sync_rate_bytes_per_second",
			Help: "Rate of the running resync of a volume's array (md/sync_speed), while one runs."}, []string{"volume"}),
		rebuildLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nvmirror_node_volume_rebuild_limit_bytes_per_second",
			Help: "The rebuild rate limit of a volume's array (md/sync_speed_max), its own or the system's."}, []string{"volume"}),
		degradedSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nvmirror_node_volume_degraded_seconds",
			Help: "Seconds since the volume became degraded (absent when whole)."}, []string{"volume"}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nvmirror_node_repairs_total",
			Help: "Healer repairs by kind (fail, join, retire, replace, record-sync, set-rebuild-rate) and outcome (ok, error, skipped)."}, []string{"kind", "outcome"}),
		cycle: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "nvmirror_node_heal_cycle_duration_seconds",
			Help: "Duration of one healer cycle (observe, decide, act, persist).", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10)}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nvmirror_node_events_queued",
			Help: "Events waiting for delivery to the provisioner."}),
	}
	reg.MustRegister(m.volumes, m.members, m.syncProgress, m.syncRate, m.rebuildLimit, m.degradedSeconds, m.repairs, m.cycle, m.queued)
	return m
}

// volumeGauges is what one volume contributes to the gauges, as last set.
type volumeGauges struct {
	health Health
	// syncProgress is -1 when no sync runs (no series).
	syncProgress float64
	// degradedSince is zero when the volume is whole (no series).
	degradedSince time.Time
	// syncRate is the rebuild rate while one runs (hasSyncRate); rebuild
	// limit is set for every volume with an array (hasArray).
	syncRate, rebuildLimit float64
	hasSyncRate, hasArray  bool
	// members counts the array's members by memberStates.
	members [len(memberStates)]int
}

// memberStates are the label values of nvmirror_node_md_members.
var memberStates = [...]string{"in_sync", "syncing", "faulty", "link_down"}

const (
	gaugeInSync = iota
	gaugeSyncing
	gaugeFaulty
	gaugeLinkDown
)

// update sets the gauges from a cycle. It sets a volume's series only when
// its value changed and deletes those of volumes (or syncs, degraded
// episodes) that ended: resetting every vector and creating every series
// again each cycle cost more than the rest of a quiet cycle's bookkeeping
// at a thousand volumes. carried are the volumes the cycle carried over
// unchanged (same observation, same memory): their contribution is the
// last one. It is called by one cycle at a time.
func (m *Metrics) update(obs Observation, statuses map[string]VolumeStatus, now time.Time, carried map[string]bool) {
	if m == nil {
		return
	}
	if m.last == nil {
		m.last = map[string]volumeGauges{}
	}
	next := make(map[string]volumeGauges, len(obs.Volumes))
	var counts [len(allHealth)]int
	var members [len(memberStates)]int
	for _, v := range obs.Volumes {
		old, had := m.last[v.VolumeID]
		g, ok := old, had && carried[v.VolumeID]
		if !ok {
			g = gaugesOf(v, statuses[v.VolumeID])
		}
		next[v.VolumeID] = g
		m.set(v.VolumeID, old, had, g, now)
		for i, h := range allHealth {
			if g.health == h {
				counts[i]++
			}
		}
		for i, n := range g.members {
			members[i] += n
		}
	}
	for id, old := range m.last {
		if _, ok := next[id]; !ok {
			m.set(id, old, true, volumeGauges{syncProgress: -1}, now)
		}
	}
	m.last = next
	for i, h := range allHealth {
		m.volumes.WithLabelValues(string(h)).Set(float64(counts[i]))
	}
	for i, k := range memberStates {
		m.members.WithLabelValues(k).Set(float64(members[i]))
	}
}

// set brings a volume's series from old (had: they were set) to g.
func (m *Metrics) set(id string, old volumeGauges, had bool, g volumeGauges, now time.Time) {
	switch {
	case g.syncProgress >= 0 && (!had || old.syncProgress != g.syncProgress):
		m.syncProgress.WithLabelValues(id).Set(g.syncProgress)
	case g.syncProgress < 0 && had && old.syncProgress >= 0:
		m.syncProgress.DeleteLabelValues(id)
	}
	switch {
	case !g.degradedSince.IsZero():
		// Moves with the clock: set at every cycle.
		m.degradedSeconds.WithLabelValues(id).Set(now.Sub(g.degradedSince).Seconds())
	case had && !old.degradedSince.IsZero():
		m.degradedSeconds.DeleteLabelValues(id)
	}
	switch {
	case g.hasSyncRate && (!had || !old.hasSyncRate || old.syncRate != g.syncRate):
		m.syncRate.WithLabelValues(id).Set(g.syncRate)
	case !g.hasSyncRate && had && old.hasSyncRate:
		m.syncRate.DeleteLabelValues(id)
	}
	switch {
	case g.hasArray && (!had || !old.hasArray || old.rebuildLimit != g.rebuildLimit):
		m.rebuildLimit.WithLabelValues(id).Set(g.rebuildLimit)
	case !g.hasArray && had && old.hasArray:
		m.rebuildLimit.DeleteLabelValues(id)
	}
}

// gaugesOf is a volume's contribution to the gauges.
func gaugesOf(v VolumeObservation, s VolumeStatus) volumeGauges {
	g := volumeGauges{health: s.Health, syncProgress: s.SyncProgress, degradedSince: s.DegradedSince}
	if v.Array == nil {
		return g
	}
	g.hasArray, g.rebuildLimit = true, float64(v.Array.SyncSpeedMaxKiB)*1024
	if rebuilding(v.Array) {
		g.hasSyncRate, g.syncRate = true, float64(v.Array.SyncSpeedKiB)*1024
	}
	live := make(map[string]bool, len(v.StagedReplicas))
	for _, r := range v.StagedReplicas {
		live[normalizeID(r.NamespaceUUID)] = linkOf(v.Controllers[r.NQN]) == linkLive
	}
	for _, mem := range v.Array.Members {
		switch {
		case mem.Faulty:
			g.members[gaugeFaulty]++
		case !memberLive(mem, live):
			g.members[gaugeLinkDown]++
		case mem.InSync:
			g.members[gaugeInSync]++
		default:
			g.members[gaugeSyncing]++
		}
	}
	return g
}

func memberLive(m MemberObservation, live map[string]bool) bool {
	for _, id := range m.Identities {
		if l, ok := live[normalizeID(id)]; ok {
			return l
		}
	}
	return len(m.Identities) > 0 // device present but not one of ours: count as live
}

func (m *Metrics) repair(o Outcome, skipped bool) {
	if m == nil {
		return
	}
	outcome := "ok"
	switch {
	case skipped:
		outcome = "skipped"
	case o.Err != nil:
		outcome = "error"
	}
	m.repairs.WithLabelValues(string(o.Action.Kind), outcome).Inc()
}

func (m *Metrics) cycleDone(d time.Duration, queued int) {
	if m == nil {
		return
	}
	m.cycle.Observe(d.Seconds())
	m.queued.Set(float64(queued))
}

// ServeMetrics serves g on addr under /metrics until ctx ends
// (--metrics-address; "" serves nothing).
func ServeMetrics(ctx context.Context, addr string, g prometheus.Gatherer) error {
	if addr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	klog.InfoS("Serving metrics", "address", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
