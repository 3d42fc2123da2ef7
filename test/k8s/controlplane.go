package k8s

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// ControlPlane is etcd, kube-apiserver and kube-controller-manager on
// 127.0.0.1, and a kubeconfig with a cluster-admin token.
type ControlPlane struct {
	*Env
	Tools      Tools
	Server     string // https://127.0.0.1:PORT
	CAFile     string // the API server's self-signed chain
	Kubeconfig string
	Token      string
	// Ready is how long the API server took from etcd's start to
	// /readyz; set by WaitReady.
	Ready time.Duration

	launched   time.Time
	readyc     chan struct{} // closed when /readyz first answered 200
	lastReadyz atomic.Value  // string: the last /readyz failure

	Etcd, APIServer, ControllerManager *Process
	// Scheduler runs when the cluster has nodes (StartScheduler).
	Scheduler *Process

	// AllControllers, set before WaitReady, runs every controller a
	// cluster with real nodes needs (kube-controller-manager's defaults:
	// workloads, nodes' lifecycle, attach/detach, garbage collection, the
	// root CA published to every namespace...) instead of the few a
	// cluster without kubelets needs.
	AllControllers bool
	saKey          string
}

// controllers are the kube-controller-manager controllers a CSI volume's
// life needs without a kubelet: the PV controller marks claims for the
// external provisioner and binds claims to the PVs it creates (and deletes
// released PVs' volumes through it); the expander hands CSI resizes to the
// external resizer; the protection controllers remove the finalizers that
// keep a claim or PV in use from being deleted. The service account
// controller gives each namespace its "default" ServiceAccount, without
// which the API server's admission refuses every pod.
var controllers = []string{
	"persistentvolume-binder-controller",
	"persistentvolume-expander-controller",
	"persistentvolumeclaim-protection-controller",
	"persistentvolume-protection-controller",
	"serviceaccount-controller",
}

// StartControlPlane starts the control plane and waits until the API server
// is ready and the controller manager started.
func StartControlPlane(e *Env, tools Tools) *ControlPlane {
	e.t.Helper()
	cp := LaunchControlPlane(e, tools)
	cp.WaitReady()
	return cp
}

