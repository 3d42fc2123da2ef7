//go:build vmguest

package kernel

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	utilexec "k8s.io/utils/exec"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/volume"
	"github.com/nvmirror/nvmirror/test/vm"
)

// The drain benchmark's scenario (issue #18): a storage node holding one
// replica of each of 10 thin 2-replica volumes of 1 GiB, 64 MiB written to
// each, drained with the provisioner's defaults.
const (
	drainBenchVolumes  = 10
	drainBenchVolSize  = 1 << 30
	drainBenchFiles    = 16 // of drainBenchFileSize: 64 MiB per volume
	drainBenchFileSize = 4 << 20
	drainBenchNode     = "sn1"
	// drainBenchPoolRoot is where the scratch disk is mounted, the four
	// storage nodes' pools its directories.
	drainBenchPoolRoot = "/mnt/drainbench"
	drainBenchHTTP     = "127.0.0.1:9510"
	// drainBenchMaxMoves is the provisioner's --max-concurrent-moves
	// default, which the bench keeps: a drain must never exceed it.
	drainBenchMaxMoves = 2
)

// TestBenchDrain measures a drain through the whole product on the real
// kernel: 4 storage nodes whose pools are on the VM's scratch disk (md
// copies each moved replica whole, 10 GiB in all, which guest RAM could not
// hold), 10 volumes each with one replica on sn1, half of them staged (the
// node's healer moves them) and half with no host (offline repairs on the
// storage nodes move them). It times `nvmirrorctl drain sn1` until the
// provisioner reports nothing left, counts the bytes md wrote to the new
// replicas (their pool files' allocated blocks), and then checks the result:
// no active replica on sn1 and its pool emptied, md check finding no
// mismatch on every volume, every file reading back with its checksum.
// Not part of the ordinary boot: TestDrainBenchmark (host, `make
// bench-drain`) boots a VM with the scratch disk for it.
func TestBenchDrain(t *testing.T) {
	disk := os.Getenv(vm.EnvDisk)
	if disk == "" {
		t.Skipf("needs the VM's scratch disk ($%s): TestDrainBenchmark (`make bench-drain`) boots one for it", vm.EnvDisk)
	}
	mountScratch(t, disk, drainBenchPoolRoot)
	// The provisioner's defaults but for its metrics endpoint, read
	// below: --drain-interval 15s, --max-concurrent-moves 2,
	// --repair-interval 30s; the node plugin's --heal-interval 30s.
	s := startStackWith(t, stackOptions{storageNodes: 4, poolRoot: drainBenchPoolRoot,
		provArgs: []string{"--http-address=" + drainBenchHTTP}})
	c := dialCSI(t, s.csiSocket)
	p := dialProvisioner(t, s)
	admin := dialProvisionerAPI(t, s)
	md := mdraid.NewManager(utilexec.New(), "")

	// Each volume's replicas on sn1 and one partner: the two other nodes
	// are cordoned while it is created. (Placement takes the least used
	// nodes first, and the storageNodes parameter only filters: naming
	// sn1 and the partner alone would leave the drain nowhere to move
	// the replica, as the parameter cannot change after creation.) The
	// partners take turns, so the volumes spread like placement spreads
	// them and the drain can move each to either node it is not on.
	partners := []string{"sn2", "sn3", "sn4"}
	vols := make([]csiVolume, drainBenchVolumes)
	sums := map[string]string{}
	setupStart := time.Now()
	for pi, partner := range partners {
		var others []string
		for _, o := range partners {
			if o != partner {
				others = append(others, o)
			}
		}
		for _, o := range others {
			mustCtl(t, s, "cordon", o)
		}
		for i := pi; i < drainBenchVolumes; i += len(partners) {
			vols[i] = provisionVolume(t, c, fmt.Sprintf("drainbench-%d", i), drainBenchVolSize,
				map[string]string{"numReplicas": "2", "provisioningType": "thin", "maxReplicaDownTime": "600"})
			var nodes []string
			for _, r := range mustVolume(t, p, vols[i].id).ActiveReplicas() {
				nodes = append(nodes, r.StorageNode)
			}
			sort.Strings(nodes)
			if want := []string{drainBenchNode, partner}; strings.Join(nodes, ",") != strings.Join(want, ",") {
				t.Fatalf("volume %s placed on %v, want %v", vols[i].id, nodes, want)
			}
			for k, v := range writeFiles(t, vols[i].target, "data", drainBenchFiles, drainBenchFileSize) {
				sums[k] = v
			}
		}
		for _, o := range others {
			mustCtl(t, s, "uncordon", o)
		}
	}
	// Odd volumes let go, as when their pods are gone: their replicas
	// move by offline repair. The even ones stay staged and mounted.
	var staged []*volume.Volume
	var released []csiVolume
	for i, vol := range vols {
		if i%2 == 1 {
			release(t, c, vol)
			released = append(released, vol)
		} else {
			staged = append(staged, mustVolume(t, p, vol.id))
		}
	}
	before := map[string][]volume.Replica{}
	var totalSize int64
	for _, vol := range vols {
		v := mustVolume(t, p, vol.id)
		before[vol.id] = v.ActiveReplicas()
		totalSize += v.SizeBytes
	}
	sn1Data := allocatedIn(t, filepath.Join(drainBenchPoolRoot, drainBenchNode))
	t.Logf("setup in %v: %d volumes of %d MiB, %d MiB written to each, %d staged and %d with no host; %s allocated in %s's pool",
		time.Since(setupStart).Round(time.Second), drainBenchVolumes, drainBenchVolSize>>20, drainBenchFiles*drainBenchFileSize>>20,
		len(staged), len(released), gib(sn1Data), drainBenchNode)
	// What is written before the drain reaches the disk before it starts,
	// so that the disk's write counter covers the drain alone.
	unix.Sync()
	diskBefore := writeSectors(t, filepath.Base(disk))

	start := time.Now()
	t.Logf("nvmirrorctl drain %s:\n%s", drainBenchNode, mustCtl(t, s, "drain", drainBenchNode))
	// The drain's own figure of what is left to copy, as a monitoring
	// system sees it: the volumes' full size, not what was written.
	bytesLeftMetric := `nvmirror_provisioner_drain_bytes_left{storage_node="` + drainBenchNode + `"}`
	if got, ok := scrapeGauge(t, drainBenchHTTP, bytesLeftMetric); !ok || int64(got) != totalSize {
		t.Errorf("%s at the start = %v (exported %v), want %d (the volumes' size)", bytesLeftMetric, got, ok, totalSize)
	}

	var (
		peak, lastLeft, lastInFlight = 0, -1, -1
		lastPoll                     time.Time
		seen                         string
	)
	waitFor(t, 25*time.Minute, drainBenchNode+" drained", func() (bool, string) {
		// Once a second: each look costs the busy VM a provisioner call
		// and sysfs reads, and a move lasts tens of seconds.
		if time.Since(lastPoll) < time.Second {
			return false, seen
		}
		lastPoll = time.Now()
		for _, v := range staged {
			if a := mdOf(t, md, v); inSyncMembers(a) < 2 {
				t.Fatalf("volume %s: md holds %d in-sync members during the drain: %s", v.ID, inSyncMembers(a), describe(a))
			}
		}
		st, err := admin.DrainStorageNode(ctxTimeout(t, 30*time.Second), &provisionerapi.DrainStorageNodeRequest{StorageNode: drainBenchNode, Drain: true})
		if err != nil {
			seen = err.Error()
			return false, seen
		}
		if len(st.GetStuck()) > 0 {
			t.Fatalf("the drain reports replicas it cannot move: %v", st.GetStuck())
		}
		left, inFlight := int(st.GetReplicasLeft()), int(st.GetMovesInFlight())
		peak = max(peak, inFlight)
		if inFlight > drainBenchMaxMoves {
			t.Errorf("%d moves in flight, more than --max-concurrent-moves %d", inFlight, drainBenchMaxMoves)
		}
		if left != lastLeft || inFlight != lastInFlight {
			t.Logf("t+%v: %d replicas left (%s), %d moves in flight", time.Since(start).Round(time.Second), left, gib(st.GetBytesLeft()), inFlight)
			lastLeft, lastInFlight = left, inFlight
		}
		seen = fmt.Sprintf("%d replicas left, %d moves in flight", left, inFlight)
		return left == 0 && inFlight == 0, seen
	})
	elapsed := time.Since(start)
	// The healer takes the old replicas' slots out of the staged arrays
	// after the registry change: not part of the drain's time, but the
	// volumes are only back to their shape once it has.
	waitFor(t, 3*time.Minute, "the staged volumes' md arrays back to 2 in-sync slots", func() (bool, string) {
		for _, v := range staged {
			a := mdOf(t, md, v)
			if inSyncMembers(a) < 2 {
				t.Fatalf("volume %s: md holds %d in-sync members after the drain: %s", v.ID, inSyncMembers(a), describe(a))
			}
			if a.RaidDisks != 2 || len(a.Members) != 2 || a.Degraded != 0 || a.SyncAction != "idle" {
				return false, v.ID + ": " + describe(a)
			}
		}
		return true, ""
	})
	settled := time.Since(start)
	unix.Sync()
	diskWritten := int64(writeSectors(t, filepath.Base(disk))-diskBefore) * 512

	// What the drain wrote: the new replicas' files, as allocated on the
	// destination pools.
	var moved int64
	dest := map[string]int{}
	for _, vol := range vols {
		cur := mustVolume(t, p, vol.id)
		active := cur.ActiveReplicas()
		if len(active) != 2 {
			t.Errorf("volume %s after the drain: %d active replicas, want 2: %+v", vol.id, len(active), active)
		}
		for _, r := range active {
			if r.StorageNode == drainBenchNode || !r.InSync() {
				t.Errorf("volume %s after the drain: replica %+v", vol.id, r)
			}
		}
		nr, ok := newReplica(cur, before[vol.id])
		if !ok {
			t.Errorf("volume %s: no new replica after the drain: %+v", vol.id, cur.Replicas)
			continue
		}
		dest[nr.StorageNode]++
		moved += allocated(t, filepath.Join(drainBenchPoolRoot, nr.StorageNode, nr.ID+".img"))
	}
	leftMetric := `nvmirror_provisioner_drain_replicas_left{storage_node="` + drainBenchNode + `"}`
	if got, ok := scrapeGauge(t, drainBenchHTTP, leftMetric); !ok || got != 0 {
		t.Errorf("%s after the drain = %v (exported %v), want 0", leftMetric, got, ok)
	}
	var destinations []string
	for _, n := range partners {
		destinations = append(destinations, fmt.Sprintf("%s %d", n, dest[n]))
	}
	line := fmt.Sprintf("%s drained of %d replicas (%d thin volumes of %d MiB with %d MiB written each, %d staged, %d with no host) in %v: "+
		"%s written to the new replicas (%s of volumes per drain_bytes_left at the start; %s of data on %s before), %.1f MiB/s; "+
		"peak %d moves in flight; md arrays back to 2 slots at %v; scratch disk writes %s; new replicas on %s; "+
		"provisioner defaults (--drain-interval 15s, --max-concurrent-moves %d, --repair-interval 30s), node plugin --heal-interval 30s",
		drainBenchNode, drainBenchVolumes, drainBenchVolumes, drainBenchVolSize>>20, drainBenchFiles*drainBenchFileSize>>20, len(staged), len(released),
		elapsed.Round(time.Second), gib(moved), gib(totalSize), gib(sn1Data), drainBenchNode,
		float64(moved)/(1<<20)/elapsed.Seconds(), peak, settled.Round(time.Second), gib(diskWritten),
		strings.Join(destinations, ", "), drainBenchMaxMoves)
	t.Logf("DRAIN BENCH: %s", line)
	fmt.Printf("%s%s\n", drainBenchMarker, line)
	if peak < 1 {
		t.Errorf("no move was ever seen in flight")
	}
	// md recovery copies the whole data area, not only what was written:
	// every new replica must be about its volume's size.
	if moved < totalSize {
		t.Errorf("the new replicas hold %s, less than the %s of volumes they copy", gib(moved), gib(totalSize))
	}

	// sn1 holds nothing any more once the sweeper has deleted the old
	// replicas (pending deletion) from it.
	waitFor(t, 3*time.Minute, drainBenchNode+"'s pool emptied by the sweeper", func() (bool, string) {
		imgs, _ := filepath.Glob(filepath.Join(drainBenchPoolRoot, drainBenchNode, "*.img"))
		return len(imgs) == 0, fmt.Sprintf("%v", imgs)
	})
	for _, vol := range released {
		attach(t, c, vol)
		v := mustVolume(t, p, vol.id)
		// Assembled with the moved-away replica's slot empty; the healer
		// drops it.
		waitFor(t, 2*time.Minute, "md of "+vol.id+" back to 2 slots, both in sync", func() (bool, string) {
			a := mdOf(t, md, v)
			return a.RaidDisks == 2 && inSyncMembers(a) == 2 && a.Degraded == 0, describe(a)
		})
	}
	var arrays []string
	for _, vol := range vols {
		arrays = append(arrays, mdOf(t, md, mustVolume(t, p, vol.id)).Name)
	}
	checkMirrorsAll(t, md, arrays)
	dropCaches(t)
	verifyFiles(t, sums)
	t.Logf("after the drain: md check found no mismatch on the %d volumes, %d files read back with their checksums", len(arrays), len(sums))
}

