package repair

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

const (
	testUUID = "11111111:22222222:33333333:44444444"
	repairNQ = "nqn.2026-11.io.nvmirror:repair:sn3"
)

// fakeSystem is the NVMe host, md and disks of a storage node: one device
// per replica NQN, superblocks by device path, and an md array that
// recovers after a number of reads.
type fakeSystem struct {
	mu          sync.Mutex
	devices     map[string]host.Device // by NQN
	superblocks map[string]mdraid.Superblock
	blank       map[string]bool
	written     map[string]uint64
	ctrls       []host.Controller
	array       *mdraid.Array
	// recoverAfter: ReadArray calls before a joined member is in sync
	// (<0: never).
	recoverAfter int
	reads        int
	calls        []string
}

func newFakeSystem() *fakeSystem {
	return &fakeSystem{devices: map[string]host.Device{}, superblocks: map[string]mdraid.Superblock{}, blank: map[string]bool{}, written: map[string]uint64{}, recoverAfter: 2}
}

func (f *fakeSystem) record(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

// addReplica makes replica id reachable as /dev/<dev>.
func (f *fakeSystem) addReplica(id, dev string, sb *mdraid.Superblock) Member {
	nqn := "nqn.2026-11.io.nvmirror:replica:" + id
	f.devices[nqn] = host.Device{Name: dev, Path: "/dev/" + dev, UUID: nvmeof.NamespaceUUID(id), SizeBytes: 64 << 20}
	if sb != nil {
		f.superblocks["/dev/"+dev] = *sb
	} else {
		f.blank["/dev/"+dev] = true
	}
	return Member{Replica: volume.Replica{ID: id, StorageNode: "sn-" + id, NQN: nqn, Endpoints: []volume.Endpoint{{Address: "127.0.0.2", Port: "4420"}}}}
}

func (f *fakeSystem) Connect(ctx context.Context, o host.ConnectOptions) (host.Controller, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("connect %s as %s", o.SubsysNQN, o.HostNQN)
	if _, ok := f.devices[o.SubsysNQN]; !ok {
		return host.Controller{}, errors.New("connection refused")
	}
	c := host.Controller{Name: fmt.Sprintf("nvme%d", len(f.ctrls)), SubsysNQN: o.SubsysNQN, HostNQN: o.HostNQN}
	f.ctrls = append(f.ctrls, c)
	return c, nil
}

func (f *fakeSystem) WaitForDevice(ctx context.Context, nqn, ns string) (host.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.devices[nqn], nil
}

func (f *fakeSystem) ControllersFor(nqn string) ([]host.Controller, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []host.Controller
	for _, c := range f.ctrls {
		if c.SubsysNQN == nqn {
			out = append(out, c)
		}
	}
	return out, nil
}

func (f *fakeSystem) Disconnect(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("disconnect %s", name)
	f.ctrls = slices.DeleteFunc(f.ctrls, func(c host.Controller) bool { return c.Name == name })
	return nil
}

func (f *fakeSystem) FindByUUID(uuid string) (mdraid.Array, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.array == nil || f.array.UUID != uuid {
		return mdraid.Array{}, mdraid.ErrNotFound
	}
	return *f.array, nil
}

func (f *fakeSystem) ReadArray(name string) (mdraid.Array, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.array == nil || f.array.Name != name {
		return mdraid.Array{}, mdraid.ErrNotFound
	}
	f.reads++
	if f.recoverAfter >= 0 && f.reads > f.recoverAfter {
		for i := range f.array.Members {
			f.array.Members[i].State.InSync = true
		}
		f.array.Degraded, f.array.SyncAction = 0, "idle"
		for dev := range f.written {
			f.written[dev] += 8 << 20
		}
	}
	return *f.array, nil
}

func (f *fakeSystem) Examine(ctx context.Context, member string) (mdraid.Superblock, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.superblocks[member]
	if !ok {
		return mdraid.Superblock{}, mdraid.ErrNoSuperblock
	}
	return sb, nil
}

func (f *fakeSystem) NextFreeDevice() (string, error) { return "/dev/md5", nil }

func (f *fakeSystem) Assemble(ctx context.Context, device, uuid string, devices []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("assemble %s from %v", device, devices)
	a := &mdraid.Array{Name: "md5", Device: device, UUID: uuid, ArrayState: "clean", RaidDisks: 2, Degraded: 1, SyncAction: "idle"}
	for _, d := range devices {
		a.Members = append(a.Members, mdraid.Member{Device: strings.TrimPrefix(d, "/dev/"), State: mdraid.MemberState{InSync: true}})
	}
	f.array = a
	return nil
}

func (f *fakeSystem) join(how, member string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("%s %s", how, member)
	f.array.Members = append(f.array.Members, mdraid.Member{Device: strings.TrimPrefix(member, "/dev/")})
	f.array.SyncAction = "recover"
	f.written[strings.TrimPrefix(member, "/dev/")] += 0
	return nil
}

func (f *fakeSystem) Add(ctx context.Context, device, member string) error {
	return f.join("add", member)
}
func (f *fakeSystem) ReAdd(ctx context.Context, device, member string) error {
	return f.join("re-add", member)
}

func (f *fakeSystem) SetRaidDevices(ctx context.Context, device string, n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("slots %s %d", device, n)
	if f.array != nil {
		f.array.RaidDisks = n
	}
	return nil
}

func (f *fakeSystem) Stop(ctx context.Context, device string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("stop %s", device)
	f.array = nil
	return nil
}

func (f *fakeSystem) SetSyncSpeedMax(name string, kib uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("sync_speed_max %s %d", name, kib)
	return nil
}

func (f *fakeSystem) WrittenBytes(name string) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written[name], nil
}

