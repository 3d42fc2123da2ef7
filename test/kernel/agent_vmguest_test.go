//go:build vmguest

package kernel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/rpcauth/rpcauthtest"
)

const agentToken = "vm-agent-token"

// agentProc is one nvmirror-target process: a storage node with its own
// loopback address, nvmet port, NQN prefix and tmpfs pool.
type agentProc struct {
	name     string
	addr     string // NVMe/TCP and gRPC address
	portID   int
	poolSize int64
	prefix   string
	pool     string
	tlsDir   string
	logPath  string
	cmd      *exec.Cmd
	waitc    chan error
}

const (
	agentNvmePort = "4430"
	agentAPIPort  = "9401"
	agentPoolSize = 256 << 20
)

func (a *agentProc) nqn(id string) string { return a.prefix + id }

func (a *agentProc) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	a.cmd = exec.Command("nvmirror-target",
		"--pool-dir="+a.pool,
		"--nqn-prefix="+a.prefix,
		"--nvme-address="+a.addr+":"+agentNvmePort,
		fmt.Sprintf("--nvme-port-id=%d", a.portID),
		"--node-name="+a.name, "--zone=zone-"+a.name, "--rack=rack-"+a.name,
		"--listen="+a.addr+":"+agentAPIPort,
		"--tls-cert-file="+filepath.Join(a.tlsDir, "tls.crt"),
		"--tls-key-file="+filepath.Join(a.tlsDir, "tls.key"),
		"--tls-client-ca-file="+filepath.Join(a.tlsDir, "ca.crt"),
		"--token-file="+filepath.Join(a.tlsDir, "token"),
		"--shutdown-timeout=5s",
		"-v=2",
	)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start agent %s: %v", a.name, err)
	}
	logf.Close()
	a.waitc = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(a.cmd, a.waitc)
}

// stop sends sig and waits for the process; it returns the exit error.
func (a *agentProc) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if a.cmd == nil {
		return nil
	}
	_ = a.cmd.Process.Signal(sig)
	select {
	case err := <-a.waitc:
		a.cmd = nil
		return err
	case <-time.After(20 * time.Second):
		_ = a.cmd.Process.Kill()
		t.Fatalf("agent %s did not exit after %v", a.name, sig)
	}
	return nil
}

func (a *agentProc) log() string {
	b, _ := os.ReadFile(a.logPath)
	return string(b)
}

// client dials the agent's API as the provisioner (its client
// certificate), with the token when token != "".
func (a *agentProc) client(t *testing.T, token string) agentapi.TargetClient {
	t.Helper()
	return a.clientAs(t, "provisioner-client", token)
}

