//go:build vmguest

package kernel

import (
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	utilexec "k8s.io/utils/exec"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
	"github.com/nvmirror/nvmirror/pkg/volume"
	"github.com/nvmirror/nvmirror/test/vm"
)

// narrator prints the demo's timeline: elapsed time, then what a user
// would see.
type narrator struct {
	start time.Time
	mu    sync.Mutex
}

func (n *narrator) say(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, line := range strings.Split(fmt.Sprintf(format, args...), "\n") {
		fmt.Printf("%s[%6.1fs] %s\n", vm.NarrationMarker, time.Since(n.start).Seconds(), line)
	}
}

func (n *narrator) step(format string, args ...any) {
	n.say("")
	n.say("== "+format, args...)
}

// wait polls cond like waitFor and tells the user it is waiting, every five
// seconds, so a minute of maxReplicaDownTime does not look like a hang.
func (n *narrator) wait(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start, lastSaid := time.Now(), time.Now()
	return waitFor(t, timeout, what, func() (bool, string) {
		ok, seen := cond()
		if !ok && time.Since(lastSaid) >= 5*time.Second {
			n.say("   ... waiting for %s (%ds)", what, int(time.Since(start).Seconds()))
			lastSaid = time.Now()
		}
		return ok, seen
	})
}

// syslogReceiver is the syslog server the provisioner forwards events to:
// a UDP socket that prints every RFC 5424 message it gets.
type syslogReceiver struct {
	conn *net.UDPConn
	mu   sync.Mutex
	msgs []string
}

func startSyslogReceiver(t *testing.T, n *narrator, addr string) *syslogReceiver {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	r := &syslogReceiver{conn: conn}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			k, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			msg := strings.TrimSpace(string(buf[:k]))
			r.mu.Lock()
			r.msgs = append(r.msgs, msg)
			r.mu.Unlock()
			if !strings.Contains(msg, " Audit ") {
				n.say("   syslog <- %s", msg)
			}
		}
	}()
	return r
}

func (r *syslogReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// nvmirrorctl runs the admin CLI against the stack's provisioner and puts
// its output on the timeline: what an admin would see.
func nvmirrorctl(t *testing.T, n *narrator, s *stack, args ...string) {
	t.Helper()
	out, err := runCtl(s, args...)
	n.say("   $ nvmirrorctl %s", strings.Join(args, " "))
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		n.say("     %s", line)
	}
	if err != nil {
		t.Fatalf("nvmirrorctl %v: %v", args, err)
	}
}

// showMD prints the array's lines of /proc/mdstat.
func showMD(t *testing.T, n *narrator, md *mdraid.Manager, v *volume.Volume) {
	t.Helper()
	a := mdOf(t, md, v)
	b, err := os.ReadFile("/proc/mdstat")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, a.Name+" ") {
			n.say("   /proc/mdstat: %s", l)
			for _, more := range lines[i+1:] {
				if strings.TrimSpace(more) == "" {
					break
				}
				n.say("                 %s", strings.TrimSpace(more))
			}
		}
	}
}

