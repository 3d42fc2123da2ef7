//go:build vmguest

package kernel

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	utilexec "k8s.io/utils/exec"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
)

const (
	replicaBytes = 256 << 20
	bitmapChunk  = 1 << 20
)

// TestDataPath is the foundation scenario, end to end through pkg/nvmeof and
// pkg/mdraid: three storage nodes export a replica each over NVMe/TCP, the
// host connects all three and builds a RAID1 with an internal bitmap, one
// node is cut off under I/O, md fails its leg and serves on, the node
// returns, its leg is re-added with a bitmap-only resync, an md check finds no
// mismatch, and the array assembles again from scratch with every checksum
// intact.
func TestDataPath(t *testing.T) {
	tgt := nvmet.NewTarget("")
	ini := host.NewInitiator("")
	md := mdraid.NewManager(utilexec.New(), "")
	hostIdent := newHostIdentity(t, 1)
	nodes := startStorageNodes(t, tgt, "dp", 3, replicaBytes, hostIdent, 1)

	// Connect every replica and resolve its block device by NQN and
	// namespace UUID; connecting again must return the same controller.
	devs := make([]host.Device, len(nodes))
	for i, n := range nodes {
		ctrl, err := ini.Connect(ctxTimeout(t, 30*time.Second), n.connectOptions(hostIdent))
		if err != nil {
			t.Fatalf("connect %s: %v", n.nqn, err)
		}
		again, err := ini.Connect(ctxTimeout(t, 30*time.Second), n.connectOptions(hostIdent))
		if err != nil || again.Name != ctrl.Name {
			t.Fatalf("second connect of %s: controller %q, err %v; want the existing %q", n.nqn, again.Name, err, ctrl.Name)
		}
		devs[i], err = ini.WaitForDevice(ctxTimeout(t, 30*time.Second), n.nqn, n.nsUUID)
		if err != nil {
			t.Fatalf("device of %s: %v", n.nqn, err)
		}
		if devs[i].SizeBytes != replicaBytes {
			t.Errorf("%s: size %d, want %d", devs[i].Name, devs[i].SizeBytes, replicaBytes)
		}
		t.Logf("replica %d: %s at %s:%s -> controller %s (%s), device %s", i, n.nqn, n.addr, n.svcID, ctrl.Name, ctrl.State, devs[i].Path)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if err := ini.DisconnectNQN(ctxTimeout(t, 30*time.Second), n.nqn); err != nil {
				t.Errorf("disconnect %s: %v", n.nqn, err)
			}
		}
	})

	mdDev, err := md.NextFreeDevice()
	if err != nil {
		t.Fatal(err)
	}
	members := []string{devs[0].Path, devs[1].Path, devs[2].Path}
	if err := md.Create(ctxTimeout(t, time.Minute), mdraid.CreateOptions{
		Device: mdDev, Name: "vol-dp", Devices: members, BitmapChunk: bitmapChunk,
		AssumeClean: true, // the backing files are new and sparse: all zeros on every leg
	}); err != nil {
		t.Fatalf("create %s: %v", mdDev, err)
	}
	mdName := filepath.Base(mdDev)
	t.Cleanup(func() { _ = md.Stop(ctxTimeout(t, time.Minute), mdDev) })
	arr, err := md.ReadArray(mdName)
	if err != nil {
		t.Fatal(err)
	}
	if arr.RaidDisks != 3 || arr.Degraded != 0 || len(arr.Members) != 3 {
		t.Fatalf("new array: raid_disks %d degraded %d members %d", arr.RaidDisks, arr.Degraded, len(arr.Members))
	}
	for _, m := range arr.Members {
		if !m.State.InSync || !m.State.Failfast {
			t.Errorf("member %s state %q: want in_sync and failfast", m.Device, m.State.Raw)
		}
	}
	uuid := arr.UUID
	arraySectors := arr.SizeKiB * 2
	t.Logf("array %s uuid %s: %d KiB per member, bitmap chunk %d KiB", mdDev, uuid, arr.SizeKiB, bitmapChunk>>10)

	mnt := "/mnt/dp"
	mkfsAndMount(t, mdDev, mnt)
	before := writeFiles(t, mnt, "before", 16, 1<<20)

	// Watch md for change notifications while the fault happens: the healer
	// relies on poll() waking it up instead of waiting for its next tick.
	watcher := mdraid.NewWatcher("")
	t.Cleanup(func() { watcher.Close() })
	if gone, err := watcher.Arm([]string{mdName}); err != nil || len(gone) > 0 {
		t.Fatalf("arm md watcher: gone %v, err %v", gone, err)
	}
	woke := make(chan []string, 1)
	go func() {
		changed, err := watcher.Wait(ctxTimeout(t, 60*time.Second), []string{mdName})
		if err != nil {
			t.Logf("watcher: %v", err)
		}
		woke <- changed
	}()

	// Fault: node 1 loses its port link (like its network going away). Writes
	// go on during the fault and must complete on the remaining legs.
	cut := nodes[1]
	cutDev := devs[1]
	faultAt := time.Now()
	if err := tgt.UnlinkSubsystem(cut.portID, cut.nqn); err != nil {
		t.Fatalf("cut %s: %v", cut.nqn, err)
	}
	during := writeFiles(t, mnt, "during", 8, 1<<20)
	waitFor(t, 60*time.Second, "md to fail the cut leg", func() (bool, string) {
		a, err := md.ReadArray(mdName)
		if err != nil {
			return false, err.Error()
		}
		m, ok := a.Member(cutDev.Name)
		return a.Degraded == 1 && (!ok || m.State.Faulty), describe(a)
	})
	t.Logf("md failed %s %v after the cut (writes in flight)", cutDev.Name, time.Since(faultAt).Round(time.Millisecond))
	select {
	case changed := <-woke:
		if len(changed) == 0 {
			t.Errorf("md watcher returned without naming a change")
		}
		t.Logf("md watcher woke for %v", changed)
	case <-time.After(10 * time.Second):
		t.Errorf("md watcher did not wake within 10s of the member failing")
	}
	stat, err := md.ReadMdstat()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range stat.Arrays {
		if a.Name == mdName {
			found = true
			if a.ActiveDisks != 2 || a.RaidDisks != 3 {
				t.Errorf("/proc/mdstat: [%d/%d], want [3/2]", a.RaidDisks, a.ActiveDisks)
			}
		}
	}
	if !found {
		t.Errorf("/proc/mdstat has no %s", mdName)
	}
	degraded := writeFiles(t, mnt, "degraded", 8, 1<<20)

	// The outage outlasts ctrl_loss_tmo: the kernel gives up reconnecting and
	// deletes the controller, so the block device disappears and the
	// replica must be connected again, as after any long outage.
	waitFor(t, 30*time.Second, "the cut controller to be deleted at ctrl_loss_tmo", func() (bool, string) {
		ctrls, err := ini.ControllersFor(cut.nqn)
		if err != nil {
			return false, err.Error()
		}
		var states []string
		for _, c := range ctrls {
			states = append(states, c.Name+"="+string(c.State))
		}
		return len(ctrls) == 0, strings.Join(states, ",")
	})

	// The node comes back: relink its port, connect again, and find the
	// device by NQN and namespace UUID (its name may have changed).
	if err := tgt.LinkSubsystem(cut.portID, cut.nqn); err != nil {
		t.Fatal(err)
	}
	if _, err := ini.Connect(ctxTimeout(t, 30*time.Second), cut.connectOptions(hostIdent)); err != nil {
		t.Fatalf("reconnect %s: %v", cut.nqn, err)
	}
	back, err := ini.WaitForDevice(ctxTimeout(t, 30*time.Second), cut.nqn, cut.nsUUID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("replica back as %s (was %s)", back.Name, cutDev.Name)

	// Re-add: remove the failed slot, then --re-add, which md accepts with a
	// bitmap-based resync of only the chunks written while the leg was away.
	if err := md.Remove(ctxTimeout(t, time.Minute), mdDev, "failed"); err != nil {
		t.Fatalf("remove failed members: %v", err)
	}
	sb, err := md.Examine(ctxTimeout(t, time.Minute), back.Path)
	if err != nil {
		t.Fatalf("examine %s: %v", back.Path, err)
	}
	if sb.UUID != uuid {
		t.Fatalf("returning replica carries md uuid %s, want %s: refusing to re-add", sb.UUID, uuid)
	}
	writtenBefore := writeSectors(t, back.Name)
	readdAt := time.Now()
	if err := md.ReAdd(ctxTimeout(t, time.Minute), mdDev, back.Path); err != nil {
		t.Fatalf("re-add %s: %v", back.Path, err)
	}
	waitFor(t, 3*time.Minute, "the re-added leg to be in sync", func() (bool, string) {
		a, err := md.ReadArray(mdName)
		if err != nil {
			return false, err.Error()
		}
		m, ok := a.Member(back.Name)
		return a.Degraded == 0 && a.SyncAction == "idle" && ok && m.State.InSync, describe(a)
	})
	resynced := writeSectors(t, back.Name) - writtenBefore
	t.Logf("RESYNC: re-add took %v and wrote %d sectors (%.1f MiB) of a %d-sector (%.0f MiB) array: %.1f%%",
		time.Since(readdAt).Round(time.Millisecond), resynced, float64(resynced)/2048, arraySectors, float64(arraySectors)/2048,
		100*float64(resynced)/float64(arraySectors))
	if resynced == 0 || resynced > arraySectors/2 {
		t.Errorf("resync wrote %d sectors of %d: want a bitmap resync (some, but well under half)", resynced, arraySectors)
	}

	// Contrast: a replica that lost its data (here: its superblock wiped)
	// cannot re-add; it is added as a new member and rebuilt in full.
	wiped := devs[2]
	if err := md.Fail(ctxTimeout(t, time.Minute), mdDev, wiped.Path); err != nil {
		t.Fatalf("fail %s: %v", wiped.Path, err)
	}
	if err := md.Remove(ctxTimeout(t, time.Minute), mdDev, wiped.Path); err != nil {
		t.Fatalf("remove %s: %v", wiped.Path, err)
	}
	zeroHead(t, wiped.Path, 1<<20)
	if _, err := md.Examine(ctxTimeout(t, time.Minute), wiped.Path); !errors.Is(err, mdraid.ErrNoSuperblock) {
		t.Fatalf("examine wiped %s: err %v, want ErrNoSuperblock", wiped.Path, err)
	}
	if err := md.ReAdd(ctxTimeout(t, time.Minute), mdDev, wiped.Path); !errors.Is(err, mdraid.ErrReAddRefused) {
		t.Fatalf("re-add of a wiped replica: err %v, want ErrReAddRefused", err)
	}
	writtenBefore = writeSectors(t, wiped.Name)
	addAt := time.Now()
	if err := md.Add(ctxTimeout(t, time.Minute), mdDev, wiped.Path); err != nil {
		t.Fatalf("add %s: %v", wiped.Path, err)
	}
	waitFor(t, 5*time.Minute, "the rebuilt leg to be in sync", func() (bool, string) {
		a, err := md.ReadArray(mdName)
		if err != nil {
			return false, err.Error()
		}
		m, ok := a.Member(wiped.Name)
		return a.Degraded == 0 && a.SyncAction == "idle" && ok && m.State.InSync, describe(a)
	})
	rebuilt := writeSectors(t, wiped.Name) - writtenBefore
	t.Logf("FULL REBUILD: add took %v and wrote %d sectors (%.1f MiB): %.1f%% of the array; the bitmap re-add wrote %.1f%% of that",
		time.Since(addAt).Round(time.Millisecond), rebuilt, float64(rebuilt)/2048, 100*float64(rebuilt)/float64(arraySectors),
		100*float64(resynced)/float64(rebuilt))
	if rebuilt < arraySectors*9/10 {
		t.Errorf("full rebuild wrote %d sectors, want about the array's %d", rebuilt, arraySectors)
	}

	// md check: every leg must hold the same data.
	checkMirrors(t, md, mdName)

	// Stop, then assemble again from scratch by UUID, and verify everything.
	unmount(t, mnt)
	if err := md.Stop(ctxTimeout(t, time.Minute), mdDev); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := md.ReadArray(mdName); !errors.Is(err, mdraid.ErrNotFound) {
		t.Fatalf("after stop, ReadArray(%s) = %v, want ErrNotFound", mdName, err)
	}
	if err := md.Assemble(ctxTimeout(t, time.Minute), mdDev, uuid, []string{devs[0].Path, back.Path, wiped.Path}); err != nil {
		t.Fatalf("assemble: %v", err)
	}
	arr, err = md.FindByUUID(uuid)
	if err != nil {
		t.Fatal(err)
	}
	if arr.Degraded != 0 || len(arr.Members) != 3 {
		t.Fatalf("assembled array: %s", describe(arr))
	}
	mount(t, mdDev, mnt)
	dropCaches(t)
	verifyFiles(t, mergeSums(before, during, degraded))
	unmount(t, mnt)
}

