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

// credentials are the TLS certificate (its own CA) and bearer token that
// every nvmirror API in the test uses: agents and provisioner alike.
type credentials struct {
	Dir, Cert, Key, Token string
}

func newCredentials(t *testing.T, dir string) credentials {
	t.Helper()
	c := credentials{Dir: filepath.Join(dir, "tls")}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// 127.0.0.1 is in every certificate NewCert makes: the host reaches the
	// agents in the VM through ports forwarded to 127.0.0.1, so that is the
	// name the provisioner verifies for them too.
	c.Cert, c.Key = rpcauthtest.NewCert(t).WriteFiles(t, c.Dir)
	c.Token = filepath.Join(c.Dir, "token")
	writeFile(t, c.Token, []byte(randomHex(t, 16)+"\n"))
	return c
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
		"--tls-cert-file=" + creds.Cert, "--tls-key-file=" + creds.Key, "--token-file=" + creds.Token,
		"--store=bolt", "--bolt-path=" + filepath.Join(dir, "registry.db"),
		"--syslog-queue-dir=" + dir,
		"--agent-ca-file=" + creds.Cert, "--agent-token-file=" + creds.Token,
		// Every agent is reached at 127.0.0.1 (a forwarded port), which
		// their certificate carries; said explicitly, as a deployment whose
		// agent addresses and certificate names differ must.
		"--agent-server-name=127.0.0.1",
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

// client dials the provisioner's API as nvmirrorctl does.
func (p *provisionerProc) client(t *testing.T) provisionerapi.ProvisionerClient {
	t.Helper()
	conn, err := rpcauth.Dial(p.Addr, rpcauth.ClientConfig{CAFile: p.creds.Cert, TokenFile: p.creds.Token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return provisionerapi.NewProvisionerClient(conn)
}

// nvmirrorctl runs the admin CLI against the provisioner.
func (p *provisionerProc) nvmirrorctl(t *testing.T, bins nvmirrorBins, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	full := append([]string{"--provisioner=" + p.Addr, "--ca-file=" + p.creds.Cert, "--token-file=" + p.creds.Token}, args...)
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
		"--provisioner-ca-file="+p.creds.Cert,
		"--provisioner-token-file="+p.creds.Token,
		"-v=5")
	e.WaitListening(30*time.Second, "unix", socket)
	return socket
}

// agents are gRPC clients of every storage node's agent, by node name.
type agents map[string]agentapi.TargetClient

func dialAgents(t *testing.T, nodes []storageNode, creds credentials) agents {
	t.Helper()
	a := agents{}
	for _, n := range nodes {
		conn, err := rpcauth.Dial(n.API, rpcauth.ClientConfig{CAFile: creds.Cert, TokenFile: creds.Token})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		a[n.Name] = agentapi.NewTargetClient(conn)
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
