package k8s

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The workloads on the kubelet node (TestKubeletNode): a pod writing
// through a storage node's loss on a filesystem claim, and a pod using a
// block claim raw. Both claims are of the example 3-replica class; each
// pod's data is read back by a second pod after kubelet unstaged and
// restaged the volume, and checked against the checksums written.

const (
	workloadNS = "workload"
	busybox    = "registry.k8s.io/e2e-test-images/busybox:1.37.0-1"
	// writerSlots files of writerChunk bytes the writer cycles through: a
	// bounded footprint however long the run.
	writerSlots = 256
	writerChunk = 64 << 10
	// writesAround is how many writes the test waits for before the cut,
	// while the volume is degraded, and after it healed.
	writesAround = 20
	// maxWriteStall bounds the longest gap between two successful writes:
	// the cut leg's I/O fails over to the others within the driver's
	// keep-alive and fast_io_fail timeouts (seconds); minutes would mean
	// I/O hung on the lost storage node.
	maxWriteStall = 45 * time.Second
	// rawDevice is where the block pod sees its volume; rawOffsetMiB and
	// rawMiB where in it the pattern is written.
	rawDevice    = "/dev/nvmirror-raw"
	rawOffsetMiB = 16
	rawMiB       = 4
	rawClaimMiB  = 64
	// execPoll is how often a wait runs kubectl exec: each is a process
	// started in the emulated VM, which the workload shares.
	execPoll = 2 * time.Second
)

// writerScript writes writerChunk random bytes with fsync to slot i mod
// writerSlots, then appends "i uptime slot md5" to /data/log, until
// /data/stop exists; a failed write ends it with an error (the pod
// fails: restartPolicy Never). Uptime is the node kernel's, as the cut's.
var writerScript = fmt.Sprintf(`mkdir -p /data/w
i=0
while [ ! -e /data/stop ]; do
  s=$((i %% %d))
  if ! dd if=/dev/urandom of=/data/w/$s bs=%d count=1 conv=fsync 2>/tmp/dd.err; then
    echo "write $i failed: $(cat /tmp/dd.err)"; exit 1
  fi
  sum=$(md5sum /data/w/$s) || exit 1
  read up idle </proc/uptime
  echo "$i $up $s ${sum%%%% *}" >>/data/log || exit 1
  i=$((i+1))
  usleep 50000
done
sync
echo "stopped after $i writes"
`, writerSlots, writerChunk)

// workloads runs both pods on the cluster, then deletes them and their
// claims: kubelet's NodeUnpublish/NodeUnstage, detach, and every replica
// deleted.
func workloads(t *testing.T, e *Env, cp *ControlPlane, ag agents) {
	ns := workloadNS
	cp.MustKubectl("create", "namespace", ns)
	cp.Apply(claim(ns, "data", "Filesystem", "256Mi") + "---\n" + claim(ns, "raw", "Block", fmt.Sprintf("%dMi", rawClaimMiB)) + "---\n" +
		pod(ns, "writer", "data", "Filesystem", "sh", "-c", writerScript) + "---\n" +
		pod(ns, "raw", "raw", "Block", "sleep", "100000"))
	start := time.Now()
	for _, p := range []string{"writer", "raw"} {
		cp.WaitJSONPath(10*time.Minute, ns, "pod", p, "{.status.phase}", "pod "+p+" Running", func(s string) bool { return s == "Running" })
	}
	t.Logf("pods with two new 3-replica claims (filesystem and block) running in %v (provisioned, attached, staged, published)", time.Since(start).Round(100*time.Millisecond))
	data := claimVolume(t, cp, ag, ns, "data")
	raw := claimVolume(t, cp, ag, ns, "raw")
	if md := adminSh(t, cp, "cat /proc/mdstat"); strings.Count(md, "[3/3] [UUU]") != 2 {
		t.Fatalf("the node's md arrays are not two of three members in sync:\n%s", md)
	}

	rawSum := rawWrite(t, cp, ns)
	// kubelet unpublishes and unstages the block volume while the writer
	// goes through the storage node's loss; a second pod reads it later.
	cp.MustKubectl("delete", "pod", "-n", ns, "raw", "--wait=false")
	outage := writeThroughLoss(t, e, cp, ns, data)

	cp.MustKubectl("delete", "pod", "-n", ns, "writer", "--wait=false")
	for _, p := range []string{"writer", "raw"} {
		cp.WaitGone(5*time.Minute, ns, "pod", p)
	}
	deleted := time.Now()
	for _, v := range []claimedVolume{data, raw} {
		waitDetached(e, cp, v.PV)
	}
	t.Logf("pods deleted, volumes unstaged and detached in %v", time.Since(deleted).Round(100*time.Millisecond))
	if md := adminSh(t, cp, "cat /proc/mdstat"); strings.Contains(md, "active") {
		t.Errorf("an md array is still active on the node after NodeUnstage:\n%s", md)
	}

	// Restaged for new pods: what the writer logged and the block pod
	// wrote is what they read.
	cp.Apply(pod(ns, "writer-check", "data", "Filesystem", "sh", "-c", "cat /data/log; echo ---; cd /data/w && md5sum *") + "---\n" +
		pod(ns, "raw-check", "raw", "Block", "sh", "-c", fmt.Sprintf(
			"dd if=%s of=/tmp/back bs=1M skip=%d count=%d iflag=direct && md5sum /tmp/back", rawDevice, rawOffsetMiB, rawMiB)))
	checkWriterLog(t, completedLog(t, cp, ns, "writer-check"), outage)
	if got := completedLog(t, cp, ns, "raw-check"); !strings.Contains(got, rawSum+" ") {
		t.Errorf("the block volume read back after restaging does not hold what was written (md5 %s):\n%s", rawSum, got)
	}

	for _, p := range []string{"writer-check", "raw-check"} {
		cp.MustKubectl("delete", "pod", "-n", ns, p, "--wait=false")
		cp.WaitGone(5*time.Minute, ns, "pod", p)
	}
	for _, v := range []claimedVolume{data, raw} {
		waitDetached(e, cp, v.PV)
		cp.MustKubectl("delete", "pvc", "-n", ns, v.Claim, "--wait=false")
	}
	for _, v := range []claimedVolume{data, raw} {
		cp.WaitGone(5*time.Minute, "", "pv", v.PV)
		e.WaitFor(2*time.Minute, "every replica of "+v.ID+" to be deleted", func() (bool, string) {
			on, err := ag.replicasOf(v.ID)
			if err != nil {
				return false, err.Error()
			}
			return len(on) == 0, fmt.Sprint(replicaIDs(on))
		})
	}
}