// mountScratch formats the VM's scratch disk (new and empty at every boot)
// with ext4 and mounts it on dir until the test ends.
func mountScratch(t *testing.T, disk, dir string) {
	t.Helper()
	// largefile: one inode per MiB, enough for pools of a few dozen
	// replica files, and inode tables small enough to write at once; no
	// lazy init, which would write in the background during the drain.
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-T", "largefile",
		"-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard", disk).CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4 %s: %v\n%s", disk, err, out)
	}
	mount(t, disk, dir)
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Logf("unmount %s: %v (the VM powers off anyway)", dir, err)
		}
	})
}

// dialProvisionerAPI dials the stack's provisioner as its administrator,
// for the calls provisionerclient does not wrap (DrainStorageNode).
func dialProvisionerAPI(t *testing.T, s *stack) provisionerapi.ProvisionerClient {
	t.Helper()
	conn, err := rpcauth.Dial(s.provAddr, rpcauth.ClientConfig{
		CAFile: filepath.Join(s.tlsDir, "ca.crt"), TokenFile: filepath.Join(s.tlsDir, "token"),
		CertFile: filepath.Join(s.tlsDir, "admin.crt"), KeyFile: filepath.Join(s.tlsDir, "admin.key"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return provisionerapi.NewProvisionerClient(conn)
}

// scrapeGauge reads one sample (name with its labels, as exposed) from a
// /metrics endpoint; false when it is not exported.
func scrapeGauge(t *testing.T, addr, sample string) (float64, bool) {
	t.Helper()
	client := http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape %s: %s: %s", addr, resp.Status, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", sample, err)
			}
			return f, true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return 0, false
}

// allocated is the space a file takes on its filesystem (st_blocks, which
// on ext4 counts delayed allocations too): for a sparse replica file, what
// has been written to it.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Blocks * 512
}

