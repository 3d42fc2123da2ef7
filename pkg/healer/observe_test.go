package healer

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
)

func TestObserveFixtureTree(t *testing.T) {
	tr := newTree(t, 3)
	prov := newFakeProv(tr.vols)
	o := tr.observer(prov)
	o.ConfigMaxAge = 10 * time.Second
	now := t0
	o.Now = func() time.Time { return now }
	tr.ctrlState(4, "connecting") // vol-0001 replica 2
	tr.ctrlState(8, "")           // vol-0002 replica 3: deleted by the kernel
	tr.memberState(2, 2, "faulty,failfast")

	obs, err := o.Observe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(obs.Volumes) != 3 || prov.gets != 3 {
		t.Fatalf("volumes %d, GetVolume calls %d", len(obs.Volumes), prov.gets)
	}
	v1 := obs.Volumes[1]
	if v1.Array == nil || v1.Array.Name != "md1" || len(v1.Array.Members) != 3 || !v1.RecordFresh {
		t.Fatalf("vol-0001 %+v", v1)
	}
	m := v1.Array.Members[1]
	if m.Device != "nvme4n1" || !m.InSync || len(m.Identities) != 2 || normalizeID(m.Identities[0]) != normalizeID(nvmeof.NamespaceUUID("vol-0001-r2")) {
		t.Fatalf("member %+v", m)
	}
	if cs := v1.Controllers["nqn.2026-01.io.nvmirror:vol-0001-r2"]; len(cs) != 1 || cs[0].State != host.StateConnecting || cs[0].TrAddr != "10.0.1.1" {
		t.Fatalf("controllers %+v", cs)
	}
	if _, ok := obs.Volumes[2].Controllers["nqn.2026-01.io.nvmirror:vol-0002-r3"]; ok {
		t.Fatal("a deleted controller is observed")
	}
	if !obs.Volumes[2].Array.Members[2].Faulty {
		t.Fatal("faulty member not seen")
	}

	// Decide on it: vol-0001 degraded (idle md, reconnecting), vol-0002
	// degraded (faulty, controller gone).
	_, evs, _ := Decide(obs, testConfig(), Memory{}, now)
	if count(evs, events.VolumeDegraded) != 2 {
		t.Fatalf("events %v", types(evs))
	}

	// Within ConfigMaxAge the cached configuration is reused and fresh.
	now = now.Add(time.Second)
	if obs, _ = o.Observe(context.Background()); prov.gets != 3 || !obs.Volumes[0].RecordFresh {
		t.Fatalf("GetVolume calls %d, fresh %v", prov.gets, obs.Volumes[0].RecordFresh)
	}
	// Outage: one call fails, the others are not tried; cached, not fresh.
	now = now.Add(time.Minute)
	prov.setDown(true)
	obs, err = o.Observe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if prov.gets != 4 {
		t.Fatalf("GetVolume calls during an outage: %d", prov.gets-3)
	}
	for _, v := range obs.Volumes {
		if v.RecordFresh || v.Record == nil {
			t.Fatalf("%s: fresh %v config %v", v.VolumeID, v.RecordFresh, v.Record != nil)
		}
	}
}

func TestObserveArrayRenumbered(t *testing.T) {
	tr := newTree(t, 2)
	// NodeStage recorded md0 and md1 the other way round (a reboot
	// assembled them under each other's number): found by UUID.
	tr.staged[0].MDDevice, tr.staged[1].MDDevice = "/dev/md1", "/dev/md0"
	tr.staged = append(tr.staged, stagestate.Volume{VolumeID: "vol-gone", Staged: true, MDDevice: "/dev/md7", MDUUID: arrayUUID(7)})
	obs, err := tr.observer(newFakeProv(tr.vols)).Observe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if obs.Volumes[0].Array.Name != "md0" || obs.Volumes[1].Array.Name != "md1" || obs.Volumes[2].Array != nil {
		t.Fatalf("arrays %+v %+v %+v", obs.Volumes[0].Array, obs.Volumes[1].Array, obs.Volumes[2].Array)
	}
	if obs.Volumes[2].Record != nil {
		t.Fatal("unknown volume has a configuration")
	}
}

func TestObserveWithoutMD(t *testing.T) {
	o := &Observer{Staged: func() ([]stagestate.Volume, error) { return nil, nil }, NVMe: SysfsNVMe{Root: t.TempDir()}}
	tr := newTree(t, 0)
	o.Arrays = tr.observer(nil).Arrays
	if err := removeFile(tr.root + "/proc/mdstat"); err != nil {
		t.Fatal(err)
	}
	obs, err := o.Observe(context.Background())
	if err != nil || len(obs.Volumes) != 0 {
		t.Fatalf("%+v %v", obs, err)
	}
}

