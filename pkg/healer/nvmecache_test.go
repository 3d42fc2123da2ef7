//go:build linux

package healer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
)

func sortedCtrls(cs []NVMeController) []NVMeController {
	out := slices.Clone(cs)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// replaceDir gives rel a new directory (a new inode, as the kernel gives a
// new controller or block device) with the files given, the way the kernel
// replaces an object under a reused name.
func (t *tree) replaceDir(rel string, files map[string]string) {
	tmp := filepath.Join(t.root, rel+".new")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.tb.Fatal(err)
	}
	for f, v := range files {
		if err := os.WriteFile(filepath.Join(tmp, f), []byte(v+"\n"), 0o644); err != nil {
			t.tb.Fatal(err)
		}
	}
	if err := os.RemoveAll(filepath.Join(t.root, rel)); err != nil {
		t.tb.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(t.root, rel)); err != nil {
		t.tb.Fatal(err)
	}
}

func TestCachedNVMeControllers(t *testing.T) {
	tr := newTree(t, 2)
	c := NewCachedNVMe(tr.root)
	t.Cleanup(func() { c.Close() })
	naive := SysfsNVMe{Root: tr.root}
	same := func(what string) []NVMeController {
		t.Helper()
		got, err := c.Controllers()
		if err != nil {
			t.Fatal(err)
		}
		want, err := naive.Controllers()
		if err != nil {
			t.Fatal(err)
		}
		if g, w := sortedCtrls(got), sortedCtrls(want); !slices.Equal(g, w) {
			t.Fatalf("%s: cached %+v\nread %+v", what, g, w)
		}
		return got
	}
	if cs := same("first"); len(cs) != 6 || c.ctrls["nvme0"].stateFD < 0 {
		t.Fatalf("controllers %d, state kept open %v", len(cs), c.ctrls["nvme0"])
	}
	tr.ctrlState(1, "connecting")
	if cs := sortedCtrls(same("state change")); cs[1].State != host.StateConnecting {
		t.Fatalf("%+v", cs[1])
	}
	tr.ctrlState(4, "") // deleted by the kernel
	if cs := same("deleted"); len(cs) != 5 {
		t.Fatalf("%d controllers", len(cs))
	}
	if _, ok := c.ctrls["nvme4"]; ok {
		t.Fatal("a deleted controller stays cached")
	}
	// The name comes back for another subsystem at another address: the
	// NQN and address must be read again, not taken from the cache.
	tr.replaceDir("sys/class/nvme/nvme1", map[string]string{"subsysnqn": "nqn.2026-01.io.nvmirror:other",
		"state": "live", "address": "traddr=10.9.9.9,trsvcid=4421"})
	cs := sortedCtrls(same("name reused"))
	if cs[1].SubsysNQN != "nqn.2026-01.io.nvmirror:other" || cs[1].TrAddr != "10.9.9.9" || cs[1].State != host.StateLive {
		t.Fatalf("reused name: %+v", cs[1])
	}
	// A new controller.
	tr.write("sys/class/nvme/nvme17/subsysnqn", "nqn.new")
	tr.write("sys/class/nvme/nvme17/state", "new")
	tr.write("sys/class/nvme/nvme17/address", "traddr=10.0.0.1,trsvcid=4420")
	if cs := same("new controller"); len(cs) != 6 || c.ctrls["nvme17"].settled {
		t.Fatalf("%d controllers", len(cs))
	}
	// A controller being connected: until it has been live its subsystem
	// may not be identified, and its NQN reads otherwise (seen on 6.1 as a
	// loop of fail and re-add when it was cached then).
	tr.write("sys/class/nvme/nvme18/subsysnqn", "")
	tr.write("sys/class/nvme/nvme18/state", "new")
	same("connect in progress")
	tr.write("sys/class/nvme/nvme18/state", "connecting")
	tr.write("sys/class/nvme/nvme18/subsysnqn", "nqn.2014-08.org.nvmexpress.discovery")
	same("connect in progress, another NQN")
	tr.write("sys/class/nvme/nvme18/subsysnqn", "nqn.2026-01.io.nvmirror:late")
	tr.write("sys/class/nvme/nvme18/address", "traddr=10.0.7.1,trsvcid=4420")
	tr.write("sys/class/nvme/nvme18/state", "live")
	for _, c := range same("connected") {
		if c.Name == "nvme18" && (c.SubsysNQN != "nqn.2026-01.io.nvmirror:late" || c.TrAddr != "10.0.7.1") {
			t.Fatalf("connected controller read with the NQN it had while connecting: %+v", c)
		}
	}
	if cc := c.ctrls["nvme18"]; cc == nil || !cc.settled {
		t.Fatalf("live controller not settled: %+v", cc)
	}

	// nvme not loaded (class directory gone): none, and nothing left open.
	if err := os.RemoveAll(filepath.Join(tr.root, "sys/class/nvme")); err != nil {
		t.Fatal(err)
	}
	if cs, err := c.Controllers(); err != nil || cs != nil || len(c.ctrls) != 0 {
		t.Fatalf("%v %v, %d cached", cs, err, len(c.ctrls))
	}
}

