package nodecmd_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/nvmirror/nvmirror/pkg/inflight"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nodecmd"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
)

const nodeID = "worker-1/nqn.2014-08.org.nvmexpress:uuid:5b1e4f5c-0000-4000-8000-000000000001"

// fakeProv is the provisioner's end of the channel, served over a real
// gRPC server: the test pushes commands and reads the results.
type fakeProv struct {
	provisionerapi.UnimplementedProvisionerServer
	cmds    chan *provisionerapi.NodeCommand
	results chan *provisionerapi.CommandResult
	opened  chan *provisionerapi.NodeCommandsRequest
	// refuse: how many streams to refuse (Unavailable) before serving.
	refuse atomic.Int32
}

func (p *fakeProv) NodeCommands(req *provisionerapi.NodeCommandsRequest, stream grpc.ServerStreamingServer[provisionerapi.NodeCommand]) error {
	p.opened <- req
	if p.refuse.Add(-1) >= 0 {
		return status.Error(codes.Unavailable, "this provisioner is not the leader")
	}
	for {
		select {
		case c := <-p.cmds:
			if err := stream.Send(c); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (p *fakeProv) ReportCommandResult(_ context.Context, r *provisionerapi.CommandResult) (*provisionerapi.ReportCommandResultResponse, error) {
	p.results <- r
	return &provisionerapi.ReportCommandResultResponse{}, nil
}

// arrays is the real mdraid.Manager over a temporary /sys, writing the
// suspend range the way sysfs does (a write replaces the value; a regular
// file would keep the old tail), and letting a test make a suspend hang.
type arrays struct {
	*mdraid.Manager
	root     string
	suspends atomic.Int32
	mu       sync.Mutex
	gate     map[string]chan struct{} // array → closed when its suspend may go on
}

func (a *arrays) truncate(name string) {
	for _, attr := range []string{"suspend_lo", "suspend_hi"} {
		p := filepath.Join(a.root, "sys/block", name, "md", attr)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			_ = os.Truncate(p, 0)
		}
	}
}

func (a *arrays) SuspendWrites(name string) error {
	a.suspends.Add(1)
	a.mu.Lock()
	g := a.gate[name]
	a.mu.Unlock()
	if g != nil {
		<-g
	}
	a.truncate(name)
	return a.Manager.SuspendWrites(name)
}

func (a *arrays) ResumeWrites(name string) error {
	a.truncate(name)
	return a.Manager.ResumeWrites(name)
}

type env struct {
	t      *testing.T
	root   string
	state  string
	prov   *fakeProv
	arrays *arrays
	locks  *inflight.Set
	loop   *nodecmd.Loop
	cfg    nodecmd.Config
	stop   func()
}

// member devices → replica IDs, standing for the driver's mapping.
var replicaOf = map[string]string{"nvme0n1": "r1", "nvme1n1": "r2", "nvme2n1": "r3", "nvme3n1": "r4", "nvme4n1": "r5"}

func newEnv(t *testing.T, mutate ...func(*nodecmd.Config)) *env {
	t.Helper()
	e := &env{t: t, root: t.TempDir(), state: t.TempDir(), locks: &inflight.Set{},
		prov: &fakeProv{cmds: make(chan *provisionerapi.NodeCommand, 16), results: make(chan *provisionerapi.CommandResult, 16),
			opened: make(chan *provisionerapi.NodeCommandsRequest, 16)}}
	e.arrays = &arrays{Manager: mdraid.NewManager(nil, e.root), root: e.root, gate: map[string]chan struct{}{}}
	e.cfg = nodecmd.Config{
		NodeID: nodeID, HostNQN: "nqn.host",
		Staged: func() ([]stagestate.Volume, error) { return stagestate.ListVolumes(e.state) },
		Lock: func(id string) (func(), bool) {
			if !e.locks.Insert(id) {
				return nil, false
			}
			return func() { e.locks.Delete(id) }, true
		},
		Arrays: e.arrays,
		InSync: func(v stagestate.Volume, a mdraid.Array) []string {
			var ids []string
			for _, m := range a.Members {
				if m.State.InSync && !m.State.Faulty {
					ids = append(ids, replicaOf[m.Device])
				}
			}
			return ids
		},
		RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
	}
	for _, m := range mutate {
		m(&e.cfg)
	}
	return e
}

// start serves the fake provisioner on a bufconn and runs the loop.
func (e *env) start() {
	t := e.t
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	provisionerapi.RegisterProvisionerServer(srv, e.prov)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	e.cfg.Client = provisionerapi.NewProvisionerClient(conn)
	e.loop, err = nodecmd.New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.loop.Run(ctx); close(done) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			<-done
			conn.Close()
			srv.Stop()
		})
	}
	t.Cleanup(e.stop)
}

