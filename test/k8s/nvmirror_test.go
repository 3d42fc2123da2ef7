package k8s

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/rpcauth/rpcauthtest"
)

// This file starts nvmirror's own processes for the e2e: the binaries built
// from this tree, with the flags the deployment uses.

// nvmirrorBins are the nvmirror commands built for the test.
type nvmirrorBins struct {
	Dir                   string
	Provisioner, CSI, Ctl string
	KubectlPlugin         string
}

// buildNvmirror builds the host's commands (the VM builds its own agent).
func buildNvmirror(t *testing.T, repo, dir string) nvmirrorBins {
	t.Helper()
	b := nvmirrorBins{Dir: filepath.Join(dir, "bin")}
	b.Provisioner = filepath.Join(b.Dir, "nvmirror-provisioner")
	b.CSI = filepath.Join(b.Dir, "nvmirror-csi")
	b.Ctl = filepath.Join(b.Dir, "nvmirrorctl")
	b.KubectlPlugin = filepath.Join(b.Dir, "kubectl-nvmirror")
	cmd := exec.Command("go", "build", "-trimpath", "-o", b.Dir+"/",
		"./cmd/nvmirror-provisioner", "./cmd/nvmirror-csi", "./cmd/nvmirrorctl", "./cmd/kubectl-nvmirror")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build nvmirror commands: %v\n%s", err, out)
	}
	return b
}

// credentials are the test's PKI, as deploy/gen-secrets.sh makes it: one
// CA, and a certificate of its own for every process (Subject CN its name,
// O its role). No bearer token: they are optional, and the e2e proves the
// certificates alone carry the identity.
type credentials struct {
	Dir, CA string
	// Provisioner serves the provisioner API; ProvisionerClient is the
	// provisioner as the agents' client.
	Provisioner, ProvisionerClient certPair
	Controller, Admin              certPair
	// ComputeNodes are node plugins' certificates by Kubernetes node name.
	ComputeNodes map[string]certPair
	// StorageNodes are the agents' server certificates by storage node
	// name (each names its node: the provisioner checks it).
	StorageNodes map[string]certPair
}

// certPair is a certificate and its key, as files.
type certPair struct{ Cert, Key string }

func newCredentials(t *testing.T, dir string, computeNodes []string, storageNodes int) credentials {
	t.Helper()
	c := credentials{Dir: filepath.Join(dir, "tls"), ComputeNodes: map[string]certPair{}, StorageNodes: map[string]certPair{}}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ca := rpcauthtest.NewCA(t)
	c.CA = ca.WriteCA(t, c.Dir)
	write := func(name string, cert rpcauthtest.Cert) certPair {
		crt, key := cert.WriteNamed(t, c.Dir, name)
		return certPair{crt, key}
	}
	// The names deploy/gen-secrets.sh gives it: the Service's, which the
	// CSI driver dials in a cluster.
	c.Provisioner = write("provisioner", ca.Server(t, "nvmirror-provisioner", "nvmirror-provisioner",
		"nvmirror-provisioner.nvmirror", "nvmirror-provisioner.nvmirror.svc", "nvmirror-provisioner.nvmirror.svc.cluster.local"))
	c.ProvisionerClient = write("provisioner-client", ca.Client(t, "nvmirror-provisioner", "provisioner"))
	c.Controller = write("controller", ca.Client(t, "nvmirror-controller", "controller"))
	c.Admin = write("admin", ca.Client(t, "e2e-admin", "admin"))
	for _, n := range computeNodes {
		c.ComputeNodes[n] = write("node-"+n, ca.Client(t, n, "node"))
	}
	for i := 1; i <= storageNodes; i++ {
		name := fmt.Sprintf("sn%d", i)
		c.StorageNodes[name] = write("storage-"+name, ca.Issue(t, rpcauthtest.Leaf{Name: name, Roles: []string{"storage-node"}, Hosts: []string{name}, Server: true}))
	}
	return c
}