// LaunchControlPlane starts etcd and the API server and returns without
// waiting for the API server, so that a test can do something slow (boot a
// VM) meanwhile; WaitReady completes the start.
func LaunchControlPlane(e *Env, tools Tools) *ControlPlane {
	t := e.t
	t.Helper()
	cp := &ControlPlane{Env: e, Tools: tools, launched: time.Now(), readyc: make(chan struct{})}

	// etcd on tmpfs when there is one: Debian's etcd 3.4 has no
	// --unsafe-no-fsync, and the API server's writes wait for its fsyncs.
	etcdData := filepath.Join(e.Dir, "etcd")
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "nvmirror-k8s-etcd-"); err == nil {
			etcdData = d
			t.Cleanup(func() { os.RemoveAll(d) })
		}
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
	cp.Etcd = e.Start("etcd", tools.Etcd,
		"--name=e2e", "--data-dir="+etcdData,
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=e2e="+peer, "--initial-cluster-state=new",
		"--logger=zap", "--log-level=warn")
	e.WaitFor(30*time.Second, "etcd /health", func() (bool, string) {
		resp, err := http.Get(client + "/health")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode == 200 && strings.Contains(b.String(), `"true"`), fmt.Sprintf("%d %s", resp.StatusCode, b.String())
	})

	dir := filepath.Join(e.Dir, "apiserver")
	certDir := filepath.Join(dir, "certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// The service-account key: the API server refuses to start without one
	// (it signs and verifies tokens with it), even though nothing here uses
	// service-account tokens.
	saKey := filepath.Join(dir, "sa.key")
	cp.saKey = saKey
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	cp.Token = randomHex(t, 16)
	tokens := filepath.Join(dir, "tokens.csv")
	writeFile(t, tokens, []byte(cp.Token+",admin,admin,system:masters\n"))

	port := FreePort(t)
	cp.Server = fmt.Sprintf("https://127.0.0.1:%d", port)
	// The API server writes a self-signed chain for its advertise address
	// into --cert-dir (apiserver.crt: the serving certificate, then its CA).
	cp.CAFile = filepath.Join(certDir, "apiserver.crt")
	cp.APIServer = e.Start("kube-apiserver", tools.APIServer,
		"--etcd-servers="+client,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir="+certDir,
		"--token-auth-file="+tokens,
		"--authorization-mode=RBAC",
		"--service-account-key-file="+saKey,
		"--service-account-signing-key-file="+saKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-cluster-ip-range=10.0.0.0/24",
		// No kubernetes Service endpoints to maintain: there is no real
		// cluster network behind this API server.
		"--endpoint-reconciler-type=none",
		// As every real cluster that runs privileged pods (kubeadm sets it
		// too): nvmirror's node plugin and agent are privileged, and the
		// default refuses them.
		"--allow-privileged=true",
		"-v=1")

	cp.Kubeconfig = filepath.Join(dir, "kubeconfig")
	writeFile(t, cp.Kubeconfig, []byte(tokenKubeconfig(cp.Server, cp.CAFile, "", cp.Token)))

	// Poll /readyz from now on, so that Ready measures the API server's
	// start even when WaitReady is called late.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		for ctx.Err() == nil {
			if ok, why := cp.readyz(); ok {
				cp.Ready = time.Since(cp.launched)
				close(cp.readyc)
				return
			} else {
				cp.lastReadyz.Store(why)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return cp
}

// WaitReady waits for the API server's /readyz, then starts the controller
// manager.
func (cp *ControlPlane) WaitReady() {
	t := cp.t
	t.Helper()
	cp.WaitFor(90*time.Second, "kube-apiserver /readyz", func() (bool, string) {
		select {
		case <-cp.readyc:
			return true, ""
		default:
			why, _ := cp.lastReadyz.Load().(string)
			return false, why
		}
	})
	which := []string{"--controllers=" + strings.Join(controllers, ",")}
	if cp.AllControllers {
		which = []string{
			"--controllers=*",
			// Pods' service account volumes carry the API server's CA
			// (the kube-root-ca.crt ConfigMap of every namespace).
			"--root-ca-file=" + cp.CAFile,
			"--service-account-private-key-file=" + cp.saKey,
			// A node that misses a status update is not-ready after
			// this; the default (40 s) only slows a test down.
			"--node-monitor-grace-period=20s",
		}
	}
	cp.ControllerManager = cp.Start("kube-controller-manager", cp.Tools.ControllerManager, append(which,
		"--kubeconfig="+cp.Kubeconfig,
		"--leader-elect=false",
		// No serving: nothing scrapes it, and its health is visible in what
		// it does (claims get bound).
		"--secure-port=0",
		// The binder reacts to events; its periodic resync is only the
		// retry of anything that failed, 15 s by default.
		"--pvclaimbinder-sync-period=2s",
		"-v=2")...)
}

// StartScheduler runs kube-scheduler, for a cluster with nodes.
func (cp *ControlPlane) StartScheduler(bin string) {
	cp.t.Helper()
	cp.Scheduler = cp.Start("kube-scheduler", bin,
		"--kubeconfig="+cp.Kubeconfig,
		// The same kubeconfig for its delegated authentication and
		// authorization lookups, which it would otherwise look for in
		// the cluster.
		"--authentication-kubeconfig="+cp.Kubeconfig,
		"--authorization-kubeconfig="+cp.Kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"-v=2")
}

// readyz asks the API server whether it is ready, trusting only the chain
// it wrote into --cert-dir.
func (cp *ControlPlane) readyz() (bool, string) {
	ca, err := os.ReadFile(cp.CAFile)
	if err != nil {
		return false, "no serving certificate yet: " + err.Error()
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return false, "serving certificate file is not PEM (yet)"
	}
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest("GET", cp.Server+"/readyz", nil)
	req.Header.Set("Authorization", "Bearer "+cp.Token)
	resp, err := c.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode == 200, fmt.Sprintf("%d %s", resp.StatusCode, lastLines(b.String(), 5))
}

// kubectlTimeout bounds one kubectl call; the API server answers in
// milliseconds, so this only guards against a hung process.
const kubectlTimeout = 60 * time.Second

// KubectlIn runs kubectl against the control plane with stdin (may be empty)
// and returns its stdout; the error carries stderr.
func (cp *ControlPlane) KubectlIn(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), kubectlTimeout)
	defer cancel()
	// Discovery is cached per test, not in $HOME/.kube: every test's API
	// server is a new one.
	cmd := exec.CommandContext(ctx, cp.Tools.Kubectl, append([]string{
		"--kubeconfig=" + cp.Kubeconfig, "--cache-dir=" + filepath.Join(cp.Dir, "kubectl-cache")}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Kubectl is KubectlIn without stdin.
func (cp *ControlPlane) Kubectl(args ...string) (string, error) {
	return cp.KubectlIn("", args...)
}

// MustKubectl fails the test when kubectl fails.
func (cp *ControlPlane) MustKubectl(args ...string) string {
	cp.t.Helper()
	out, err := cp.Kubectl(args...)
	if err != nil {
		cp.t.Fatal(err)
	}
	return out
}

// Apply applies manifests (YAML) for real.
func (cp *ControlPlane) Apply(manifests string) string {
	cp.t.Helper()
	out, err := cp.KubectlIn(manifests, "apply", "-f", "-")
	if err != nil {
		cp.t.Fatalf("%v\nmanifests:\n%s", err, manifests)
	}
	return out
}

// JSONPath returns a field of an object (`kubectl get KIND NAME -o
// jsonpath=PATH`); namespace "" is the cluster scope or kubectl's default
// namespace.
func (cp *ControlPlane) JSONPath(namespace, kind, name, path string) (string, error) {
	args := []string{"get", kind, name, "-o", "jsonpath=" + path}
	if namespace != "" {
		args = append(args, "-n", namespace)
	}
	return cp.Kubectl(args...)
}

// WaitJSONPath waits until an object's field satisfies ok and returns the
// value and the time the wait took.
func (cp *ControlPlane) WaitJSONPath(timeout time.Duration, namespace, kind, name, path, what string, ok func(string) bool) (string, time.Duration) {
	cp.t.Helper()
	var val string
	took := cp.WaitFor(timeout, what, func() (bool, string) {
		v, err := cp.JSONPath(namespace, kind, name, path)
		if err != nil {
			return false, err.Error()
		}
		val = v
		return ok(v), fmt.Sprintf("%s %s %s = %q", kind, name, path, v)
	})
	return val, took
}

// WaitGone waits until `kubectl get KIND NAME` says NotFound.
func (cp *ControlPlane) WaitGone(timeout time.Duration, namespace, kind, name string) time.Duration {
	cp.t.Helper()
	return cp.WaitFor(timeout, kind+" "+name+" to be deleted", func() (bool, string) {
		args := []string{"get", kind, name, "-o", "name", "--ignore-not-found"}
		if namespace != "" {
			args = append(args, "-n", namespace)
		}
		out, err := cp.Kubectl(args...)
		if err != nil {
			return false, err.Error()
		}
		return strings.TrimSpace(out) == "", "still there: " + strings.TrimSpace(out)
	})
}

// CSISidecars are the external-provisioner, -attacher and -resizer.
type CSISidecars struct {
	Provisioner, Attacher, Resizer *Process
}

// SidecarTimeout is each sidecar's default deadline for one CSI call.
// Creating, publishing or expanding a volume touches every replica's
// storage node, which under qemu without KVM takes seconds, not the
// milliseconds the sidecars' 10-15 s defaults assume of production.
const SidecarTimeout = 2 * time.Minute

// SidecarOptions adapt the sidecars to a deployment under test.
type SidecarOptions struct {
	// Kubeconfig the sidecars use; the admin's when empty.
	Kubeconfig string
	// Args by sidecar name ("csi-provisioner", "csi-attacher",
	// "csi-resizer") replace the defaults (no leader election,
	// SidecarTimeout): e.g. the args of a Deployment's containers.
	// --csi-address and --kubeconfig are always the harness's.
	Args map[string][]string
}

// StartCSISidecars runs the three controller sidecars against a CSI
// driver's socket.
func (cp *ControlPlane) StartCSISidecars(socket string, o SidecarOptions) CSISidecars {
	cp.t.Helper()
	if o.Kubeconfig == "" {
		o.Kubeconfig = cp.Kubeconfig
	}
	start := func(name, bin string) *Process {
		args, ok := o.Args[name]
		if !ok {
			args = []string{
				// Leader election would only add a Lease round trip
				// before they start working.
				"--leader-election=false",
				"--timeout=" + SidecarTimeout.String(),
				"-v=5",
			}
		}
		var kept []string
		for _, a := range args {
			flag, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if flag != "csi-address" && flag != "kubeconfig" {
				kept = append(kept, a)
			}
		}
		return cp.Start(name, bin, append([]string{"--csi-address=" + socket, "--kubeconfig=" + o.Kubeconfig}, kept...)...)
	}
	return CSISidecars{
		Provisioner: start("csi-provisioner", cp.Tools.CSIProvisioner),
		Attacher:    start("csi-attacher", cp.Tools.CSIAttacher),
		Resizer:     start("csi-resizer", cp.Tools.CSIResizer),
	}
}

// KubeconfigAs writes a kubeconfig that acts as user (with groups) through
// impersonation by the admin: the API server authorizes each request as
// that user, so a component given it has exactly the permissions RBAC
// grants the user. For a ServiceAccount the user is
// "system:serviceaccount:NAMESPACE:NAME".
func (cp *ControlPlane) KubeconfigAs(user string, groups ...string) string {
	cp.t.Helper()
	path := filepath.Join(cp.Dir, "apiserver", "kubeconfig-"+strings.NewReplacer(":", "_", "/", "_").Replace(user))
	var asGroups strings.Builder
	for _, g := range groups {
		fmt.Fprintf(&asGroups, "    - %q\n", g)
	}
	groupsField := ""
	if len(groups) > 0 {
		groupsField = "    as-groups:\n" + asGroups.String()
	}
	writeFile(cp.t, path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: impersonated
  user:
    token: %s
    as: %q
%scontexts:
- name: e2e
  context:
    cluster: e2e
    user: impersonated
current-context: e2e
`, cp.Server, cp.CAFile, cp.Token, user, groupsField)))
	return path
}

// ServiceAccountKubeconfig is KubeconfigAs the ServiceAccount ns/name, with
// the groups the API server gives service accounts.
func (cp *ControlPlane) ServiceAccountKubeconfig(ns, name string) string {
	cp.t.Helper()
	return cp.KubeconfigAs("system:serviceaccount:"+ns+":"+name,
		"system:serviceaccounts", "system:serviceaccounts:"+ns, "system:authenticated")
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// tokenKubeconfig is a kubeconfig for the API server at server (https://
// address) with a bearer token, its certificate checked against caFile and,
// when tlsServerName is not empty, for that name instead of the address's.
func tokenKubeconfig(server, caFile, tlsServerName, token string) string {
	serverName := ""
	if tlsServerName != "" {
		serverName = "\n    tls-server-name: " + tlsServerName
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    certificate-authority: %s%s
users:
- name: admin
  user:
    token: %s
contexts:
- name: e2e
  context: {cluster: e2e, user: admin}
current-context: e2e
`, server, caFile, serverName, token)
}
