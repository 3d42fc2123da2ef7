package provisioner_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
)

func TestServerVolumeConversion(t *testing.T) {
	e := newEnv(t, threeRacks())
	srv := provisioner.NewServer(e.svc)
	resp, err := srv.CreateVolume(e.ctx, &provisionerapi.CreateVolumeRequest{Name: "pvc-1", SizeBytes: gib, Block: true,
		Parameters: map[string]string{"numReplicas": "2", "csi.storage.k8s.io/pvc/name": "data"}})
	if err != nil {
		t.Fatal(err)
	}
	v := resp.GetVolume()
	stored, _ := e.store.GetVolume(e.ctx, v.GetId())
	if v.GetMdUuid() != stored.MDUUID || v.GetMdName() != stored.MDName || v.GetState() != "ready" || !v.GetBlock() ||
		v.GetParameters()["numReplicas"] != "2" || v.GetParameters()["provisioningType"] != "thin" ||
		v.GetMetadata()["csi.storage.k8s.io/pvc/name"] != "data" || v.GetCreated() == nil || v.GetDegradedSince() != nil {
		t.Errorf("volume = %v", v)
	}
	for i, r := range v.GetReplicas() {
		sr := stored.Replicas[i]
		if r.GetId() != sr.ID || r.GetNqn() != sr.NQN || r.GetStorageNode() != sr.StorageNode ||
			r.GetNamespaceUuid() != nvmeof.NamespaceUUID(sr.ID) || r.GetState() != provisionerapi.ReplicaState_REPLICA_STATE_ACTIVE ||
			len(r.GetEndpoints()) != len(sr.Addresses) || r.GetEndpoints()[0].GetAddress() != sr.Addresses[0].Address || r.GetEndpoints()[0].GetPort() != sr.Addresses[0].ServiceID {
			t.Errorf("replica %d = %v, stored %+v", i, r, sr)
		}
	}
}

func TestServerErrors(t *testing.T) {
	e := newEnv(t, threeRacks())
	srv := provisioner.NewServer(e.svc)
	ctx := e.ctx
	call := func(f func() (any, error)) error { _, err := f(); return err }
	tests := []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"create without name", call(func() (any, error) { return srv.CreateVolume(ctx, &provisionerapi.CreateVolumeRequest{SizeBytes: gib}) }), codes.InvalidArgument, "name"},
		{"delete without id", call(func() (any, error) { return srv.DeleteVolume(ctx, &provisionerapi.DeleteVolumeRequest{}) }), codes.InvalidArgument, "volume_id"},
		{"get unknown", call(func() (any, error) {
			return srv.GetVolume(ctx, &provisionerapi.GetVolumeRequest{VolumeId: "vol-x"})
		}), codes.NotFound, "vol-x"},
		{"publish without host", call(func() (any, error) {
			return srv.PublishVolume(ctx, &provisionerapi.PublishVolumeRequest{VolumeId: "vol-x"})
		}), codes.InvalidArgument, "host_nqn"},
		{"replace without replica", call(func() (any, error) {
			return srv.ReplaceReplica(ctx, &provisionerapi.ReplaceReplicaRequest{VolumeId: "vol-x"})
		}), codes.InvalidArgument, "missing_replica_id"},
		{"mark removed unknown", call(func() (any, error) {
			return srv.MarkReplicaRemoved(ctx, &provisionerapi.MarkReplicaRemovedRequest{VolumeId: "vol-x", ReplicaId: "r"})
		}), codes.NotFound, "vol-x"},
		{"list bad token", call(func() (any, error) {
			return srv.ListVolumes(ctx, &provisionerapi.ListVolumesRequest{StartingToken: "x"})
		}), codes.InvalidArgument, "starting token"},
		{"events unknown type", call(func() (any, error) {
			return srv.ListEvents(ctx, &provisionerapi.ListEventsRequest{Type: "Nope"})
		}), codes.InvalidArgument, "Nope"},
		{"events negative limit", call(func() (any, error) {
			return srv.ListEvents(ctx, &provisionerapi.ListEventsRequest{Limit: -1})
		}), codes.InvalidArgument, "limit"},
		{"report event without time", call(func() (any, error) {
			return srv.ReportEvents(ctx, &provisionerapi.ReportEventsRequest{Events: []*provisionerapi.Event{{Type: "VolumeHealed"}}})
		}), codes.InvalidArgument, "without time"},
		{"capacity bad parameter", call(func() (any, error) {
			return srv.GetCapacity(ctx, &provisionerapi.GetCapacityRequest{Parameters: map[string]string{"sameRackAllowed": "yes"}})
		}), codes.InvalidArgument, "sameRackAllowed"},
	}
	for _, tc := range tests {
		st, _ := status.FromError(tc.err)
		if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("%s: %v, want %v mentioning %q", tc.name, tc.err, tc.code, tc.msg)
		}
	}
}

