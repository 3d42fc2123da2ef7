package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/nvmirror/nvmirror/pkg/adminctl"
	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/fakeagent"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/boltstore"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/rpcauth/rpcauthtest"
)

const liveHost = "nqn.2014-08.org.nvmexpress:uuid:6f1c2a10-7d3e-4b8a-9c1d-1a2b3c4d5e6f"

// liveProvisioner is a real provisioner gRPC server (mutual TLS, its table, bolt
// registry) over fake storage-node agents: what nvmirrorctl talks to in
// production, minus the kernel.
type liveProvisioner struct {
	svc     *provisioner.Service
	cluster *fakeagent.Cluster
	flags   []string // global flags that reach it
}

func startLiveProvisioner(t *testing.T) *liveProvisioner {
	t.Helper()
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "registry.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	c := fakeagent.New()
	for i, n := range []string{"sn-1", "sn-2", "sn-3"} {
		if err := st.PutStorageNode(ctx, c.AddNode(n, "z1", "rack-"+string(rune('a'+i)), 100<<30)); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := provisioner.New(provisioner.Options{Store: st, Agents: c})
	if err != nil {
		t.Fatal(err)
	}
	// The provisioner's own authentication and table; nvmirrorctl holds
	// an administrator's certificate.
	ca := rpcauthtest.NewCA(t)
	caFile := ca.WriteCA(t, dir)
	srvCrt, srvKey := ca.Server(t, "nvmirror-provisioner").WriteNamed(t, dir, "server")
	adminCrt, adminKey := ca.Client(t, "ops", "admin").WriteNamed(t, dir, "admin")
	auth, err := rpcauth.NewServer(rpcauth.ServerConfig{CertFile: srvCrt, KeyFile: srvKey, ClientCAFile: caFile,
		Authorizer: provisioner.NewAuthorizer(st)})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(auth.Credentials()),
		grpc.ChainUnaryInterceptor(auth.UnaryServerInterceptor(), provisioner.LoggingInterceptor))
	provisionerapi.RegisterProvisionerServer(srv, provisioner.NewServer(svc))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return &liveProvisioner{svc: svc, cluster: c,
		flags: []string{"--provisioner", lis.Addr().String(), "--ca-file", caFile, "--cert-file", adminCrt, "--key-file", adminKey, "--timeout", "10s"}}
}

// ctl runs nvmirrorctl with the provisioner's flags and returns stdout.
func (p *liveProvisioner) ctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append(append([]string{}, p.flags...), args...), &out, &errOut)
	return out.String(), err
}

