package healer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// fakeRaid is one md array in memory, recording every mdadm call.
type fakeRaid struct {
	arr      mdraid.Array
	sbs      map[string]mdraid.Superblock // by device path; absent: no superblock
	refuseRe bool
	calls    []string
}

func (f *fakeRaid) ReadArray(name string) (mdraid.Array, error) {
	if name != f.arr.Name {
		return mdraid.Array{}, mdraid.ErrNotFound
	}
	a := f.arr
	a.Members = slices.Clone(f.arr.Members)
	return a, nil
}

func (f *fakeRaid) member(dev string) int {
	name := strings.TrimPrefix(dev, "/dev/")
	for i, m := range f.arr.Members {
		if m.Device == name {
			return i
		}
	}
	return -1
}

func (f *fakeRaid) Add(_ context.Context, device, member string) error {
	f.calls = append(f.calls, "add "+member)
	f.arr.Members = append(f.arr.Members, mdraid.Member{Device: strings.TrimPrefix(member, "/dev/"), Slot: -1, State: mdraid.MemberState{Spare: true}})
	return nil
}

func (f *fakeRaid) ReAdd(_ context.Context, device, member string) error {
	f.calls = append(f.calls, "re-add "+member)
	if f.refuseRe {
		return fmt.Errorf("mdadm: %w", mdraid.ErrReAddRefused)
	}
	f.arr.Members = append(f.arr.Members, mdraid.Member{Device: strings.TrimPrefix(member, "/dev/"), State: mdraid.MemberState{InSync: true}})
	return nil
}

func (f *fakeRaid) Fail(_ context.Context, device, member string) error {
	f.calls = append(f.calls, "fail "+member)
	if i := f.member(member); i >= 0 {
		f.arr.Members[i].State = mdraid.MemberState{Faulty: true}
	}
	return nil
}

func (f *fakeRaid) Remove(_ context.Context, device, member string) error {
	f.calls = append(f.calls, "remove "+member)
	i := f.member(member)
	if i < 0 {
		return mdraid.ErrNotFound
	}
	if !f.arr.Members[i].State.Faulty && !f.arr.Members[i].State.Spare {
		return mdraid.ErrBusy
	}
	f.arr.Members = slices.Delete(f.arr.Members, i, i+1)
	return nil
}

func (f *fakeRaid) SetSyncSpeedMax(name string, kib uint64) error {
	f.calls = append(f.calls, fmt.Sprintf("sync-speed-max %s %d", name, kib))
	return nil
}

func (f *fakeRaid) SetRaidDevices(_ context.Context, device string, n int) error {
	f.calls = append(f.calls, fmt.Sprintf("raid-devices %d", n))
	if len(f.arr.Members) > n {
		return mdraid.ErrBusy
	}
	f.arr.RaidDisks = n
	return nil
}

func (f *fakeRaid) Examine(_ context.Context, member string) (mdraid.Superblock, error) {
	f.calls = append(f.calls, "examine "+member)
	sb, ok := f.sbs[member]
	if !ok {
		return mdraid.Superblock{}, mdraid.ErrNoSuperblock
	}
	return sb, nil
}

// fakeFabric connects replicas whose NQN is reachable and hands out their
// devices.
type fakeFabric struct {
	reachable map[string]host.Device // by NQN
	calls     []string
}

func (f *fakeFabric) Connect(_ context.Context, o host.ConnectOptions) (host.Controller, error) {
	f.calls = append(f.calls, fmt.Sprintf("connect %s %s:%s host=%s", o.SubsysNQN, o.TrAddr, o.TrSvcID, o.HostNQN))
	if _, ok := f.reachable[o.SubsysNQN]; !ok {
		return host.Controller{}, nvmeof.ErrConnectRefused
	}
	return host.Controller{Name: "nvme7", State: host.StateLive}, nil
}

func (f *fakeFabric) WaitForDevice(_ context.Context, nqn, ns string) (host.Device, error) {
	d, ok := f.reachable[nqn]
	if !ok {
		return host.Device{}, nvmeof.ErrDeviceNotFound
	}
	return d, nil
}

func (f *fakeFabric) DisconnectNQN(_ context.Context, nqn string) error {
	f.calls = append(f.calls, "disconnect "+nqn)
	return nil
}

const actUUID = "8b298196:48aa4550:d7d4d20e:9af2a785"