// The poll's fingerprint changes exactly when a controller's set or state
// does, whatever the listing order.
func TestFingerprint(t *testing.T) {
	a := []NVMeController{{Name: "nvme0", SubsysNQN: "q0", State: "live"}, {Name: "nvme1", SubsysNQN: "q1", State: "live"}}
	b := []NVMeController{a[1], a[0]}
	if fingerprint(a) != fingerprint(b) {
		t.Fatal("order matters")
	}
	for i, c := range [][]NVMeController{
		{a[0]},
		{a[0], {Name: "nvme1", SubsysNQN: "q1", State: "connecting"}},
		{a[0], {Name: "nvme1", SubsysNQN: "q2", State: "live"}},
		{a[0], {Name: "nvme2", SubsysNQN: "q1", State: "live"}},
		{{Name: "nvme0q", SubsysNQN: "0", State: "live"}, a[1]},
	} {
		if fingerprint(c) == fingerprint(a) {
			t.Fatalf("change %d not seen", i)
		}
	}
}

func TestCachedNVMeNamespaceIdentities(t *testing.T) {
	tr := newTree(t, 1)
	c := NewCachedNVMe(tr.root)
	t.Cleanup(func() { c.Close() })
	ids := func(dev string) []string {
		t.Helper()
		got, err := c.NamespaceIdentities(dev)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	start := func() {
		t.Helper()
		if _, err := c.Controllers(); err != nil {
			t.Fatal(err)
		}
		if err := c.StartCycle(); err != nil {
			t.Fatal(err)
		}
	}
	start()
	first := ids("nvme1n1")
	if len(first) != 2 || len(c.ids) != 1 {
		t.Fatalf("%v, %d cached", first, len(c.ids))
	}
	// The same device (same inode) is not read again: a value written
	// behind the cache's back is not seen. (The kernel never changes a
	// namespace's identity in place; it removes and adds the device.)
	tr.write("sys/block/nvme1n1/uuid", "00000000-0000-0000-0000-00000000000a")
	start()
	if got := ids("nvme1n1"); !slices.Equal(got, first) {
		t.Fatalf("read again: %v", got)
	}
	// The namespace was replaced (reconnect, or a namespace change on the
	// target): a new device under the same name is read.
	tr.replaceDir("sys/block/nvme1n1", map[string]string{"uuid": "11111111-2222-3333-4444-555555555555"})
	start()
	if got := ids("nvme1n1"); !slices.Equal(got, []string{"11111111-2222-3333-4444-555555555555"}) {
		t.Fatalf("replaced namespace: %v", got)
	}
	// A controller change drops every cached identity.
	ids("nvme2n1")
	if len(c.ids) != 2 {
		t.Fatalf("%d cached", len(c.ids))
	}
	tr.ctrlState(0, "")
	start()
	if len(c.ids) != 0 {
		t.Fatalf("controller gone, %d identities still cached", len(c.ids))
	}
	// A device gone reads as nil and is not cached.
	if err := os.RemoveAll(filepath.Join(tr.root, "sys/block/nvme2n1")); err != nil {
		t.Fatal(err)
	}
	start()
	if got := ids("nvme2n1"); got != nil {
		t.Fatalf("gone device: %v", got)
	}
	// A device appearing after the cycle's listing is read, not cached.
	tr.write("sys/block/nvme9n1/uuid", "99999999-2222-3333-4444-555555555555")
	if got := ids("nvme9n1"); len(got) != 1 || len(c.ids) != 0 {
		t.Fatalf("%v, %d cached", got, len(c.ids))
	}
	if _, err := c.NamespaceIdentities("../etc"); err == nil {
		t.Fatal("path accepted as device name")
	}
}

func TestParseDirentNames(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ctrl, nsdv bool
	}{
		{"nvme0", true, false}, {"nvme12", true, false}, {"nvme", false, false}, {"nvme-fabrics", false, false},
		{"nvme1n1", false, true}, {"nvme1n", false, false}, {"nvme1c2n1", false, false}, {"nvme1n1p1", false, false}, {"md0", false, false},
	} {
		if isCtrlName(tc.name) != tc.ctrl || isNamespaceName(tc.name) != tc.nsdv {
			t.Errorf("%s: controller %v namespace %v", tc.name, isCtrlName(tc.name), isNamespaceName(tc.name))
		}
	}
	// A listing larger than the buffer takes several getdents calls.
	dir := t.TempDir()
	for i := range 2000 {
		if err := os.Mkdir(filepath.Join(dir, fmt.Sprintf("nvme%d", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c := NewCachedNVMe(t.TempDir())
	es, err := c.list(dir, isCtrlName[[]byte])
	if err != nil || len(es) != 2000 {
		t.Fatalf("%d entries, %v", len(es), err)
	}
	for _, e := range es {
		if e.ino == 0 {
			t.Fatalf("%+v", e)
		}
	}
}

func TestCachedNVMePoll(t *testing.T) {
	tr := newTree(t, 2)
	c := NewCachedNVMe(tr.root)
	t.Cleanup(func() { c.Close() })
	poll := func(want bool, what string) {
		t.Helper()
		got, err := c.Poll()
		if err != nil || got != want {
			t.Fatalf("%s: changed %v (%v), want %v", what, got, err, want)
		}
	}
	poll(true, "first look: every controller is new")
	if _, err := c.Controllers(); err != nil { // the cycle it triggers
		t.Fatal(err)
	}
	poll(false, "after the cycle read them")
	tr.ctrlState(2, "resetting")
	poll(true, "a state change")
	poll(false, "the same state again")
	tr.ctrlState(2, "connecting")
	if _, err := c.Controllers(); err != nil {
		t.Fatal(err)
	}
	poll(false, "a change a cycle already read")
	tr.replaceDir("sys/class/nvme/nvme3", map[string]string{"subsysnqn": "nqn.other", "state": "connecting"})
	poll(true, "a controller replaced under its name")
	if _, err := c.Controllers(); err != nil {
		t.Fatal(err)
	}
	poll(false, "after the cycle")
	tr.ctrlState(5, "")
	poll(true, "a controller gone")
	tr.write("sys/class/nvme/nvme9/subsysnqn", "nqn.new")
	tr.write("sys/class/nvme/nvme9/state", "live")
	poll(true, "a new controller")
	if err := os.RemoveAll(filepath.Join(tr.root, "sys/class/nvme")); err != nil {
		t.Fatal(err)
	}
	poll(true, "nvme unloaded")
	poll(false, "still unloaded")
}

// Run with CachedNVMe: the poll notices a controller going away between
// two intervals, as with the plain reader.
func TestHealerRunReactsToNVMeChangeCached(t *testing.T) {
	h := newHarness(t, 1)
	hl, _ := h.healer(t)
	c := NewCachedNVMe(h.tr.root)
	t.Cleanup(func() { c.Close() })
	hl.deps.Observer.NVMe = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hl.Run(ctx) }()
	waitFor(t, func() bool { _, err := os.Stat(MemoryFile(h.dir)); return err == nil && h.clk.Waiters() >= 2 })
	h.tr.ctrlState(1, "connecting")
	h.clk.Step(time.Second)
	waitFor(t, func() bool { return len(noSessions(h.prov.delivered())) == 2 })
	if got := reportTypes(noSessions(h.prov.delivered())); !slices.Equal(got, []events.Type{events.HostDisconnected, events.VolumeDegraded}) {
		t.Fatalf("events %v", got)
	}
	if d := noSessions(h.prov.delivered())[1].Time; !d.Equal(t0.Add(time.Second)) {
		t.Fatalf("detected at %v", d)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// With polled states trusted (the kernel log followed), Controllers answers
// a controller's state from its last read while that read is recent enough,
// and reads it again after; a poll of the controller refreshes it.
func TestCachedNVMeTrustsPolledStates(t *testing.T) {
	tr := newTree(t, 1)
	c := NewCachedNVMe(tr.root)
	defer c.Close()
	now := t0
	c.now = func() time.Time { return now }
	state := func() host.ControllerState {
		t.Helper()
		cs, err := c.Controllers()
		if err != nil || len(cs) != 3 {
			t.Fatal(cs, err)
		}
		for _, x := range cs {
			if x.Name == "nvme1" {
				return x.State
			}
		}
		t.Fatal("nvme1 not listed")
		return ""
	}
	state() // read once
	c.TrustPolledStates(20 * time.Second)
	tr.ctrlState(1, "connecting")
	now = now.Add(5 * time.Second)
	gen := c.ctrlGen
	if s := state(); s != host.StateLive {
		t.Fatalf("state %q within the trusted age, want the last read (live)", s)
	}
	if state(); c.ctrlGen != gen || len(c.ctrls) != 3 {
		t.Fatalf("controllers answered from the cache were dropped (generation %d, was %d)", c.ctrlGen, gen)
	}
	if changed, err := c.PollControllers([]string{"nvme1"}); err != nil || !changed {
		t.Fatalf("PollControllers = %v, %v", changed, err)
	}
	if s := state(); s != host.StateConnecting {
		t.Fatalf("state %q after a poll read it, want connecting", s)
	}
	tr.ctrlState(1, "live")
	now = now.Add(21 * time.Second)
	if s := state(); s != host.StateLive {
		t.Fatalf("state %q past the trusted age, want read again (live)", s)
	}
	c.TrustPolledStates(0)
	tr.ctrlState(1, "resetting")
	if s := state(); s != host.StateResetting {
		t.Fatalf("state %q untrusted, want read again (resetting)", s)
	}
}
