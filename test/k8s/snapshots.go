package k8s

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/nvmirror/nvmirror/test/deploy/snapshotcrds"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// localSnapshotComponent returns deploy/components/snapshot-controller
// localized (its upstream files replaced by their module cache copies,
// snapshotcrds.Localize) into the test's directory, made once per control
// plane.
func (cp *ControlPlane) localSnapshotComponent(repo string) string {
	cp.t.Helper()
	dir := filepath.Join(cp.Dir, "snapshot-component")
	if _, err := os.Stat(filepath.Join(dir, "kustomization.yaml")); err == nil {
		return dir
	}
	rel, err := snapshotcrds.Pinned(repo)
	if err != nil {
		cp.t.Fatal(err)
	}
	if _, err := snapshotcrds.Localize(repo, rel, dir); err != nil {
		cp.t.Fatal(err)
	}
	return dir
}

// snapshotComponentObjects renders the localized component.
func (cp *ControlPlane) snapshotComponentObjects(repo string) []Object {
	cp.t.Helper()
	src := snapshotcrds.ComponentDir + " (module cache)"
	y, err := cp.Kubectl("kustomize", cp.localSnapshotComponent(repo))
	if err != nil {
		cp.t.Fatalf("rendering %s: %v", src, err)
	}
	objs, err := cp.Objects(Manifests{Source: src, YAML: y})
	if err != nil {
		cp.t.Fatal(err)
	}
	return objs
}

// InstallSnapshotCRDs creates the component's CustomResourceDefinitions
// for real and waits until the API server serves them.
func (cp *ControlPlane) InstallSnapshotCRDs(repo string) time.Duration {
	cp.t.Helper()
	t0 := time.Now()
	var crds []Object
	for _, o := range cp.snapshotComponentObjects(repo) {
		if o.Kind() == "CustomResourceDefinition" {
			crds = append(crds, o)
		}
	}
	if len(crds) != 6 {
		cp.t.Fatalf("%s: %d CustomResourceDefinitions, want the 6 snapshot and group snapshot ones", snapshotcrds.ComponentDir, len(crds))
	}
	cp.Apply(ListJSON(crds))
	for _, c := range crds {
		cp.MustKubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/"+c.Name())
	}
	return time.Since(t0)
}

// StartSnapshotController runs snapshot-controller as the component's
// Deployment would: its args, as its ServiceAccount with the component's
// RBAC (created here), leader election in its namespace. The CRDs must be
// installed first (InstallSnapshotCRDs): it switches group snapshots off
// for good when their CRDs are missing at start.
func (cp *ControlPlane) StartSnapshotController(repo string) *Process {
	cp.t.Helper()
	var dep Object
	var rbac []Object
	for _, o := range cp.snapshotComponentObjects(repo) {
		switch {
		case o.Kind() == "Deployment" && o.Name() == "snapshot-controller":
			dep = o
		case rbacKinds[o.Kind()]:
			rbac = append(rbac, o)
		}
	}
	if dep == nil {
		cp.t.Fatalf("%s has no Deployment snapshot-controller", snapshotcrds.ComponentDir)
	}
	podSpec := mapAt(mapAt(spec(dep), "template"), "spec")
	sa := str(podSpec["serviceAccountName"])
	var args []string
	containers, _ := podSpec["containers"].([]any)
	for _, c := range containers {
		cm, _ := c.(map[string]any)
		if str(cm["name"]) != "snapshot-controller" {
			continue
		}
		list, _ := cm["args"].([]any)
		for _, a := range list {
			if s := str(a); !strings.HasPrefix(s, "--kubeconfig") {
				args = append(args, s)
			}
		}
	}
	cp.Apply(ListJSON(rbac))
	args = append(args, "--kubeconfig="+cp.ServiceAccountKubeconfig(dep.Namespace(), sa),
		"--leader-election-namespace="+dep.Namespace())
	p := cp.Start("snapshot-controller", cp.Tools.SnapshotController, args...)
	cp.FailOnLog(p, RBACRefusal, "the API server refused it something: the snapshot component's RBAC lacks a permission")
	cp.FailOnLog(p, "VolumeGroupSnapshot CRDs were not found", "group snapshots are off for this run: their CRDs were not served at its start")
	return p
}

// StartCSISnapshotter runs the csi-snapshotter sidecar against a CSI
// driver's socket with args (the controller Deployment's container's), as
// StartCSISidecars runs the others.
func (cp *ControlPlane) StartCSISnapshotter(socket, kubeconfig string, args []string) *Process {
	cp.t.Helper()
	var kept []string
	for _, a := range args {
		flag, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if flag != "csi-address" && flag != "kubeconfig" {
			kept = append(kept, a)
		}
	}
	p := cp.Start("csi-snapshotter", cp.Tools.CSISnapshotter,
		append([]string{"--csi-address=" + socket, "--kubeconfig=" + kubeconfig}, kept...)...)
	cp.FailOnLog(p, "VolumeGroupSnapshot CRDs were not found", "group snapshots are off for this run: their CRDs were not served at its start")
	return p
}

// DriverCapabilities are what a CSI controller offers of snapshots.
type DriverCapabilities struct {
	Snapshots, Clones, GroupSnapshots bool
}

// SnapshotCapabilities asks the CSI driver at socket what the sidecars
// would: ControllerGetCapabilities (CREATE_DELETE_SNAPSHOT, CLONE_VOLUME)
// and GroupControllerGetCapabilities (CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT;
// Unimplemented is no GroupController service at all).
func SnapshotCapabilities(socket string) (DriverCapabilities, error) {
	var c DriverCapabilities
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return c, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cc, err := csi.NewControllerClient(conn).ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		return c, fmt.Errorf("ControllerGetCapabilities: %w", err)
	}
	var have []csi.ControllerServiceCapability_RPC_Type
	for _, cap := range cc.GetCapabilities() {
		have = append(have, cap.GetRpc().GetType())
	}
	c.Snapshots = slices.Contains(have, csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT)
	c.Clones = slices.Contains(have, csi.ControllerServiceCapability_RPC_CLONE_VOLUME)
	gc, err := csi.NewGroupControllerClient(conn).GroupControllerGetCapabilities(ctx, &csi.GroupControllerGetCapabilitiesRequest{})
	if status.Code(err) == codes.Unimplemented {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("GroupControllerGetCapabilities: %w", err)
	}
	for _, cap := range gc.GetCapabilities() {
		if cap.GetRpc().GetType() == csi.GroupControllerServiceCapability_RPC_CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT {
			c.GroupSnapshots = true
		}
	}
	return c, nil
}
