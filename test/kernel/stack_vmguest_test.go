//go:build vmguest

package kernel

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// daemon is one long-running nvmirror process started by a guest test, its
// output kept in a log file that is shown when the test fails.
type daemon struct {
	name    string
	args    []string
	logPath string
	cmd     *exec.Cmd
	waitc   chan error
}

func startDaemon(t *testing.T, name string, args ...string) *daemon {
	t.Helper()
	d := &daemon{name: name, args: args, logPath: filepath.Join("/run/nvmirror-test", name+".log")}
	if err := os.MkdirAll(filepath.Dir(d.logPath), 0o755); err != nil {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.cmd = exec.Command(args[0], args[1:]...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	d.waitc = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(d.cmd, d.waitc)
	t.Cleanup(func() {
		d.stop(t, syscall.SIGTERM)
		if t.Failed() {
			t.Logf("%s log:\n%s", name, d.log())
		}
	})
	return d
}

// exited reports whether the process has ended, and how.
func (d *daemon) exited() (bool, error) {
	select {
	case err := <-d.waitc:
		d.waitc <- err
		return true, err
	default:
		return false, nil
	}
}

func (d *daemon) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if done, _ := d.exited(); done || d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(sig)
	select {
	case err := <-d.waitc:
		d.waitc <- err // keep it: exited() reads it again later
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		t.Errorf("%s did not exit within 30s of %v", d.name, sig)
	}
}

func (d *daemon) log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

// waitListening waits until something accepts connections on addr (a
// "unix://" socket or host:port) while the daemon is alive.
func (d *daemon) waitListening(t *testing.T, network, addr string) {
	t.Helper()
	waitFor(t, 60*time.Second, d.name+" to listen on "+addr, func() (bool, string) {
		if done, err := d.exited(); done {
			t.Fatalf("%s exited: %v\n%s", d.name, err, d.log())
		}
		c, err := net.DialTimeout(network, addr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
}

// stack is nvmirror on one machine: three storage node agents, the
// provisioner, and the CSI driver in "all" mode (controller and node).
type stack struct {
	tlsDir      string
	agents      []*agentProc
	provisioner *daemon
	csi         *daemon
	csiSocket   string
	provAddr    string
}

const (
	stackProvisionerAddr = "127.0.0.1:9500"
	stackNodeName        = "vm-node-1"
)

// stackOptions shape a stack; the zero value is three storage nodes with
// 256 MiB pools.
type stackOptions struct {
	storageNodes int
	// poolSize is each storage node's own tmpfs pool.
	poolSize int64
	// poolRoot, when set, replaces the tmpfs pools: each storage node's
	// pool is the directory poolRoot/<name> of the filesystem the test
	// mounted there, which they share (poolSize is then unused).
	poolRoot string
	csiArgs  []string
	provArgs []string
}

// startStack starts the whole product with real binaries over the real
// kernel. Agents live on 127.0.0.2-4, each in its own zone and rack.
func startStack(t *testing.T, extraCSIArgs ...string) *stack {
	t.Helper()
	return startStackWith(t, stackOptions{csiArgs: extraCSIArgs})
}

func startStackWith(t *testing.T, o stackOptions) *stack {
	t.Helper()
	if o.storageNodes == 0 {
		o.storageNodes = 3
	}
	if o.poolSize == 0 {
		o.poolSize = agentPoolSize
	}
	s := &stack{tlsDir: t.TempDir(), csiSocket: "/run/nvmirror-test/csi/csi.sock", provAddr: stackProvisionerAddr}
	writeAgentCredentials(t, s.tlsDir, "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "sn1", "sn2", "sn3", "sn4")
	var nodeFlags []string
	for i := 0; i < o.storageNodes; i++ {
		name := fmt.Sprintf("sn%d", i+1)
		a := newAgentOn(t, name, fmt.Sprintf("127.0.0.%d", i+2), 31+i, s.tlsDir, o.poolSize, o.poolRoot)
		a.start(t)
		a.waitReady(t, a.client(t, agentToken))
		s.agents = append(s.agents, a)
		nodeFlags = append(nodeFlags, "--storage-node="+name+"="+a.addr+":"+agentAPIPort)
	}
	crt, key, token, ca := filepath.Join(s.tlsDir, "tls.crt"), filepath.Join(s.tlsDir, "tls.key"), filepath.Join(s.tlsDir, "token"), filepath.Join(s.tlsDir, "ca.crt")
	provArgs := append([]string{"nvmirror-provisioner",
		"--listen=" + s.provAddr,
		"--tls-cert-file=" + crt, "--tls-key-file=" + key, "--tls-client-ca-file=" + ca, "--token-file=" + token,
		"--store=bolt", "--bolt-path=/run/nvmirror-test/provisioner/registry.db",
		"--agent-ca-file=" + ca, "--agent-token-file=" + token,
		"--agent-cert-file=" + filepath.Join(s.tlsDir, "provisioner-client.crt"), "--agent-key-file=" + filepath.Join(s.tlsDir, "provisioner-client.key"),
		"-v=2",
	}, append(nodeFlags, o.provArgs...)...)
	if err := os.MkdirAll("/run/nvmirror-test/provisioner", 0o755); err != nil {
		t.Fatal(err)
	}
	// Every stack starts with an empty registry: what an earlier test left
	// (host secrets, events) must not leak into the next one.
	if err := os.Remove("/run/nvmirror-test/provisioner/registry.db"); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	s.provisioner = startDaemon(t, "provisioner", provArgs...)
	s.provisioner.waitListening(t, "tcp", s.provAddr)

	if err := os.MkdirAll(filepath.Dir(s.csiSocket), 0o755); err != nil {
		t.Fatal(err)
	}
	csiArgs := append([]string{"nvmirror-csi",
		"--mode=all",
		"--endpoint=unix://" + s.csiSocket,
		"--provisioner-address=" + s.provAddr,
		"--provisioner-ca-file=" + ca, "--provisioner-token-file=" + token,
		"--provisioner-cert-file=" + filepath.Join(s.tlsDir, "csi.crt"), "--provisioner-key-file=" + filepath.Join(s.tlsDir, "csi.key"),
		"--node-name=" + stackNodeName,
		"--state-dir=/run/nvmirror-test/node-state",
		// Short enough that a replica away this long shows as gone within
		// a test; production keeps the default.
		"--ctrl-loss-tmo=10",
		"-v=3",
	}, o.csiArgs...)
	s.csi = startDaemon(t, "csi", csiArgs...)
	s.csi.waitListening(t, "unix", s.csiSocket)
	return s
}

// TestCSISanity runs the real csi-sanity binary against the real stack:
// three agents exporting replicas through nvmet, the provisioner, and the
// driver connecting, assembling md RAID1 and formatting ext4 on this
// kernel. Once for mount volumes and once for block volumes.
func TestCSISanity(t *testing.T) {
	s := startStack(t)
	params := filepath.Join(t.TempDir(), "params.yaml")
	if err := os.WriteFile(params, []byte("numReplicas: \"3\"\nmaxReplicaDownTime: \"0\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mutable := filepath.Join(t.TempDir(), "mutable.yaml")
	if err := os.WriteFile(mutable, []byte("maxReplicaDownTime: \"30\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, accessType := range []string{"mount", "block"} {
		t.Run(accessType, func(t *testing.T) {
			base := filepath.Join("/run/nvmirror-test/sanity", accessType)
			// csi-sanity creates these itself; pre-created, every spec
			// fails in BeforeEach.
			_ = os.RemoveAll(base)
			if err := os.MkdirAll(base, 0o755); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			cmd := exec.Command("csi-sanity",
				"-csi.endpoint=unix://"+s.csiSocket,
				"-csi.stagingdir="+filepath.Join(base, "staging"),
				"-csi.mountdir="+filepath.Join(base, "mount"),
				"-csi.testvolumesize=16777216",
				"-csi.testvolumeexpandsize=33554432",
				"-csi.testvolumeparameters="+params,
				"-csi.testvolumemutableparameters="+mutable,
				"-csi.testvolumeaccesstype="+accessType,
				"-ginkgo.no-color",
			)
			out, err := cmd.CombinedOutput()
			summary := sanitySummary(string(out))
			t.Logf("csi-sanity (%s volumes): %s in %v", accessType, summary, time.Since(start).Round(time.Second))
			if err != nil || !strings.Contains(summary, " 0 Failed") {
				// The failed specs first: a CI log may keep only the
				// start of a long message.
				t.Errorf("csi-sanity failed: %v\nfailed specs:\n%s\noutput's end:\n%s", err, failedSpecs(string(out)), tail(string(out), 200))
			}
			if testing.Verbose() && err == nil {
				t.Logf("skipped specs:\n%s", skippedSpecs(string(out)))
			}
		})
	}
}

// sanitySummary returns ginkgo's "Ran N of M Specs" and counts lines.
func sanitySummary(out string) string {
	var parts []string
	for _, line := range strings.Split(out, "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "Ran ") && strings.Contains(l, " Specs") || strings.Contains(l, "Passed |") {
			parts = append(parts, l)
		}
	}
	if len(parts) == 0 {
		return "(no summary)"
	}
	return strings.Join(parts, "; ")
}

// failedSpecs returns ginkgo's closing list of failed specs ("Summarizing
// N Failures:" and its [FAIL] lines).
func failedSpecs(out string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.Split(out, "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "Summarizing ") {
			in = true
		}
		if in && (strings.HasPrefix(l, "Summarizing ") || strings.HasPrefix(l, "[FAIL]") || strings.HasPrefix(l, "[PANICKED]") || strings.HasPrefix(l, "[TIMEDOUT]")) {
			b.WriteString(l + "\n")
		}
	}
	if b.Len() == 0 {
		return "(no failure summary in the output)\n"
	}
	return b.String()
}

// skippedSpecs lists the specs ginkgo reports as skipped with a reason.
func skippedSpecs(out string) string {
	var b strings.Builder
	lines := strings.Split(out, "\n")
	for i, line := range lines {
		if strings.Contains(line, "[SKIPPED]") && i+1 < len(lines) {
			b.WriteString(strings.TrimSpace(line) + " " + strings.TrimSpace(lines[i+1]) + "\n")
		}
	}
	return b.String()
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// nvmirrorctlFlags are nvmirrorctl's flags for the stack's provisioner, as
// its administrator.
func (s *stack) nvmirrorctlFlags() []string {
	return []string{"--provisioner=" + s.provAddr, "--ca-file=" + filepath.Join(s.tlsDir, "ca.crt"),
		"--cert-file=" + filepath.Join(s.tlsDir, "admin.crt"), "--key-file=" + filepath.Join(s.tlsDir, "admin.key"),
		"--token-file=" + filepath.Join(s.tlsDir, "token")}
}
