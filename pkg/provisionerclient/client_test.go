package provisionerclient_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/fakeagent"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/boltstore"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/rpcauth/rpcauthtest"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

const (
	gib       = int64(1) << 30
	testToken = "provisioner-test-token"
	hostA     = "nqn.2014-08.org.nvmexpress:uuid:6f1c2a10-7d3e-4b8a-9c1d-1a2b3c4d5e6f"
	hostB     = "nqn.2014-08.org.nvmexpress:uuid:0b9a8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"
)

type env struct {
	addr, caFile      string
	certFile, keyFile string
	cluster           *fakeagent.Cluster
	health            *provisioner.Health
	client            *provisionerclient.Client
}

// start runs the provisioner's gRPC server the way cmd/nvmirror-provisioner
// does (mutual TLS with its table, token, logging, health) on a loopback port, over a bolt store
// and four fake storage nodes in distinct racks.
func start(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	ca := rpcauthtest.NewCA(t)
	caFile := ca.WriteCA(t, dir)
	certFile, keyFile := ca.Server(t, "nvmirror-provisioner").WriteNamed(t, dir, "server")
	// One client for every call the tests make: the controller's, the
	// administrator's and (scoped to its node) node-a's.
	clientCrt, clientKey := ca.Client(t, "node-a", "controller", "node", "admin").WriteNamed(t, dir, "client")
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(testToken), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := boltstore.Open(filepath.Join(dir, "registry.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := fakeagent.New()
	ctx := context.Background()
	for i := 1; i <= 4; i++ {
		if err := st.PutStorageNode(ctx, c.AddNode(fmt.Sprintf("sn-%d", i), "z1", fmt.Sprintf("r%d", i), 100*gib)); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := provisioner.New(provisioner.Options{Store: st, Agents: c})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := rpcauth.NewServer(rpcauth.ServerConfig{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile,
		TokenFile: tokenFile, Authorizer: provisioner.NewAuthorizer(st)})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(
		grpc.Creds(auth.Credentials()),
		grpc.ChainUnaryInterceptor(auth.UnaryServerInterceptor(), provisioner.LoggingInterceptor),
		grpc.ChainStreamInterceptor(auth.StreamServerInterceptor()),
	)
	provisionerapi.RegisterProvisionerServer(srv, provisioner.NewServer(svc))
	h := provisioner.NewHealth()
	healthpb.RegisterHealthServer(srv, h)
	h.SetLeader(true)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	e := &env{addr: lis.Addr().String(), caFile: caFile, certFile: clientCrt, keyFile: clientKey, cluster: c, health: h}
	e.client = e.dial(t, testToken)
	return e
}

func (e *env) dial(t *testing.T, token string) *provisionerclient.Client {
	t.Helper()
	conn, err := rpcauth.Dial(e.addr, rpcauth.ClientConfig{CAFile: e.caFile, ServerName: "localhost", CertFile: e.certFile, KeyFile: e.keyFile, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return provisionerclient.New(conn)
}

func wantErr(t *testing.T, step string, err, sentinel error, contains string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("%s: err = %v, want %v", step, err, sentinel)
	}
	if !strings.Contains(err.Error(), contains) {
		t.Errorf("%s: err %q does not mention %q", step, err, contains)
	}
}

// TestLifecycle walks a volume through every volume.Provisioner call over
// a real TLS connection.
func TestLifecycle(t *testing.T) {
	e := start(t)
	p := e.client
	ctx := context.Background()

	if err := p.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	params := map[string]string{"numReplicas": "3", "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "db"}
	v, err := p.CreateVolume(ctx, volume.CreateVolumeRequest{Name: "pvc-1", SizeBytes: gib, Parameters: params})
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	if len(v.Replicas) != 3 || v.MDUUID == "" || v.MDName == "" || v.SizeBytes != gib || v.Parameters["numReplicas"] != "3" {
		t.Fatalf("created %+v", v)
	}
	for _, r := range v.Replicas {
		if r.NQN == "" || r.State != volume.ReplicaActive || len(r.Endpoints) == 0 || r.Endpoints[0].Port == "" || r.NamespaceUUID != nvmeof.NamespaceUUID(r.ID) {
			t.Errorf("replica %+v", r)
		}
	}
	again, err := p.CreateVolume(ctx, volume.CreateVolumeRequest{Name: "pvc-1", SizeBytes: gib, Parameters: params})
	if err != nil || again.ID != v.ID || again.MDUUID != v.MDUUID {
		t.Fatalf("CreateVolume retry = %+v, %v", again, err)
	}
	_, err = p.CreateVolume(ctx, volume.CreateVolumeRequest{Name: "pvc-1", SizeBytes: 2 * gib, Parameters: params})
	wantErr(t, "CreateVolume other size", err, volume.ErrAlreadyExists, "pvc-1")
	_, err = p.CreateVolume(ctx, volume.CreateVolumeRequest{Name: "pvc-x", SizeBytes: gib, Parameters: map[string]string{"numReplica": "3"}})
	wantErr(t, "CreateVolume bad parameter", err, volume.ErrInvalidArgument, "numReplica")
	_, err = p.CreateVolume(ctx, volume.CreateVolumeRequest{Name: "pvc-big", SizeBytes: 200 * gib})
	wantErr(t, "CreateVolume too big", err, volume.ErrResourceExhausted, "free")

	got, err := p.GetVolume(ctx, v.ID)
	if err != nil || got.ID != v.ID || got.Name != "pvc-1" {
		t.Fatalf("GetVolume = %+v, %v", got, err)
	}
	_, err = p.GetVolume(ctx, "vol-nope")
	wantErr(t, "GetVolume unknown", err, volume.ErrNotFound, "vol-nope")

	pub, err := p.PublishVolume(ctx, v.ID, hostA, "node-a")
	if err != nil || pub.PublishedHost != hostA || pub.PublishedNode != "node-a" {
		t.Fatalf("PublishVolume = %+v, %v", pub, err)
	}
	if _, err := p.PublishVolume(ctx, v.ID, hostA, "node-a"); err != nil {
		t.Errorf("PublishVolume retry: %v", err)
	}
	_, err = p.PublishVolume(ctx, v.ID, hostB, "node-b")
	wantErr(t, "PublishVolume second host", err, volume.ErrFailedPrecondition, hostA)
	err = p.DeleteVolume(ctx, v.ID)
	wantErr(t, "DeleteVolume published", err, volume.ErrFailedPrecondition, "published")

	// Paging over three volumes, two per page.
	for _, name := range []string{"pvc-2", "pvc-3"} {
		if _, err := p.CreateVolume(ctx, volume.CreateVolumeRequest{Name: name, SizeBytes: gib, Parameters: map[string]string{"numReplicas": "1"}}); err != nil {
			t.Fatal(err)
		}
	}
	page1, next, err := p.ListVolumes(ctx, "", 2)
	if err != nil || len(page1) != 2 || next == "" {
		t.Fatalf("ListVolumes page 1 = %d, %q, %v", len(page1), next, err)
	}
	page2, next2, err := p.ListVolumes(ctx, next, 2)
	if err != nil || len(page2) != 1 || next2 != "" || page2[0].ID == page1[0].ID || page2[0].ID == page1[1].ID {
		t.Fatalf("ListVolumes page 2 = %v, %q, %v", page2, next2, err)
	}
	_, _, err = p.ListVolumes(ctx, "garbage", 2)
	wantErr(t, "ListVolumes bad token", err, volume.ErrInvalidArgument, "garbage")

	exp, err := p.ExpandVolume(ctx, v.ID, 2*gib)
	if err != nil || exp.SizeBytes != 2*gib {
		t.Fatalf("ExpandVolume = %+v, %v", exp, err)
	}
	mod, err := p.ModifyVolume(ctx, v.ID, map[string]string{"maxReplicaDownTime": "5"})
	if err != nil || mod.Parameters["maxReplicaDownTime"] != "5" {
		t.Fatalf("ModifyVolume = %+v, %v", mod, err)
	}
	_, err = p.ModifyVolume(ctx, v.ID, map[string]string{"provisioningType": "thick"})
	wantErr(t, "ModifyVolume immutable", err, volume.ErrInvalidArgument, "provisioningType")

	avail, err := p.GetCapacity(ctx, map[string]string{"numReplicas": "1"})
	if err != nil || avail <= 0 || avail > 100*gib {
		t.Errorf("GetCapacity = %d, %v", avail, err)
	}

	if err := p.UnpublishVolume(ctx, v.ID, hostA); err != nil {
		t.Fatalf("UnpublishVolume: %v", err)
	}
	if err := p.UnpublishVolume(ctx, v.ID, hostA); err != nil {
		t.Errorf("UnpublishVolume retry: %v", err)
	}
	if err := p.DeleteVolume(ctx, v.ID); err != nil {
		t.Fatalf("DeleteVolume: %v", err)
	}
	if err := p.DeleteVolume(ctx, v.ID); err != nil {
		t.Errorf("DeleteVolume retry: %v", err)
	}
	_, err = p.GetVolume(ctx, v.ID)
	wantErr(t, "GetVolume deleted", err, volume.ErrNotFound, v.ID)
}

func TestWrongTokenUnauthenticated(t *testing.T) {
	e := start(t)
	for _, tok := range []string{"wrong-token"} {
		p := e.dial(t, tok)
		_, err := p.GetVolume(context.Background(), "vol-x")
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("token %q: %v, want Unauthenticated", tok, err)
		}
		if err := p.Ping(context.Background()); status.Code(err) != codes.Unauthenticated {
			t.Errorf("token %q: Ping %v, want Unauthenticated", tok, err)
		}
	}
}

func TestPingFollowsLeadership(t *testing.T) {
	e := start(t)
	e.health.SetLeader(false)
	if err := e.client.Ping(context.Background()); !errors.Is(err, volume.ErrUnavailable) {
		t.Errorf("Ping while not leader: %v, want ErrUnavailable", err)
	}
	e.health.SetLeader(true)
	if err := e.client.Ping(context.Background()); err != nil {
		t.Errorf("Ping while leader: %v", err)
	}
}

func TestAuditAndEvents(t *testing.T) {
	e := start(t)
	p := e.client
	ctx := context.Background()
	rec := volume.AuditRecord{Time: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Operation: "NodeStageVolume", VolumeID: "vol-1", Node: "node-a", Outcome: volume.AuditFailure, Message: "Internal: boom"}
	for range 2 { // a resend is stored once
		if err := p.ReportAudit(ctx, rec); err != nil {
			t.Fatalf("ReportAudit: %v", err)
		}
	}
	got, err := p.ListEvents(ctx, events.Filter{Volume: "vol-1", Types: []events.Type{events.Audit}})
	if err != nil || len(got) != 1 {
		t.Fatalf("ListEvents = %+v, %v; want one record", got, err)
	}
	a := got[0]
	if a.ID != provisionerclient.AuditID(rec) || a.Method != "NodeStageVolume" || a.Outcome != string(volume.AuditFailure) || a.Node != "node-a" || a.Message != "Internal: boom" || !a.Time.Equal(rec.Time) || a.Seq == 0 {
		t.Errorf("stored audit %+v", a)
	}
	deg := events.Event{ID: "node-a/1", Time: rec.Time, Type: events.VolumeDegraded, Volume: "vol-1", Node: "node-a", Replicas: []string{"r1", "r2"}}
	if err := p.ReportEvents(ctx, deg, deg); err != nil {
		t.Fatalf("ReportEvents: %v", err)
	}
	all, err := p.ListEvents(ctx, events.Filter{Node: "node-a"})
	if err != nil || len(all) != 2 || all[1].Type != events.VolumeDegraded || len(all[1].Replicas) != 2 {
		t.Fatalf("ListEvents = %+v, %v", all, err)
	}
	after, err := p.ListEvents(ctx, events.Filter{AfterSeq: all[0].Seq})
	if err != nil || len(after) != 1 || after[0].ID != "node-a/1" {
		t.Errorf("ListEvents after seq = %+v, %v", after, err)
	}
	err = p.ReportEvents(ctx, events.Event{Time: rec.Time, Type: "Bogus"})
	wantErr(t, "ReportEvents unknown type", err, volume.ErrInvalidArgument, "Bogus")
	_, err = p.ListEvents(ctx, events.Filter{Types: []events.Type{events.Audit, events.VolumeHealed}})
	wantErr(t, "ListEvents two types", err, volume.ErrInvalidArgument, "one type")
}

func TestHealingCalls(t *testing.T) {
	e := start(t)
	p := e.client
	ctx := context.Background()
	v, err := p.CreateVolume(ctx, volume.CreateVolumeRequest{Name: "pvc-1", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "3"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PublishVolume(ctx, v.ID, hostA, "node-a"); err != nil {
		t.Fatal(err)
	}
	missing := v.Replicas[0]
	e.cluster.SetDown(missing.StorageNode, true)
	vol, nr, err := p.ReplaceReplica(ctx, v.ID, missing.ID)
	if err != nil {
		t.Fatalf("ReplaceReplica: %v", err)
	}
	if nr.ID == missing.ID || nr.NQN == "" || nr.StorageNode == missing.StorageNode || len(vol.Replicas) != 4 {
		t.Fatalf("new replica %+v in %+v", nr, vol)
	}
	_, again, err := p.ReplaceReplica(ctx, v.ID, missing.ID)
	if err != nil || again.ID != nr.ID {
		t.Errorf("ReplaceReplica retry = %+v, %v; want %s", again, err, nr.ID)
	}
	for _, r := range vol.Replicas {
		if r.ID == missing.ID && r.State != volume.ReplicaRemoved {
			t.Errorf("missing replica state %q", r.State)
		}
	}
	_, err = p.MarkReplicaRemoved(ctx, v.ID, nr.ID)
	wantErr(t, "MarkReplicaRemoved active", err, volume.ErrFailedPrecondition, nr.ID)
	if _, err := p.MarkReplicaRemoved(ctx, v.ID, missing.ID); err != nil {
		t.Errorf("MarkReplicaRemoved removed: %v", err)
	}
	nodes, err := p.ListStorageNodes(ctx)
	if err != nil || len(nodes) != 4 {
		t.Fatalf("ListStorageNodes = %v, %v", nodes, err)
	}
	for _, n := range nodes {
		if n.GetReachable() == (n.GetName() == missing.StorageNode) {
			t.Errorf("node %s reachable=%v", n.GetName(), n.GetReachable())
		}
	}
}

// TestDeleteReplica: an administrator deletes a replica; the node would
// then find it deleted, take it out of its array and mark it removed.
func TestDeleteReplica(t *testing.T) {
	e := start(t)
	p := e.client
	ctx := context.Background()
	v, err := p.CreateVolume(ctx, volume.CreateVolumeRequest{Name: "pvc-1", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "2"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PublishVolume(ctx, v.ID, hostA, "node-a"); err != nil {
		t.Fatal(err)
	}
	victim, last := v.Replicas[0], v.Replicas[1]
	e.cluster.SetDown(victim.StorageNode, true)
	got, err := p.DeleteReplica(ctx, v.ID, victim.ID)
	if err != nil {
		t.Fatalf("DeleteReplica with its storage node away: %v", err)
	}
	states := map[string]volume.ReplicaState{}
	for _, r := range got.Replicas {
		states[r.ID] = r.State
	}
	if states[victim.ID] != volume.ReplicaDeleted || states[last.ID] != volume.ReplicaActive {
		t.Errorf("states after DeleteReplica: %v", states)
	}
	if _, err := p.DeleteReplica(ctx, v.ID, victim.ID); err != nil {
		t.Errorf("DeleteReplica retry: %v", err)
	}
	_, err = p.DeleteReplica(ctx, v.ID, last.ID)
	wantErr(t, "DeleteReplica last active", err, volume.ErrFailedPrecondition, "last active replica")
	_, err = p.DeleteReplica(ctx, v.ID, "rep-nope")
	wantErr(t, "DeleteReplica unknown replica", err, volume.ErrNotFound, "rep-nope")
	_, err = p.DeleteReplica(ctx, "vol-nope", victim.ID)
	wantErr(t, "DeleteReplica unknown volume", err, volume.ErrNotFound, "vol-nope")
	_, err = p.DeleteReplica(ctx, v.ID, "")
	wantErr(t, "DeleteReplica no replica", err, volume.ErrInvalidArgument, "replica_id")

	// The node completes its part; the storage node's copy goes when the
	// node returns.
	if _, err := p.MarkReplicaRemoved(ctx, v.ID, victim.ID); err != nil {
		t.Fatalf("MarkReplicaRemoved: %v", err)
	}
	if e.cluster.Replica(victim.StorageNode, victim.ID) == nil {
		t.Fatal("replica gone from a storage node that is down")
	}
	e.cluster.SetDown(victim.StorageNode, false)
	got, err = p.DeleteReplica(ctx, v.ID, victim.ID)
	if err != nil {
		t.Fatalf("DeleteReplica after the node returned: %v", err)
	}
	for _, r := range got.Replicas {
		if r.ID == victim.ID && r.State != volume.ReplicaRemoved {
			t.Errorf("state %q, want removed", r.State)
		}
	}
	if e.cluster.Replica(victim.StorageNode, victim.ID) != nil {
		t.Error("replica still on its returned storage node")
	}
}

// TestReplicaSyncRoundTrip: a replica's sync state goes registry → wire →
// driver unchanged, and an in-sync replica (or one from a provisioner
// older than the fields) reads as in sync.
func TestReplicaSyncRoundTrip(t *testing.T) {
	since := time.Date(2026, 5, 1, 10, 0, 0, 123, time.UTC)
	sv := &store.Volume{ID: "vol-1", Replicas: []store.Replica{
		{ID: "r0", State: store.ReplicaActive},
		{ID: "r1", State: store.ReplicaActive, OutOfSyncSince: since, OutOfSyncAtEvents: 4711},
		{ID: "r2", State: store.ReplicaActive, OutOfSyncSince: since, DivergedSince: since.Add(time.Minute)},
	}}
	v := provisionerclient.VolumeFromProto(provisioner.VolumeToProto(sv))
	if len(v.Replicas) != 3 {
		t.Fatalf("replicas %+v", v.Replicas)
	}
	if r := v.Replicas[0]; !r.InSync() || r.OutOfSyncAtEvents != 0 {
		t.Errorf("in-sync replica read as %+v", r)
	}
	if r := v.Replicas[1]; r.InSync() || !r.OutOfSyncSince.Equal(since) || r.OutOfSyncAtEvents != 4711 {
		t.Errorf("out-of-sync replica read as since %v events %d", r.OutOfSyncSince, r.OutOfSyncAtEvents)
	}
	if v.Replicas[0].Diverged() || v.Replicas[1].Diverged() {
		t.Error("a replica no promotion gave up reads diverged")
	}
	if r := v.Replicas[2]; !r.Diverged() || !r.DivergedSince.Equal(since.Add(time.Minute)) {
		t.Errorf("diverged replica read as diverged since %v", r.DivergedSince)
	}
	old := provisionerclient.VolumeFromProto(&provisionerapi.Volume{Id: "vol-1", Replicas: []*provisionerapi.Replica{{Id: "r0"}}})
	if !old.Replicas[0].InSync() {
		t.Error("a replica without sync fields reads out of sync")
	}
}

func TestReplicaSyncCalls(t *testing.T) {
	e := start(t)
	p := e.client
	ctx := context.Background()
	v, err := p.CreateVolume(ctx, volume.CreateVolumeRequest{Name: "pvc-1", SizeBytes: gib, Parameters: map[string]string{"numReplicas": "2"}})
	if err != nil {
		t.Fatal(err)
	}
	// A node reports on volumes published to it (the provisioner's table).
	if _, err := p.PublishVolume(ctx, v.ID, hostA, "node-a"); err != nil {
		t.Fatal(err)
	}
	r0, r1 := v.Replicas[0].ID, v.Replicas[1].ID
	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	got, err := p.ReportReplicaSync(ctx, v.ID, r1, false, at, 99, "node-a")
	if err != nil {
		t.Fatalf("ReportReplicaSync: %v", err)
	}
	if r := got.Replicas[1]; r.ID != r1 || !r.OutOfSyncSince.Equal(at) || r.OutOfSyncAtEvents != 99 {
		t.Errorf("after report: %+v", r)
	}
	if g, _ := p.GetVolume(ctx, v.ID); g.Replicas[1].InSync() || !g.Replicas[0].InSync() {
		t.Errorf("GetVolume after report: %+v", g.Replicas)
	}
	_, err = p.ReportReplicaSync(ctx, v.ID, r0, false, at, 100, "node-a")
	wantErr(t, "ReportReplicaSync last in sync", err, volume.ErrFailedPrecondition, "last in-sync")
	_, err = p.ReportReplicaSync(ctx, v.ID, r0, false, time.Time{}, 0, "node-a")
	wantErr(t, "ReportReplicaSync without time", err, volume.ErrInvalidArgument, "observed_at")
	_, err = p.PromoteReplicas(ctx, v.ID, []string{"rep-nope"}, "drill")
	wantErr(t, "PromoteReplicas unknown", err, volume.ErrInvalidArgument, "rep-nope")

	got, err = p.PromoteReplicas(ctx, v.ID, []string{r1}, "drill")
	if err != nil {
		t.Fatalf("PromoteReplicas: %v", err)
	}
	if !got.Replicas[1].InSync() {
		t.Errorf("after promotion: %+v", got.Replicas[1])
	}
	es, err := p.ListEvents(ctx, events.Filter{Volume: v.ID, Types: []events.Type{events.Audit}})
	if err != nil || len(es) != 1 || !strings.Contains(es[0].Message, "drill") || es[0].Method != provisioner.PromoteMethod {
		t.Errorf("audit events %+v, %v", es, err)
	}
}
