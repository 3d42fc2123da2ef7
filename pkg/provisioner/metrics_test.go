package provisioner_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// gathered returns every sample of reg as `name{k="v",...}` → value, labels
// sorted; histograms appear as name_count and name_sum.
func gathered(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			key := func(suffix string) string {
				if len(labels) == 0 {
					return mf.GetName() + suffix
				}
				return mf.GetName() + suffix + "{" + strings.Join(labels, ",") + "}"
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key("")] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key("")] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key("_count")] = float64(m.GetHistogram().GetSampleCount())
				out[key("_sum")] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

func wantSamples(t *testing.T, got map[string]float64, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s missing", k)
		} else if g != v {
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
}

func TestGRPCMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := provisioner.NewMetrics(reg)
	unary := m.UnaryServerInterceptor()
	call := func(method string, err error) {
		_, _ = unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) {
			return nil, err
		})
	}
	call("/nvmirror.provisioner.v1.Provisioner/CreateVolume", nil)
	call("/nvmirror.provisioner.v1.Provisioner/CreateVolume", nil)
	call("/nvmirror.provisioner.v1.Provisioner/CreateVolume", status.Error(codes.ResourceExhausted, "no room"))
	call("/nvmirror.provisioner.v1.Provisioner/GetVolume", status.Error(codes.Unauthenticated, "bad token"))
	// A plain error is what gRPC reports as Unknown.
	call("/nvmirror.provisioner.v1.Provisioner/GetVolume", errors.New("boom"))
	stream := m.StreamServerInterceptor()
	_ = stream(nil, nil, &grpc.StreamServerInfo{FullMethod: "/grpc.health.v1.Health/Watch"}, func(any, grpc.ServerStream) error {
		return status.Error(codes.Canceled, "client went away")
	})

	const p = `service="nvmirror.provisioner.v1.Provisioner"`
	wantSamples(t, gathered(t, reg), map[string]float64{
		`nvmirror_provisioner_grpc_requests_total{code="OK",method="CreateVolume",` + p + `}`:                      2,
		`nvmirror_provisioner_grpc_requests_total{code="ResourceExhausted",method="CreateVolume",` + p + `}`:       1,
		`nvmirror_provisioner_grpc_requests_total{code="Unauthenticated",method="GetVolume",` + p + `}`:            1,
		`nvmirror_provisioner_grpc_requests_total{code="Unknown",method="GetVolume",` + p + `}`:                    1,
		`nvmirror_provisioner_grpc_requests_total{code="Canceled",method="Watch",service="grpc.health.v1.Health"}`: 1,
		`nvmirror_provisioner_grpc_request_duration_seconds_count{method="CreateVolume",` + p + `}`:                3,
		`nvmirror_provisioner_grpc_request_duration_seconds_count{method="GetVolume",` + p + `}`:                   2,
	})
	if _, ok := gathered(t, reg)[`nvmirror_provisioner_grpc_request_duration_seconds_count{method="Watch",service="grpc.health.v1.Health"}`]; ok {
		t.Error("a stream's lifetime was observed as a latency")
	}
}

// failingSink refuses every batch, as a full disk under the syslog queue
// would.
type failingSink struct{}

func (failingSink) Enqueue(...events.Event) error { return errors.New("disk full") }

func TestEventMetricsCountAcceptedEvents(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := provisioner.NewMetrics(reg)
	// Through the real service: RecordEvents hands what it stored to the
	// sink, and the counting sink passes it on to the forwarder's stand-in.
	forwarded := &sink{}
	e := newEnvOpts(t, threeRacks(), provisioner.Options{Events: m.CountEvents(forwarded)})
	now := time.Now()
	if _, err := e.svc.RecordEvents(e.ctx,
		events.Event{ID: "d1", Time: now, Type: events.VolumeDegraded, Volume: "v1", Node: "n1", Replicas: []string{"r1"}},
		events.Event{ID: "a1", Time: now, Type: events.Audit, Volume: "v1", Node: "ctrl", Method: "CreateVolume", Outcome: "OK"},
	); err != nil {
		t.Fatal(err)
	}
	// A resend is stored once but forwarded (and counted) again.
	if _, err := e.svc.RecordEvents(e.ctx, events.Event{ID: "d1", Time: now, Type: events.VolumeDegraded, Volume: "v1", Node: "n1", Replicas: []string{"r1"}}); err != nil {
		t.Fatal(err)
	}
	if len(forwarded.got) != 3 {
		t.Errorf("forwarded %d events, want 3", len(forwarded.got))
	}
	wantSamples(t, gathered(t, reg), map[string]float64{
		`nvmirror_provisioner_events_total{type="VolumeDegraded"}`: 2,
		`nvmirror_provisioner_events_total{type="Audit"}`:          1,
	})

	// Without forwarding (nil next) events are still counted.
	reg2 := prometheus.NewRegistry()
	m2 := provisioner.NewMetrics(reg2)
	if err := m2.CountEvents(nil).Enqueue(events.Event{Type: events.VolumeHealed}); err != nil {
		t.Fatal(err)
	}
	// A batch the forwarder refuses fails RecordEvents; the reporter resends
	// it, and it is counted then, not now.
	if err := m2.CountEvents(failingSink{}).Enqueue(events.Event{Type: events.VolumeHealed}); err == nil {
		t.Fatal("the forwarder's error was swallowed")
	}
	wantSamples(t, gathered(t, reg2), map[string]float64{`nvmirror_provisioner_events_total{type="VolumeHealed"}`: 1})
}