// clientAs dials the agent's API with the certificate cert.crt/cert.key of
// the credentials directory.
func (a *agentProc) clientAs(t *testing.T, cert, token string) agentapi.TargetClient {
	t.Helper()
	conn, err := rpcauth.Dial(a.addr+":"+agentAPIPort, rpcauth.ClientConfig{CAFile: filepath.Join(a.tlsDir, "ca.crt"), ServerName: a.name,
		CertFile: filepath.Join(a.tlsDir, cert+".crt"), KeyFile: filepath.Join(a.tlsDir, cert+".key"), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentapi.NewTargetClient(conn)
}

// waitReady polls NodeInfo until the agent answers (it serves only after
// restoring its exports).
func (a *agentProc) waitReady(t *testing.T, c agentapi.TargetClient) time.Duration {
	t.Helper()
	return waitFor(t, 30*time.Second, "agent "+a.name+" to serve", func() (bool, string) {
		select {
		case err := <-a.waitc:
			a.waitc <- err
			t.Fatalf("agent %s exited: %v\n%s", a.name, err, a.log())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := c.NodeInfo(ctx, &agentapi.NodeInfoRequest{})
		return err == nil, fmt.Sprint(err)
	})
}

// writeAgentCredentials writes the tests' PKI into dir: ca.crt; tls.crt
// and tls.key, one server certificate for every address and storage node
// name in hosts (the agents and the provisioner share it: per-node agent
// certificates are the Kubernetes e2e's); a client certificate per caller
// (provisioner-client: the provisioner's, for the agents; csi: the node
// plugin of stackNodeName running in mode all; admin: nvmirrorctl;
// node-other: another compute node's; test-client: the tests' own calls,
// all three roles of stackNodeName); and the token file (kept here as
// the optional second factor).
func writeAgentCredentials(t *testing.T, dir string, hosts ...string) {
	t.Helper()
	ca := rpcauthtest.NewCA(t)
	ca.WriteCA(t, dir)
	ca.Server(t, "nvmirror-test", hosts...).WriteFiles(t, dir)
	ca.Client(t, "nvmirror-provisioner", "provisioner").WriteNamed(t, dir, "provisioner-client")
	ca.Client(t, stackNodeName, "controller", "node").WriteNamed(t, dir, "csi")
	ca.Client(t, "vm-admin", "admin").WriteNamed(t, dir, "admin")
	ca.Client(t, "vm-node-2", "node").WriteNamed(t, dir, "node-other")
	ca.Client(t, stackNodeName, "controller", "node", "admin").WriteNamed(t, dir, "test-client")
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(agentToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newAgent(t *testing.T, name, addr string, portID int, tlsDir string) *agentProc {
	t.Helper()
	return newAgentWithPool(t, name, addr, portID, tlsDir, agentPoolSize)
}

// newAgentWithPool is newAgent with a pool of poolSize bytes (tmpfs: only
// what is written takes memory).
func newAgentWithPool(t *testing.T, name, addr string, portID int, tlsDir string, poolSize int64) *agentProc {
	t.Helper()
	return newAgentOn(t, name, addr, portID, tlsDir, poolSize, "")
}

// newAgentOn is newAgentWithPool, or, with poolRoot set, an agent whose
// pool is the directory poolRoot/<name> of a filesystem the test mounted
// there (the agents of a stack share it, and statfs reports all of it to
// each; poolSize is unused). For pools that must hold more than guest RAM
// (the drain benchmark's, on the VM's scratch disk).
func newAgentOn(t *testing.T, name, addr string, portID int, tlsDir string, poolSize int64, poolRoot string) *agentProc {
	t.Helper()
	pool := filepath.Join("/run/nvmirror-test", name, "pool")
	if poolRoot != "" {
		pool = filepath.Join(poolRoot, name)
	}
	// The agent's log stays in /run/nvmirror-test/<name> wherever the pool is.
	for _, dir := range []string{pool, filepath.Join("/run/nvmirror-test", name)} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if poolRoot == "" {
		// A tmpfs of known size: statfs gives real numbers (the VM's root
		// filesystem reports none), and "beyond free space" is well defined.
		if err := unix.Mount("tmpfs", pool, "tmpfs", 0, fmt.Sprintf("size=%d", poolSize)); err != nil {
			t.Fatalf("mount tmpfs on %s: %v", pool, err)
		}
	}
	a := &agentProc{
		name: name, addr: addr, portID: portID,
		prefix:  "nqn.2026-11.io.nvmirror:" + name + ":",
		pool:    pool,
		tlsDir:  tlsDir,
		logPath: filepath.Join("/run/nvmirror-test", name, "agent.log"),
	}
	t.Cleanup(func() {
		_ = a.stop(t, syscall.SIGKILL)
		tgt := nvmet.NewTarget("")
		if err := tgt.Teardown(a.prefix); err != nil {
			t.Errorf("teardown %s: %v", a.prefix, err)
		}
		// Teardown removes only the ports it emptied; the agent's port may
		// have been empty already, and the next test's agent on the same
		// address needs it gone.
		if err := tgt.RemovePort(a.portID); err != nil {
			t.Errorf("remove nvmet port %d of %s: %v", a.portID, a.name, err)
		}
		if poolRoot == "" {
			_ = unix.Unmount(pool, 0)
		} else if err := os.RemoveAll(pool); err != nil {
			// As the tmpfs's unmount does: the next agent of this name
			// starts from an empty pool.
			t.Errorf("remove pool %s of %s: %v", pool, a.name, err)
		}
		if t.Failed() {
			t.Logf("agent %s log:\n%s", name, a.log())
		}
	})
	return a
}

func grpcCode(err error) codes.Code { return status.Code(err) }

// TestTargetAgent runs two nvmirror-target agents (the real binary) on
// 127.0.0.2 and 127.0.0.3 against the real kernel target and checks the
// issue's scenarios: refused input creates nothing, replicas created
// through the API are reachable only by the allowed host, growth reaches
// the host, a killed agent whose configfs was wiped (as by a reboot)
// restores its exports and the host reconnects by itself with its data
// intact, revoking a connected host cuts its session, deletion removes
// everything. It also measures create/delete latency on the real kernel.
func TestTargetAgent(t *testing.T) {
	tgt := nvmet.NewTarget("")
	ini := host.NewInitiator("")
	if err := tgt.Available(); err != nil {
		t.Fatalf("nvmet: %v", err)
	}
	tlsDir := t.TempDir()
	writeAgentCredentials(t, tlsDir, "127.0.0.2", "127.0.0.3", "agent-a", "agent-b")
	a := newAgent(t, "agent-a", "127.0.0.2", 40, tlsDir)
	b := newAgent(t, "agent-b", "127.0.0.3", 50, tlsDir)
	a.start(t)
	b.start(t)
	ca, cb := a.client(t, agentToken), b.client(t, agentToken)
	t.Logf("agent a ready after %v, agent b after %v", a.waitReady(t, ca).Round(time.Millisecond), b.waitReady(t, cb).Round(time.Millisecond))
	h1, h2 := newHostIdentity(t, 21), newHostIdentity(t, 22)
	ctx := ctxTimeout(t, 8*time.Minute)
	thin, thick := agentapi.ProvisioningType_PROVISIONING_TYPE_THIN, agentapi.ProvisioningType_PROVISIONING_TYPE_THICK

	ni, err := ca.NodeInfo(ctx, &agentapi.NodeInfoRequest{})
	if err != nil || ni.GetNodeName() != "agent-a" || ni.GetZone() != "zone-agent-a" || len(ni.GetEndpoints()) != 1 || ni.GetEndpoints()[0].GetAddress() != "127.0.0.2" {
		t.Fatalf("NodeInfo = %v, %v", ni, err)
	}

	// --- Refused calls create nothing.
	if _, err := a.client(t, "").ListReplicas(ctx, &agentapi.ListReplicasRequest{}); grpcCode(err) != codes.Unauthenticated {
		t.Errorf("call without token: %v, want Unauthenticated", err)
	}
	if _, err := a.client(t, "wrong").CreateReplica(ctx, &agentapi.CreateReplicaRequest{ReplicaId: "x", VolumeId: "v", SizeBytes: 1 << 20, ProvisioningType: thin}); grpcCode(err) != codes.Unauthenticated {
		t.Errorf("call with wrong token: %v, want Unauthenticated", err)
	}
	// Only the provisioner drives an agent: a node plugin's certificate
	// is refused, token or not.
	if _, err := a.clientAs(t, "node-other", agentToken).AllowHost(ctx, &agentapi.AllowHostRequest{ReplicaId: "x", HostNqn: h1.nqn}); grpcCode(err) != codes.PermissionDenied {
		t.Errorf("AllowHost with a node plugin's certificate: %v, want PermissionDenied", err)
	}
	for _, tc := range []struct {
		name string
		req  *agentapi.CreateReplicaRequest
		code codes.Code
		want string
	}{
		{"negative size", &agentapi.CreateReplicaRequest{ReplicaId: "bad1", VolumeId: "v", SizeBytes: -4096, ProvisioningType: thin}, codes.InvalidArgument, "size_bytes"},
		{"beyond free space", &agentapi.CreateReplicaRequest{ReplicaId: "bad2", VolumeId: "v", SizeBytes: 2 * agentPoolSize, ProvisioningType: thick}, codes.ResourceExhausted, "available"},
		{"thin beyond free space", &agentapi.CreateReplicaRequest{ReplicaId: "bad3", VolumeId: "v", SizeBytes: 1 << 40, ProvisioningType: thin}, codes.ResourceExhausted, "available"},
		{"path traversal", &agentapi.CreateReplicaRequest{ReplicaId: "../../../etc/passwd", VolumeId: "v", SizeBytes: 1 << 20, ProvisioningType: thin}, codes.InvalidArgument, "replica_id"},
		{"malformed id", &agentapi.CreateReplicaRequest{ReplicaId: "Bad_ID", VolumeId: "v", SizeBytes: 1 << 20, ProvisioningType: thin}, codes.InvalidArgument, "replica_id"},
		{"nqn injection", &agentapi.CreateReplicaRequest{ReplicaId: "x,hostnqn=evil", VolumeId: "v", SizeBytes: 1 << 20, ProvisioningType: thin}, codes.InvalidArgument, "replica_id"},
		{"bad host", &agentapi.CreateReplicaRequest{ReplicaId: "bad4", VolumeId: "v", SizeBytes: 1 << 20, ProvisioningType: thin, AllowedHosts: []string{"../hosts"}}, codes.InvalidArgument, "allowed_hosts[0]"},
	} {
		_, err := ca.CreateReplica(ctx, tc.req)
		if grpcCode(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.want) {
			t.Errorf("%s: %v, want %v mentioning %q", tc.name, err, tc.code, tc.want)
		} else {
			t.Logf("%s -> %v: %s", tc.name, grpcCode(err), status.Convert(err).Message())
		}
	}
	if _, err := ca.GetReplica(ctx, &agentapi.GetReplicaRequest{ReplicaId: "unknown"}); grpcCode(err) != codes.NotFound {
		t.Errorf("get unknown: %v, want NotFound", err)
	}
	if _, err := ca.ExpandReplica(ctx, &agentapi.ExpandReplicaRequest{ReplicaId: "unknown", SizeBytes: 1 << 20}); grpcCode(err) != codes.NotFound {
		t.Errorf("expand unknown: %v, want NotFound", err)
	}
	if _, err := ca.AllowHost(ctx, &agentapi.AllowHostRequest{ReplicaId: "unknown", HostNqn: h1.nqn}); grpcCode(err) != codes.NotFound {
		t.Errorf("allow on unknown: %v, want NotFound", err)
	}
	subs, err := tgt.ListSubsystems()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		if strings.HasPrefix(s.NQN, a.prefix) {
			t.Errorf("refused calls left subsystem %s", s.NQN)
		}
	}
	if ents, _ := os.ReadDir(a.pool); len(ents) > 1 || (len(ents) == 1 && ents[0].Name() != "state.json") {
		t.Errorf("refused calls left files in the pool: %v", ents)
	}
	if _, err := os.Stat("/etc/passwd.img"); err == nil {
		t.Error("path traversal created /etc/passwd.img")
	}

	// --- Create one replica per agent, repeat the create (idempotent).
	const size = 64 << 20
	reqA := &agentapi.CreateReplicaRequest{ReplicaId: "ra1", VolumeId: "vol-1", SizeBytes: size, ProvisioningType: thin, AllowedHosts: []string{h1.nqn}}
	reqB := &agentapi.CreateReplicaRequest{ReplicaId: "rb1", VolumeId: "vol-1", SizeBytes: size, ProvisioningType: thick, AllowedHosts: []string{h1.nqn}}
	var ra, rb *agentapi.Replica
	for i := 0; i < 2; i++ {
		r, err := ca.CreateReplica(ctx, reqA)
		if err != nil {
			t.Fatalf("create ra1 #%d: %v", i+1, err)
		}
		ra = r.GetReplica()
		r, err = cb.CreateReplica(ctx, reqB)
		if err != nil {
			t.Fatalf("create rb1 #%d: %v", i+1, err)
		}
		rb = r.GetReplica()
	}
	if _, err := ca.CreateReplica(ctx, &agentapi.CreateReplicaRequest{ReplicaId: "ra1", VolumeId: "vol-1", SizeBytes: 2 * size, ProvisioningType: thin}); grpcCode(err) != codes.AlreadyExists {
		t.Errorf("create ra1 with another size: %v, want AlreadyExists", err)
	}
	t.Logf("replica a: %v", ra)
	sub, err := tgt.GetSubsystem(ra.GetNqn())
	if err != nil {
		t.Fatalf("configfs subsystem of ra1: %v", err)
	}
	if sub.AllowAnyHost || len(sub.AllowedHosts) != 1 || sub.AllowedHosts[0] != h1.nqn || len(sub.Ports) != 1 || sub.Ports[0] != a.portID {
		t.Fatalf("configfs subsystem of ra1: %+v", sub)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(b.pool, "rb1.img"), &st); err != nil || st.Blocks*512 < size {
		t.Errorf("thick replica rb1: %d bytes allocated (%v), want >= %d", st.Blocks*512, err, size)
	}
	capB, err := cb.GetCapacity(ctx, &agentapi.GetCapacityRequest{})
	if err != nil || capB.GetAvailableBytes() > agentPoolSize-size {
		t.Errorf("agent b capacity after a thick 64 MiB replica: %v, %v", capB, err)
	}

	// --- The allowed host connects to both, another host is refused.
	endpoint := func(r *agentapi.Replica, h hostIdentity, ctrlLoss int) host.ConnectOptions {
		e := r.GetEndpoints()[0]
		return host.ConnectOptions{
			Transport: "tcp", TrAddr: e.GetAddress(), TrSvcID: e.GetServiceId(), SubsysNQN: r.GetNqn(),
			HostNQN: h.nqn, HostID: h.id,
			CtrlLossTmo: intp(ctrlLoss), ReconnectDelay: intp(1), FastIOFailTmo: intp(1), KeepAliveTmo: intp(5),
		}
	}
	if _, err := ini.Connect(ctxTimeout(t, 30*time.Second), endpoint(ra, h2, 5)); err == nil {
		t.Fatal("host h2, never allowed, connected to ra1")
	} else {
		t.Logf("h2 refused as expected: %v", err)
	}
	ctrlA, err := ini.Connect(ctxTimeout(t, 30*time.Second), endpoint(ra, h1, 60))
	if err != nil {
		t.Fatalf("h1 connect ra1: %v", err)
	}
	if _, err := ini.Connect(ctxTimeout(t, 30*time.Second), endpoint(rb, h1, 60)); err != nil {
		t.Fatalf("h1 connect rb1: %v", err)
	}
	t.Cleanup(func() {
		for _, n := range []string{ra.GetNqn(), rb.GetNqn()} {
			_ = ini.DisconnectNQN(ctxTimeout(t, 30*time.Second), n)
		}
	})
	devA, err := ini.WaitForDevice(ctxTimeout(t, 30*time.Second), ra.GetNqn(), ra.GetNamespaceUuid())
	if err != nil {
		t.Fatalf("device of ra1: %v", err)
	}
	devB, err := ini.WaitForDevice(ctxTimeout(t, 30*time.Second), rb.GetNqn(), rb.GetNamespaceUuid())
	if err != nil {
		t.Fatalf("device of rb1: %v", err)
	}
	if devA.SizeBytes != size || devB.SizeBytes != size {
		t.Fatalf("device sizes %d, %d; want %d", devA.SizeBytes, devB.SizeBytes, size)
	}
	pattern := make([]byte, 1<<20)
	if _, err := rand.Read(pattern); err != nil {
		t.Fatal(err)
	}
	writeDev(t, devA.Path, pattern)
	logKmsg(t, "nvmet")
	// The agent turns the kernel's session messages into audit log lines.
	for _, want := range [][]string{
		{"Audit: NVMe-oF session established", ra.GetNqn(), h1.nqn},
		{"Audit: NVMe-oF connection refused", ra.GetNqn(), h2.nqn},
	} {
		waitFor(t, 10*time.Second, "agent a to log "+want[0], func() (bool, string) {
			for _, line := range strings.Split(a.log(), "\n") {
				if strings.Contains(line, want[0]) && strings.Contains(line, want[1]) && strings.Contains(line, want[2]) {
					return true, line
				}
			}
			return false, "no such line in the agent log"
		})
	}

	// --- Growth reaches the host.
	if _, err := cb.ExpandReplica(ctx, &agentapi.ExpandReplicaRequest{ReplicaId: "rb1", SizeBytes: 2 * size}); err != nil {
		t.Fatalf("expand rb1: %v", err)
	}
	took := waitFor(t, 30*time.Second, "host to see rb1 grown", func() (bool, string) {
		d, err := ini.FindDevice(rb.GetNqn(), rb.GetNamespaceUuid())
		return err == nil && d.SizeBytes == 2*size, fmt.Sprintf("%+v %v", d, err)
	})
	t.Logf("host saw rb1 grow to %d bytes %v after ExpandReplica", 2*size, took.Round(time.Millisecond))

	// --- Agent a killed and configfs wiped (as by a reboot): the restarted
	// agent restores the export and the host reconnects on its own.
	if err := a.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("SIGKILL: agent exited cleanly?")
	}
	if err := tgt.Teardown(a.prefix); err != nil {
		t.Fatalf("wipe agent a's configfs: %v", err)
	}
	if _, err := tgt.GetSubsystem(ra.GetNqn()); !errors.Is(err, nvmeof.ErrNotFound) {
		t.Fatalf("after wipe, subsystem of ra1: %v", err)
	}
	waitFor(t, 15*time.Second, "host controller of ra1 to lose its connection", func() (bool, string) {
		c, err := ini.Controller(ctrlA.Name)
		return err == nil && !c.State.IsLive(), fmt.Sprintf("%+v %v", c, err)
	})
	restart := time.Now()
	a.start(t)
	a.waitReady(t, ca)
	t.Logf("agent a restarted and serving after %v", time.Since(restart).Round(time.Millisecond))
	if sub, err := tgt.GetSubsystem(ra.GetNqn()); err != nil || len(sub.AllowedHosts) != 1 || len(sub.Ports) != 1 || len(sub.Namespaces) != 1 || !sub.Namespaces[0].Enabled {
		t.Fatalf("restored subsystem of ra1: %+v, %v", sub, err)
	}
	took = waitFor(t, 30*time.Second, "host controller of ra1 to reconnect", func() (bool, string) {
		c, err := ini.Controller(ctrlA.Name)
		return err == nil && c.State.IsLive(), fmt.Sprintf("%+v %v", c, err)
	})
	t.Logf("host controller %s live again %v after the agent restart", ctrlA.Name, time.Since(restart).Round(time.Millisecond))
	_ = took
	dropCaches(t)
	if got := readDev(t, devA.Path, len(pattern)); !bytes.Equal(got, pattern) {
		t.Fatal("data on ra1 differs after the restore")
	}

	// Agent b stopped gracefully and restarted without a wipe: its host
	// connection is not disturbed.
	if err := b.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("agent b after SIGTERM: %v, want exit 0", err)
	}
	b.start(t)
	b.waitReady(t, cb)
	for _, c := range mustControllers(t, ini, rb.GetNqn()) {
		if !c.State.IsLive() {
			t.Errorf("controller %s of rb1 is %s after a plain agent restart", c.Name, c.State)
		}
	}

	// --- Revoking the connected host cuts its session; allowing it again
	// lets it back in.
	if _, err := ca.RevokeHost(ctx, &agentapi.RevokeHostRequest{ReplicaId: "ra1", HostNqn: h1.nqn}); err != nil {
		t.Fatalf("revoke h1 on ra1: %v", err)
	}
	took = waitFor(t, 15*time.Second, "revoked host's session to drop", func() (bool, string) {
		c, err := ini.Controller(ctrlA.Name)
		return err != nil || !c.State.IsLive(), fmt.Sprintf("%+v %v", c, err)
	})
	t.Logf("revoked host's controller left the live state %v after RevokeHost", took.Round(time.Millisecond))
	time.Sleep(3 * time.Second) // several reconnect attempts (reconnect_delay=1)
	if c, err := ini.Controller(ctrlA.Name); err == nil && c.State.IsLive() {
		t.Fatalf("revoked host reconnected: %+v", c)
	}
	if f, err := os.OpenFile(devA.Path, os.O_RDWR, 0); err == nil {
		_, werr := f.WriteAt(pattern[:4096], 0)
		serr := f.Sync()
		f.Close()
		if werr == nil && serr == nil {
			t.Error("revoked host could still write to ra1")
		}
	}
	if err := ini.DisconnectNQN(ctxTimeout(t, 30*time.Second), ra.GetNqn()); err != nil {
		t.Fatal(err)
	}
	if _, err := ini.Connect(ctxTimeout(t, 30*time.Second), endpoint(ra, h1, 5)); err == nil {
		t.Fatal("revoked host connected again")
	}
	if _, err := ca.AllowHost(ctx, &agentapi.AllowHostRequest{ReplicaId: "ra1", HostNqn: h1.nqn}); err != nil {
		t.Fatal(err)
	}
	if _, err := ini.Connect(ctxTimeout(t, 30*time.Second), endpoint(ra, h1, 5)); err != nil {
		t.Fatalf("re-allowed host cannot connect: %v", err)
	}
	logKmsg(t, "nvmet")
	logSessionInterfaces(t, ra.GetNqn())

	// --- Delete: disconnect first (as NodeUnstage does), then delete twice.
	for _, n := range []string{ra.GetNqn(), rb.GetNqn()} {
		if err := ini.DisconnectNQN(ctxTimeout(t, 30*time.Second), n); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2; i++ {
		if _, err := ca.DeleteReplica(ctx, &agentapi.DeleteReplicaRequest{ReplicaId: "ra1"}); err != nil {
			t.Fatalf("delete ra1 #%d: %v", i+1, err)
		}
		if _, err := cb.DeleteReplica(ctx, &agentapi.DeleteReplicaRequest{ReplicaId: "rb1"}); err != nil {
			t.Fatalf("delete rb1 #%d: %v", i+1, err)
		}
	}
	for _, n := range []string{ra.GetNqn(), rb.GetNqn()} {
		if _, err := tgt.GetSubsystem(n); !errors.Is(err, nvmeof.ErrNotFound) {
			t.Errorf("subsystem %s after delete: %v", n, err)
		}
	}
	for _, p := range []string{filepath.Join(a.pool, "ra1.img"), filepath.Join(b.pool, "rb1.img")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s after delete: %v", p, err)
		}
	}

	// --- Latency of create and delete through the API on the real kernel.
	for _, tc := range []struct {
		c    agentapi.TargetClient
		prov agentapi.ProvisioningType
	}{{ca, thin}, {cb, thick}} {
		const n = 10
		var createT, deleteT time.Duration
		for i := 0; i < n; i++ {
			id := fmt.Sprintf("lat-%d", i)
			start := time.Now()
			if _, err := tc.c.CreateReplica(ctx, &agentapi.CreateReplicaRequest{ReplicaId: id, VolumeId: "lat", SizeBytes: 64 << 20, ProvisioningType: tc.prov, AllowedHosts: []string{h1.nqn}}); err != nil {
				t.Fatalf("latency create %s: %v", id, err)
			}
			mid := time.Now()
			if _, err := tc.c.DeleteReplica(ctx, &agentapi.DeleteReplicaRequest{ReplicaId: id}); err != nil {
				t.Fatalf("latency delete %s: %v", id, err)
			}
			createT += mid.Sub(start)
			deleteT += time.Since(mid)
		}
		t.Logf("LATENCY %s 64 MiB replica through gRPC+TLS on the real kernel (qemu TCG): create %v, delete %v (mean of %d)",
			strings.TrimPrefix(tc.prov.String(), "PROVISIONING_TYPE_"), (createT / n).Round(time.Microsecond), (deleteT / n).Round(time.Microsecond), n)
	}
}

func mustControllers(t *testing.T, ini *host.Initiator, nqn string) []host.Controller {
	t.Helper()
	cs, err := ini.ControllersFor(nqn)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) == 0 {
		t.Fatalf("no controller for %s", nqn)
	}
	return cs
}

func writeDev(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", path, err)
	}
}