func (f *fakeSystem) Blank(path string, size uint64) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blank[path], nil
}

func (f *fakeSystem) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

type harness struct {
	sys   *fakeSystem
	clock *testingclock.FakeClock
	r     *Runner
}

func newHarness() *harness {
	sys := newFakeSystem()
	clk := testingclock.NewFakeClock(time.Unix(1e9, 0))
	r := NewRunner(sys, sys, sys, clk, Config{Template: host.ConnectOptions{HostNQN: repairNQ}, PollInterval: time.Second})
	return &harness{sys: sys, clock: clk, r: r}
}

// wait steps the fake clock until the repair ends (or the real-time
// deadline passes) and returns its final status.
func (h *harness) wait(t *testing.T, id string, step time.Duration) Status {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		st, err := h.r.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if st.State.Done() {
			return st
		}
		if h.clock.HasWaiters() {
			h.clock.Step(step)
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("repair %s did not end", id)
	return Status{}
}

func request(id string, members ...Member) Request {
	return Request{ID: id, VolumeID: "vol-1", MDUUID: testUUID, Members: members, Lease: time.Minute, MaxRebuildKiBps: 2048}
}

func inSync(m Member) Member { m.InSync = true; return m }

func TestRepairReAddsAFormerMember(t *testing.T) {
	h := newHarness()
	a := inSync(h.sys.addReplica("a", "nvme1n1", &mdraid.Superblock{UUID: testUUID, Events: 50}))
	b := h.sys.addReplica("b", "nvme2n1", &mdraid.Superblock{UUID: testUUID, Events: 40})
	// Another host's controller to the same replica must survive cleanup.
	h.sys.ctrls = append(h.sys.ctrls, host.Controller{Name: "nvme9", SubsysNQN: a.NQN, HostNQN: "nqn.2014-08.org.nvmexpress:uuid:other"})

	if _, err := h.r.Start(request("rpr-1", a, b)); err != nil {
		t.Fatal(err)
	}
	st := h.wait(t, "rpr-1", time.Second)
	if st.State != Succeeded || !slices.Equal(st.Synced, []string{"b"}) || !st.BitmapReAdd["b"] || st.BytesWritten != 8<<20 {
		t.Fatalf("status %+v", st)
	}
	calls := strings.Join(h.sys.callLog(), "\n")
	for _, want := range []string{"assemble /dev/md5 from [/dev/nvme1n1]", "sync_speed_max md5 2048", "re-add /dev/nvme2n1", "stop /dev/md5"} {
		if !strings.Contains(calls, want) {
			t.Errorf("no %q in\n%s", want, calls)
		}
	}
	if len(h.sys.ctrls) != 1 || h.sys.ctrls[0].Name != "nvme9" {
		t.Errorf("controllers after the repair: %+v; want only the other host's", h.sys.ctrls)
	}
	if !strings.Contains(calls, "connect "+a.NQN+" as "+repairNQ) {
		t.Errorf("did not connect as the repair host:\n%s", calls)
	}
	// Finished repairs free the volume for the next one.
	c := h.sys.addReplica("c", "nvme3n1", nil)
	if _, err := h.r.Start(request("rpr-2", a, c)); err != nil {
		t.Fatalf("second repair of the volume after the first ended: %v", err)
	}
	if st := h.wait(t, "rpr-2", time.Second); st.State != Succeeded || st.BitmapReAdd["c"] {
		t.Fatalf("blank replacement: %+v (want a full recovery)", st)
	}
	if !strings.Contains(strings.Join(h.sys.callLog(), "\n"), "add /dev/nvme3n1") {
		t.Error("the blank replacement was not added")
	}
}

func TestRepairRefusesWhatItMustNotOverwrite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		inSync  *mdraid.Superblock
		stale   *mdraid.Superblock
		blank   bool
		wantErr string
	}{
		{"stale replica holds data without a superblock", &mdraid.Superblock{UUID: testUUID, Events: 50}, nil, false, "holds data"},
		{"stale replica is another array's", &mdraid.Superblock{UUID: testUUID, Events: 50}, &mdraid.Superblock{UUID: "99999999:22222222:33333333:44444444", Events: 1}, false, "carries md array"},
		{"stale replica is newer than the in-sync one", &mdraid.Superblock{UUID: testUUID, Events: 50}, &mdraid.Superblock{UUID: testUUID, Events: 60}, false, "md events 60"},
		{"in-sync replica is another array's", &mdraid.Superblock{UUID: "99999999:22222222:33333333:44444444", Events: 50}, &mdraid.Superblock{UUID: testUUID, Events: 40}, false, "in-sync replica a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness()
			a := inSync(h.sys.addReplica("a", "nvme1n1", tc.inSync))
			b := h.sys.addReplica("b", "nvme2n1", tc.stale)
			h.sys.blank["/dev/nvme2n1"] = tc.blank
			if _, err := h.r.Start(request("rpr-1", a, b)); err != nil {
				t.Fatal(err)
			}
			st := h.wait(t, "rpr-1", time.Second)
			if st.State != Failed || !strings.Contains(st.Message, tc.wantErr) {
				t.Fatalf("status %+v, want failed with %q", st, tc.wantErr)
			}
			calls := strings.Join(h.sys.callLog(), "\n")
			if strings.Contains(calls, "add") || strings.Contains(calls, "assemble") {
				t.Errorf("wrote although a device failed its check:\n%s", calls)
			}
			if len(h.sys.ctrls) != 0 {
				t.Errorf("controllers left: %+v", h.sys.ctrls)
			}
		})
	}
}