func mustContain(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

func TestAgainstRunningProvisioner(t *testing.T) {
	p := startLiveProvisioner(t)
	ctx := context.Background()
	v, err := p.svc.CreateVolume(ctx, provisioner.CreateRequest{Name: "pvc-7f3a", SizeBytes: 2 << 30, Parameters: map[string]string{
		"numReplicas": "3", "authentication": "host",
		"csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "db"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.svc.PublishVolume(ctx, v.ID, liveHost, "worker-1/"+liveHost); err != nil {
		t.Fatal(err)
	}
	if _, err := p.svc.RecordEvents(ctx, events.Event{ID: "e1", Type: events.VolumeDegraded,
		Time: time.Now(), Volume: v.ID, Replicas: []string{v.Replicas[2].ID}, StorageNode: v.Replicas[2].StorageNode,
		Node: "worker-1", Message: "1 of 3 replicas missing"}); err != nil {
		t.Fatal(err)
	}

	out, err := p.ctl(t, "volumes")
	if err != nil {
		t.Fatalf("volumes: %v", err)
	}
	mustContain(t, "volumes", out, v.ID, "db/data", "2Gi", "3/3", "ready", "worker-1/")

	out, err = p.ctl(t, "volume", v.ID)
	if err != nil {
		t.Fatalf("volume: %v", err)
	}
	mustContain(t, "volume", out, v.Replicas[0].ID, v.Replicas[0].StorageNode, "rack-", "authentication=host", "VolumeDegraded", "1 of 3 replicas missing")

	out, err = p.ctl(t, "events", "--volume", v.ID, "--type", "VolumeDegraded", "--since", "1h")
	if err != nil {
		t.Fatalf("events: %v", err)
	}
	mustContain(t, "events", out, "VolumeDegraded", v.ID)
	if out, _ := p.ctl(t, "events", "--type", "VolumeHealed"); strings.Contains(out, v.ID) {
		t.Errorf("events --type VolumeHealed shows the Degraded event:\n%s", out)
	}

	out, err = p.ctl(t, "nodes")
	if err != nil {
		t.Fatalf("nodes: %v", err)
	}
	mustContain(t, "nodes", out, "sn-1", "sn-2", "sn-3", "rack-a")

	out, err = p.ctl(t, "set", v.ID, "maxReplicaDownTime=120")
	if err != nil || !strings.Contains(out, "maxReplicaDownTime=120") {
		t.Fatalf("set: %q, %v", out, err)
	}
	got, _ := p.svc.GetVolume(ctx, v.ID)
	if got.Parameters.MaxReplicaDownTimeMinutes != 120 {
		t.Errorf("set did not reach the registry: %d", got.Parameters.MaxReplicaDownTimeMinutes)
	}
	// The provisioner's refusal names the parameter.
	if _, err := p.ctl(t, "set", v.ID, "provisioningType=thick"); err == nil || !strings.Contains(err.Error(), "provisioningType") {
		t.Errorf("set of an immutable parameter: %v", err)
	}

	// rotate-keys: every storage node gets new secrets; JSON output parses.
	before := p.cluster.HostAuth(v.Replicas[0].StorageNode, liveHost)
	out, err = p.ctl(t, "-o", "json", "rotate-keys", v.ID)
	if err != nil {
		t.Fatalf("rotate-keys: %v", err)
	}
	var rot struct {
		HostNqn      string `json:"hostNqn"`
		StorageNodes []struct {
			StorageNode string `json:"storageNode"`
			Generation  string `json:"generation"`
			Error       string `json:"error"`
		} `json:"storageNodes"`
	}
	if err := json.Unmarshal([]byte(out), &rot); err != nil {
		t.Fatalf("rotate-keys -o json: %v\n%s", err, out)
	}
	if rot.HostNqn != liveHost || len(rot.StorageNodes) != 3 || rot.StorageNodes[0].Generation != "2" || rot.StorageNodes[0].Error != "" {
		t.Errorf("rotate-keys answer %+v", rot)
	}
	if after := p.cluster.HostAuth(v.Replicas[0].StorageNode, liveHost); after.Secret == before.Secret || after.Secret == "" {
		t.Error("rotate-keys did not change the storage node's secret")
	}
	if strings.Contains(out, "DHHC-1") {
		t.Error("rotate-keys printed a secret")
	}
	// A storage node away: the table says PENDING and the command fails,
	// naming the node and what to do.
	p.cluster.SetDown("sn-2", true)
	out, err = p.ctl(t, "rotate-keys", v.ID)
	if err == nil || !strings.Contains(err.Error(), "sn-2") || !strings.Contains(err.Error(), "again") {
		t.Errorf("rotate-keys with sn-2 away: err %v", err)
	}
	mustContain(t, "rotate-keys table", out, "sn-1", "rotated", "sn-2", "PENDING")

	// Errors name what is wrong.
	if _, err := p.ctl(t, "volume", "vol-nope"); err == nil || !strings.Contains(err.Error(), "vol-nope") {
		t.Errorf("volume of an unknown ID: %v", err)
	}
	var ue adminctl.UsageError
	if _, err := p.ctl(t, "rotate-keys"); !errors.As(err, &ue) || !strings.Contains(err.Error(), "VOLUME_ID") {
		t.Errorf("rotate-keys without a volume: %v", err)
	}
}

// TestPromoteAgainstRunningProvisioner: without --accept-data-loss nothing
// reaches the registry; with it, the replica is in sync and the promotion
// is audited.
func TestPromoteAgainstRunningProvisioner(t *testing.T) {
	p := startLiveProvisioner(t)
	ctx := context.Background()
	v, err := p.svc.CreateVolume(ctx, provisioner.CreateRequest{Name: "pvc-1", SizeBytes: 1 << 30, Parameters: map[string]string{"numReplicas": "2"}})
	if err != nil {
		t.Fatal(err)
	}
	stale := v.Replicas[1].ID
	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	if _, err := p.svc.ReportReplicaSync(ctx, provisioner.SyncReport{VolumeID: v.ID, ReplicaID: stale, ObservedAt: at, ArrayEvents: 42, NodeID: "worker-1"}); err != nil {
		t.Fatal(err)
	}
	out, err := p.ctl(t, "volume", v.ID)
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "volume", out, "in sync", "out of sync since 2026-05-01T10:00:00Z (md events 42)")

	_, err = p.ctl(t, "promote", v.ID, stale, "--reason", "drill")
	var ue adminctl.UsageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--accept-data-loss") || !strings.Contains(err.Error(), "since 2026-05-01T10:00:00Z") {
		t.Errorf("promote without --accept-data-loss: %v", err)
	}
	if got, _ := p.svc.GetVolume(ctx, v.ID); got.Replica(stale).InSync() {
		t.Fatal("a refused promote changed the registry")
	}

	out, err = p.ctl(t, "promote", v.ID, stale, "--accept-data-loss", "--reason", "drill")
	if err != nil {
		t.Fatalf("promote: %v", err)
	}
	mustContain(t, "promote", out, stale, "in sync")
	if got, _ := p.svc.GetVolume(ctx, v.ID); !got.Replica(stale).InSync() {
		t.Error("promote did not reach the registry")
	}
	out, err = p.ctl(t, "events", "--volume", v.ID, "--type", "Audit")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "audit events", out, "PromoteReplicas", "WARNING", "drill")
	// The provisioner's refusal of a replica of no volume names it.
	if _, err := p.ctl(t, "promote", v.ID, "rep-nope", "--accept-data-loss"); err == nil || !strings.Contains(err.Error(), "rep-nope") {
		t.Errorf("promote of an unknown replica: %v", err)
	}
}