// claimedVolume is a claim's volume: its PV, its CSI volume ID, and where
// its replicas are (storage node → NQN).
type claimedVolume struct {
	Claim, PV, ID string
	NQNs          map[string]string
}

// claimVolume returns the volume bound to the claim, which must have one
// replica on each of the three storage nodes.
func claimVolume(t *testing.T, cp *ControlPlane, ag agents, ns, claim string) claimedVolume {
	t.Helper()
	v := claimedVolume{Claim: claim, PV: cp.mustJSONPath(ns, "pvc", claim, "{.spec.volumeName}"), NQNs: map[string]string{}}
	v.ID = cp.mustJSONPath("", "pv", v.PV, "{.spec.csi.volumeHandle}")
	on, err := ag.replicasOf(v.ID)
	if err != nil {
		t.Fatal(err)
	}
	for node, reps := range on {
		if len(reps) != 1 {
			t.Fatalf("volume %s has %d replicas on %s, want 1", v.ID, len(reps), node)
		}
		v.NQNs[node] = reps[0].GetNqn()
	}
	if len(v.NQNs) != storageNodeCount {
		t.Fatalf("volume %s of claim %s has replicas on %d storage nodes, want %d: %v", v.ID, claim, len(on), storageNodeCount, replicaIDs(on))
	}
	return v
}

// rawWrite writes a random pattern at rawOffsetMiB of the block pod's
// device, reads it back past the page cache, checks the device's size, and
// returns the pattern's md5.
func rawWrite(t *testing.T, cp *ControlPlane, ns string) string {
	t.Helper()
	out, err := cp.Kubectl("exec", "-n", ns, "raw", "--", "sh", "-c", fmt.Sprintf(`set -e
blockdev --getsize64 %[1]s
dd if=/dev/urandom of=/tmp/pattern bs=1M count=%[3]d 2>/dev/null
dd if=/tmp/pattern of=%[1]s bs=1M seek=%[2]d conv=fsync 2>/dev/null
dd if=%[1]s of=/tmp/back bs=1M skip=%[2]d count=%[3]d iflag=direct 2>/dev/null
md5sum /tmp/pattern /tmp/back`, rawDevice, rawOffsetMiB, rawMiB))
	if err != nil {
		t.Fatalf("the block pod writing and reading its device: %v\n%s", err, out)
	}
	f := strings.Fields(out)
	if len(f) != 5 || f[0] != strconv.Itoa(rawClaimMiB<<20) || f[1] != f[3] {
		t.Fatalf("the block pod's device: want its size %d and the pattern read back; got:\n%s", rawClaimMiB<<20, out)
	}
	return f[1]
}