// A volume no host ever staged has no md array on any replica: its new
// replica is in sync as created (all read as zeros), with nothing assembled
// or written. Blank in-sync replicas beside a replica carrying the array,
// or in-sync replicas that disagree, are refused.
func TestRepairOfANeverStagedVolume(t *testing.T) {
	h := newHarness()
	a := inSync(h.sys.addReplica("a", "nvme1n1", nil))
	b := inSync(h.sys.addReplica("b", "nvme2n1", nil))
	c := h.sys.addReplica("c", "nvme3n1", nil)
	if _, err := h.r.Start(request("rpr-1", a, b, c)); err != nil {
		t.Fatal(err)
	}
	st := h.wait(t, "rpr-1", time.Second)
	if st.State != Succeeded || !slices.Equal(st.Synced, []string{"c"}) || st.BytesWritten != 0 {
		t.Fatalf("status %+v, want c in sync with nothing written", st)
	}
	calls := strings.Join(h.sys.callLog(), "\n")
	if strings.Contains(calls, "assemble") || strings.Contains(calls, "add") {
		t.Errorf("touched md for a volume without an array:\n%s", calls)
	}

	for _, tc := range []struct {
		name        string
		a, b, stale *mdraid.Superblock
		staleBlank  bool
		wantErr     string
	}{
		{"a stale replica carries the array the blank in-sync ones lack", nil, nil, &mdraid.Superblock{UUID: testUUID, Events: 5}, false, "in-sync replicas none"},
		{"in-sync replicas disagree", &mdraid.Superblock{UUID: testUUID, Events: 50}, nil, nil, true, "1 carry the volume's md array and 1 are blank"},
		{"a stale replica holds data", nil, nil, nil, false, "holds data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness()
			a := inSync(h.sys.addReplica("a", "nvme1n1", tc.a))
			b := inSync(h.sys.addReplica("b", "nvme2n1", tc.b))
			c := h.sys.addReplica("c", "nvme3n1", tc.stale)
			h.sys.blank["/dev/nvme3n1"] = tc.staleBlank
			if _, err := h.r.Start(request("rpr-1", a, b, c)); err != nil {
				t.Fatal(err)
			}
			if st := h.wait(t, "rpr-1", time.Second); st.State != Failed || !strings.Contains(st.Message, tc.wantErr) {
				t.Fatalf("status %+v, want failed with %q", st, tc.wantErr)
			}
		})
	}
}