func actFixture() (*fakeRaid, *fakeFabric, *fakeProv, *Actor, *[]string) {
	raid := &fakeRaid{arr: mdraid.Array{Name: "md127", Device: "/dev/md127", UUID: actUUID, Members: []mdraid.Member{
		{Device: "nvme1n1", Slot: 0, State: mdraid.MemberState{InSync: true}},
		{Device: "nvme2n1", Slot: -1, State: mdraid.MemberState{Faulty: true}},
		{Device: "nvme3n1", Slot: 2, State: mdraid.MemberState{InSync: true}},
	}}, sbs: map[string]mdraid.Superblock{}}
	fab := &fakeFabric{reachable: map[string]host.Device{}}
	prov := newFakeProv(map[string]*volume.Volume{"vol-1": volCfg("vol-1", "1", "r1", "r2", "r3")})
	var recorded []string
	a := &Actor{Raid: raid, Fabric: fab, Provisioner: prov, Connect: host.ConnectOptions{HostNQN: "nqn.host", HostID: "id"},
		Record: func(v string, r stagestate.Replica) error { recorded = append(recorded, v+"/"+r.ID); return nil }}
	return raid, fab, prov, a, &recorded
}

func replicaOf(id string) volume.Replica { return volCfg("vol-1", "1", id).Replicas[0] }

func devFor(id, name string) host.Device {
	return host.Device{Name: name, Path: "/dev/" + name, UUID: nsUUID("vol-1-" + id)}
}

func TestActJoinReAddsWithBitmap(t *testing.T) {
	raid, fab, _, a, recorded := actFixture()
	r := replicaOf("r2")
	// Reconnected under another device name; md still holds the old one.
	fab.reachable[r.NQN] = devFor("r2", "nvme5n1")
	raid.sbs["/dev/nvme5n1"] = mdraid.Superblock{UUID: actUUID, Events: 40}
	raid.sbs["/dev/nvme1n1"] = mdraid.Superblock{UUID: actUUID, Events: 57} // the running array moved on
	out := a.Do(context.Background(), Action{Kind: ActJoin, VolumeID: "vol-1", MDDevice: "/dev/md127", MDUUID: actUUID, Replica: r, Member: "nvme2n1", Connect: true})
	if out.Err != nil || !out.Joined || !out.ReAdded {
		t.Fatalf("outcome %+v", out)
	}
	want := []string{"remove nvme2n1", "examine /dev/nvme5n1", "examine /dev/nvme1n1", "re-add /dev/nvme5n1"}
	if !slices.Equal(raid.calls, want) {
		t.Fatalf("mdadm calls %v, want %v", raid.calls, want)
	}
	if !slices.Equal(fab.calls, []string{"connect " + r.NQN + " 10.0.0.2:4420 host=nqn.host"}) {
		t.Fatalf("fabric calls %v", fab.calls)
	}
	if !slices.Equal(*recorded, []string{"vol-1/r2"}) {
		t.Fatalf("recorded %v", *recorded)
	}
	// Again: already in, nothing done.
	raid.calls = nil
	out = a.Do(context.Background(), Action{Kind: ActJoin, VolumeID: "vol-1", MDDevice: "/dev/md127", MDUUID: actUUID, Replica: r})
	if out.Err != nil || out.Joined || len(raid.calls) != 0 {
		t.Fatalf("second join %+v %v", out, raid.calls)
	}
}

func TestActJoinFallsBackToAdd(t *testing.T) {
	raid, fab, _, a, _ := actFixture()
	r := replicaOf("r2")
	fab.reachable[r.NQN] = devFor("r2", "nvme2n1")
	raid.sbs["/dev/nvme2n1"] = mdraid.Superblock{UUID: actUUID, Events: 12}
	raid.sbs["/dev/nvme1n1"] = mdraid.Superblock{UUID: actUUID, Events: 30}
	raid.refuseRe = true
	out := a.Do(context.Background(), Action{Kind: ActJoin, VolumeID: "vol-1", MDDevice: "/dev/md127", MDUUID: actUUID, Replica: r, Member: "nvme2n1"})
	if out.Err != nil || !out.Joined || out.ReAdded {
		t.Fatalf("outcome %+v", out)
	}
	if want := []string{"remove nvme2n1", "examine /dev/nvme2n1", "examine /dev/nvme1n1", "re-add /dev/nvme2n1", "add /dev/nvme2n1"}; !slices.Equal(raid.calls, want) {
		t.Fatalf("calls %v", raid.calls)
	}
}

