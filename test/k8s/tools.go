package k8s

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store/etcdstore/etcdtest"
	"github.com/nvmirror/nvmirror/test/vm"
)

// EnvRequire makes missing tools a failure instead of a skip; `make
// test-k8s` sets it.
const EnvRequire = "NVMIRROR_REQUIRE_K8S"

// EnvBinDir names the directory holding the Kubernetes binaries explicitly;
// by default it is the one hack/k8s-tools.sh builds into for the current
// helper modules.
const EnvBinDir = "NVMIRROR_K8S_BIN"

// EnvLogDir keeps every process's log there (it is a temporary directory
// removed after the test otherwise); `make test-k8s` sets _output/k8s.
const EnvLogDir = "NVMIRROR_K8S_LOGDIR"

// Tools are the paths of the binaries a control plane runs.
type Tools struct {
	Etcd              string
	APIServer         string
	ControllerManager string
	Kubectl           string
	CSIProvisioner    string
	CSIAttacher       string
	CSIResizer        string
	// CSISnapshotter is the csi-snapshotter sidecar, SnapshotController the
	// cluster's snapshot-controller (both external-snapshotter's).
	CSISnapshotter     string
	SnapshotController string
}

// Unavailable skips the test with msg, or fails it under NVMIRROR_REQUIRE_K8S.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(EnvRequire) != "" {
		t.Fatalf("%s (%s is set, so this is a failure, not a skip)", msg, EnvRequire)
	}
	t.Skip(msg)
}

// FindTools returns the binaries or skips (fails under NVMIRROR_REQUIRE_K8S)
// naming each missing one and how to get it.
func FindTools(t testing.TB) Tools {
	t.Helper()
	dir, err := binDir()
	if err != nil {
		Unavailable(t, "Kubernetes binaries: %v (run `make k8s-tools`)", err)
	}
	tools := Tools{
		Etcd:               etcdtest.Binary(),
		APIServer:          filepath.Join(dir, "kube-apiserver"),
		ControllerManager:  filepath.Join(dir, "kube-controller-manager"),
		Kubectl:            filepath.Join(dir, "kubectl"),
		CSIProvisioner:     filepath.Join(dir, "csi-provisioner"),
		CSIAttacher:        filepath.Join(dir, "csi-attacher"),
		CSIResizer:         filepath.Join(dir, "csi-resizer"),
		CSISnapshotter:     filepath.Join(dir, "csi-snapshotter"),
		SnapshotController: filepath.Join(dir, "snapshot-controller"),
	}
	var missing, built []string
	if tools.Etcd == "" {
		missing = append(missing, "etcd (apt-get install etcd-server, or `make deps`)")
	}
	for _, p := range []string{tools.APIServer, tools.ControllerManager, tools.Kubectl, tools.CSIProvisioner, tools.CSIAttacher, tools.CSIResizer, tools.CSISnapshotter, tools.SnapshotController} {
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			built = append(built, filepath.Base(p))
		}
	}
	if len(built) > 0 {
		missing = append(missing, fmt.Sprintf("%s in %s (run `make k8s-tools`)", strings.Join(built, ", "), dir))
	}
	if len(missing) > 0 {
		Unavailable(t, "the Kubernetes e2e needs %s", strings.Join(missing, "; "))
	}
	return tools
}

// NodeTools are the paths of the binaries a real node and Kubernetes' e2e
// suite need, built by hack/k8s-tools.sh into the same directory as Tools
// (runc is Debian's and not among them).
type NodeTools struct {
	Kubelet       string
	KubeScheduler string
	// Agnhost is Kubernetes' test utility (test/images/agnhost), the
	// binary of the agnhost test image.
	Agnhost string
	// E2ETest is Kubernetes' e2e test binary (`go test -c
	// k8s.io/kubernetes/test/e2e`): RunE2ESuite runs its external storage
	// suite.
	E2ETest string
	// Containerd, ContainerdShim (containerd-shim-runc-v2) and Ctr are
	// containerd v2's.
	Containerd     string
	ContainerdShim string
	Ctr            string
}

// FindNodeTools returns the node binaries, or skips (fails under
// NVMIRROR_REQUIRE_K8S) naming each missing one, as FindTools does for the
// control plane's; a test that needs both calls both.
func FindNodeTools(t testing.TB) NodeTools {
	t.Helper()
	dir, err := binDir()
	if err != nil {
		Unavailable(t, "Kubernetes binaries: %v (run `make k8s-tools`)", err)
	}
	tools := NodeTools{
		Kubelet:        filepath.Join(dir, "kubelet"),
		KubeScheduler:  filepath.Join(dir, "kube-scheduler"),
		Agnhost:        filepath.Join(dir, "agnhost"),
		E2ETest:        filepath.Join(dir, "e2e.test"),
		Containerd:     filepath.Join(dir, "containerd"),
		ContainerdShim: filepath.Join(dir, "containerd-shim-runc-v2"),
		Ctr:            filepath.Join(dir, "ctr"),
	}
	var built []string
	for _, p := range []string{tools.Kubelet, tools.KubeScheduler, tools.Agnhost, tools.E2ETest, tools.Containerd, tools.ContainerdShim, tools.Ctr} {
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			built = append(built, filepath.Base(p))
		}
	}
	if len(built) > 0 {
		Unavailable(t, "the node e2e needs %s in %s (run `make k8s-tools`)", strings.Join(built, ", "), dir)
	}
	return tools
}

// binDir is $NVMIRROR_K8S_BIN, or the directory hack/k8s-tools.sh builds
// into for the helper modules as they are now (it only hashes them here,
// it builds nothing), so stale binaries of other versions are never used.
func binDir() (string, error) {
	if d := os.Getenv(EnvBinDir); d != "" {
		return d, nil
	}
	repo, err := vm.RepoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("bash", filepath.Join(repo, "hack", "k8s-tools.sh"), "--print-bin-dir")
	cmd.Dir = repo
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = strings.TrimSpace(string(ee.Stderr))
		}
		return "", fmt.Errorf("hack/k8s-tools.sh --print-bin-dir: %v %s", err, msg)
	}
	return strings.TrimSpace(string(out)), nil
}