func showEvents(n *narrator, evs []events.Event) {
	sort.Slice(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
	for _, e := range evs {
		n.say("   event %-16s %-8s %s", e.Type, e.Type.Level(), e.Message)
	}
}

// demoPace is how long the demo's story takes (envDemoPace).
type demoPace struct {
	volSize  int64
	downTime string   // the maxReplicaDownTime parameter
	timeUnit []string // --heal-time-unit for the provisioner and node plugin
	label    string   // downTime in words
	short    string   // downTime in the summary line
}

func demoPaceOf(env string) demoPace {
	if env == demoPaceReal {
		return demoPace{volSize: 1 << 30, downTime: "1", label: "1 minute", short: "1 min"}
	}
	return demoPace{volSize: 128 << 20, downTime: "5", timeUnit: []string{"--heal-time-unit=1s"},
		label: "5 s (test pace: its unit is a second here; `make demo` waits a real minute)", short: "5 s"}
}

// TestDemo is `make demo`: the whole product on one machine, narrated.
// Four storage nodes in their own racks, the provisioner with its embedded
// store forwarding events to a syslog receiver, and the node plugin with its
// healer. A 3-replica volume (1 GiB with maxReplicaDownTime=1 minute under
// `make demo`; smaller and in seconds under `make test`, see envDemoPace)
// goes through an outage that heals by bitmap re-add and a storage node
// lost for good that is replaced; the data is verified at the end.
func TestDemo(t *testing.T) {
	pace := demoPaceOf(os.Getenv(envDemoPace))
	n := &narrator{start: time.Now()}
	n.step("Starting nvmirror: 4 storage nodes (nvmirror-target), the provisioner, the node plugin")
	const syslogAddr = "127.0.0.1:5514"
	recv := startSyslogReceiver(t, n, syslogAddr)
	s := startStackWith(t, stackOptions{
		storageNodes: 4,
		poolSize:     2 << 30,
		provArgs:     append([]string{"--syslog-address=" + syslogAddr, "--syslog-transport=udp"}, pace.timeUnit...),
		csiArgs:      append([]string{"--heal-interval=10s"}, pace.timeUnit...),
	})
	c := dialCSI(t, s.csiSocket)
	p := dialProvisioner(t, s)
	md := mdraid.NewManager(utilexec.New(), "")
	tgt := nvmet.NewTarget("")
	ini := host.NewInitiator("")
	nvmirrorctl(t, n, s, "nodes")
	n.say("   provisioner on %s (bbolt store), events -> syslog %s; nvmirror-csi on %s", s.provAddr, syslogAddr, s.csiSocket)

	n.step("CreateVolume, ControllerPublishVolume, NodeStageVolume, NodePublishVolume (the CSI calls kubelet and the sidecars make)")
	volSize := pace.volSize
	vol := provisionVolume(t, c, "demo-volume", volSize, map[string]string{"numReplicas": "3", "maxReplicaDownTime": pace.downTime})
	v, err := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id)
	if err != nil {
		t.Fatal(err)
	}
	nvmirrorctl(t, n, s, "volume", vol.id)
	showMD(t, n, md, v)
	n.say("   mounted at %s (ext4 on the md device)", vol.target)

	n.step("Writing data")
	sums := writeFiles(t, vol.target, "data", 16, 2<<20)
	n.say("   wrote 16 files, 32 MiB, SHA-256 of each kept")

	// Outage 1: a storage node drops off the network and comes back.
	down := replicaOn(t, v, "sn2")
	sn2 := agentNamed(t, s, "sn2")
	n.step("Storage node sn2 drops off the network (its NVMe/TCP port goes away) while the pod writes")
	cutAt := time.Now()
	if err := tgt.UnlinkSubsystem(sn2.portID, down.NQN); err != nil {
		t.Fatal(err)
	}
	sums = mergeSums(sums, writeFiles(t, vol.target, "outage1", 4, 2<<20))
	deg := waitEvent(t, p, vol.id, events.VolumeDegraded, time.Minute, cutAt.Add(-time.Second))
	detection := deg.Time.Sub(cutAt)
	n.say("   the volume keeps serving from sn1 and sn3; the node noticed in %v", detection.Round(10*time.Millisecond))
	showEvents(n, []events.Event{deg})
	showMD(t, n, md, v)

	dev, err := ini.FindDevice(down.NQN, nvmeof.NamespaceUUID(down.ID))
	if err != nil {
		t.Fatal(err)
	}
	before := writeSectors(t, dev.Name)
	n.step("sn2 comes back")
	backAt := time.Now()
	if err := tgt.LinkSubsystem(sn2.portID, down.NQN); err != nil {
		t.Fatal(err)
	}
	healed := waitEvent(t, p, vol.id, events.VolumeHealed, 2*time.Minute, backAt)
	healTime := healed.Time.Sub(backAt)
	devAfter, err := ini.FindDevice(down.NQN, nvmeof.NamespaceUUID(down.ID))
	if err != nil {
		t.Fatal(err)
	}
	resynced := writeSectors(t, devAfter.Name)
	if devAfter.Name == dev.Name {
		resynced -= before
	}
	var resyncEvents []events.Event
	for _, typ := range []events.Type{events.SynchStarted, events.SynchEnded, events.VolumeHealed} {
		for _, e := range eventsOf(t, p, vol.id, typ) {
			if !e.Time.Before(backAt) {
				resyncEvents = append(resyncEvents, e)
			}
		}
	}
	showEvents(n, resyncEvents)
	n.say("   re-added with a bitmap resync: %.1f MiB copied of the %d MiB volume, healed %v after sn2 returned",
		float64(resynced)/2048, volSize>>20, healTime.Round(10*time.Millisecond))
	showMD(t, n, md, v)

	// Outage 2: a storage node is lost for good.
	lost := replicaOn(t, v, "sn3")
	sn3 := agentNamed(t, s, "sn3")
	n.step("Storage node sn3 goes down for good; maxReplicaDownTime is %s", pace.label)
	lostAt := time.Now()
	if err := tgt.UnlinkSubsystem(sn3.portID, lost.NQN); err != nil {
		t.Fatal(err)
	}
	sums = mergeSums(sums, writeFiles(t, vol.target, "outage2", 4, 2<<20))
	deg2 := waitEvent(t, p, vol.id, events.VolumeDegraded, time.Minute, lostAt.Add(-time.Second))
	showEvents(n, []events.Event{deg2})
	orig := map[string]bool{}
	for _, r := range v.Replicas {
		orig[r.ID] = true
	}
	var repl volume.Replica
	n.wait(t, 3*time.Minute, "the healer to replace the replica on sn3", func() (bool, string) {
		cur, err := p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id)
		if err != nil {
			return false, err.Error()
		}
		for _, r := range cur.Replicas {
			if !orig[r.ID] && r.State == "active" {
				repl = r
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", cur.Replicas)
	})
	replacedAfter := time.Since(lostAt)
	n.say("   replacement replica %s placed on %s %v after sn3 went down", repl.ID, repl.StorageNode, replacedAfter.Round(time.Second))
	healed2 := n.wait(t, 5*time.Minute, "the new replica's full sync", func() (bool, string) {
		evs := eventsOf(t, p, vol.id, events.VolumeHealed)
		for _, e := range evs {
			if e.Time.After(lostAt) {
				return true, ""
			}
		}
		a := mdOf(t, md, v)
		return false, describe(a)
	})
	n.say("   synced and healed %v after the replacement was placed", healed2.Round(time.Second))
	nvmirrorctl(t, n, s, "volume", vol.id)
	if v, err = p.GetVolume(ctxTimeout(t, 10*time.Second), vol.id); err != nil {
		t.Fatal(err)
	}
	showMD(t, n, md, v)

	n.step("Verifying the data")
	dropCaches(t)
	verifyFiles(t, sums)
	a := mdOf(t, md, v)
	checkMirrors(t, md, a.Name)
	a = mdOf(t, md, v)
	all := 0
	for _, typ := range []events.Type{events.HostDisconnected, events.HostReconnected, events.VolumeDegraded, events.VolumeHealed,
		events.SynchStarted, events.SynchEnded, events.SessionEstablished, events.SessionClosed} {
		all += len(eventsOf(t, p, "", typ))
	}
	n.say("   %d files, SHA-256 verified after dropping the page cache; md check: mismatch_cnt = %d", len(sums), a.MismatchCount)

	status := "PASS"
	if t.Failed() {
		status = "FAIL"
	}
	n.step("%s: data verified (%d files), %d events (%d syslog messages), detection %v, healed %v after the node returned, replaced %v after the loss (maxReplicaDownTime %s)",
		status, len(sums), all, recv.count(), detection.Round(10*time.Millisecond), healTime.Round(10*time.Millisecond), replacedAfter.Round(time.Second), pace.short)
	n.say("== cleaning up: NodeUnpublish, NodeUnstage, ControllerUnpublish, DeleteVolume")
}
