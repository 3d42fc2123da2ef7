package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The kubelet node installs nvmirror as a site does (docs/install.md,
// section 4): an overlay of deploy/base with the site's Secrets, its storage
// nodes and its image tag, applied with kubectl. What the overlay adds
// beyond the documented one is said where it is added.

// siteImageTag is the tag hack/images.sh gives the image it builds from the
// Dockerfile.
const siteImageTag = "dev"

// provisionerDataGuestDir is the host directory of the node that holds the
// provisioner's registry (the static PersistentVolume below).
const provisionerDataGuestDir = "/var/lib/nvmirror/provisioner-data"

// installSite renders and applies the site overlay for creds and the
// storage nodes (name -> address the provisioner pod dials) and returns
// the rendered manifests' directory.
func installSite(t *testing.T, cp *ControlPlane, repo string, creds credentials, storageNodes map[string]string) string {
	t.Helper()
	site := filepath.Join(cp.Dir, "site")
	if err := os.MkdirAll(filepath.Join(site, "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(repo, filepath.Join(site, "nvmirror")); err != nil {
		t.Fatal(err)
	}
	copyTo := func(name, src string) string {
		t.Helper()
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(site, "secrets", name), b)
		return "secrets/" + name
	}
	var nodes strings.Builder
	for i := 1; i <= len(storageNodes); i++ {
		name := fmt.Sprintf("sn%d", i)
		fmt.Fprintf(&nodes, "%s=%s\n", name, storageNodes[name])
	}
	writeFile(t, filepath.Join(site, "storage-nodes.txt"), []byte(nodes.String()))
	tlsSecret := func(name string, p certPair) string {
		return fmt.Sprintf(`  - name: %s
    behavior: replace
    type: kubernetes.io/tls
    files:
      - tls.crt=%s
      - tls.key=%s
`, name, copyTo(name+".crt", p.Cert), copyTo(name+".key", p.Key))
	}
	kustomization := `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: nvmirror
resources:
  - nvmirror/deploy/base
  # The registry's volume: deploy/ claims one from the cluster's default
  # StorageClass, which this one-node cluster has not; a site without one
  # makes a PersistentVolume for it the same way.
  - provisioner-pv.yaml
images:
  - name: ghcr.io/nvmirror/nvmirror
    newTag: ` + siteImageTag + `
configMapGenerator:
  - name: nvmirror-storage-nodes
    behavior: replace
    files:
      - storage-nodes=storage-nodes.txt
secretGenerator:
  - name: nvmirror-ca
    behavior: replace
    files:
      - ca.crt=` + copyTo("ca.crt", creds.CA) + `
` + tlsSecret("nvmirror-provisioner-tls", creds.Provisioner) +
		tlsSecret("nvmirror-provisioner-client-tls", creds.ProvisionerClient) +
		tlsSecret("nvmirror-controller-tls", creds.Controller) +
		tlsSecret("nvmirror-admin-tls", creds.Admin) + `patches:
  # One node: one controller (deploy/ runs two, preferably on two nodes).
  - target: {kind: Deployment, name: nvmirror-controller}
    patch: |-
      - op: replace
        path: /spec/replicas
        value: 1
      # The sidecars' leader election with room for an emulated node: the
      # upstream 15 s lease and 10 s renewal deadline lost the lease (and
      # the sidecar exited) whenever the busy VM answered late. Containers
      # 1-4 are csi-provisioner, -attacher, -resizer and -snapshotter
      # (waitNvmirror fails if one of them does not start).
      - op: add
        path: /spec/template/spec/containers/1/args/-
        value: --leader-election-lease-duration=60s
      - op: add
        path: /spec/template/spec/containers/1/args/-
        value: --leader-election-renew-deadline=45s
      - op: add
        path: /spec/template/spec/containers/1/args/-
        value: --leader-election-retry-period=10s
      - op: add
        path: /spec/template/spec/containers/2/args/-
        value: --leader-election-lease-duration=60s
      - op: add
        path: /spec/template/spec/containers/2/args/-
        value: --leader-election-renew-deadline=45s
      - op: add
        path: /spec/template/spec/containers/2/args/-
        value: --leader-election-retry-period=10s
      - op: add
        path: /spec/template/spec/containers/3/args/-
        value: --leader-election-lease-duration=60s
      - op: add
        path: /spec/template/spec/containers/3/args/-
        value: --leader-election-renew-deadline=45s
      - op: add
        path: /spec/template/spec/containers/3/args/-
        value: --leader-election-retry-period=10s
      - op: add
        path: /spec/template/spec/containers/4/args/-
        value: --leader-election-lease-duration=60s
      - op: add
        path: /spec/template/spec/containers/4/args/-
        value: --leader-election-renew-deadline=45s
      - op: add
        path: /spec/template/spec/containers/4/args/-
        value: --leader-election-retry-period=10s
`
	writeFile(t, filepath.Join(site, "kustomization.yaml"), []byte(kustomization))
	writeFile(t, filepath.Join(site, "provisioner-pv.yaml"), []byte(`apiVersion: v1
kind: PersistentVolume
metadata:
  name: nvmirror-provisioner-data
spec:
  capacity: {storage: 1Gi}
  accessModes: ["ReadWriteOnce"]
  persistentVolumeReclaimPolicy: Retain
  claimRef: {namespace: nvmirror, name: nvmirror-provisioner-data}
  hostPath: {path: `+provisionerDataGuestDir+`, type: Directory}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions:
            - {key: kubernetes.io/hostname, operator: In, values: [`+KubeletNodeName+`]}
`))
	cp.MustKubectl("apply", "-k", site)
	return site
}

// waitNvmirror waits until the provisioner and the controller Deployments
// are available and the node plugin is Ready and registered with kubelet
// (the CSINode lists the driver), and returns how long that took.
func waitNvmirror(t *testing.T, cp *ControlPlane, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for _, d := range []string{"nvmirror-provisioner", "nvmirror-controller"} {
		cp.WaitJSONPath(timeout, "nvmirror", "deployment", d, "{.status.availableReplicas}", "deployment "+d+" available",
			func(s string) bool { return s == "1" })
	}
	cp.WaitJSONPath(timeout, "nvmirror", "daemonset", "nvmirror-node", "{.status.numberReady}", "node plugin ready",
		func(s string) bool { return s == "1" })
	cp.WaitJSONPath(timeout, "", "csinode", KubeletNodeName, "{.spec.drivers[*].name}", "driver registered with kubelet",
		func(s string) bool { return strings.Contains(s, "csi.nvmirror.io") })
	return time.Since(start)
}