func readDev(t *testing.T, path string, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := io.ReadFull(f, buf); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return buf
}

// logKmsg logs the kernel messages containing substr: nvmet reports
// controller creation and refused connects there, which is what an agent
// could turn into session audit events.
func logKmsg(t *testing.T, substr string) {
	t.Helper()
	// Raw syscalls: os.File would park a non-blocking read in the poller
	// instead of returning EAGAIN at the end of the buffer.
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Logf("kmsg: %v", err)
		return
	}
	defer unix.Close(fd)
	var lines []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EPIPE) {
			continue // records overwritten while reading
		}
		if err != nil || n <= 0 {
			break
		}
		rec := string(buf[:n])
		if i := strings.IndexByte(rec, ';'); i >= 0 {
			rec = rec[i+1:]
		}
		if strings.Contains(rec, substr) {
			lines = append(lines, strings.TrimSpace(strings.SplitN(rec, "\n", 2)[0]))
		}
	}
	if len(lines) > 25 {
		lines = lines[len(lines)-25:]
	}
	t.Logf("kernel messages about %s (last %d):\n  %s", substr, len(lines), strings.Join(lines, "\n  "))
}

// logSessionInterfaces records what the kernel exposes about host
// sessions of subsystem nqn: configfs entries and debugfs (nvmet debugfs
// exists from Linux 6.9 on).
func logSessionInterfaces(t *testing.T, nqn string) {
	t.Helper()
	dir := filepath.Join(nvmet.DefaultRoot, "subsystems", nqn)
	ents, err := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	t.Logf("configfs %s: %v (%v)", dir, names, err)
	if err := os.MkdirAll("/sys/kernel/debug", 0o755); err == nil {
		_ = unix.Mount("debugfs", "/sys/kernel/debug", "debugfs", 0, "")
	}
	if ents, err := os.ReadDir("/sys/kernel/debug/nvmet"); err != nil {
		t.Logf("debugfs nvmet: %v", err)
	} else {
		for _, e := range ents {
			t.Logf("debugfs nvmet entry: %s", e.Name())
		}
	}
}