// TestUnallowedHostCannotConnect: a subsystem accepts only the host NQNs in
// its allowed_hosts; any other host is refused by the kernel, and nothing is
// left half-connected.
func TestUnallowedHostCannotConnect(t *testing.T) {
	tgt := nvmet.NewTarget("")
	ini := host.NewInitiator("")
	allowed := newHostIdentity(t, 2)
	stranger := newHostIdentity(t, 3)
	nodes := startStorageNodes(t, tgt, "acl", 1, 64<<20, allowed, 11)
	n := nodes[0]

	_, err := ini.Connect(ctxTimeout(t, 30*time.Second), n.connectOptions(stranger))
	if err == nil {
		t.Fatalf("a host not in allowed_hosts connected to %s", n.nqn)
	}
	t.Logf("stranger refused: %v", err)
	if ctrls, _ := ini.ControllersFor(n.nqn); len(ctrls) != 0 {
		t.Errorf("refused connect left controllers behind: %+v", ctrls)
	}
	sub, err := tgt.GetSubsystem(n.nqn)
	if err != nil {
		t.Fatal(err)
	}
	if sub.AllowAnyHost {
		t.Errorf("%s allows any host", n.nqn)
	}

	// The allowed host connects; revoking it and cutting sessions drops it.
	ctrl, err := ini.Connect(ctxTimeout(t, 30*time.Second), n.connectOptions(allowed))
	if err != nil {
		t.Fatalf("allowed host refused: %v", err)
	}
	t.Cleanup(func() { _ = ini.DisconnectNQN(ctxTimeout(t, 30*time.Second), n.nqn) })
	if err := tgt.RevokeHost(n.nqn, allowed.nqn); err != nil {
		t.Fatal(err)
	}
	if err := tgt.CutSessions(n.nqn); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the revoked host's controller to lose its session", func() (bool, string) {
		c, err := ini.Controller(ctrl.Name)
		if errors.Is(err, nvmeof.ErrNotFound) {
			return true, "deleted"
		}
		if err != nil {
			return false, err.Error()
		}
		return !c.State.IsLive(), string(c.State)
	})
	// It cannot come back while revoked.
	if err := ini.DisconnectNQN(ctxTimeout(t, 30*time.Second), n.nqn); err != nil {
		t.Fatal(err)
	}
	if _, err := ini.Connect(ctxTimeout(t, 30*time.Second), n.connectOptions(allowed)); err == nil {
		t.Errorf("revoked host connected again")
	}
}