func TestActJoinChecksIdentities(t *testing.T) {
	for name, tc := range map[string]struct {
		setup func(*fakeRaid, *fakeFabric, volume.Replica)
	}{
		"array UUID": {func(r *fakeRaid, f *fakeFabric, rep volume.Replica) {
			r.arr.UUID = "00000000:00000000:00000000:00000001"
			f.reachable[rep.NQN] = devFor("r2", "nvme5n1")
		}},
		"namespace UUID": {func(r *fakeRaid, f *fakeFabric, rep volume.Replica) {
			f.reachable[rep.NQN] = devFor("r3", "nvme5n1")
		}},
		"foreign superblock": {func(r *fakeRaid, f *fakeFabric, rep volume.Replica) {
			f.reachable[rep.NQN] = devFor("r2", "nvme5n1")
			r.sbs["/dev/nvme5n1"] = mdraid.Superblock{UUID: "00000000:00000000:00000000:00000002"}
		}},
	} {
		t.Run(name, func(t *testing.T) {
			raid, fab, _, a, _ := actFixture()
			r := replicaOf("r2")
			tc.setup(raid, fab, r)
			out := a.Do(context.Background(), Action{Kind: ActJoin, VolumeID: "vol-1", MDDevice: "/dev/md127", MDUUID: actUUID, Replica: r})
			if !errors.Is(out.Err, ErrIdentity) {
				t.Fatalf("err %v", out.Err)
			}
			for _, c := range raid.calls {
				if strings.HasPrefix(c, "add") || strings.HasPrefix(c, "re-add") {
					t.Fatalf("added despite a wrong identity: %v", raid.calls)
				}
			}
		})
	}
}

func TestActJoinUnreachable(t *testing.T) {
	_, _, _, a, _ := actFixture()
	out := a.Do(context.Background(), Action{Kind: ActJoin, VolumeID: "vol-1", MDDevice: "/dev/md127", MDUUID: actUUID, Replica: replicaOf("r2"), Connect: true})
	if !errors.Is(out.Err, nvmeof.ErrConnectRefused) || out.Joined {
		t.Fatalf("outcome %+v", out)
	}
}

func TestActFailNeverLastInSync(t *testing.T) {
	raid, _, _, a, _ := actFixture()
	act := Action{Kind: ActFail, VolumeID: "vol-1", MDDevice: "/dev/md127", MDUUID: actUUID, Replica: replicaOf("r1"), Member: "nvme1n1"}
	if out := a.Do(context.Background(), act); out.Err != nil || !slices.Equal(raid.calls, []string{"fail nvme1n1"}) {
		t.Fatalf("%+v %v", out, raid.calls)
	}
	act.Member = "nvme3n1"
	if out := a.Do(context.Background(), act); !errors.Is(out.Err, ErrUnsafe) {
		t.Fatalf("failed the last in-sync member: %+v %v", out, raid.calls)
	}
}

func TestActRetire(t *testing.T) {
	raid, fab, prov, a, _ := actFixture()
	r := replicaOf("r3")
	out := a.Do(context.Background(), Action{Kind: ActRetire, VolumeID: "vol-1", MDDevice: "/dev/md127", MDUUID: actUUID, Replica: r, Member: "nvme3n1", Mark: true})
	if out.Err != nil {
		t.Fatal(out.Err)
	}
	if !slices.Equal(raid.calls, []string{"fail nvme3n1", "remove nvme3n1"}) || !slices.Equal(fab.calls, []string{"disconnect " + r.NQN}) ||
		!slices.Equal(prov.marked, []string{"vol-1/r3"}) {
		t.Fatalf("md %v fabric %v marked %v", raid.calls, fab.calls, prov.marked)
	}
	// Provisioner down: the mark fails and is retried later (md part is
	// idempotent).
	prov.setDown(true)
	out = a.Do(context.Background(), Action{Kind: ActRetire, VolumeID: "vol-1", MDDevice: "/dev/md127", MDUUID: actUUID, Replica: r, Member: "nvme3n1", Mark: true})
	if !errors.Is(out.Err, volume.ErrUnavailable) {
		t.Fatalf("err %v", out.Err)
	}
}