func TestRegistryCollector(t *testing.T) {
	e := newEnv(t, threeRacks())
	// Two ready volumes (5 active replicas) ...
	e.create(t, "pvc-a", gib, map[string]string{"numReplicas": "3"})
	v2 := e.create(t, "pvc-b", gib, map[string]string{"numReplicas": "2"})
	// ... one being deleted with a replica left on a node that is down ...
	v3 := e.create(t, "pvc-c", gib, map[string]string{"numReplicas": "3"})
	down := v3.Replicas[0].StorageNode
	e.cluster.SetDown(down, true)
	if err := e.svc.DeleteVolume(e.ctx, v3.ID); err != nil {
		t.Fatal(err)
	}
	// ... and pvc-b reported degraded by its node.
	if _, err := e.svc.RecordEvents(e.ctx, events.Event{ID: "deg", Time: time.Now(), Type: events.VolumeDegraded, Volume: v2.ID, Node: "n1", Replicas: []string{v2.Replicas[0].ID}}); err != nil {
		t.Fatal(err)
	}

	// ... and pvc-a under an offline repair.
	v1, _ := e.store.GetVolumeByName(e.ctx, "pvc-a")
	if _, err := e.store.UpdateVolume(e.ctx, v1.ID, func(v *store.Volume) error {
		v.Repair = &store.OfflineRepair{ID: "rpr-1", StorageNode: "sn-1"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	rec, err := e.store.GetVolume(e.ctx, v3.ID)
	if err != nil {
		t.Fatal(err)
	}
	v3States := map[store.ReplicaState]float64{}
	for _, r := range rec.Replicas {
		v3States[r.State]++
	}

	surveys := 0
	survey := func(ctx context.Context) ([]provisioner.StorageNodeStatus, error) {
		surveys++
		return e.svc.ListStorageNodes(ctx)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(provisioner.NewRegistryCollector(e.store, survey, 5*time.Second))
	want := map[string]float64{
		`nvmirror_provisioner_leader`:                                       1,
		`nvmirror_provisioner_registry_up`:                                  1,
		`nvmirror_provisioner_volumes{state="ready"}`:                       2,
		`nvmirror_provisioner_volumes{state="deleting"}`:                    1,
		`nvmirror_provisioner_volumes{state="creating"}`:                    0,
		`nvmirror_provisioner_volumes_degraded`:                             1,
		`nvmirror_provisioner_offline_repairs`:                              1,
		`nvmirror_provisioner_replicas{state="active"}`:                     5,
		`nvmirror_provisioner_replicas{state="deleting"}`:                   v3States[store.ReplicaDeleting],
		`nvmirror_provisioner_replicas{state="deleted"}`:                    v3States[store.ReplicaDeleted],
		`nvmirror_provisioner_replicas{state="removed"}`:                    v3States[store.ReplicaRemoved],
		`nvmirror_provisioner_replicas_pending_delete`:                      1,
		`nvmirror_provisioner_storage_nodes{state="reachable"}`:             2,
		`nvmirror_provisioner_storage_nodes{state="unreachable"}`:           1,
		`nvmirror_provisioner_storage_node_up{storage_node="` + down + `"}`: 0,
	}
	onB := map[string]bool{}
	for _, r := range v2.Replicas {
		onB[r.StorageNode] = true
	}
	for _, n := range threeRacks() {
		if n.id == down {
			continue
		}
		want[`nvmirror_provisioner_storage_node_up{storage_node="`+n.id+`"}`] = 1
		want[`nvmirror_provisioner_storage_node_bytes{kind="total",storage_node="`+n.id+`"}`] = float64(n.gib * gib)
		// pvc-a has a replica on every node; pvc-b on two of them; pvc-c's
		// were deleted from the nodes that are up.
		replicas := 1.0
		if onB[n.id] {
			replicas++
		}
		want[`nvmirror_provisioner_storage_node_replicas{storage_node="`+n.id+`"}`] = replicas
	}
	got := gathered(t, reg)
	wantSamples(t, got, want)
	if _, ok := got[`nvmirror_provisioner_storage_node_bytes{kind="total",storage_node="`+down+`"}`]; ok {
		t.Error("capacity reported for an unreachable storage node")
	}
	if sum := v3States[store.ReplicaDeleting] + v3States[store.ReplicaDeleted] + v3States[store.ReplicaRemoved]; sum != float64(len(rec.Replicas)) || sum == 0 {
		t.Errorf("pvc-c's replicas in unexpected states: %v", v3States)
	}

	// A second scrape within DefaultSurveyMaxAge reuses the survey.
	gathered(t, reg)
	if surveys != 1 {
		t.Errorf("%d surveys for two scrapes in a row, want 1", surveys)
	}
}

// brokenStore fails every read, as an unreachable etcd does.
type brokenStore struct{ store.Store }

func (brokenStore) ListVolumes(context.Context) ([]*store.Volume, error) {
	return nil, errors.New("etcdserver: request timed out")
}
func (brokenStore) IsLeader() bool { return false }

func TestRegistryCollectorUnreachableRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(provisioner.NewRegistryCollector(brokenStore{}, func(context.Context) ([]provisioner.StorageNodeStatus, error) {
		return nil, errors.New("list storage nodes: etcdserver: request timed out")
	}, time.Second))
	got := gathered(t, reg)
	// The scrape itself succeeds (the process's other metrics stay
	// visible) and says the registry could not be read.
	wantSamples(t, got, map[string]float64{`nvmirror_provisioner_registry_up`: 0, `nvmirror_provisioner_leader`: 0})
	for k := range got {
		if strings.HasPrefix(k, "nvmirror_provisioner_volumes") || strings.HasPrefix(k, "nvmirror_provisioner_storage_node") {
			t.Errorf("%s reported from a registry that could not be read", k)
		}
	}
}

func TestForwarderCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(provisioner.NewForwarderCollector(func() events.ForwarderStats {
		return events.ForwarderStats{Queued: 7, Dropped: 3, Sent: 120, Truncated: 4, Discarded: 5, Reconnects: 2, Connected: true}
	}))
	wantSamples(t, gathered(t, reg), map[string]float64{
		`nvmirror_provisioner_syslog_forwarded_total`:  120,
		`nvmirror_provisioner_syslog_dropped_total`:    3,
		`nvmirror_provisioner_syslog_truncated_total`:  4,
		`nvmirror_provisioner_syslog_discarded_total`:  5,
		`nvmirror_provisioner_syslog_queue_length`:     7,
		`nvmirror_provisioner_syslog_connected`:        1,
		`nvmirror_provisioner_syslog_reconnects_total`: 2,
	})
}

// TestRegistryCollectorMaintenance: moves in flight, cordons and what a
// drain has left, from the registry.
func TestRegistryCollectorMaintenance(t *testing.T) {
	nodes := append(threeRacks(), node{"sn-4", "z1", "r4", 100})
	e := newEnv(t, nodes)
	v := e.create(t, "pvc-a", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2,sn-4"})
	e.create(t, "pvc-b", 2*gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-3"})
	if _, err := e.svc.CordonStorageNode(e.ctx, "sn-4", true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.DrainStorageNode(e.ctx, "sn-1", true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CordonStorageNode(e.ctx, "sn-4", false); err != nil {
		t.Fatal(err)
	}
	var onSN1 string
	for _, r := range v.Replicas {
		if r.StorageNode == "sn-1" {
			onSN1 = r.ID
		}
	}
	if _, err := e.svc.MoveReplica(e.ctx, v.ID, onSN1, "sn-4"); err != nil {
		t.Fatalf("move: %v", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(provisioner.NewRegistryCollector(e.store, nil, 5*time.Second))
	wantSamples(t, gathered(t, reg), map[string]float64{
		`nvmirror_provisioner_replica_moves`:                              1,
		`nvmirror_provisioner_storage_node_cordoned{storage_node="sn-1"}`: 1,
		`nvmirror_provisioner_storage_node_cordoned{storage_node="sn-4"}`: 0,
		`nvmirror_provisioner_drain_replicas_left{storage_node="sn-1"}`:   2,
		`nvmirror_provisioner_drain_bytes_left{storage_node="sn-1"}`:      3 * float64(gib),
	})
}
