//go:build vmguest

package kernel

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	utilexec "k8s.io/utils/exec"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
	"github.com/nvmirror/nvmirror/test/bench"
)

// benchParams size one run: the full benchmark (NVMIRROR_BENCH_MODE=full,
// `make bench-datapath`) or the smoke run `make test` keeps so the pipeline
// cannot rot (one short job per setup, a short outage).
type benchParams struct {
	mode          string
	volume        int64
	ramp, runtime int
	jobs          []bench.Job
	outage        time.Duration
	outageBytes   int64
	precondition  bool
}

func benchParamsFromEnv() benchParams {
	if os.Getenv("NVMIRROR_BENCH_MODE") == "full" {
		return benchParams{mode: "full", volume: 256 << 20, ramp: 2, runtime: 10, jobs: bench.Jobs,
			outage: 10 * time.Second, outageBytes: 64 << 20, precondition: true}
	}
	return benchParams{mode: "smoke", volume: 32 << 20, ramp: 0, runtime: 2, jobs: bench.Jobs[:1],
		outage: 2 * time.Second, outageBytes: 4 << 20}
}

// TestBenchDatapath measures, on this kernel and the same loopback, the data
// paths side by side: one NVMe/TCP namespace (the floor), nvmirror volumes
// of 2 and 3 replicas (md RAID1 over NVMe/TCP created with the driver's
// settings) and DRBD with 2 nodes (protocol C over TCP on loopback, both
// nodes in this kernel), each over files in the same pool directory. It
// prints the report as one JSON line for the host. Not part of the ordinary
// boot: TestDatapathBenchmark (host) boots for it with fio and drbd.
func TestBenchDatapath(t *testing.T) {
	p := benchParamsFromEnv()
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	rep := bench.Report{
		Mode: p.mode, Kernel: unix.ByteSliceToString(uts.Release[:]), VolumeBytes: p.volume,
		JobSeconds: p.runtime, OutageSeconds: p.outage.Seconds(), OutageBytes: p.outageBytes,
		Settings: []string{
			"every device is backed by a file of the same RAM-backed pool directory (buffered I/O): nvmet's file namespaces, DRBD's loop devices",
			fmt.Sprintf("nvmirror: md RAID1 as NodeStage creates it (metadata 1.2, internal bitmap, %d MiB bitmap chunk, data offset %d MiB, failfast legs); NVMe/TCP connected with the driver's defaults (fast_io_fail_tmo=%d, reconnect_delay=%d, ctrl_loss_tmo=%d, one I/O queue per CPU)",
				driver.DefaultBitmapChunkBytes>>20, layout.MetadataReserve>>20, driver.DefaultFastIOFailTmo, driver.DefaultReconnectDelay, driver.DefaultCtrlLossTmo),
			"DRBD 8.4 (the kernel's module, drbd-utils' drbdsetup-84): two resources in this kernel as the two nodes, 127.0.0.1 and 127.0.0.2, protocol C, internal metadata, DRBD's defaults otherwise (read-balancing prefer-local, dynamic resync controller)",
			"transparent huge pages off in the VM: on loopback, a receiver copying a sender's zero-copy pages out of a huge page trips 6.1's hardened usercopy check (a kernel BUG in nvmet_tcp_io_work, seen with fio's 1 MiB direct writes); a real network does not hand the receiver the sender's pages",
			"recovery: one replica cut (nvmirror: its nvmet port unlinked; DRBD: the peer drops the connection), the outage's bytes written sequentially during it, then the replica back: nvmirror re-adds it as the healer does (remove failed, --re-add: bitmap resync), DRBD reconnects (bitmap resync)",
		},
	}
	avoidLoopbackTHPBug(t)
	poolOnTmpfs(t)
	for _, dir := range []string{"/var/lib/drbd", "/var/run/drbd/lock", "/var/lock"} {
		_ = os.MkdirAll(dir, 0o755)
	}
	tgt := nvmet.NewTarget("")
	ini := host.NewInitiator("")
	md := mdraid.NewManager(utilexec.New(), "")
	hostIdent := newHostIdentity(t, 21)

	// Every setup is built first and lives to the end, and each fio job
	// runs on every setup back to back (starting from a different setup
	// each job): the host's load moves during a run (the machines are
	// shared), and a ratio is only as good as the closeness in time of the
	// two figures it divides.
	type setup struct {
		key, label string
		dev        string
		recovery   func(t *testing.T) map[string]float64
	}
	var setups []setup
	{ // the setups' cleanups belong to the whole test
		nodes := startStorageNodesAt(t, tgt, "bf", 1, p.volume, hostIdent, 21, 2)
		devs := benchConnect(t, ini, nodes, hostIdent)
		setups = append(setups, setup{key: bench.Floor, label: "1 NVMe/TCP namespace", dev: devs[0].Path})
		addr := 3
		for _, n := range []int{2, 3} {
			nodes := startStorageNodesAt(t, tgt, fmt.Sprintf("bn%d", n), n, p.volume+layout.MetadataReserve, hostIdent, 10*n+21, addr)
			addr += n
			devs := benchConnect(t, ini, nodes, hostIdent)
			mdDev := benchCreateArray(t, md, fmt.Sprintf("bench%d", n), devs)
			setups = append(setups, setup{key: fmt.Sprintf("nvmirror%d", n), label: fmt.Sprintf("nvmirror, %d replicas", n), dev: mdDev,
				recovery: func(t *testing.T) map[string]float64 {
					return benchNvmirrorRecovery(t, tgt, ini, md, mdDev, nodes[n-1], devs[n-1], hostIdent, p)
				}})
		}
		d := startDRBDPair(t, p.volume+layout.MetadataReserve)
		setups = append(setups, setup{key: bench.DRBD2, label: "DRBD, 2 nodes", dev: d.dev,
			recovery: func(t *testing.T) map[string]float64 { return d.recovery(t, p) }})
		if p.precondition {
			for _, s := range setups {
				runFio(t, "--name=precondition", "--filename="+s.dev, "--rw=write", "--bs=1M", "--iodepth=8",
					fmt.Sprintf("--size=%d", p.volume), "--ioengine=libaio", "--direct=1", "--output-format=json")
			}
		}
	}
	values := map[string]map[string]float64{}
	for _, s := range setups {
		values[s.key] = map[string]float64{}
	}
	for ji, j := range p.jobs {
		t.Run(j.Name, func(t *testing.T) {
			for k := range setups {
				s := setups[(ji+k)%len(setups)]
				t.Logf("%s on %s (%s)", j.Name, s.key, s.dev)
				for key, v := range j.Figures(runFio(t, j.Args(s.dev, p.volume, p.ramp, p.runtime)...)) {
					values[s.key][key] = v
				}
			}
		})
	}
	for _, s := range setups {
		if s.recovery == nil {
			continue
		}
		t.Run("recovery-"+s.key, func(t *testing.T) {
			for k, v := range s.recovery(t) {
				values[s.key][k] = v
			}
		})
	}
	for _, s := range setups {
		rep.Setups = append(rep.Setups, bench.Setup{Key: s.key, Label: s.label, Values: values[s.key]})
	}
	if t.Failed() {
		return
	}
	if err := rep.Validate(); err != nil {
		t.Error(err)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	// One line, straight to stdout: the host picks it out of the stream.
	fmt.Printf("%s%s\n", bench.ResultMarker, b)
	t.Logf("\n%s", rep.Table())
}

// avoidLoopbackTHPBug turns transparent huge pages off for the benchmark.
// With fio's buffers in a huge page, NVMe/TCP (and DRBD) send the pages
// themselves (sendpage, zero copy); on loopback the receiving end (nvmet)
// copies from those skb fragments, and Debian 6.1's hardened usercopy
// aborts a copy that runs past the huge page: "usercopy: Kernel memory
// exposure attempt detected from page alloc (offset 2051860, size 65483)",
// a kernel BUG in nvmet_tcp_io_work, on the first 1 MiB direct writes. Over
// a real network the receiver copies from its NIC's buffers instead.
func avoidLoopbackTHPBug(t *testing.T) {
	t.Helper()
	const knob = "/sys/kernel/mm/transparent_hugepage/enabled"
	was, err := os.ReadFile(knob)
	if err != nil {
		t.Logf("no %s: %v", knob, err)
		return
	}
	if err := os.WriteFile(knob, []byte("never"), 0o644); err != nil {
		t.Fatalf("turn transparent huge pages off: %v", err)
	}
	t.Logf("transparent huge pages: %s -> never", strings.TrimSpace(string(was)))
}

// poolOnTmpfs mounts a tmpfs of its own on /var/lib, where the pool files
// go: every setup's files live at once (about 2.1 GiB in a full run), more
// than the initramfs root (a tmpfs of half the VM's memory) holds.
func poolOnTmpfs(t *testing.T) {
	t.Helper()
	if err := unix.Mount("tmpfs", "/var/lib", "tmpfs", 0, "size=3500m"); err != nil {
		t.Fatalf("mount the pool's tmpfs on /var/lib: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount("/var/lib", unix.MNT_DETACH) })
}

// benchConnect connects every node with the node plugin's default
// connection settings and returns their block devices.
func benchConnect(t *testing.T, ini *host.Initiator, nodes []storageNode, h hostIdentity) []host.Device {
	t.Helper()
	devs := make([]host.Device, len(nodes))
	for i, n := range nodes {
		o := host.ConnectOptions{
			Transport: "tcp", TrAddr: n.addr, TrSvcID: n.svcID, SubsysNQN: n.nqn, HostNQN: h.nqn, HostID: h.id,
			CtrlLossTmo: intp(driver.DefaultCtrlLossTmo), ReconnectDelay: intp(driver.DefaultReconnectDelay),
			FastIOFailTmo: intp(driver.DefaultFastIOFailTmo), KeepAliveTmo: intp(driver.DefaultKeepAliveTmo),
		}
		// NVMIRROR_BENCH_FAST_IO_FAIL_TMO tries another fast_io_fail_tmo
		// (e.g. 0, which the kernel takes and the driver does not offer).
		if v, err := strconv.Atoi(os.Getenv("NVMIRROR_BENCH_FAST_IO_FAIL_TMO")); err == nil {
			o.FastIOFailTmo = intp(v)
		}
		if _, err := ini.Connect(ctxTimeout(t, 30*time.Second), o); err != nil {
			t.Fatalf("connect %s: %v", n.nqn, err)
		}
		nqn := n.nqn
		t.Cleanup(func() { _ = ini.DisconnectNQN(ctxTimeout(t, 30*time.Second), nqn) })
		d, err := ini.WaitForDevice(ctxTimeout(t, 30*time.Second), n.nqn, n.nsUUID)
		if err != nil {
			t.Fatalf("device of %s: %v", n.nqn, err)
		}
		devs[i] = d
	}
	return devs
}

// benchCreateArray creates the RAID1 exactly as the driver's createArray
// does for a new volume.
func benchCreateArray(t *testing.T, md *mdraid.Manager, name string, devs []host.Device) string {
	t.Helper()
	mdDev, err := md.NextFreeDevice()
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, d := range devs {
		paths = append(paths, d.Path)
	}
	if err := md.Create(ctxTimeout(t, time.Minute), mdraid.CreateOptions{
		Device: mdDev, Name: name, Devices: paths, BitmapChunk: driver.DefaultBitmapChunkBytes,
		DataOffset: layout.MetadataReserve, AssumeClean: true,
	}); err != nil {
		t.Fatalf("create %s: %v", mdDev, err)
	}
	t.Cleanup(func() { _ = md.Stop(ctxTimeout(t, time.Minute), mdDev) })
	return mdDev
}

// runFio runs fio with args and parses its JSON report.
func runFio(t *testing.T, args ...string) bench.Fio {
	t.Helper()
	start := time.Now()
	out, err := exec.Command("fio", args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("fio %v: %v\n%s\n%s", args, err, out, stderr)
	}
	f, err := bench.ParseFio(out)
	if err != nil {
		t.Fatalf("fio %v: %v\n%s", args, err, out)
	}
	t.Logf("fio %s: %v (%.0f/%.0f IOPS read/write, %.1f/%.1f MiB/s, write p50 %.0f µs p99 %.0f µs)",
		args[0], time.Since(start).Round(time.Millisecond), f.ReadIOPS, f.WriteIOPS,
		f.ReadBytesPerSec/(1<<20), f.WriteBytesPerSec/(1<<20), f.WriteP50*1e6, f.WriteP99*1e6)
	return f
}

// alignedBuf is a page-aligned buffer for O_DIRECT, filled with a pattern.
func alignedBuf(t *testing.T, n int) []byte {
	t.Helper()
	buf, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Munmap(buf) })
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	return buf
}

// measureStall writes 4 KiB blocks with O_DIRECT to dev at offset (one at
// a time, as a database's log writer would), has cut make one replica go
// away, and returns the time from the end of cut to the completion of the
// first write issued after it: how long the application could not write.
func measureStall(t *testing.T, dev string, offset int64, cut func() error) time.Duration {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := alignedBuf(t, 4096)
	var cutAt atomic.Pointer[time.Time]
	cutErr := make(chan error, 1)
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; ; i++ {
		if i == 20 { // some writes first, then the fault
			go func() {
				err := cut()
				now := time.Now()
				cutAt.Store(&now)
				cutErr <- err
			}()
		}
		issued := time.Now()
		if _, err := f.WriteAt(buf, offset+int64(i%256)*4096); err != nil {
			t.Fatalf("write %d to %s: %v", i, dev, err)
		}
		if c := cutAt.Load(); c != nil && !issued.Before(*c) {
			if err := <-cutErr; err != nil {
				t.Fatalf("cut: %v", err)
			}
			return time.Since(*c)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write issued after the cut completed within 2m")
		}
	}
}

// writeSeq writes n bytes sequentially at offset with O_DIRECT in 1 MiB
// writes: the data written while a replica is away.
func writeSeq(t *testing.T, dev string, offset, n int64) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := alignedBuf(t, 1<<20)
	for o := int64(0); o < n; o += int64(len(buf)) {
		if _, err := f.WriteAt(buf, offset+o); err != nil {
			t.Fatalf("write at %d of %s: %v", offset+o, dev, err)
		}
	}
}

