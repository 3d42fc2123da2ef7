//go:build linux

package healer

import (
	"context"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
)

// cachedObserver is the fixture's observer as the healer runs it with an md
// watcher: array readings reused between cycles.
func cachedObserver(tr *tree, now *time.Time) *Observer {
	o := tr.observer(newFakeProv(tr.vols))
	o.Now = func() time.Time { return *now }
	o.ConfigMaxAge = time.Hour
	o.ArrayReread = 10 * time.Minute
	o.MDNotifications(true)
	return o
}

func memberInSync(t *testing.T, o *Observer, vol, member int) bool {
	t.Helper()
	obs, err := o.Observe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return obs.Volumes[vol].Array.Members[member].InSync
}

// setMdstat rewrites one array's member list in /proc/mdstat, as md does
// when a member fails.
func (t *tree) setMdstatLine(old, new string) {
	b, err := os.ReadFile(t.root + "/proc/mdstat")
	if err != nil {
		t.tb.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.tb.Fatalf("mdstat has no %q", old)
	}
	t.write("proc/mdstat", strings.TrimSuffix(strings.Replace(string(b), old, new, 1), "\n"))
}

func TestArrayCacheRereads(t *testing.T) {
	tr := newTree(t, 3)
	now := t0
	o := cachedObserver(tr, &now)
	if !memberInSync(t, o, 1, 2) {
		t.Fatal("fixture member not in sync")
	}
	// Changed in sysfs with neither a notification nor a change of
	// /proc/mdstat: the reading is reused (this is what the cache saves).
	tr.memberState(1, 2, "faulty,failfast")
	if !memberInSync(t, o, 1, 2) {
		t.Fatal("array read again without a reason")
	}
	// md signalled the array: read again.
	o.ArraysChanged("md1")
	if memberInSync(t, o, 1, 2) {
		t.Fatal("signalled change not read")
	}

	// A change visible in /proc/mdstat is read without a notification.
	tr.memberState(2, 0, "faulty")
	tr.setMdstatLine("nvme6n1[0]", "nvme6n1[0](F)")
	if memberInSync(t, o, 2, 0) {
		t.Fatal("change shown in /proc/mdstat not read")
	}

	// An action of the healer marks its array.
	tr.write("sys/block/md0/md/sync_speed_max", "2048 (local)")
	obs, _ := o.Observe(context.Background())
	if obs.Volumes[0].Array.SyncSpeedMaxKiB == 2048 {
		t.Fatal("unsignalled attribute read (the fixture is wrong)")
	}
	o.ArraysChanged("md0")
	if obs, _ = o.Observe(context.Background()); obs.Volumes[0].Array.SyncSpeedMaxKiB != 2048 {
		t.Fatalf("limit after an action: %d", obs.Volumes[0].Array.SyncSpeedMaxKiB)
	}

	// The backstop: after ArrayReread every array is read again.
	tr.memberState(0, 1, "faulty")
	if !memberInSync(t, o, 0, 1) {
		t.Fatal("read again without a reason")
	}
	now = now.Add(o.ArrayReread)
	if memberInSync(t, o, 0, 1) {
		t.Fatal("not read again after ArrayReread")
	}

	// Without notifications (the watch failed) every cycle reads all.
	tr.memberState(0, 1, "in_sync")
	o.MDNotifications(false)
	if !memberInSync(t, o, 0, 1) {
		t.Fatal("read from the cache while notifications are off")
	}
	tr.memberState(0, 1, "faulty")
	if memberInSync(t, o, 0, 1) {
		t.Fatal("read from the cache while notifications are off")
	}
	// Back on: the first cycle reads everything again, then reuses.
	o.MDNotifications(true)
	tr.memberState(0, 1, "in_sync")
	if !memberInSync(t, o, 0, 1) {
		t.Fatal("first cycle after notifications came back used the cache")
	}
}

