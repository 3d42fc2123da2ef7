package provisioner_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
)

var t0 = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

func outOfSync(v *store.Volume, r string, at time.Time, events uint64) provisioner.SyncReport {
	return provisioner.SyncReport{VolumeID: v.ID, ReplicaID: r, ObservedAt: at, ArrayEvents: events, NodeID: "worker-1"}
}

func inSync(v *store.Volume, r string, events uint64) provisioner.SyncReport {
	return provisioner.SyncReport{VolumeID: v.ID, ReplicaID: r, InSync: true, ObservedAt: t0.Add(time.Hour), ArrayEvents: events, NodeID: "worker-1"}
}

func wantSync(t *testing.T, e *env, volumeID, replicaID string, since time.Time, events uint64) {
	t.Helper()
	v, err := e.store.GetVolume(e.ctx, volumeID)
	if err != nil {
		t.Fatal(err)
	}
	r := v.Replica(replicaID)
	if !r.OutOfSyncSince.Equal(since) || r.OutOfSyncAtEvents != events {
		t.Errorf("replica %s out of sync since %v at events %d, want %v at %d", replicaID, r.OutOfSyncSince, r.OutOfSyncAtEvents, since, events)
	}
}

func TestCreatedReplicasAreInSync(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
	for _, r := range v.Replicas {
		if !r.InSync() || r.OutOfSyncAtEvents != 0 {
			t.Errorf("new volume's replica %s out of sync: %+v", r.ID, r)
		}
	}
}

func TestReportReplicaSyncOutOfSyncKeepsEarliest(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	r1 := v.Replicas[1].ID

	got, err := e.svc.ReportReplicaSync(e.ctx, outOfSync(v, r1, t0, 100))
	if err != nil {
		t.Fatalf("ReportReplicaSync: %v", err)
	}
	if r := got.Replica(r1); !r.OutOfSyncSince.Equal(t0) || r.OutOfSyncAtEvents != 100 {
		t.Errorf("answer: %+v", r)
	}
	if !got.Replicas[0].InSync() {
		t.Error("the other replica was marked out of sync")
	}
	// A resend, and a later report of the same failure: nothing changes.
	for _, rep := range []provisioner.SyncReport{outOfSync(v, r1, t0, 100), outOfSync(v, r1, t0.Add(time.Minute), 180)} {
		if _, err := e.svc.ReportReplicaSync(e.ctx, rep); err != nil {
			t.Fatalf("repeat: %v", err)
		}
		wantSync(t, e, v.ID, r1, t0, 100)
	}
	// An earlier report arriving late moves the time back, with its events.
	if _, err := e.svc.ReportReplicaSync(e.ctx, outOfSync(v, r1, t0.Add(-time.Minute), 90)); err != nil {
		t.Fatal(err)
	}
	wantSync(t, e, v.ID, r1, t0.Add(-time.Minute), 90)
}

func TestReportReplicaSyncInSyncClears(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	r1 := v.Replicas[1].ID
	if _, err := e.svc.ReportReplicaSync(e.ctx, outOfSync(v, r1, t0, 100)); err != nil {
		t.Fatal(err)
	}
	// A report from before the failure (a node's queue resending) does not
	// clear it.
	if _, err := e.svc.ReportReplicaSync(e.ctx, inSync(v, r1, 99)); err != nil {
		t.Fatal(err)
	}
	wantSync(t, e, v.ID, r1, t0, 100)
	got, err := e.svc.ReportReplicaSync(e.ctx, inSync(v, r1, 250))
	if err != nil {
		t.Fatal(err)
	}
	if r := got.Replica(r1); !r.InSync() || r.OutOfSyncAtEvents != 0 {
		t.Errorf("in-sync report left %+v", r)
	}
	wantSync(t, e, v.ID, r1, time.Time{}, 0)
	// Idempotent.
	if _, err := e.svc.ReportReplicaSync(e.ctx, inSync(v, r1, 250)); err != nil {
		t.Errorf("repeat in-sync report: %v", err)
	}
	wantSync(t, e, v.ID, r1, time.Time{}, 0)
}