// benchNvmirrorRecovery cuts one replica under a writer (the stall), writes
// the outage's bytes, brings the replica back after the outage and re-adds
// it as the healer does, measuring the bitmap resync.
func benchNvmirrorRecovery(t *testing.T, tgt *nvmet.Target, ini *host.Initiator, md *mdraid.Manager, mdDev string, cut storageNode, cutDev host.Device, h hostIdentity, p benchParams) map[string]float64 {
	t.Helper()
	mdName := filepath.Base(mdDev)
	offset := p.volume / 4
	var cutAt time.Time
	stall := measureStall(t, mdDev, offset, func() error {
		cutAt = time.Now()
		return tgt.UnlinkSubsystem(cut.portID, cut.nqn)
	})
	writeSeq(t, mdDev, offset, p.outageBytes)
	waitFor(t, time.Minute, "md to fail the cut leg", func() (bool, string) {
		a, err := md.ReadArray(mdName)
		if err != nil {
			return false, err.Error()
		}
		return a.Degraded == 1, describe(a)
	})
	// The outage lasts its set time: it is the fault being simulated.
	time.Sleep(time.Until(cutAt.Add(p.outage)))
	if err := tgt.LinkSubsystem(cut.portID, cut.nqn); err != nil {
		t.Fatal(err)
	}
	backAt := time.Now()
	// ctrl_loss_tmo outlasts the outage: the kernel reconnects by itself
	// (every reconnect_delay) and the device keeps its name.
	waitFor(t, time.Minute, "the cut controller to be live again", func() (bool, string) {
		ctrls, err := ini.ControllersFor(cut.nqn)
		if err != nil {
			return false, err.Error()
		}
		var states []string
		live := false
		for _, c := range ctrls {
			states = append(states, c.Name+"="+string(c.State))
			live = live || c.State.IsLive()
		}
		return live, strings.Join(states, ",")
	})
	back, err := ini.WaitForDevice(ctxTimeout(t, 30*time.Second), cut.nqn, cut.nsUUID)
	if err != nil {
		t.Fatal(err)
	}
	reconnected := time.Since(backAt)
	if err := md.Remove(ctxTimeout(t, time.Minute), mdDev, "failed"); err != nil {
		t.Fatalf("remove failed members: %v", err)
	}
	before := writeSectors(t, back.Name)
	readdAt := time.Now()
	if err := md.ReAdd(ctxTimeout(t, time.Minute), mdDev, back.Path); err != nil {
		t.Fatalf("re-add %s: %v", back.Path, err)
	}
	waitFor(t, 10*time.Minute, "the re-added leg to be in sync", func() (bool, string) {
		a, err := md.ReadArray(mdName)
		if err != nil {
			return false, err.Error()
		}
		m, ok := a.Member(back.Name)
		return a.Degraded == 0 && a.SyncAction == "idle" && ok && m.State.InSync, describe(a)
	})
	resyncTime := time.Since(readdAt)
	resynced := float64(writeSectors(t, back.Name)-before) * 512
	t.Logf("RECOVERY nvmirror: stall %v; controller live %v after the port came back (was %s, now %s); re-add resynced %.1f MiB in %v",
		stall.Round(time.Millisecond), reconnected.Round(time.Millisecond), cutDev.Name, back.Name, resynced/(1<<20), resyncTime.Round(time.Millisecond))
	return map[string]float64{bench.StallSeconds: stall.Seconds(), bench.ResyncBytes: resynced, bench.ResyncSeconds: resyncTime.Seconds()}
}