// array writes /sys/block/<name> for a running RAID1 of the members
// (device → state) with the size in sectors.
func (e *env) array(name string, sectors string, syncAction string, members map[string]string) {
	w := func(rel, v string) {
		p := filepath.Join(e.root, "sys/block", name, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			e.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
	w("size", sectors)
	for attr, v := range map[string]string{"array_state": "clean", "level": "raid1", "raid_disks": "3", "degraded": "0",
		"sync_action": syncAction, "component_size": "39936", "mismatch_cnt": "0", "suspend_lo": "0", "suspend_hi": "0"} {
		w("md/"+attr, v)
	}
	slot := 0
	for dev, state := range members {
		w("md/dev-"+dev+"/state", state)
		w("md/dev-"+dev+"/slot", string(rune('0'+slot)))
		w("md/dev-"+dev+"/errors", "0")
		slot++
	}
}

// stage records a staged volume (mdDevice "" for one replica).
func (e *env) stage(id, mdDevice string, replicas ...string) {
	st := &stagestate.State{Version: 1, VolumeID: id, Phase: stagestate.Staged, StagingPath: filepath.Join(e.state, "pv", id, "globalmount"),
		HostNQN: "nqn.host", MDDevice: mdDevice}
	for _, r := range replicas {
		st.Replicas = append(st.Replicas, stagestate.Replica{ID: r, NQN: "nqn.2014-08.io.nvmirror:" + r})
	}
	if err := stagestate.New(e.state).Save(st); err != nil {
		e.t.Fatal(err)
	}
}

// suspendRange reads md/suspend_lo and suspend_hi of an array.
func (e *env) suspendRange(name string) string {
	read := func(attr string) string {
		b, err := os.ReadFile(filepath.Join(e.root, "sys/block", name, "md", attr))
		if err != nil {
			e.t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	return read("suspend_lo") + "-" + read("suspend_hi")
}

func (e *env) locked(id string) bool {
	if e.locks.Insert(id) {
		e.locks.Delete(id)
		return false
	}
	return true
}

func (e *env) send(c *provisionerapi.NodeCommand) { e.prov.cmds <- c }

func freezeCmd(id string, thawAfter time.Duration, vols ...string) *provisionerapi.NodeCommand {
	return &provisionerapi.NodeCommand{CommandId: id, Command: &provisionerapi.NodeCommand_Freeze{
		Freeze: &provisionerapi.FreezeVolumes{VolumeIds: vols, ThawAfterMs: uint32(thawAfter / time.Millisecond)}}}
}

func thawCmd(id, freezeID string) *provisionerapi.NodeCommand {
	return &provisionerapi.NodeCommand{CommandId: id, Command: &provisionerapi.NodeCommand_Thaw{Thaw: &provisionerapi.ThawVolumes{FreezeCommandId: freezeID}}}
}

// result waits for the result of command id (others are skipped).
func (e *env) result(id string) *provisionerapi.CommandResult {
	e.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case r := <-e.prov.results:
			if r.GetCommandId() == id {
				if r.GetNodeId() != nodeID {
					e.t.Fatalf("result of %s names node %q", id, r.GetNodeId())
				}
				return r
			}
		case <-deadline:
			e.t.Fatalf("no result for command %s", id)
		}
	}
}

// eventually waits for cond, failing after a deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func frozenOf(r *provisionerapi.CommandResult) map[string]string {
	out := map[string]string{}
	for _, f := range r.GetFrozen() {
		ids := slices.Clone(f.GetInSyncReplicaIds())
		slices.Sort(ids)
		held := "held"
		if !f.GetWritesHeld() {
			held = "not held"
		}
		out[f.GetVolumeId()] = strings.Join(ids, ",") + " " + held
	}
	return out
}

func (e *env) waitOpened() *provisionerapi.NodeCommandsRequest {
	e.t.Helper()
	select {
	case r := <-e.prov.opened:
		return r
	case <-time.After(10 * time.Second):
		e.t.Fatal("the node never opened the stream")
		return nil
	}
}

// A freeze of a mirrored and a one-replica volume: the array's writes are
// held over its whole size, its in-sync replicas reported, the volumes
// locked; the thaw releases all, and a second thaw of it succeeds.
func TestFreezeAndThaw(t *testing.T) {
	e := newEnv(t)
	e.array("md127", "79872", "idle", map[string]string{"nvme0n1": "in_sync", "nvme1n1": "in_sync,failfast", "nvme2n1": "faulty"})
	e.stage("v1", "/dev/md127", "r1", "r2", "r3")
	e.stage("v2", "", "r9")
	e.start()
	if req := e.waitOpened(); req.GetNodeId() != nodeID || req.GetHostNqn() != "nqn.host" {
		t.Fatalf("stream opened with %+v", req)
	}
	e.send(freezeCmd("f1", 10*time.Second, "v1", "v2"))
	r := e.result("f1")
	if r.GetError() != "" {
		t.Fatalf("freeze failed: %s", r.GetError())
	}
	if got, want := frozenOf(r), map[string]string{"v1": "r1,r2 held", "v2": "r9 not held"}; !equalMaps(got, want) {
		t.Fatalf("frozen %v, want %v (the faulty member's replica left out)", got, want)
	}
	if got := e.suspendRange("md127"); got != "0-79872" {
		t.Fatalf("md127 suspend range %s, want the whole array 0-79872", got)
	}
	if !e.locked("v1") || !e.locked("v2") {
		t.Fatal("frozen volumes not locked: NodeStage, NodeUnstage and NodeExpand would run")
	}
	// A repeated freeze gets the same answer, and holds nothing more.
	e.send(freezeCmd("f1", 10*time.Second, "v1", "v2"))
	if again := e.result("f1"); !equalMaps(frozenOf(again), frozenOf(r)) {
		t.Fatalf("repeated freeze: %v", frozenOf(again))
	}
	if n := e.arrays.suspends.Load(); n != 1 {
		t.Fatalf("%d suspends, want 1", n)
	}

	e.send(thawCmd("t1", "f1"))
	if r := e.result("t1"); r.GetError() != "" {
		t.Fatalf("thaw: %s", r.GetError())
	}
	if got := e.suspendRange("md127"); got != "0-0" {
		t.Fatalf("after thaw md127 suspend range %s, want empty", got)
	}
	if e.locked("v1") || e.locked("v2") {
		t.Fatal("volumes still locked after the thaw")
	}
	for _, c := range []*provisionerapi.NodeCommand{thawCmd("t2", "f1"), thawCmd("t3", "never-sent")} {
		e.send(c)
		if r := e.result(c.GetCommandId()); r.GetError() != "" {
			t.Fatalf("thaw of a finished or unknown freeze: %s, want success", r.GetError())
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// All or nothing: a volume not staged here fails the freeze before
// anything is held; an array md refuses to suspend fails it after the
// others were suspended, and they are released; a busy volume too.
func TestFreezeAllOrNothing(t *testing.T) {
	e := newEnv(t)
	e.array("md127", "2048", "idle", map[string]string{"nvme0n1": "in_sync", "nvme1n1": "in_sync"})
	e.array("md126", "2048", "idle", map[string]string{"nvme3n1": "in_sync", "nvme4n1": "in_sync"})
	e.stage("v1", "/dev/md127", "r1", "r2")
	e.stage("v3", "/dev/md126", "r4", "r5")
	e.start()

	e.send(freezeCmd("f1", 5*time.Second, "v1", "nope"))
	if r := e.result("f1"); !strings.Contains(r.GetError(), "volume nope not staged on node "+nodeID) || len(r.GetFrozen()) != 0 {
		t.Fatalf("freeze naming an unknown volume: %+v", r)
	}
	if n := e.arrays.suspends.Load(); n != 0 || e.locked("v1") {
		t.Fatalf("%d suspends, v1 locked %v: want nothing touched", n, e.locked("v1"))
	}

	// md126 refuses the store (its attribute cannot be written).
	p := filepath.Join(e.root, "sys/block/md126/md/suspend_hi")
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	e.send(freezeCmd("f2", 5*time.Second, "v1", "v3"))
	r := e.result("f2")
	if !strings.Contains(r.GetError(), "volume v3: hold writes of md126") || len(r.GetFrozen()) != 0 {
		t.Fatalf("freeze with a refusing array: %+v", r)
	}
	eventually(t, "md127 released and the volumes unlocked", func() bool {
		return e.suspendRange("md127") == "0-0" && !e.locked("v1") && !e.locked("v3")
	})
	if n := e.arrays.suspends.Load(); n != 2 {
		t.Fatalf("%d suspends, want both arrays tried", n)
	}

	// A volume some node operation holds.
	unlock, _ := e.cfg.Lock("v1")
	e.send(freezeCmd("f3", 5*time.Second, "v3", "v1"))
	if r := e.result("f3"); !strings.Contains(r.GetError(), "volume v1 is busy") {
		t.Fatalf("freeze of a busy volume: %+v", r)
	}
	unlock()
	eventually(t, "v3 unlocked", func() bool { return !e.locked("v3") })
	if n := e.arrays.suspends.Load(); n != 2 {
		t.Fatalf("a freeze refused for a busy volume suspended an array (%d suspends, want still 2)", n)
	}
}

// The node thaws by itself at thaw_after: the provisioner may be gone.
func TestFreezeThawsByItself(t *testing.T) {
	e := newEnv(t)
	e.array("md127", "2048", "idle", map[string]string{"nvme0n1": "in_sync", "nvme1n1": "in_sync"})
	e.stage("v1", "/dev/md127", "r1", "r2")
	e.start()
	start := time.Now()
	e.send(freezeCmd("f1", 300*time.Millisecond, "v1"))
	if r := e.result("f1"); r.GetError() != "" {
		t.Fatal(r.GetError())
	}
	if got := e.suspendRange("md127"); got != "0-2048" {
		t.Fatalf("suspend range %s", got)
	}
	eventually(t, "the freeze to end by itself", func() bool { return e.suspendRange("md127") == "0-0" && !e.locked("v1") })
	if held := time.Since(start); held < 300*time.Millisecond {
		t.Fatalf("released after %v, before thaw_after", held)
	}
	// thaw_after 0 asks for the node's cap (above it is refused: see
	// TestFreezeLongerThanTheNodeHoldsIsRefused).
	e2 := newEnv(t, func(c *nodecmd.Config) { c.MaxHold = 200 * time.Millisecond })
	e2.array("md127", "2048", "idle", map[string]string{"nvme0n1": "in_sync"})
	e2.stage("v1", "/dev/md127", "r1")
	e2.start()
	e2.send(freezeCmd("f1", 0, "v1"))
	if r := e2.result("f1"); r.GetError() != "" {
		t.Fatal(r.GetError())
	}
	eventually(t, "a freeze asking for the cap to end at the node's cap", func() bool { return e2.suspendRange("md127") == "0-0" })
}

// md still draining writes in flight when the freeze must end: the freeze
// fails, and the array is released as soon as the store returns, the
// volume unlocked only then.
func TestFreezeWhoseDrainOutlivesIt(t *testing.T) {
	e := newEnv(t)
	e.array("md127", "2048", "idle", map[string]string{"nvme0n1": "in_sync", "nvme1n1": "in_sync"})
	e.stage("v1", "/dev/md127", "r1", "r2")
	gate := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	e.arrays.gate["md127"] = gate
	e.start()
	t.Cleanup(open)
	e.send(freezeCmd("f1", 200*time.Millisecond, "v1"))
	r := e.result("f1")
	if !strings.Contains(r.GetError(), "did not finish the writes in flight") {
		t.Fatalf("result %+v, want the drain named", r)
	}
	if !e.locked("v1") {
		t.Fatal("volume unlocked while md may still suspend it")
	}
	open() // the store returns: the range was set, and must be undone
	eventually(t, "the late suspend undone and the volume unlocked", func() bool {
		return e.suspendRange("md127") == "0-0" && !e.locked("v1")
	})
}

// A resync writes to in-sync members whatever is held: refused.
func TestFreezeRefusesAResync(t *testing.T) {
	e := newEnv(t)
	e.array("md127", "2048", "resync", map[string]string{"nvme0n1": "in_sync", "nvme1n1": "in_sync"})
	e.stage("v1", "/dev/md127", "r1", "r2")
	e.start()
	e.send(freezeCmd("f1", time.Second, "v1"))
	if r := e.result("f1"); !strings.Contains(r.GetError(), "runs a resync") {
		t.Fatalf("result %+v", r)
	}
	// The answer goes out before the lock is let go.
	eventually(t, "the volume unlocked", func() bool { return !e.locked("v1") })
	if n := e.arrays.suspends.Load(); n != 0 {
		t.Fatalf("a freeze refused for a resync suspended %d arrays", n)
	}
}

// A freeze asking for a longer hold than the node gives is refused, never
// silently shortened: the provisioner would trust copies cut after the node
// had let writes through.
func TestFreezeLongerThanTheNodeHoldsIsRefused(t *testing.T) {
	e := newEnv(t)
	e.array("md127", "2048", "idle", map[string]string{"nvme0n1": "in_sync", "nvme1n1": "in_sync"})
	e.stage("v1", "/dev/md127", "r1", "r2")
	e.start()
	e.send(freezeCmd("f1", time.Hour, "v1"))
	if r := e.result("f1"); !strings.Contains(r.GetError(), "--freeze-max-hold") {
		t.Fatalf("result %+v", r)
	}
	if n := e.arrays.suspends.Load(); n != 0 || e.locked("v1") {
		t.Fatalf("a refused freeze suspended %d arrays (locked: %v)", n, e.locked("v1"))
	}
}

// The stream is reopened after the provisioner refuses or drops it.
func TestStreamReconnects(t *testing.T) {
	e := newEnv(t)
	e.array("md127", "2048", "idle", map[string]string{"nvme0n1": "in_sync"})
	e.stage("v1", "/dev/md127", "r1")
	e.prov.refuse.Store(2)
	e.start()
	for range 3 {
		e.waitOpened()
	}
	e.send(freezeCmd("f1", time.Second, "v1"))
	if r := e.result("f1"); r.GetError() != "" {
		t.Fatal(r.GetError())
	}
	e.send(thawCmd("t1", "f1"))
	e.result("t1")
}

// A previous process died holding an array's writes: released MaxHold
// after start, the volume locked until then; a stopping loop releases what
// it holds at once.
func TestLeftoversAndStop(t *testing.T) {
	e := newEnv(t, func(c *nodecmd.Config) { c.MaxHold = 300 * time.Millisecond })
	e.array("md127", "2048", "idle", map[string]string{"nvme0n1": "in_sync"})
	e.array("md126", "2048", "idle", map[string]string{"nvme3n1": "in_sync"})
	e.stage("v1", "/dev/md127", "r1")
	e.stage("v3", "/dev/md126", "r4")
	if err := os.WriteFile(filepath.Join(e.root, "sys/block/md127/md/suspend_hi"), []byte("2048\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e.start()
	e.waitOpened()
	if !e.locked("v1") || e.suspendRange("md127") != "0-2048" {
		t.Fatal("a leftover hold was not kept under the volume's lock")
	}
	eventually(t, "the leftover released", func() bool { return e.suspendRange("md127") == "0-0" && !e.locked("v1") })
	if time.Since(start) < 300*time.Millisecond {
		t.Fatal("the leftover was released before MaxHold")
	}

	e.send(freezeCmd("f1", 0, "v3"))
	if r := e.result("f1"); r.GetError() != "" {
		t.Fatal(r.GetError())
	}
	e.stop()
	if got := e.suspendRange("md126"); got != "0-0" || e.locked("v3") {
		t.Fatalf("after Run returned: md126 %s, locked %v", got, e.locked("v3"))
	}
}