// A second call on a volume while the first runs is Aborted; once the
// first finishes, the volume is free again.
func TestServerInFlightAborted(t *testing.T) {
	e := newEnv(t, threeRacks())
	srv := provisioner.NewServer(e.svc)
	entered := make(chan struct{}, 3)
	release := make(chan struct{})
	for _, n := range threeRacks() {
		e.cluster.SetCreateHook(n.id, func(provisioner.ReplicaSpec) error {
			entered <- struct{}{}
			<-release
			return nil
		})
	}
	req := &provisionerapi.CreateVolumeRequest{Name: "pvc-1", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "1"}}
	done := make(chan error, 1)
	go func() {
		_, err := srv.CreateVolume(e.ctx, req)
		done <- err
	}()
	<-entered // the first call is inside an agent
	_, err := srv.CreateVolume(e.ctx, req)
	if status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), "pvc-1") {
		t.Errorf("concurrent create: %v, want Aborted naming the volume", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("first create: %v", err)
	}
	if _, err := srv.CreateVolume(e.ctx, req); err != nil {
		t.Errorf("create after the first finished: %v", err)
	}
}

func TestHealthFollowsLeadership(t *testing.T) {
	h := provisioner.NewHealth()
	check := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := h.Check(context.Background(), &healthpb.HealthCheckRequest{Service: provisionerapi.Provisioner_ServiceDesc.ServiceName})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStatus()
	}
	if s := check(); s != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("initial %v", s)
	}
	ch := make(chan bool)
	done := make(chan struct{})
	go func() { h.Follow(ch); close(done) }()
	ch <- true
	ch <- true // Follow has applied the first report once it takes the second
	if s := check(); s != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("leader: %v", s)
	}
	ch <- false
	ch <- false
	if s := check(); s != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("lost leadership: %v", s)
	}
	ch <- true
	close(ch)
	<-done
	if s := check(); s != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("after the campaign ended: %v", s)
	}
}

func TestLoggingInterceptorPassesThrough(t *testing.T) {
	info := &grpc.UnaryServerInfo{FullMethod: "/nvmirror.provisioner.v1.Provisioner/GetVolume"}
	want := status.Error(codes.NotFound, "x")
	resp, err := provisioner.LoggingInterceptor(context.Background(), &provisionerapi.GetVolumeRequest{}, info, func(context.Context, any) (any, error) {
		return "resp", want
	})
	if resp != "resp" || !errors.Is(err, want) {
		t.Errorf("got %v, %v", resp, err)
	}
}

func TestServerDegradedSinceOnTheWire(t *testing.T) {
	e := newEnv(t, threeRacks())
	srv := provisioner.NewServer(e.svc)
	v := e.create(t, "pvc-1", gib, nil)
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if _, err := e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error { v.DegradedSince = at; return nil }); err != nil {
		t.Fatal(err)
	}
	resp, err := srv.GetVolume(e.ctx, &provisionerapi.GetVolumeRequest{VolumeId: v.ID})
	if err != nil || !resp.GetVolume().GetDegradedSince().AsTime().Equal(at) {
		t.Errorf("GetVolume = %v, %v", resp, err)
	}
}