// drbdPair is two DRBD 8.4 resources in one kernel playing a primary node
// (minor 0, 127.0.0.1) and its peer (minor 1, 127.0.0.2), each on a loop
// device over a pool file.
type drbdPair struct {
	dev          string // the primary's /dev/drbd0
	loops        [2]string
	primaryAddr  string
	peerAddr     string
	peerResource string
}

func drbdsetup(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("drbdsetup-84", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("drbdsetup-84 %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

func mustDRBD(t *testing.T, args ...string) string {
	t.Helper()
	out, err := drbdsetup(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func startDRBDPair(t *testing.T, size int64) *drbdPair {
	t.Helper()
	d := &drbdPair{dev: "/dev/drbd0", primaryAddr: "ipv4:127.0.0.1:7789", peerAddr: "ipv4:127.0.0.2:7789", peerResource: "benchb"}
	for i, name := range []string{"a", "b"} {
		file := filepath.Join("/var/lib", "bench-drbd-"+name+".img")
		f, err := os.Create(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
		t.Cleanup(func() { os.Remove(file) })
		out, err := exec.Command("losetup", "--find", "--show", file).CombinedOutput()
		if err != nil {
			t.Fatalf("losetup %s: %v: %s", file, err, out)
		}
		loop := strings.TrimSpace(string(out))
		d.loops[i] = loop
		t.Cleanup(func() { _ = exec.Command("losetup", "-d", loop).Run() })
		if out, err := exec.Command("drbdmeta", "--force", fmt.Sprint(i), "v08", loop, "internal", "create-md").CombinedOutput(); err != nil {
			t.Fatalf("drbdmeta create-md on %s: %v: %s", loop, err, out)
		}
	}
	type res struct{ name, minor, loop, me, peer string }
	for _, r := range []res{{"bencha", "0", d.loops[0], d.primaryAddr, d.peerAddr}, {"benchb", "1", d.loops[1], d.peerAddr, d.primaryAddr}} {
		mustDRBD(t, "new-resource", r.name)
		name := r.name
		t.Cleanup(func() {
			if _, err := drbdsetup(t, "down", name); err != nil {
				t.Errorf("%v", err)
			}
		})
		mustDRBD(t, "new-minor", r.name, r.minor, "0")
		// NVMIRROR_BENCH_DRBD_DISK_OPTS: extra disk options for both nodes
		// (e.g. "--disk-flushes=no --md-flushes=no"), to try DRBD tuned.
		mustDRBD(t, append([]string{"attach", r.minor, r.loop, r.loop, "internal"}, strings.Fields(os.Getenv("NVMIRROR_BENCH_DRBD_DISK_OPTS"))...)...)
		mustDRBD(t, "connect", r.name, r.me, r.peer, "--protocol=C")
	}
	waitFor(t, time.Minute, "the DRBD peers to connect", func() (bool, string) {
		s, _ := drbdsetup(t, "cstate", "0")
		return s == "Connected", s
	})
	// Both backing files are new and sparse: all zeros on both nodes, like
	// nvmirror's AssumeClean, so skip the initial sync.
	mustDRBD(t, "new-current-uuid", "0", "--clear-bitmap")
	mustDRBD(t, "primary", "0")
	t.Cleanup(func() { _, _ = drbdsetup(t, "secondary", "0") })
	waitFor(t, time.Minute, "DRBD to be up to date on both nodes", func() (bool, string) {
		s, _ := drbdsetup(t, "dstate", "0")
		return s == "UpToDate/UpToDate", s
	})
	return d
}

// recovery: the peer drops the connection under a writer (the stall), the
// outage's bytes are written, the peer reconnects after the outage and
// DRBD resyncs what its bitmap marked.
func (d *drbdPair) recovery(t *testing.T, p benchParams) map[string]float64 {
	t.Helper()
	offset := p.volume / 4
	var cutAt time.Time
	stall := measureStall(t, d.dev, offset, func() error {
		cutAt = time.Now()
		_, err := drbdsetup(t, "disconnect", d.peerAddr, d.primaryAddr, "--force")
		return err
	})
	writeSeq(t, d.dev, offset, p.outageBytes)
	time.Sleep(time.Until(cutAt.Add(p.outage))) // the outage being simulated
	peerLoop := filepath.Base(d.loops[1])
	before := statWriteSectors(t, peerLoop)
	reconnectAt := time.Now()
	mustDRBD(t, "connect", d.peerResource, d.peerAddr, d.primaryAddr, "--protocol=C")
	waitFor(t, 10*time.Minute, "DRBD's resync to finish", func() (bool, string) {
		c, _ := drbdsetup(t, "cstate", "0")
		s, _ := drbdsetup(t, "dstate", "0")
		return c == "Connected" && s == "UpToDate/UpToDate", c + " " + s
	})
	resyncTime := time.Since(reconnectAt)
	resynced := float64(statWriteSectors(t, peerLoop)-before) * 512
	t.Logf("RECOVERY drbd: stall %v; reconnect resynced %.1f MiB in %v", stall.Round(time.Millisecond), resynced/(1<<20), resyncTime.Round(time.Millisecond))
	return map[string]float64{bench.StallSeconds: stall.Seconds(), bench.ResyncBytes: resynced, bench.ResyncSeconds: resyncTime.Seconds()}
}
