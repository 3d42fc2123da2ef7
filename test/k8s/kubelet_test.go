package k8s

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/test/vm"
)

// TestKubeletNode runs nvmirror the way users run it: its images, built
// from the Dockerfile, on a real kubelet node (containerd, runc, CNI in a
// VM on the real kernel), deployed from deploy/ with a site overlay, and a
// pod that uses its volume. One boot serves the whole test:
//
//  1. the node registers and turns Ready; nvmirror's provisioner, CSI
//     controller (with the real sidecars) and node plugin (with the
//     registrar stand-in) run as pods and the driver registers with kubelet;
//  2. the workloads (workload_test.go): pods with claims of the example
//     3-replica class, provisioned, attached, staged and published by
//     kubelet's real calls; one writes on through a storage node's loss,
//     the volume degraded and healed; one uses a block volume raw; both
//     volumes' data read back by new pods after restaging; the pods'
//     deletion unpublishes and unstages, the volumes detach, and the
//     claims' deletion removes every replica;
//  3. with NVMIRROR_E2E_SUITE set (focused in `make test`, full in
//     `make test-k8s-e2e`), Kubernetes'
//     external storage e2e suite against the same cluster.
func TestKubeletNode(t *testing.T) {
	tools := FindTools(t)
	nt := FindNodeTools(t)
	images := findImages(t)
	repo, err := vm.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	e := NewEnv(t)
	cp := LaunchControlPlane(e, tools)
	cp.AllControllers = true
	cp.WaitReady()
	cp.StartScheduler(nt.KubeScheduler)
	cp.InstallSnapshotCRDs(repo)
	cp.StartSnapshotController(repo)

	creds := newCredentials(t, e.Dir, []string{KubeletNodeName}, storageNodeCount)
	agentsScript, files, forward := storageNodesGuest(t, creds)
	files["/etc/nvmirror/node-tls/tls.crt"] = creds.ComputeNodes[KubeletNodeName].Cert
	files["/etc/nvmirror/node-tls/tls.key"] = creds.ComputeNodes[KubeletNodeName].Key
	extra := agentsScript + fmt.Sprintf("mkdir -p /node%[1]s && chown 65532:65532 /node%[1]s\n", provisionerDataGuestDir)
	node := cp.StartKubeletNode(nt, NodeConfig{
		Images: images, Extra: extra, Files: files, Forward: forward,
		// It runs on the host, as the control plane does.
		SkipImages: []string{"registry.k8s.io/sig-storage/snapshot-controller:v8.7.0"},
	})
	storage := storageNodesOf(node.Svc)
	siteNodes := map[string]string{}
	for i, n := range storage {
		// The provisioner pod reaches the agents at the node's address.
		siteNodes[n.Name] = fmt.Sprintf("%s:%d", vm.GuestIP, agentAPIPortBase+i+1)
	}
	installSite(t, cp, repo, creds, siteNodes)
	deployed := waitNvmirror(t, cp, 10*time.Minute)
	t.Logf("nvmirror deployed and registered with kubelet in %v", deployed.Round(100*time.Millisecond))
	cp.Apply(mustRead(t, filepath.Join(repo, "deploy", "examples", "storageclass-3-replicas.yaml")))

	ag := dialAgents(t, storage, creds)
	// The test's hands on the node, and what it reports when it fails.
	cp.Apply(adminPod)
	cp.WaitJSONPath(5*time.Minute, "default", "pod", "node-admin", "{.status.phase}", "admin pod Running", func(s string) bool { return s == "Running" })
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, args := range [][]string{
			{"exec", "-n", "default", "node-admin", "--", "sh", "-c", "cat /proc/mdstat; dmesg | tail -n 80"},
			{"get", "pods", "-A", "-o", "wide"},
			{"logs", "-n", "nvmirror", "daemonset/nvmirror-node", "-c", "nvmirror-csi", "--tail=80"},
			{"logs", "-n", "nvmirror", "deployment/nvmirror-controller", "-c", "nvmirror-csi", "--tail=40"},
			{"logs", "-n", "nvmirror", "deployment/nvmirror-provisioner", "--tail=60"},
		} {
			out, err := cp.Kubectl(args...)
			t.Logf("--- kubectl %s (%v) ---\n%s", strings.Join(args, " "), err, out)
		}
	})
	// Phases in order on the one cluster (the Env's waits fail the whole
	// test, so they are not subtests).
	workloads(t, e, cp, ag)
	if os.Getenv(EnvE2ESuite) != "" {
		externalStorageSuite(t, e, cp, nt, repo)
	}
}

// EnvE2ESuite set to "full" runs every spec of the external storage suite
// that applies to nvmirror (E2EFull*, `make test-k8s-e2e`), to "focused"
// the focused set (E2EFocused*); unset, the suite does not run.
const EnvE2ESuite = "NVMIRROR_E2E_SUITE"

// EnvE2ESuites, with the full suite, runs only the storage test suites it
// names (a regular expression: E2EFullFocusSuites).
const EnvE2ESuites = "NVMIRROR_E2E_SUITES"