// dial connects to addr with the pair's certificate, expecting serverName
// in the server's ("": the address).
func (c credentials) dial(t *testing.T, addr, serverName string, p certPair) *grpc.ClientConn {
	t.Helper()
	conn, err := rpcauth.Dial(addr, rpcauth.ClientConfig{CAFile: c.CA, ServerName: serverName, CertFile: p.Cert, KeyFile: p.Key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// storageNode is one nvmirror-target as the host sees it.
type storageNode struct {
	Name string
	Zone string
	Rack string
	// API is the agent's gRPC address reachable from the host
	// (127.0.0.1:<forwarded port>).
	API string
}

// provisionerProc is nvmirror-provisioner on the host with a bolt store.
type provisionerProc struct {
	*Process
	Addr  string
	creds credentials
}

func startProvisioner(t *testing.T, e *Env, bins nvmirrorBins, creds credentials, nodes []storageNode, extraArgs ...string) *provisionerProc {
	t.Helper()
	p := &provisionerProc{Addr: fmt.Sprintf("127.0.0.1:%d", FreePort(t)), creds: creds}
	dir := filepath.Join(e.Dir, "provisioner")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--listen=" + p.Addr,
		"--tls-cert-file=" + creds.Provisioner.Cert, "--tls-key-file=" + creds.Provisioner.Key, "--tls-client-ca-file=" + creds.CA,
		"--store=bolt", "--bolt-path=" + filepath.Join(dir, "registry.db"),
		"--syslog-queue-dir=" + dir,
		"--agent-ca-file=" + creds.CA,
		"--agent-cert-file=" + creds.ProvisionerClient.Cert, "--agent-key-file=" + creds.ProvisionerClient.Key,
		// No --agent-server-name: every agent is reached at 127.0.0.1 (a
		// forwarded port) and must present its own storage node's
		// certificate.
		"-v=3",
	}
	for _, n := range nodes {
		args = append(args, "--storage-node="+n.Name+"="+n.API)
	}
	args = append(args, extraArgs...)
	p.Process = e.Start("nvmirror-provisioner", bins.Provisioner, args...)
	e.WaitListening(30*time.Second, "tcp", p.Addr)
	return p
}

// client dials the provisioner's API with the pair's certificate (the
// administrator's is nvmirrorctl's, a compute node's its node plugin's).
func (p *provisionerProc) client(t *testing.T, as certPair) provisionerapi.ProvisionerClient {
	t.Helper()
	return provisionerapi.NewProvisionerClient(p.creds.dial(t, p.Addr, "", as))
}

// nvmirrorctl runs the admin CLI against the provisioner.
func (p *provisionerProc) nvmirrorctl(t *testing.T, bins nvmirrorBins, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	full := append([]string{"--provisioner=" + p.Addr, "--ca-file=" + p.creds.CA,
		"--cert-file=" + p.creds.Admin.Cert, "--key-file=" + p.creds.Admin.Key}, args...)
	out, err := exec.CommandContext(ctx, bins.Ctl, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("nvmirrorctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// volumesJSON is `nvmirrorctl volumes -o json`, decoded as the API message
// it prints.
func (p *provisionerProc) volumesJSON(t *testing.T, bins nvmirrorBins) []*provisionerapi.Volume {
	t.Helper()
	out := p.nvmirrorctl(t, bins, "-o", "json", "volumes")
	var resp provisionerapi.ListVolumesResponse
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("nvmirrorctl volumes -o json: %v\n%s", err, out)
	}
	return resp.GetVolumes()
}

// startCSIController runs nvmirror-csi in controller mode on a unix socket,
// as the controller Deployment does beside the sidecars.
func startCSIController(t *testing.T, e *Env, bins nvmirrorBins, p *provisionerProc) string {
	t.Helper()
	socket := filepath.Join(e.Dir, "csi", "csi.sock")
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		t.Fatal(err)
	}
	e.Start("nvmirror-csi", bins.CSI,
		"--mode=controller",
		"--endpoint=unix://"+socket,
		"--provisioner-address="+p.Addr,
		"--provisioner-ca-file="+p.creds.CA,
		"--provisioner-cert-file="+p.creds.Controller.Cert,
		"--provisioner-key-file="+p.creds.Controller.Key,
		"-v=5")
	e.WaitListening(30*time.Second, "unix", socket)
	return socket
}

// agents are gRPC clients of every storage node's agent, by node name,
// holding the provisioner's client certificate (the only role agents
// serve) and verifying each agent's certificate names its node.
type agents map[string]agentapi.TargetClient

func dialAgents(t *testing.T, nodes []storageNode, creds credentials) agents {
	t.Helper()
	a := agents{}
	for _, n := range nodes {
		a[n.Name] = agentapi.NewTargetClient(creds.dial(t, n.API, n.Name, creds.ProvisionerClient))
	}
	return a
}

// replicasOf lists the volume's replicas on every agent, by node name.
func (a agents) replicasOf(volumeID string) (map[string][]*agentapi.Replica, error) {
	out := map[string][]*agentapi.Replica{}
	for name, c := range a {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := c.ListReplicas(ctx, &agentapi.ListReplicasRequest{VolumeId: volumeID})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("ListReplicas on %s: %w", name, err)
		}
		if len(resp.GetReplicas()) > 0 {
			out[name] = resp.GetReplicas()
		}
	}
	return out, nil
}

// getVolume asks the provisioner for a volume; a NotFound is (nil, nil).
func getVolume(c provisionerapi.ProvisionerClient, id string) (*provisionerapi.Volume, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.GetVolume(ctx, &provisionerapi.GetVolumeRequest{VolumeId: id})
	if status.Code(err) == codes.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return resp.GetVolume(), nil
}

// newHostNQN returns a uuid host NQN as nvme-cli generates them.
func newHostNQN(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("nqn.2014-08.org.nvmexpress:uuid:%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