// allocatedIn sums allocated over a pool's replica files.
func allocatedIn(t *testing.T, pool string) int64 {
	t.Helper()
	imgs, err := filepath.Glob(filepath.Join(pool, "*.img"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, p := range imgs {
		n += allocated(t, p)
	}
	return n
}

func gib(b int64) string { return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30)) }

// checkMirrorsAll is checkMirrors over many arrays at once: md checks
// arrays on distinct devices side by side, so they share the wait.
func checkMirrorsAll(t *testing.T, md *mdraid.Manager, names []string) {
	t.Helper()
	for _, name := range names {
		if err := os.WriteFile(filepath.Join("/sys/block", name, "md", "sync_action"), []byte("check"), 0o200); err != nil {
			t.Fatalf("start check of %s: %v", name, err)
		}
	}
	start := time.Now()
	waitFor(t, 20*time.Minute, "md check of every array to finish", func() (bool, string) {
		for _, name := range names {
			a, err := md.ReadArray(name)
			if err != nil {
				return false, err.Error()
			}
			if a.SyncAction != "idle" {
				return false, describe(a)
			}
		}
		return true, ""
	})
	for _, name := range names {
		a, err := md.ReadArray(name)
		if err != nil {
			t.Fatal(err)
		}
		if a.MismatchCount != 0 {
			t.Errorf("md check of %s: mismatch_cnt = %d, want 0", name, a.MismatchCount)
		}
	}
	t.Logf("md check of %d arrays in %v", len(names), time.Since(start).Round(time.Second))
}