// writeThroughLoss cuts the storage node holding one of the writer's
// replicas off (its nvmet port loses the subsystem, as if its network
// went), and checks that the writer goes on through the loss, the
// volume's degradation and its healing when the node comes back, then
// stops the writer. It returns the outage: the node's uptime at the cut
// and at the node's return.
func writeThroughLoss(t *testing.T, e *Env, cp *ControlPlane, ns string, v claimedVolume) outage {
	t.Helper()
	waitWrites(t, e, cp, ns, writesAround)
	const node = "sn1"
	nqn := v.NQNs[node]
	link := fmt.Sprintf("/cfg/nvmet/ports/%d/subsystems/%s", storageNodePortID(1), nqn)
	cutAt := uptimeOf(t, adminSh(t, cp, "rm "+link+" && cat /proc/uptime"))
	t.Logf("storage node %s cut off from replica %s at node uptime %.2fs", node, nqn, cutAt)
	degraded := time.Now()
	waitEvent(e, cp, 5*time.Minute, ns, "PersistentVolumeClaim", v.Claim, "VolumeDegraded")
	if md := adminSh(t, cp, "cat /proc/mdstat"); !strings.Contains(md, "[3/2]") {
		t.Errorf("VolumeDegraded reported, but no md array on the node is missing a member:\n%s", md)
	}
	t.Logf("VolumeDegraded on claim %s/%s %v after the cut", ns, v.Claim, time.Since(degraded).Round(100*time.Millisecond))
	waitWrites(t, e, cp, ns, writesAround)

	backAt := uptimeOf(t, adminSh(t, cp, fmt.Sprintf("ln -s /cfg/nvmet/subsystems/%s %s && cat /proc/uptime", nqn, link)))
	healed := time.Now()
	waitEvent(e, cp, 5*time.Minute, ns, "PersistentVolumeClaim", v.Claim, "VolumeHealed")
	t.Logf("storage node %s back at node uptime %.2fs; VolumeHealed on the claim %v later", node, backAt, time.Since(healed).Round(100*time.Millisecond))
	e.WaitEvery(execPoll, 2*time.Minute, "the md array in sync again", func() (bool, string) {
		md := adminSh(t, cp, "cat /proc/mdstat")
		return !strings.Contains(md, "[3/2]") && !strings.Contains(md, "recovery") && !strings.Contains(md, "resync"), md
	})
	waitWrites(t, e, cp, ns, writesAround)

	cp.MustKubectl("exec", "-n", ns, "writer", "--", "touch", "/data/stop")
	phase, _ := cp.WaitJSONPath(2*time.Minute, ns, "pod", "writer", "{.status.phase}", "the writer to stop", func(s string) bool {
		return s == "Succeeded" || s == "Failed"
	})
	logs, _ := cp.Kubectl("logs", "-n", ns, "writer")
	if phase != "Succeeded" {
		t.Fatalf("the writer failed through the storage node's loss (an I/O error reached the pod):\n%s", logs)
	}
	t.Logf("writer: %s", strings.TrimSpace(logs))
	return outage{Cut: cutAt, Back: backAt}
}

// outage is when a storage node was away, in the node kernel's uptime
// (seconds), the clock of the writer's log.
type outage struct{ Cut, Back float64 }

// waitWrites waits for n more lines in the writer's log (the pod is
// writing), failing at once if the pod stopped.
func waitWrites(t *testing.T, e *Env, cp *ControlPlane, ns string, n int) {
	t.Helper()
	count := func() int {
		out, err := cp.Kubectl("exec", "-n", ns, "writer", "--", "sh", "-c", "wc -l </data/log")
		if err != nil {
			return -1
		}
		c, _ := strconv.Atoi(strings.TrimSpace(out))
		return c
	}
	from := count()
	e.WaitEvery(execPoll, 2*time.Minute, fmt.Sprintf("%d more writes by the writer", n), func() (bool, string) {
		if phase, _ := cp.JSONPath(ns, "pod", "writer", "{.status.phase}"); phase != "Running" {
			logs, _ := cp.Kubectl("logs", "-n", ns, "writer")
			t.Fatalf("the writer is %s, not writing:\n%s", phase, logs)
		}
		c := count()
		return from >= 0 && c >= from+n, fmt.Sprintf("%d lines, from %d", c, from)
	})
}

// logLine is "i uptime slot md5" of writerScript.
var logLine = regexp.MustCompile(`^(\d+) (\d+\.\d+) (\d+) ([0-9a-f]{32})$`)