func TestSysfsNVMe(t *testing.T) {
	tr := newTree(t, 1)
	s := SysfsNVMe{Root: tr.root}
	cs, err := s.Controllers()
	if err != nil || len(cs) != 3 {
		t.Fatalf("%+v %v", cs, err)
	}
	names := []string{}
	for _, c := range cs {
		names = append(names, c.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"nvme0", "nvme1", "nvme2"}) || cs[0].State != host.StateLive || cs[0].TrSvcID != "4420" {
		t.Fatalf("%+v", cs)
	}
	ids, err := s.NamespaceIdentities("nvme0n1")
	if err != nil || len(ids) != 2 {
		t.Fatalf("%v %v", ids, err)
	}
	if ids, err := s.NamespaceIdentities("nvme9n1"); err != nil || ids != nil {
		t.Fatalf("gone device: %v %v", ids, err)
	}
	if _, err := s.NamespaceIdentities("../etc"); err == nil {
		t.Fatal("path accepted as device name")
	}
	if cs, err := (SysfsNVMe{Root: t.TempDir()}).Controllers(); err != nil || cs != nil {
		t.Fatalf("no nvme class: %v %v", cs, err)
	}
}

// One array the healer cannot read (here the real kernel's line for an
// inactive array with no members, left by a failed assemble, whose sysfs
// holds no UUID) is reported and skipped: every other volume is still
// observed, found by UUID too.
func TestObserveSkipsUnreadableArray(t *testing.T) {
	for name, extra := range map[string]string{
		"inactive without members": "md127 : inactive super 1.2\n       \n",
		"unreadable mdstat entry":  "md127 : active raid1 sdd[1] sdc[0]\n      100 blocks super 1.2 [2/2] [UU]\n      bitmap: lots of pages\n",
	} {
		t.Run(name, func(t *testing.T) {
			tr := newTree(t, 2)
			mdstat, err := os.ReadFile(filepath.Join(tr.root, "proc", "mdstat"))
			if err != nil {
				t.Fatal(err)
			}
			tr.write("proc/mdstat", strings.Replace(string(mdstat), "unused devices:", extra+"unused devices:", 1))
			tr.write("sys/block/md127/md/array_state", "inactive")
			tr.write("sys/block/md127/md/level", "")
			tr.write("sys/block/md127/md/raid_disks", "garbled") // and its sysfs unreadable
			// vol-0000 is found by UUID: every array is read, md127 too.
			tr.staged[0].MDDevice = "/dev/md9"
			obs, err := tr.observer(newFakeProv(tr.vols)).Observe(context.Background())
			if err != nil {
				t.Fatalf("one odd array stopped the whole cycle: %v", err)
			}
			if len(obs.Volumes) != 2 || obs.Volumes[0].Array == nil || obs.Volumes[0].Array.Name != "md0" ||
				obs.Volumes[1].Array == nil || obs.Volumes[1].Array.Name != "md1" {
				t.Fatalf("volumes %+v", obs.Volumes)
			}
		})
	}
}

// A /proc/mdstat the parser cannot read at all (an unknown top-level line)
// does not stop healing either: each staged volume's array is read under
// the device NodeStage recorded.
func TestObserveUnparseableMdstat(t *testing.T) {
	tr := newTree(t, 2)
	tr.write("proc/mdstat", "Personalities : [raid1] \nsomething new : from a future kernel\n")
	obs, err := tr.observer(newFakeProv(tr.vols)).Observe(context.Background())
	if err != nil {
		t.Fatalf("Observe: %v", err)
	}
	if len(obs.Volumes) != 2 || obs.Volumes[0].Array == nil || obs.Volumes[1].Array == nil {
		t.Fatalf("volumes %+v", obs.Volumes)
	}
}

// A volume unstaged and staged again between two cycles (a promotion may
// have given replicas up meanwhile) is never acted on with the record
// cached before its new stage began, however young that record is.
func TestObserveRecordCachedBeforeTheStageIsNotReused(t *testing.T) {
	tr := newTree(t, 2)
	prov := newFakeProv(tr.vols)
	o := tr.observer(prov)
	o.ConfigMaxAge = 10 * time.Second
	now := t0
	o.Now = func() time.Time { return now }
	if _, err := o.Observe(context.Background()); err != nil || prov.gets != 2 {
		t.Fatalf("first look: %v, GetVolume calls %d", err, prov.gets)
	}
	tr.staged[0].StageStarted = t0.Add(500 * time.Millisecond)
	now = t0.Add(time.Second)
	obs, err := o.Observe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if prov.gets != 3 || !obs.Volumes[0].RecordFresh || !obs.Volumes[1].RecordFresh {
		t.Fatalf("GetVolume calls %d (want one more, for the restaged volume only); fresh %v %v",
			prov.gets, obs.Volumes[0].RecordFresh, obs.Volumes[1].RecordFresh)
	}

	// Restaged again, and the provisioner away: the older record is not
	// the fallback either; the volume waits with no record.
	tr.staged[0].StageStarted = t0.Add(1500 * time.Millisecond)
	now = t0.Add(2 * time.Second)
	prov.down = true
	if obs, err = o.Observe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if obs.Volumes[0].Record != nil || obs.Volumes[0].RecordFresh {
		t.Fatalf("restaged volume with the provisioner away: record %+v (fresh %v), want none", obs.Volumes[0].Record, obs.Volumes[0].RecordFresh)
	}
	if obs.Volumes[1].Record == nil {
		t.Fatal("the other volume lost its cached record")
	}
}