// An array stopped and another assembled under its name (another UUID, so
// another /proc/mdstat entry) is read again; one stopped is forgotten.
func TestArrayCacheArrayReplaced(t *testing.T) {
	tr := newTree(t, 2)
	now := t0
	o := cachedObserver(tr, &now)
	if _, err := o.Observe(context.Background()); err != nil {
		t.Fatal(err)
	}
	tr.setMdstatLine("md1 : active raid1 nvme3n1[0] nvme4n1[1] nvme5n1[2]", "md1 : active raid1 nvme3n1[0] nvme4n1[1]")
	tr.write("sys/block/md1/md/uuid", strings.ReplaceAll(arrayUUID(9), ":", ""))
	obs, err := o.Observe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if obs.Volumes[1].Array != nil {
		t.Fatalf("another array under md1 taken for vol-0001: %+v", obs.Volumes[1].Array)
	}
	tr.setMdstatLine("md1 : active raid1 nvme3n1[0] nvme4n1[1]\n      39936 blocks super 1.2 [3/3] [UUU]\n      bitmap: 0/1 pages [0KB], 65536KB chunk\n", "")
	if obs, err = o.Observe(context.Background()); err != nil || obs.Volumes[1].Array != nil {
		t.Fatalf("%v %+v", err, obs.Volumes[1].Array)
	}
	if _, ok := o.mdRead.entries["md1"]; ok {
		t.Fatal("a stopped array stays cached")
	}
}