// zeroHead overwrites the first n bytes of a block device, bypassing the
// page cache, to simulate a replica whose data was lost.
func zeroHead(t *testing.T, dev string, n int) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// O_DIRECT needs an aligned buffer; an mmap'd one is page aligned.
	buf, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	if _, err := f.Write(buf); err != nil {
		t.Fatalf("zero %s: %v", dev, err)
	}
}

func describe(a mdraid.Array) string {
	var b strings.Builder
	b.WriteString(a.Name + " state=" + a.ArrayState + " sync=" + a.SyncAction)
	b.WriteString(" degraded=" + itoa(a.Degraded))
	for _, m := range a.Members {
		b.WriteString(" " + m.Device + "[" + itoa(m.Slot) + "]=" + m.State.Raw)
	}
	return b.String()
}

func itoa(i int) string { return strconv.Itoa(i) }

func mkfsAndMount(t *testing.T, dev, mnt string) {
	t.Helper()
	// Eager inode table and journal init: lazy init would keep writing in
	// the background and blur the resync measurement.
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4 %s: %v\n%s", dev, err, out)
	}
	mount(t, dev, mnt)
}

func mount(t *testing.T, dev, mnt string) {
	t.Helper()
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, mnt, "ext4", 0, ""); err != nil {
		t.Fatalf("mount %s on %s: %v", dev, mnt, err)
	}
}

func unmount(t *testing.T, mnt string) {
	t.Helper()
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatalf("unmount %s: %v", mnt, err)
	}
}

// checkMirrors runs an md "check" and requires mismatch_cnt == 0.
func checkMirrors(t *testing.T, md *mdraid.Manager, name string) {
	t.Helper()
	action := filepath.Join("/sys/block", name, "md", "sync_action")
	if err := os.WriteFile(action, []byte("check"), 0o200); err != nil {
		t.Fatalf("start check: %v", err)
	}
	waitFor(t, 3*time.Minute, "md check to finish", func() (bool, string) {
		a, err := md.ReadArray(name)
		if err != nil {
			return false, err.Error()
		}
		return a.SyncAction == "idle", describe(a)
	})
	a, err := md.ReadArray(name)
	if err != nil {
		t.Fatal(err)
	}
	if a.MismatchCount != 0 {
		t.Errorf("md check: mismatch_cnt = %d, want 0", a.MismatchCount)
	}
	t.Logf("md check: mismatch_cnt = %d", a.MismatchCount)
}