// externalStorageSuite runs Kubernetes' external storage e2e suite against
// the cluster with nvmirror's driver definition (testdata/e2e-driver.yaml);
// every chosen spec must pass, and in the focused set none may skip.
func externalStorageSuite(t *testing.T, e *Env, cp *ControlPlane, nt NodeTools, repo string) {
	full := os.Getenv(EnvE2ESuite) == "full"
	opts := E2ESuiteOptions{
		Binary: nt.E2ETest, Kubeconfig: cp.Kubeconfig, Kubectl: cp.Tools.Kubectl, RepoRoot: repo,
		Focus: E2EFocusedFocus, Skip: E2EFocusedSkip, ReportDir: filepath.Join(e.LogDir, "e2e-suite"),
		Timeout: 40 * time.Minute, Verbose: true,
	}
	var rep *E2EReport
	var err error
	if full {
		rep, err = runE2EFull(t, opts, os.Getenv(EnvE2ESuites))
	} else {
		rep, err = runE2EShards(t, opts, E2EFocusedShards)
	}
	if rep != nil {
		t.Logf("external storage suite:\n%s", rep)
	}
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed > 0 || rep.Passed == 0 {
		t.Errorf("external storage suite: %d passed, %d failed", rep.Passed, rep.Failed)
	}
	if !full && rep.Skipped > 0 {
		t.Errorf("external storage suite: %d of the focused specs skipped; each is chosen to run", rep.Skipped)
	}
}

// runE2EFull runs the full set, or the suites of it that suites names
// (EnvE2ESuites), as E2EFullRuns splits it, one run after the other: the
// first's report in opts.ReportDir, the immediate-binding run's in
// opts.ReportDir/immediate-binding; and merges their reports.
func runE2EFull(t *testing.T, opts E2ESuiteOptions, suites string) (*E2EReport, error) {
	runs, err := E2EFullRuns(suites)
	if err != nil {
		t.Fatalf("%s=%q: %v", EnvE2ESuites, suites, err)
	}
	if suites != "" {
		t.Logf("the full set's %s specs only (%s)", suites, EnvE2ESuites)
	}
	var reps []*E2EReport
	var errs []error
	for _, r := range runs {
		o := opts
		o.Focus, o.Skip, o.Timeout = r.Focus, r.Skip, 5*time.Hour
		if r.ImmediateBinding {
			o.ReportDir = filepath.Join(opts.ReportDir, "immediate-binding")
			if o.DriverFile, err = ImmediateBindingDriver(opts.RepoRoot, o.ReportDir); err != nil {
				t.Fatal(err)
			}
			t.Logf("with the StorageClass in Immediate binding mode (E2EImmediateBindingSuites): %s", r.Focus)
		}
		rep, err := RunE2ESuite(t, o)
		if rep != nil {
			reps = append(reps, rep)
		}
		errs = append(errs, err)
	}
	if len(reps) == 0 {
		return nil, errors.Join(errs...)
	}
	return MergeE2EReports(reps...), errors.Join(errs...)
}

// runE2EShards runs e2e.test once per focus of shards, all at once, each
// with its own report directory (shard-N in opts.ReportDir), and merges
// the reports they wrote, with every shard's error.
func runE2EShards(t *testing.T, opts E2ESuiteOptions, shards []string) (*E2EReport, error) {
	reps := make([]*E2EReport, len(shards))
	errs := make([]error, len(shards))
	var wg sync.WaitGroup
	for i, focus := range shards {
		o := opts
		o.Focus = focus
		o.ReportDir = filepath.Join(opts.ReportDir, fmt.Sprintf("shard-%d", i+1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			reps[i], errs[i] = RunE2ESuite(t, o)
		}()
	}
	wg.Wait()
	var got []*E2EReport
	for i, r := range reps {
		if r != nil {
			got = append(got, r)
		}
		if errs[i] != nil {
			errs[i] = fmt.Errorf("shard %d: %w", i+1, errs[i])
		}
	}
	if len(got) == 0 {
		return nil, errors.Join(errs...)
	}
	return MergeE2EReports(got...), errors.Join(errs...)
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// EnvImagesDir names the images directory (hack/images.sh's output)
// explicitly.
const EnvImagesDir = "NVMIRROR_IMAGES_DIR"

// findImages returns the directory of image tars hack/images.sh built for
// this tree, or skips (fails under NVMIRROR_REQUIRE_K8S) without them.
func findImages(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(EnvImagesDir)
	if dir == "" {
		repo, err := vm.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(filepath.Join(repo, "hack", "images.sh"), "--print-dir").Output()
		if err != nil {
			Unavailable(t, "hack/images.sh --print-dir: %v (run `make images`)", err)
		}
		dir = strings.TrimSpace(string(out))
	}
	if _, err := os.Stat(filepath.Join(dir, "complete")); err != nil {
		Unavailable(t, "no complete image build in %s (run `make images`)", dir)
	}
	return dir
}

// adminPod is a privileged pod on the node with the kernel's configfs:
// the test's hands on the node, as an administrator's debug pod would be
// (the storage node agents run on the node itself).
const adminPod = `apiVersion: v1
kind: Pod
metadata:
  name: node-admin
  namespace: default
spec:
  nodeName: ` + KubeletNodeName + `
  hostNetwork: true
  containers:
    - name: sh
      image: ` + busybox + `
      command: ["sh", "-c", "sleep 100000"]
      securityContext: {privileged: true}
      volumeMounts:
        - {name: configfs, mountPath: /cfg}
  volumes:
    - name: configfs
      hostPath: {path: /sys/kernel/config}
`

// waitDetached waits until no VolumeAttachment names the PV.
func waitDetached(e *Env, cp *ControlPlane, pv string) {
	e.WaitFor(5*time.Minute, "volume "+pv+" to detach", func() (bool, string) {
		out, err := cp.Kubectl("get", "volumeattachments", "-o", "jsonpath={.items[*].spec.source.persistentVolumeName}")
		return err == nil && !strings.Contains(out, pv), "attached: " + out
	})
}