// TestOrphansAgainstRunningProvisioner: the listing says what each orphan
// is and when it goes; reclaim deletes the named ones and reports refusals
// without stopping at them.
func TestOrphansAgainstRunningProvisioner(t *testing.T) {
	p := startLiveProvisioner(t)
	ctx := context.Background()
	out, err := p.ctl(t, "orphans")
	if err != nil {
		t.Fatalf("orphans: %v", err)
	}
	mustContain(t, "orphans before a scan", out, "No orphan scan yet", "No orphan replicas.")

	v, err := p.svc.CreateVolume(ctx, provisioner.CreateRequest{Name: "pvc-gone", SizeBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.svc.DeleteVolume(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	for _, r := range []provisioner.ReplicaSpec{
		{ReplicaID: v.Replicas[0].ID, VolumeID: v.ID, SizeBytes: 1 << 30},      // a late create of the deleted volume
		{ReplicaID: "rep-restored", VolumeID: "vol-newer", SizeBytes: 2 << 30}, // unknown to the registry
	} {
		a, _ := p.cluster.Agent(ctx, &store.StorageNode{ID: v.Replicas[0].StorageNode})
		if _, err := a.CreateReplica(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.svc.ScanOrphans(ctx); err != nil {
		t.Fatal(err)
	}
	out, err = p.ctl(t, "orphans")
	if err != nil {
		t.Fatalf("orphans: %v", err)
	}
	mustContain(t, "orphans", out, "Last scan:", v.Replicas[0].ID, v.ID, "released", "in 15m0s", "pvc-gone",
		"rep-restored", "vol-newer", "2Gi", "unknown", "by command only")

	out, err = p.ctl(t, "orphans", "reclaim", "rep-restored", "rep-nope")
	if err == nil || !strings.Contains(err.Error(), "rep-nope") || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("reclaim of a replica that is no orphan: %v", err)
	}
	mustContain(t, "orphans reclaim", out, "reclaimed rep-restored (volume vol-newer, unknown) from storage node "+v.Replicas[0].StorageNode)
	if p.cluster.Replica(v.Replicas[0].StorageNode, "rep-restored") != nil {
		t.Error("rep-restored still held")
	}
	var ue adminctl.UsageError
	if _, err := p.ctl(t, "orphans", "reclaim"); !errors.As(err, &ue) || !strings.Contains(err.Error(), "REPLICA_ID") {
		t.Errorf("orphans reclaim without IDs: %v", err)
	}
	if _, err := p.ctl(t, "orphans", "delete", "x"); !errors.As(err, &ue) || !strings.Contains(err.Error(), `"delete"`) {
		t.Errorf("orphans with an unknown subcommand: %v", err)
	}
}