// Through a sequence of faults, each signalled as md signals it, the
// observer with both caches sees exactly what the one without sees.
func TestCachedObservationEqualsUncached(t *testing.T) {
	tr := newTree(t, 4)
	now := t0
	cached := cachedObserver(tr, &now)
	cached.NVMe = newCachedNVMeForTest(t, tr.root)
	plain := tr.observer(newFakeProv(tr.vols))
	plain.Now, plain.ConfigMaxAge = cached.Now, time.Hour
	compare := func(step string) {
		t.Helper()
		a, err := cached.Observe(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		b, err := plain.Observe(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for i := range a.Volumes {
			// Controllers come in listing order; compare as sets.
			for n := range a.Volumes[i].Controllers {
				sortCtrlObs(a.Volumes[i].Controllers[n])
				sortCtrlObs(b.Volumes[i].Controllers[n])
			}
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: cached observation differs:\n%+v\n%+v", step, a, b)
		}
	}
	compare("healthy")
	tr.ctrlState(4, "connecting")
	compare("controller reconnecting")
	tr.ctrlState(4, "")
	compare("controller gone")
	tr.memberState(1, 1, "faulty,failfast")
	cached.ArraysChanged("md1")
	compare("member failed")
	tr.replaceDir("sys/class/nvme/nvme4", map[string]string{"subsysnqn": "nqn.2026-01.io.nvmirror:vol-0001-r2", "state": "live",
		"address": "traddr=10.0.1.1,trsvcid=4420"})
	tr.replaceDir("sys/block/nvme4n1", map[string]string{"uuid": "12345678-2222-3333-4444-555555555555"})
	compare("reconnected with another namespace")
	tr.write("sys/block/md2/md/sync_action", "recover")
	tr.write("sys/block/md2/md/sync_completed", "100 / 79872")
	cached.ArraysChanged("md2", mdraid.MdstatChange)
	compare("resync")
}

func newCachedNVMeForTest(t *testing.T, root string) NVMeReader {
	c := NewCachedNVMe(root)
	t.Cleanup(func() { c.Close() })
	return c
}

func sortCtrlObs(cs []ControllerObservation) {
	for i := 1; i < len(cs); i++ {
		for j := i; j > 0 && cs[j].Name < cs[j-1].Name; j-- {
			cs[j], cs[j-1] = cs[j-1], cs[j]
		}
	}
}

// The memory is saved when its JSON differs, and only then: the DeepEqual
// shortcut must not hide a change nor invent one.
func TestMemoryChanged(t *testing.T) {
	base := func() Memory {
		return Memory{Version: 1, Volumes: map[string]VolumeMemory{"v": {DegradedSince: t0, Named: []string{"r1"},
			Replicas: map[string]ReplicaMemory{"r1": {LastState: "active"}}}}}
	}
	if memoryChanged(base(), base(), nil) {
		t.Fatal("equal memories differ")
	}
	a, b := base(), base()
	a.Volumes["v"] = VolumeMemory{Named: []string{}, DegradedSince: t0, Replicas: a.Volumes["v"].Replicas}
	b.Volumes["v"] = VolumeMemory{DegradedSince: t0, Replicas: b.Volumes["v"].Replicas}
	if memoryChanged(a, b, nil) {
		t.Fatal("an empty and a nil list (the same JSON) differ")
	}
	b = base()
	b.Volumes["v"].Replicas["r1"] = ReplicaMemory{LastState: "removed"}
	if !memoryChanged(base(), b, nil) {
		t.Fatal("a changed replica state is not a change")
	}
	b = base()
	b.Volumes["v"] = VolumeMemory{DegradedSince: t0.Add(time.Second), Named: []string{"r1"}, Replicas: b.Volumes["v"].Replicas}
	if !memoryChanged(base(), b, nil) {
		t.Fatal("a changed clock is not a change")
	}
	// A volume carried over is the same value in both: not compared.
	if memoryChanged(base(), base(), map[string]bool{"v": true}) {
		t.Fatal("a carried volume is a change")
	}
	b = base()
	b.Volumes["w"] = VolumeMemory{}
	if !memoryChanged(base(), b, map[string]bool{"v": true}) {
		t.Fatal("a new volume is not a change")
	}
}

// /proc/mdstat is parsed again only when its text changed.
func TestMdstatParsedOnce(t *testing.T) {
	tr := newTree(t, 2)
	now := t0
	o := cachedObserver(tr, &now)
	if _, err := o.Observe(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := o.mdstat.keys
	if _, err := o.Observe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if reflect.ValueOf(o.mdstat.keys).Pointer() != reflect.ValueOf(first).Pointer() {
		t.Fatal("unchanged /proc/mdstat parsed again")
	}
	tr.setMdstatLine("nvme0n1[0]", "nvme0n1[0](F)")
	if _, err := o.Observe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if k := o.mdstat.keys["md0"]; k == first["md0"] || !strings.Contains(k, "nvme0n1[0]F") {
		t.Fatalf("changed /proc/mdstat not parsed again: %q", k)
	}
}

// TestArrayObservationShared: an array whose reading is reused and whose
// members' identities are the same is observed as the same (shared)
// ArrayObservation; a new reading or a changed identity gives a new one
// with what changed.
func TestArrayObservationShared(t *testing.T) {
	tr := newTree(t, 2)
	now := t0
	o := cachedObserver(tr, &now)
	c := NewCachedNVMe(tr.root)
	t.Cleanup(func() { c.Close() })
	o.NVMe = c
	observe := func() Observation {
		t.Helper()
		obs, err := o.Observe(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return obs
	}
	first := observe()
	again := observe()
	for i := range first.Volumes {
		if first.Volumes[i].Array == nil || again.Volumes[i].Array != first.Volumes[i].Array {
			t.Fatalf("volume %d: unchanged array observed anew", i)
		}
	}
	// A new reading of md1 (md signalled it): a new observation of md1
	// only.
	tr.memberState(1, 2, "faulty")
	o.ArraysChanged("md1")
	obs := observe()
	if obs.Volumes[1].Array == again.Volumes[1].Array || !obs.Volumes[1].Array.Members[2].Faulty {
		t.Fatalf("re-read array: %+v", obs.Volumes[1].Array.Members[2])
	}
	if obs.Volumes[0].Array != again.Volumes[0].Array {
		t.Fatal("md0 observed anew without a reason")
	}
	// md0's first member's namespace replaced under the same device name
	// (same reading of md0): its identities are read again and the
	// observation shows them.
	tr.replaceDir("sys/block/nvme0n1", map[string]string{"uuid": "11111111-2222-3333-4444-555555555555"})
	next := observe()
	got := next.Volumes[0].Array
	if got == obs.Volumes[0].Array || !slices.Equal(got.Members[0].Identities, []string{"11111111-2222-3333-4444-555555555555"}) {
		t.Fatalf("replaced namespace: %+v", got.Members[0])
	}
	if !slices.Equal(got.Members[1].Identities, obs.Volumes[0].Array.Members[1].Identities) || len(got.Members) != 3 {
		t.Fatalf("other members: %+v", got.Members)
	}
	if sameObservation(obs.Volumes[0], next.Volumes[0]) {
		t.Fatal("changed identity compares equal")
	}
}