// checkWriterLog checks the writer's log and files as a second pod read
// them: every write logged once and in order, each slot's file holding
// its last write, writes all through the outage, and the longest gap
// between writes under maxWriteStall.
func checkWriterLog(t *testing.T, out string, o outage) {
	t.Helper()
	logPart, sums, ok := strings.Cut(out, "---\n")
	if !ok {
		t.Fatalf("the check pod's output has no separator:\n%s", out)
	}
	last := map[string]string{}
	var prev, gapAt float64
	var gap, outageGap time.Duration
	n, during := 0, 0
	for _, l := range strings.Split(strings.TrimSpace(logPart), "\n") {
		m := logLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("the writer's log line %d is %q", n, l)
		}
		if m[1] != strconv.Itoa(n) {
			t.Fatalf("the writer's log line %d is write %s: a write lost or logged twice", n, m[1])
		}
		up, _ := strconv.ParseFloat(m[2], 64)
		if n > 0 {
			d := time.Duration((up - prev) * float64(time.Second))
			if d > gap {
				gap, gapAt = d, prev
			}
			// A gap that overlaps the outage: the stall the loss caused.
			if up > o.Cut && prev < o.Back && d > outageGap {
				outageGap = d
			}
		}
		prev = up
		if up > o.Cut && up < o.Back {
			during++
		}
		last[m[3]] = m[4]
		n++
	}
	read := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(sums), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 {
			read[f[1]] = f[0]
		}
	}
	var bad []string
	for slot, sum := range last {
		if read[slot] != sum {
			bad = append(bad, fmt.Sprintf("slot %s: wrote %s, read %q", slot, sum, read[slot]))
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 || len(read) != len(last) {
		t.Errorf("the writer's files read back after restaging differ from its log (%d files, %d logged):\n%s", len(read), len(last), strings.Join(bad, "\n"))
	}
	t.Logf("writer: %d writes of %d KiB with fsync (%d while the storage node was away), checksums verified after restaging; longest gap between writes %v while the storage node was away (cut at uptime %.2fs, back %.2fs), %v in the whole run (after the write at %.2fs)",
		n, writerChunk>>10, during, outageGap.Round(10*time.Millisecond), o.Cut, o.Back, gap.Round(10*time.Millisecond), gapAt)
	if during < writesAround {
		t.Errorf("the writer logged %d writes while the storage node was away, want at least %d", during, writesAround)
	}
	if gap > maxWriteStall {
		t.Errorf("the writer stalled %v between writes, more than %v", gap, maxWriteStall)
	}
}

// completedLog waits for a pod to succeed and returns its output.
func completedLog(t *testing.T, cp *ControlPlane, ns, name string) string {
	t.Helper()
	phase, _ := cp.WaitJSONPath(10*time.Minute, ns, "pod", name, "{.status.phase}", "pod "+name+" to complete", func(s string) bool {
		return s == "Succeeded" || s == "Failed"
	})
	out, err := cp.Kubectl("logs", "-n", ns, name)
	if err != nil || phase != "Succeeded" {
		t.Fatalf("pod %s: %s (%v):\n%s", name, phase, err, out)
	}
	return out
}

// adminSh runs a shell command in the node's admin pod.
func adminSh(t *testing.T, cp *ControlPlane, script string) string {
	t.Helper()
	out, err := cp.Kubectl("exec", "-n", "default", "node-admin", "--", "sh", "-c", script)
	if err != nil {
		t.Fatalf("on the node: %s: %v\n%s", script, err, out)
	}
	return out
}

// uptimeOf is the first number of /proc/uptime's output, in seconds.
func uptimeOf(t *testing.T, out string) float64 {
	t.Helper()
	f := strings.Fields(out)
	if len(f) == 0 {
		t.Fatalf("no uptime in %q", out)
	}
	up, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		t.Fatalf("uptime %q: %v", out, err)
	}
	return up
}

// claim is a PersistentVolumeClaim of the example 3-replica class.
func claim(ns, name, mode, size string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: %s, namespace: %s}
spec:
  accessModes: ["ReadWriteOnce"]
  volumeMode: %s
  storageClassName: nvmirror-3-replicas
  resources: {requests: {storage: %s}}
`, name, ns, mode, size)
}

// pod is a busybox pod running command once (restartPolicy Never) with
// the claim at /data (Filesystem) or rawDevice (Block).
func pod(ns, name, claimName, mode string, command ...string) string {
	use := "volumeMounts: [{name: v, mountPath: /data}]"
	if mode == "Block" {
		use = "volumeDevices: [{name: v, devicePath: " + rawDevice + "}]"
	}
	var cmd []string
	for _, c := range command {
		cmd = append(cmd, strconv.Quote(c))
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  containers:
    - name: c
      image: %s
      command: [%s]
      %s
  volumes:
    - name: v
      persistentVolumeClaim: {claimName: %s}
`, name, ns, busybox, strings.Join(cmd, ", "), use, claimName)
}