// A replica deleted for good leaves md with an empty slot: retire drops it,
// once, and only down to the replicas the volume keeps.
func TestActRetireDropsTheSlot(t *testing.T) {
	raid, _, _, a, _ := actFixture()
	raid.arr.RaidDisks = 3
	act := Action{Kind: ActRetire, VolumeID: "vol-1", MDDevice: "/dev/md127", MDUUID: actUUID, Replica: replicaOf("r2"), Member: "nvme2n1", Mark: true, Slots: 2}
	if out := a.Do(context.Background(), act); out.Err != nil {
		t.Fatal(out.Err)
	}
	if !slices.Equal(raid.calls, []string{"remove nvme2n1", "raid-devices 2"}) || raid.arr.RaidDisks != 2 {
		t.Fatalf("md calls %v, raid disks %d", raid.calls, raid.arr.RaidDisks)
	}
	// A retry (say the mark failed) leaves the slots alone.
	raid.calls = nil
	if out := a.Do(context.Background(), act); out.Err != nil {
		t.Fatal(out.Err)
	}
	if len(raid.calls) != 0 {
		t.Fatalf("retry changed md: %v", raid.calls)
	}
	// No slot count given (a replaced replica): nothing to shrink.
	raid.arr.RaidDisks = 3
	act.Slots, act.Member = 0, ""
	if out := a.Do(context.Background(), act); out.Err != nil || len(raid.calls) != 0 {
		t.Fatalf("err %v, md calls %v", out.Err, raid.calls)
	}
}

func TestActReplace(t *testing.T) {
	raid, fab, prov, a, recorded := actFixture()
	fab.reachable[nqnOf("vol-1-r2-new")] = host.Device{Name: "nvme8n1", Path: "/dev/nvme8n1", UUID: nvmeof.NamespaceUUID("r2-new")}
	// The fake provisioner names the new replica's subsystem after the
	// missing one; map its NQN.
	fab.reachable["nqn.2026-01.io.nvmirror:r2-new"] = fab.reachable[nqnOf("vol-1-r2-new")]
	act := Action{Kind: ActReplace, VolumeID: "vol-1", MDDevice: "/dev/md127", MDUUID: actUUID, Replica: replicaOf("r2"), Member: "nvme2n1"}
	out := a.Do(context.Background(), act)
	if out.Err != nil || out.NewReplica == nil || out.NewReplica.ID != "r2-new" || !out.Joined {
		t.Fatalf("outcome %+v", out)
	}
	if want := []string{"remove nvme2n1", "examine /dev/nvme8n1", "add /dev/nvme8n1"}; !slices.Equal(raid.calls, want) {
		t.Fatalf("md calls %v", raid.calls)
	}
	if !slices.Equal(*recorded, []string{"vol-1/r2-new"}) || fab.calls[0] != "disconnect "+replicaOf("r2").NQN {
		t.Fatalf("recorded %v fabric %v", *recorded, fab.calls)
	}
	// A retry returns the same replica and finds it already in.
	raid.calls = nil
	out = a.Do(context.Background(), act)
	if out.Err != nil || out.NewReplica.ID != "r2-new" || out.Joined || len(prov.replaced) != 1 {
		t.Fatalf("retry %+v", out)
	}
	// The new replica does not answer: the outcome still names it.
	_, fab2, _, a2, _ := actFixture()
	_ = fab2
	out = a2.Do(context.Background(), act)
	if out.Err == nil || out.NewReplica == nil || out.Joined {
		t.Fatalf("unreachable replacement: %+v", out)
	}
}

// The provisioner's client is what cmd/nvmirror-csi passes: no adapter.
var (
	_ ProvisionerOps = (*provisionerclient.Client)(nil)
	_ EventReporter  = (*provisionerclient.Client)(nil)
)

// A returning replica whose superblock is ahead of the running array took
// writes the array never saw (it was started from other replicas): it is
// never re-added or added, which would resync those writes away.
func TestActJoinRefusesNewerData(t *testing.T) {
	raid, fab, _, a, _ := actFixture()
	r := replicaOf("r2")
	fab.reachable[r.NQN] = devFor("r2", "nvme5n1")
	raid.sbs["/dev/nvme5n1"] = mdraid.Superblock{UUID: actUUID, Events: 90}
	raid.sbs["/dev/nvme1n1"] = mdraid.Superblock{UUID: actUUID, Events: 57}
	out := a.Do(context.Background(), Action{Kind: ActJoin, VolumeID: "vol-1", MDDevice: "/dev/md127", MDUUID: actUUID, Replica: r, Member: "nvme2n1", Connect: true})
	if !errors.Is(out.Err, ErrNewerData) || out.Joined || !strings.Contains(out.Err.Error(), "90") {
		t.Fatalf("outcome %+v, want ErrNewerData naming the event counts", out)
	}
	for _, c := range raid.calls {
		if strings.HasPrefix(c, "re-add") || strings.HasPrefix(c, "add") {
			t.Errorf("mdadm %s on a replica with newer data", c)
		}
	}
}