func TestReportReplicaSyncLastInSyncRefused(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	r0, r1 := v.Replicas[0].ID, v.Replicas[1].ID
	if _, err := e.svc.ReportReplicaSync(e.ctx, outOfSync(v, r1, t0, 100)); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.ReportReplicaSync(e.ctx, outOfSync(v, r0, t0.Add(time.Minute), 120))
	wantCode(t, err, provisioner.ErrFailedPrecondition, r0, "last in-sync", "stale node")
	wantSync(t, e, v.ID, r0, time.Time{}, 0)
	// A resend about the replica already out of sync is still accepted.
	if _, err := e.svc.ReportReplicaSync(e.ctx, outOfSync(v, r1, t0, 100)); err != nil {
		t.Errorf("resend for the stale replica: %v", err)
	}
	// A removed replica that was in sync does not count: only active ones
	// serve the volume.
	if _, err := e.svc.ReportReplicaSync(e.ctx, inSync(v, r1, 200)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error {
		v.Replicas = append(v.Replicas, store.Replica{ID: "rep-gone", StorageNode: "sn-3", State: store.ReplicaRemoved})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.ReportReplicaSync(e.ctx, outOfSync(v, r0, t0, 300)); err != nil {
		t.Fatalf("r0 out of sync while r1 is in sync: %v", err)
	}
	_, err = e.svc.ReportReplicaSync(e.ctx, outOfSync(v, r1, t0, 310))
	wantCode(t, err, provisioner.ErrFailedPrecondition, r1)
	wantSync(t, e, v.ID, r1, time.Time{}, 0)
}

func TestReportReplicaSyncRefusals(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
	if _, err := e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error {
		v.Replicas[2].State = store.ReplicaDeleted
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.ReportReplicaSync(e.ctx, outOfSync(v, v.Replicas[2].ID, t0, 1))
	wantCode(t, err, provisioner.ErrFailedPrecondition, v.Replicas[2].ID, "deleted", "not active")
	_, err = e.svc.ReportReplicaSync(e.ctx, inSync(v, v.Replicas[2].ID, 1))
	wantCode(t, err, provisioner.ErrFailedPrecondition, "deleted")

	_, err = e.svc.ReportReplicaSync(e.ctx, outOfSync(v, "rep-nope", t0, 1))
	wantCode(t, err, provisioner.ErrNotFound, "rep-nope")
	_, err = e.svc.ReportReplicaSync(e.ctx, provisioner.SyncReport{VolumeID: "vol-nope", ReplicaID: "r", ObservedAt: t0})
	wantCode(t, err, provisioner.ErrNotFound, "vol-nope")

	for field, r := range map[string]provisioner.SyncReport{
		"volume_id":   {ReplicaID: "r", ObservedAt: t0},
		"replica_id":  {VolumeID: v.ID, ObservedAt: t0},
		"observed_at": {VolumeID: v.ID, ReplicaID: v.Replicas[0].ID},
	} {
		_, err := e.svc.ReportReplicaSync(e.ctx, r)
		wantCode(t, err, provisioner.ErrInvalidArgument, field)
	}
	// observed_at is optional for an in-sync report.
	if _, err := e.svc.ReportReplicaSync(e.ctx, provisioner.SyncReport{VolumeID: v.ID, ReplicaID: v.Replicas[0].ID, InSync: true}); err != nil {
		t.Errorf("in-sync report without observed_at: %v", err)
	}
}

// stale sets the replica's sync state in the registry directly: the
// disaster PromoteReplicas is for (the in-sync replicas lost) cannot be
// reached through ReportReplicaSync, which refuses to mark the last one.
func stale(t *testing.T, e *env, volumeID, replicaID string, since time.Time, events uint64) {
	t.Helper()
	if _, err := e.store.UpdateVolume(e.ctx, volumeID, func(v *store.Volume) error {
		r := v.Replica(replicaID)
		r.OutOfSyncSince, r.OutOfSyncAtEvents = since, events
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func audits(t *testing.T, e *env, volumeID string) []events.Event {
	t.Helper()
	es, err := e.svc.ListEvents(e.ctx, events.Filter{Volume: volumeID, Types: []events.Type{events.Audit}})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func TestPromoteReplicas(t *testing.T) {
	sk := &sink{}
	e := newEnvOpts(t, threeRacks(), provisioner.Options{Events: sk})
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "3"})
	r0, r1, r2 := v.Replicas[0], v.Replicas[1], v.Replicas[2]
	stale(t, e, v.ID, r0.ID, t0, 100)
	stale(t, e, v.ID, r1.ID, t0.Add(time.Minute), 120)

	got, err := e.svc.PromoteReplicas(e.ctx, v.ID, []string{r1.ID, r0.ID, r0.ID, r2.ID}, true, "sn-3 burnt down")
	if err != nil {
		t.Fatalf("PromoteReplicas: %v", err)
	}
	for _, r := range got.Replicas {
		if !r.InSync() || r.OutOfSyncAtEvents != 0 {
			t.Errorf("replica %s still out of sync after promotion: %+v", r.ID, r)
		}
	}
	wantSync(t, e, v.ID, r0.ID, time.Time{}, 0)
	wantSync(t, e, v.ID, r1.ID, time.Time{}, 0)

	as := audits(t, e, v.ID)
	if len(as) != 1 {
		t.Fatalf("%d audit events, want 1: %+v", len(as), as)
	}
	a := as[0]
	if a.Method != provisioner.PromoteMethod || a.Outcome != "OK" || a.Volume != v.ID || len(a.Replicas) != 3 {
		t.Errorf("audit event %+v", a)
	}
	for _, want := range []string{"WARNING", "data loss", r0.ID, r1.ID, "2026-05-01T10:00:00Z", "2026-05-01T10:01:00Z", "md events 100", "sn-3 burnt down"} {
		if !strings.Contains(a.Message, want) {
			t.Errorf("audit message lacks %q: %s", want, a.Message)
		}
	}
	if strings.Contains(a.Message, r2.ID+" on") {
		t.Errorf("audit message lists the replica that was in sync: %s", a.Message)
	}
	// The audit reaches the syslog forwarder like every event.
	if len(sk.got) != 1 || sk.got[0].Method != provisioner.PromoteMethod {
		t.Errorf("forwarded %+v", sk.got)
	}

	// A retry finds nothing to promote and records nothing.
	if _, err := e.svc.PromoteReplicas(e.ctx, v.ID, []string{r1.ID, r0.ID}, true, "sn-3 burnt down"); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if n := len(audits(t, e, v.ID)); n != 1 {
		t.Errorf("retry recorded another audit event (%d)", n)
	}
}

func TestPromoteReplicasValidationChangesNothing(t *testing.T) {
	sk := &sink{}
	e := newEnvOpts(t, threeRacks(), provisioner.Options{Events: sk})
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	other := e.create(t, "pvc-2", gib, map[string]string{"numReplicas": "2"})
	r0 := v.Replicas[0].ID
	stale(t, e, v.ID, r0, t0, 100)
	if _, err := e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error {
		v.Replicas = append(v.Replicas, store.Replica{ID: "rep-deleted", StorageNode: "sn-3", State: store.ReplicaDeleted, OutOfSyncSince: t0})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	before, _ := e.store.GetVolume(e.ctx, v.ID)

	tests := []struct {
		name     string
		volume   string
		ids      []string
		accept   bool
		sentinel error
		contains []string
	}{
		{"no acceptance", v.ID, []string{r0}, false, provisioner.ErrInvalidArgument, []string{"accept_data_loss"}},
		{"no replicas", v.ID, nil, true, provisioner.ErrInvalidArgument, []string{"replica_ids"}},
		{"empty replica ID", v.ID, []string{r0, ""}, true, provisioner.ErrInvalidArgument, []string{"replica_ids"}},
		{"unknown replica", v.ID, []string{r0, "rep-nope"}, true, provisioner.ErrInvalidArgument, []string{"replica_ids", "rep-nope"}},
		{"replica of another volume", v.ID, []string{r0, other.Replicas[0].ID}, true, provisioner.ErrInvalidArgument, []string{"replica_ids", other.Replicas[0].ID}},
		{"deleted replica", v.ID, []string{r0, "rep-deleted"}, true, provisioner.ErrInvalidArgument, []string{"replica_ids", "rep-deleted", "not an active"}},
		{"no volume ID", "", []string{r0}, true, provisioner.ErrInvalidArgument, []string{"volume_id"}},
		{"unknown volume", "vol-nope", []string{r0}, true, provisioner.ErrNotFound, []string{"vol-nope"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.PromoteReplicas(e.ctx, tc.volume, tc.ids, tc.accept, "because")
			wantCode(t, err, tc.sentinel, tc.contains...)
			after, _ := e.store.GetVolume(e.ctx, v.ID)
			if !reflect.DeepEqual(after.Replicas, before.Replicas) {
				t.Errorf("refused promotion changed the replicas:\n%+v\n%+v", before.Replicas, after.Replicas)
			}
			if as := audits(t, e, v.ID); len(as) != 0 || len(sk.got) != 0 {
				t.Errorf("refused promotion recorded %+v", as)
			}
		})
	}
}

func TestReplaceReplicaStartsOutOfSync(t *testing.T) {
	e := newEnv(t, []node{{"sn-1", "", "r1", 100}, {"sn-2", "", "r2", 100}, {"sn-3", "", "r3", 100}})
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2"})
	if _, err := e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error { v.Parameters.StorageNodes = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	nr, err := e.svc.ReplaceReplica(e.ctx, v.ID, v.Replicas[0].ID)
	if err != nil {
		t.Fatalf("ReplaceReplica: %v", err)
	}
	if nr.InSync() || nr.OutOfSyncSince.Before(before) || nr.OutOfSyncSince.After(time.Now()) || nr.OutOfSyncAtEvents != 0 {
		t.Errorf("new replica's sync state: since %v events %d; want out of sync since the call, events 0", nr.OutOfSyncSince, nr.OutOfSyncAtEvents)
	}
	got, _ := e.store.GetVolume(e.ctx, v.ID)
	if got.Replica(nr.ID).InSync() || !got.Replica(v.Replicas[1].ID).InSync() {
		t.Errorf("registry after replacement: %+v", got.Replicas)
	}
	// A retry answers the same replica, still out of sync.
	again, err := e.svc.ReplaceReplica(e.ctx, v.ID, v.Replicas[0].ID)
	if err != nil || again.ID != nr.ID || !again.OutOfSyncSince.Equal(got.Replica(nr.ID).OutOfSyncSince) {
		t.Errorf("retry = %+v, %v", again, err)
	}
	// The node reports recovery finished: in sync.
	if _, err := e.svc.ReportReplicaSync(e.ctx, inSync(v, nr.ID, 10)); err != nil {
		t.Fatal(err)
	}
	wantSync(t, e, v.ID, nr.ID, time.Time{}, 0)
}

func TestReplaceOrDeleteLastInSyncRefused(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	r0, r1 := v.Replicas[0].ID, v.Replicas[1].ID
	if _, err := e.svc.ReportReplicaSync(e.ctx, outOfSync(v, r1, t0, 100)); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.ReplaceReplica(e.ctx, v.ID, r0)
	wantCode(t, err, provisioner.ErrFailedPrecondition, r0, "last in-sync", "nvmirrorctl promote")
	_, err = e.svc.DeleteReplica(e.ctx, v.ID, r0)
	wantCode(t, err, provisioner.ErrFailedPrecondition, r0, "last in-sync")
	got, _ := e.store.GetVolume(e.ctx, v.ID)
	if len(got.Replicas) != 2 || got.Replica(r0).State != store.ReplicaActive || got.Replica(r0).ReplacedBy != "" {
		t.Errorf("refused operations changed the volume: %+v", got.Replicas)
	}
	// The stale replica may go: the data is on r0.
	if _, err := e.svc.ReplaceReplica(e.ctx, v.ID, r1); err != nil {
		t.Errorf("replacing the stale replica: %v", err)
	}
}

func TestServerReplicaSync(t *testing.T) {
	e := newEnv(t, threeRacks())
	srv := provisioner.NewServer(e.svc)
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	r1 := v.Replicas[1].ID

	resp, err := srv.ReportReplicaSync(e.ctx, &provisionerapi.ReportReplicaSyncRequest{VolumeId: v.ID, ReplicaId: r1,
		ObservedAt: timestamppb.New(t0), ArrayEvents: 77, NodeId: "worker-1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.GetVolume().GetReplicas() {
		switch r.GetId() {
		case r1:
			if !r.GetOutOfSyncSince().AsTime().Equal(t0) || r.GetOutOfSyncAtEvents() != 77 {
				t.Errorf("out-of-sync replica on the wire: %v", r)
			}
		default:
			if r.GetOutOfSyncSince() != nil || r.GetOutOfSyncAtEvents() != 0 {
				t.Errorf("in-sync replica on the wire: %v", r)
			}
		}
	}
	resp, err = srv.PromoteReplicas(e.ctx, &provisionerapi.PromoteReplicasRequest{VolumeId: v.ID, ReplicaIds: []string{r1}, AcceptDataLoss: true, Reason: "test"})
	if err != nil || resp.GetVolume().GetReplicas()[1].GetOutOfSyncSince() != nil {
		t.Errorf("PromoteReplicas = %v, %v", resp, err)
	}

	tests := []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"report without volume", func() error {
			_, err := srv.ReportReplicaSync(e.ctx, &provisionerapi.ReportReplicaSyncRequest{ReplicaId: r1, ObservedAt: timestamppb.New(t0)})
			return err
		}, codes.InvalidArgument, "volume_id"},
		{"report without replica", func() error {
			_, err := srv.ReportReplicaSync(e.ctx, &provisionerapi.ReportReplicaSyncRequest{VolumeId: v.ID, ObservedAt: timestamppb.New(t0)})
			return err
		}, codes.InvalidArgument, "replica_id"},
		{"report without time", func() error {
			_, err := srv.ReportReplicaSync(e.ctx, &provisionerapi.ReportReplicaSyncRequest{VolumeId: v.ID, ReplicaId: r1})
			return err
		}, codes.InvalidArgument, "observed_at"},
		{"report unknown replica", func() error {
			_, err := srv.ReportReplicaSync(e.ctx, &provisionerapi.ReportReplicaSyncRequest{VolumeId: v.ID, ReplicaId: "rep-x", ObservedAt: timestamppb.New(t0)})
			return err
		}, codes.NotFound, "rep-x"},
		{"report last in sync", func() error {
			if _, err := srv.ReportReplicaSync(e.ctx, &provisionerapi.ReportReplicaSyncRequest{VolumeId: v.ID, ReplicaId: r1, ObservedAt: timestamppb.New(t0)}); err != nil {
				return err
			}
			_, err := srv.ReportReplicaSync(e.ctx, &provisionerapi.ReportReplicaSyncRequest{VolumeId: v.ID, ReplicaId: v.Replicas[0].ID, ObservedAt: timestamppb.New(t0)})
			return err
		}, codes.FailedPrecondition, "last in-sync"},
		{"promote without volume", func() error {
			_, err := srv.PromoteReplicas(e.ctx, &provisionerapi.PromoteReplicasRequest{ReplicaIds: []string{r1}, AcceptDataLoss: true})
			return err
		}, codes.InvalidArgument, "volume_id"},
		{"promote without acceptance", func() error {
			_, err := srv.PromoteReplicas(e.ctx, &provisionerapi.PromoteReplicasRequest{VolumeId: v.ID, ReplicaIds: []string{r1}})
			return err
		}, codes.InvalidArgument, "accept_data_loss"},
		{"promote without replicas", func() error {
			_, err := srv.PromoteReplicas(e.ctx, &provisionerapi.PromoteReplicasRequest{VolumeId: v.ID, AcceptDataLoss: true})
			return err
		}, codes.InvalidArgument, "replica_ids"},
		{"promote unknown replica", func() error {
			_, err := srv.PromoteReplicas(e.ctx, &provisionerapi.PromoteReplicasRequest{VolumeId: v.ID, ReplicaIds: []string{"rep-x"}, AcceptDataLoss: true})
			return err
		}, codes.InvalidArgument, "rep-x"},
	}
	for _, tc := range tests {
		err := tc.call()
		if st, _ := status.FromError(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("%s: %v, want %v mentioning %q", tc.name, err, tc.code, tc.msg)
		}
	}
}

// ReportReplicaSync and PromoteReplicas take the volume's in-flight lock
// like every mutating call: while a replacement runs, they are Aborted.
func TestServerReplicaSyncInFlightAborted(t *testing.T) {
	e := newEnv(t, threeRacks())
	srv := provisioner.NewServer(e.svc)
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-2"})
	if _, err := e.store.UpdateVolume(e.ctx, v.ID, func(v *store.Volume) error { v.Parameters.StorageNodes = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	release := make(chan struct{})
	e.cluster.SetCreateHook("sn-3", func(provisioner.ReplicaSpec) error {
		close(entered)
		<-release
		return nil
	})
	done := make(chan error, 1)
	go func() {
		_, err := srv.ReplaceReplica(e.ctx, &provisionerapi.ReplaceReplicaRequest{VolumeId: v.ID, MissingReplicaId: v.Replicas[0].ID})
		done <- err
	}()
	<-entered
	_, err := srv.ReportReplicaSync(e.ctx, &provisionerapi.ReportReplicaSyncRequest{VolumeId: v.ID, ReplicaId: v.Replicas[1].ID, InSync: true})
	if status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), v.ID) {
		t.Errorf("ReportReplicaSync during a replacement: %v, want Aborted naming the volume", err)
	}
	_, err = srv.PromoteReplicas(e.ctx, &provisionerapi.PromoteReplicasRequest{VolumeId: v.ID, ReplicaIds: []string{v.Replicas[1].ID}, AcceptDataLoss: true})
	if status.Code(err) != codes.Aborted {
		t.Errorf("PromoteReplicas during a replacement: %v, want Aborted", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("replacement: %v", err)
	}
	if _, err := srv.ReportReplicaSync(e.ctx, &provisionerapi.ReportReplicaSyncRequest{VolumeId: v.ID, ReplicaId: v.Replicas[1].ID, InSync: true}); err != nil {
		t.Errorf("ReportReplicaSync after the replacement: %v", err)
	}
}
