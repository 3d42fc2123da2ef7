package provisioner_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/boltstore"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/rpcauth/rpcauthtest"
)

// leaderStore is a bolt registry whose leadership a test takes away.
type leaderStore struct {
	store.Store
	follower atomic.Bool
}

func (s *leaderStore) IsLeader() bool { return !s.follower.Load() }

// hubEnv serves a provisioner over mutual TLS with its authorization, as
// in production, and dials it as node plugins.
type hubEnv struct {
	env   *env
	svc   *provisioner.Service
	store *leaderStore
	ca    *rpcauthtest.CA
	addr  string
}

func newHubEnv(t *testing.T) *hubEnv {
	t.Helper()
	bolt, err := boltstore.Open(filepath.Join(t.TempDir(), "registry.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	st := &leaderStore{Store: bolt}
	e := newEnvWithStore(t, st, threeRacks(), provisioner.Options{})
	ca := rpcauthtest.NewCA(t)
	dir := t.TempDir()
	crt, key := ca.Server(t, "nvmirror-provisioner").WriteNamed(t, dir, "server")
	s, err := rpcauth.NewServer(rpcauth.ServerConfig{CertFile: crt, KeyFile: key, ClientCAFile: ca.WriteCA(t, dir),
		Authorizer: provisioner.NewAuthorizer(st)})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(s.ServerOptions()...)
	provisionerapi.RegisterProvisionerServer(srv, provisioner.NewServer(e.svc))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return &hubEnv{env: e, svc: e.svc, store: st, ca: ca, addr: lis.Addr().String()}
}

func (h *hubEnv) as(t *testing.T, name string, roles ...string) provisionerapi.ProvisionerClient {
	t.Helper()
	c := h.ca.Client(t, name, roles...)
	cfg := c.ClientTLS()
	cfg.ServerName = "localhost"
	cfg.Certificates = []tls.Certificate{c.TLS}
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return provisionerapi.NewProvisionerClient(conn)
}

// fakeNode is a node plugin's stream, driven by the test.
type fakeNode struct {
	t      *testing.T
	api    provisionerapi.ProvisionerClient
	id     string
	stream grpc.ServerStreamingClient[provisionerapi.NodeCommand]
	cancel context.CancelFunc
}

// connect opens the node's stream and waits until the provisioner holds it.
func (h *hubEnv) connect(t *testing.T, name, nodeID string) *fakeNode {
	t.Helper()
	api := h.as(t, name, "node")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := api.NodeCommands(ctx, &provisionerapi.NodeCommandsRequest{NodeId: nodeID, HostNqn: hostA})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the provisioner to hold the stream of "+nodeID, func() bool { return h.svc.Nodes().Connected(nodeID) })
	return &fakeNode{t: t, api: api, id: nodeID, stream: stream, cancel: cancel}
}

func (n *fakeNode) recv() *provisionerapi.NodeCommand {
	n.t.Helper()
	c, err := n.stream.Recv()
	if err != nil {
		n.t.Fatalf("node %s: %v", n.id, err)
	}
	return c
}

func (n *fakeNode) answer(r *provisionerapi.CommandResult) {
	n.t.Helper()
	r.NodeId = n.id
	if _, err := n.api.ReportCommandResult(context.Background(), r); err != nil {
		n.t.Fatalf("report: %v", err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

type freezeOutcome struct {
	id     string
	inSync map[string][]string
	err    error
}

func (h *hubEnv) freezeAsync(ctx context.Context, nodeID string, vols []string, thawAfter time.Duration) <-chan freezeOutcome {
	c := make(chan freezeOutcome, 1)
	go func() {
		id, in, err := h.svc.Nodes().Freeze(ctx, nodeID, vols, thawAfter)
		c <- freezeOutcome{id, in, err}
	}()
	return c
}

const w1 = "worker-1/" + hostA

// A freeze goes to the node's stream and returns what the node reports;
// the thaw names the freeze; both are answered by ReportCommandResult,
// whose repeat is accepted.
func TestNodeHubFreezeAndThaw(t *testing.T) {
	h := newHubEnv(t)
	n := h.connect(t, "worker-1", w1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := h.freezeAsync(ctx, w1, []string{"vol-a", "vol-b"}, 5*time.Second)
	cmd := n.recv()
	f := cmd.GetFreeze()
	if f == nil || !slices.Equal(f.GetVolumeIds(), []string{"vol-a", "vol-b"}) || f.GetThawAfterMs() != 5000 || cmd.GetCommandId() == "" {
		t.Fatalf("node got %+v", cmd)
	}
	res := &provisionerapi.CommandResult{CommandId: cmd.GetCommandId(), Frozen: []*provisionerapi.FrozenVolume{
		{VolumeId: "vol-a", InSyncReplicaIds: []string{"rep-1", "rep-2"}, WritesHeld: true},
		{VolumeId: "vol-b", InSyncReplicaIds: []string{"rep-9"}}}}
	n.answer(res)
	o := <-out
	if o.err != nil {
		t.Fatal(o.err)
	}
	if o.id != cmd.GetCommandId() || !slices.Equal(o.inSync["vol-a"], []string{"rep-1", "rep-2"}) || !slices.Equal(o.inSync["vol-b"], []string{"rep-9"}) {
		t.Fatalf("Freeze returned %q %v", o.id, o.inSync)
	}
	n.answer(res) // a repeated report of an answered command: accepted

	thawed := make(chan error, 1)
	go func() { thawed <- h.svc.Nodes().Thaw(ctx, w1, o.id) }()
	tc := n.recv()
	if tc.GetThaw().GetFreezeCommandId() != o.id || tc.GetCommandId() == o.id {
		t.Fatalf("thaw command %+v", tc)
	}
	n.answer(&provisionerapi.CommandResult{CommandId: tc.GetCommandId()})
	if err := <-thawed; err != nil {
		t.Fatal(err)
	}
}

// The node's refusal, a node that does not answer in time, a node not
// connected, and a node whose stream closes mid-freeze; each failed freeze
// the node may have made is thawed at once.
func TestNodeHubFreezeFailures(t *testing.T) {
	h := newHubEnv(t)
	hub := h.svc.Nodes()
	bg := context.Background()

	_, _, err := hub.Freeze(bg, "worker-9/"+hostB, []string{"vol-a"}, time.Second)
	if !errors.Is(err, provisioner.ErrNodeNotConnected) || provisioner.Code(err) != codes.Unavailable {
		t.Fatalf("node not connected: %v (code %v), want ErrNodeNotConnected, Unavailable", err, provisioner.Code(err))
	}
	if err := hub.Thaw(bg, "worker-9", "frz-x"); !errors.Is(err, provisioner.ErrNodeNotConnected) {
		t.Fatalf("thaw on a node not connected: %v", err)
	}
	if _, _, err := hub.Freeze(bg, w1, nil, time.Second); provisioner.Code(err) != codes.InvalidArgument {
		t.Fatalf("freeze of nothing: %v", err)
	}

	n := h.connect(t, "worker-1", w1)
	// Refused by the node: its message, Unavailable.
	out := h.freezeAsync(bg, w1, []string{"vol-a"}, time.Second)
	cmd := n.recv()
	n.answer(&provisionerapi.CommandResult{CommandId: cmd.GetCommandId(), Error: "volume vol-a not staged on node worker-1"})
	if o := <-out; provisioner.Code(o.err) != codes.Unavailable || !strings.Contains(o.err.Error(), "vol-a not staged") {
		t.Fatalf("refused freeze: %v", o.err)
	}
	if tc := n.recv(); tc.GetThaw().GetFreezeCommandId() != cmd.GetCommandId() {
		t.Fatalf("after a refused freeze the node got %+v, want its thaw", tc)
	} else {
		n.answer(&provisionerapi.CommandResult{CommandId: tc.GetCommandId()})
	}

	// No answer within the caller's deadline.
	ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
	defer cancel()
	out = h.freezeAsync(ctx, w1, []string{"vol-a"}, time.Second)
	cmd = n.recv()
	o := <-out
	if !errors.Is(o.err, context.DeadlineExceeded) || provisioner.Code(o.err) != codes.Unavailable {
		t.Fatalf("unanswered freeze: %v (code %v)", o.err, provisioner.Code(o.err))
	}
	tc := n.recv()
	if tc.GetThaw().GetFreezeCommandId() != cmd.GetCommandId() {
		t.Fatalf("after a timed-out freeze the node got %+v, want its thaw", tc)
	}
	n.answer(&provisionerapi.CommandResult{CommandId: tc.GetCommandId()})
	// The late answer of the freeze is accepted and dropped.
	n.answer(&provisionerapi.CommandResult{CommandId: cmd.GetCommandId(), Frozen: []*provisionerapi.FrozenVolume{{VolumeId: "vol-a", InSyncReplicaIds: []string{"r"}}}})

	// An answer naming fewer volumes than asked is no freeze.
	out = h.freezeAsync(bg, w1, []string{"vol-a", "vol-b"}, time.Second)
	cmd = n.recv()
	n.answer(&provisionerapi.CommandResult{CommandId: cmd.GetCommandId(), Frozen: []*provisionerapi.FrozenVolume{{VolumeId: "vol-a", InSyncReplicaIds: []string{"r"}}}})
	if o := <-out; o.err == nil || !strings.Contains(o.err.Error(), "without volume vol-b") {
		t.Fatalf("partial answer: %v", o.err)
	}
	n.answer(&provisionerapi.CommandResult{CommandId: n.recv().GetCommandId()})

	// The node goes mid-freeze.
	out = h.freezeAsync(bg, w1, []string{"vol-a"}, time.Second)
	n.recv()
	n.cancel()
	if o := <-out; !errors.Is(o.err, provisioner.ErrNodeNotConnected) || provisioner.Code(o.err) != codes.Unavailable {
		t.Fatalf("node gone mid-freeze: %v", o.err)
	}
	eventually(t, "the stream forgotten", func() bool { return !hub.Connected(w1) })
}

// A node may open only its own stream and report only as itself; other
// roles may do neither. A newer stream of a node replaces the older one.
func TestNodeHubAuthorization(t *testing.T) {
	h := newHubEnv(t)
	bg := context.Background()
	w2 := h.as(t, "worker-2", "node")
	stream, err := w2.NodeCommands(bg, &provisionerapi.NodeCommandsRequest{NodeId: w1})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "names another node") {
		t.Fatalf("worker-2 opening worker-1's stream: %v", err)
	}
	if h.svc.Nodes().Connected(w1) {
		t.Fatal("worker-2 holds worker-1's stream")
	}
	ctlStream, err := h.as(t, "nvmirror-controller", "controller").NodeCommands(bg, &provisionerapi.NodeCommandsRequest{NodeId: w1})
	if err == nil {
		_, err = ctlStream.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("controller opening a node stream: %v", err)
	}
	if _, err := w2.ReportCommandResult(bg, &provisionerapi.CommandResult{NodeId: w1, CommandId: "frz-1"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("worker-2 reporting as worker-1: %v", err)
	}

	// worker-2 answering a command sent to worker-1, naming itself.
	n := h.connect(t, "worker-1", w1)
	out := h.freezeAsync(bg, w1, []string{"vol-a"}, time.Second)
	cmd := n.recv()
	_, err = w2.ReportCommandResult(bg, &provisionerapi.CommandResult{NodeId: "worker-2/" + hostB, CommandId: cmd.GetCommandId(),
		Frozen: []*provisionerapi.FrozenVolume{{VolumeId: "vol-a", InSyncReplicaIds: []string{"r"}}}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("worker-2 answering worker-1's command: %v", err)
	}
	n.answer(&provisionerapi.CommandResult{CommandId: cmd.GetCommandId(), Frozen: []*provisionerapi.FrozenVolume{{VolumeId: "vol-a", InSyncReplicaIds: []string{"r"}}}})
	if o := <-out; o.err != nil {
		t.Fatal(o.err)
	}

	// worker-1 reconnects: the new stream gets the commands, the old one ends.
	n2 := h.connect(t, "worker-1", w1)
	if _, err := n.stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("replaced stream: %v, want Unavailable", err)
	}
	thawed := make(chan error, 1)
	go func() { thawed <- h.svc.Nodes().Thaw(bg, w1, "frz-old") }()
	tc := n2.recv()
	n2.answer(&provisionerapi.CommandResult{CommandId: tc.GetCommandId()})
	if err := <-thawed; err != nil {
		t.Fatal(err)
	}
}

// Only the leader holds node streams: a follower refuses them, and a
// stream ends when leadership is lost, so the node reconnects to the new
// leader.
func TestNodeHubFollowsLeadership(t *testing.T) {
	h := newHubEnv(t)
	n := h.connect(t, "worker-1", w1)
	h.store.follower.Store(true)
	if _, err := n.stream.Recv(); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not the leader") {
		t.Fatalf("stream after leadership lost: %v", err)
	}
	if _, _, err := h.svc.Nodes().Freeze(context.Background(), w1, []string{"vol-a"}, time.Second); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("freeze on a follower: %v", err)
	}
	stream, err := h.as(t, "worker-1", "node").NodeCommands(context.Background(), &provisionerapi.NodeCommandsRequest{NodeId: w1})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("stream to a follower: %v", err)
	}
}

// Shutdown ends the node streams (a graceful stop of the server waits for
// them) and refuses new ones.
func TestNodeHubShutdown(t *testing.T) {
	h := newHubEnv(t)
	n := h.connect(t, "worker-1", w1)
	h.svc.Nodes().Shutdown()
	if _, err := n.stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("stream after Shutdown: %v", err)
	}
	stream, err := h.as(t, "worker-1", "node").NodeCommands(context.Background(), &provisionerapi.NodeCommandsRequest{NodeId: w1})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "stopping") {
		t.Fatalf("stream after Shutdown: %v", err)
	}
}

// The snapshot of a published volume goes through the hub by default: the
// node gets the freeze of the volume, its answer names the legs copied,
// and the thaw follows the copies.
func TestSnapshotFreezesThroughTheNodeHub(t *testing.T) {
	h := newHubEnv(t)
	e := h.env
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, w1); err != nil {
		t.Fatal(err)
	}
	n := h.connect(t, "worker-1", w1)
	type outcome struct {
		snap *store.Snapshot
		err  error
	}
	done := make(chan outcome, 1)
	go func() {
		s, err := e.svc.CreateSnapshot(e.ctx, provisioner.SnapshotRequest{Name: "snap-1", SourceVolumeID: v.ID})
		done <- outcome{s, err}
	}()
	cmd := n.recv()
	if f := cmd.GetFreeze(); f == nil || !slices.Equal(f.GetVolumeIds(), []string{v.ID}) || f.GetThawAfterMs() == 0 {
		t.Fatalf("node got %+v, want the freeze of %s", cmd, v.ID)
	}
	// md holds only the first replica in sync: only its copy is the volume.
	n.answer(&provisionerapi.CommandResult{CommandId: cmd.GetCommandId(), Frozen: []*provisionerapi.FrozenVolume{
		{VolumeId: v.ID, InSyncReplicaIds: []string{v.Replicas[0].ID}, WritesHeld: true}}})
	thaw := n.recv()
	if thaw.GetThaw().GetFreezeCommandId() != cmd.GetCommandId() {
		t.Fatalf("after the freeze the node got %+v, want its thaw", thaw)
	}
	n.answer(&provisionerapi.CommandResult{CommandId: thaw.GetCommandId()})
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	// The copy is cut from the replica md held in sync, not from the one
	// it did not.
	var nodes []string
	for _, c := range o.snap.Copies {
		nodes = append(nodes, c.StorageNode)
	}
	if !slices.Equal(nodes, []string{v.Replicas[0].StorageNode}) {
		t.Fatalf("copies on %v, want only on %s (the in-sync replica's storage node)", nodes, v.Replicas[0].StorageNode)
	}
}