func TestRepairChecksNamespaceIdentity(t *testing.T) {
	h := newHarness()
	a := inSync(h.sys.addReplica("a", "nvme1n1", &mdraid.Superblock{UUID: testUUID, Events: 50}))
	b := h.sys.addReplica("b", "nvme2n1", &mdraid.Superblock{UUID: testUUID, Events: 40})
	d := h.sys.devices[b.NQN]
	d.UUID = nvmeof.NamespaceUUID("someone-else")
	h.sys.devices[b.NQN] = d
	if _, err := h.r.Start(request("rpr-1", a, b)); err != nil {
		t.Fatal(err)
	}
	if st := h.wait(t, "rpr-1", time.Second); st.State != Failed || !strings.Contains(st.Message, "identity") {
		t.Fatalf("status %+v", st)
	}
}

func TestRepairStopsWhenItsLeaseRunsOut(t *testing.T) {
	h := newHarness()
	h.sys.recoverAfter = -1
	a := inSync(h.sys.addReplica("a", "nvme1n1", &mdraid.Superblock{UUID: testUUID, Events: 50}))
	b := h.sys.addReplica("b", "nvme2n1", &mdraid.Superblock{UUID: testUUID, Events: 40})
	if _, err := h.r.Start(request("rpr-1", a, b)); err != nil {
		t.Fatal(err)
	}
	// Nobody asks: step the clock without Get.
	deadline := time.Now().Add(10 * time.Second)
	var st Status
	for time.Now().Before(deadline) {
		h.r.mu.Lock()
		st = h.r.jobs["rpr-1"].snapshot()
		h.r.mu.Unlock()
		if st.State.Done() {
			break
		}
		if h.clock.HasWaiters() {
			h.clock.Step(10 * time.Second)
		}
		time.Sleep(time.Millisecond)
	}
	if st.State != Stopped || !strings.Contains(st.Message, "lease expired") {
		t.Fatalf("status %+v, want stopped by the lease", st)
	}
	if h.sys.array != nil || len(h.sys.ctrls) != 0 {
		t.Errorf("left running: array %+v, controllers %+v", h.sys.array, h.sys.ctrls)
	}
}

func TestStopAndRestartRules(t *testing.T) {
	h := newHarness()
	h.sys.recoverAfter = -1
	a := inSync(h.sys.addReplica("a", "nvme1n1", &mdraid.Superblock{UUID: testUUID, Events: 50}))
	b := h.sys.addReplica("b", "nvme2n1", &mdraid.Superblock{UUID: testUUID, Events: 40})
	if _, err := h.r.Start(request("rpr-1", a, b)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.r.Start(request("rpr-1", a, b)); err != nil {
		t.Errorf("same repair again: %v, want its status", err)
	}
	if _, err := h.r.Start(request("rpr-2", a, b)); !errors.Is(err, ErrBusy) {
		t.Errorf("a second repair of the volume: %v, want ErrBusy", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.r.Stop(ctx, "rpr-1"); err != nil {
		t.Fatal(err)
	}
	st, _ := h.r.Get("rpr-1")
	if st.State != Stopped || h.sys.array != nil || len(h.sys.ctrls) != 0 {
		t.Fatalf("after Stop: %+v, array %+v, controllers %+v", st, h.sys.array, h.sys.ctrls)
	}
	if _, err := h.r.Start(request("rpr-1", a, b)); !errors.Is(err, ErrStopped) {
		t.Errorf("restarting a stopped repair: %v, want ErrStopped", err)
	}
	// Stop of an unknown ID succeeds and fences that ID.
	if err := h.r.Stop(ctx, "rpr-9"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.r.Start(request("rpr-9", a, b)); !errors.Is(err, ErrStopped) {
		t.Errorf("starting an ID stopped before it ran: %v", err)
	}
	if _, err := h.r.Get("rpr-404"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of an unknown repair: %v", err)
	}
}

func TestRequestValidationNamesTheField(t *testing.T) {
	a := Member{Replica: volume.Replica{ID: "a", NQN: "nqn.x:a", Endpoints: []volume.Endpoint{{Address: "1.2.3.4", Port: "4420"}}}, InSync: true}
	b := Member{Replica: volume.Replica{ID: "b", NQN: "nqn.x:b", Endpoints: []volume.Endpoint{{Address: "1.2.3.4", Port: "4420"}}}}
	for field, r := range map[string]Request{
		"repair_id":                  {ID: "Bad_ID", VolumeID: "v", MDUUID: testUUID, Lease: time.Second, Members: []Member{a, b}},
		"volume_id":                  {ID: "r", MDUUID: testUUID, Lease: time.Second, Members: []Member{a, b}},
		"md_uuid":                    {ID: "r", VolumeID: "v", Lease: time.Second, Members: []Member{a, b}},
		"lease_seconds":              {ID: "r", VolumeID: "v", MDUUID: testUUID, Members: []Member{a, b}},
		"members":                    {ID: "r", VolumeID: "v", MDUUID: testUUID, Lease: time.Second, Members: []Member{b}},
		"members.replica_id":         {ID: "r", VolumeID: "v", MDUUID: testUUID, Lease: time.Second, Members: []Member{a, a, b}},
		"members.dhchap_ctrl_secret": {ID: "r", VolumeID: "v", MDUUID: testUUID, Lease: time.Second, Members: []Member{{Replica: a.Replica, InSync: true, CtrlSecret: "x"}, b}},
	} {
		err := r.Validate()
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), field+":") {
			t.Errorf("%s: %v", field, err)
		}
	}
	if err := (Request{ID: "r", VolumeID: "v", MDUUID: testUUID, Lease: time.Second, Members: []Member{a, b}}).Validate(); err != nil {
		t.Errorf("valid request: %v", err)
	}
}

func TestRecoverUndoesARepairCutShort(t *testing.T) {
	journalPath := t.TempDir() + "/repairs.json"
	sys := newFakeSystem()
	sys.recoverAfter = -1
	clk := testingclock.NewFakeClock(time.Unix(1e9, 0))
	cfg := Config{Template: host.ConnectOptions{HostNQN: repairNQ}, JournalFile: journalPath}
	first := NewRunner(sys, sys, sys, clk, cfg)
	a := inSync(sys.addReplica("a", "nvme1n1", &mdraid.Superblock{UUID: testUUID, Events: 50}))
	b := sys.addReplica("b", "nvme2n1", &mdraid.Superblock{UUID: testUUID, Events: 40})
	if _, err := first.Start(request("rpr-1", a, b)); err != nil {
		t.Fatal(err)
	}
	waitCond(t, func() bool {
		sys.mu.Lock()
		defer sys.mu.Unlock()
		return sys.array != nil && sys.array.SyncAction == "recover"
	})
	// The agent dies here: the array runs, the connections are open. The
	// next start undoes both.
	second := NewRunner(sys, sys, sys, clk, cfg)
	if err := second.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	sys.mu.Lock()
	arr, ctrls := sys.array, len(sys.ctrls)
	sys.mu.Unlock()
	if arr != nil || ctrls != 0 {
		t.Fatalf("after Recover: array %+v, %d controllers", arr, ctrls)
	}
	if es, err := (&journal{path: journalPath}).load(); err != nil || len(es) != 0 {
		t.Errorf("journal after Recover: %+v, %v", es, err)
	}
	first.Close(context.Background())
}

func TestRecoverLeavesAnotherHostsArray(t *testing.T) {
	journalPath := t.TempDir() + "/repairs.json"
	sys := newFakeSystem()
	a := inSync(sys.addReplica("a", "nvme1n1", &mdraid.Superblock{UUID: testUUID, Events: 50}))
	b := sys.addReplica("b", "nvme2n1", &mdraid.Superblock{UUID: testUUID, Events: 40})
	if err := (&journal{path: journalPath}).add(request("rpr-1", a, b)); err != nil {
		t.Fatal(err)
	}
	// Since the crash, this machine's compute host has the volume: its
	// controllers and its array.
	sys.ctrls = []host.Controller{{Name: "nvme5", SubsysNQN: a.NQN, HostNQN: "nqn.2014-08.org.nvmexpress:uuid:compute"},
		{Name: "nvme6", SubsysNQN: a.NQN, HostNQN: repairNQ}}
	if err := sys.Assemble(context.Background(), "/dev/md5", testUUID, []string{"/dev/nvme1n1"}); err != nil {
		t.Fatal(err)
	}
	r := NewRunner(sys, sys, sys, testingclock.NewFakeClock(time.Now()), Config{Template: host.ConnectOptions{HostNQN: repairNQ}, JournalFile: journalPath})
	if err := r.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sys.array == nil {
		t.Error("Recover stopped the array another host on this machine uses")
	}
	if len(sys.ctrls) != 1 || sys.ctrls[0].Name != "nvme5" {
		t.Errorf("controllers after Recover: %+v; want the other host's only", sys.ctrls)
	}
}

func waitCond(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}
