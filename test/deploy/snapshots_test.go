package deploy_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/test/deploy/helmchart"
	"github.com/nvmirror/nvmirror/test/deploy/snapshotcrds"
)

// snapshotterImage is the csi-snapshotter sidecar's image name; its tag must
// be the release hack/k8s/csi-snapshotter pins (the e2e runs that build).
const snapshotterImage = "registry.k8s.io/sig-storage/csi-snapshotter"

// snapshotCRDs are the custom resources the sidecar and the examples use.
var snapshotCRDs = []string{
	"volumesnapshotclasses.snapshot.storage.k8s.io",
	"volumesnapshotcontents.snapshot.storage.k8s.io",
	"volumesnapshots.snapshot.storage.k8s.io",
	"volumegroupsnapshotclasses.groupsnapshot.storage.k8s.io",
	"volumegroupsnapshotcontents.groupsnapshot.storage.k8s.io",
	"volumegroupsnapshots.groupsnapshot.storage.k8s.io",
}

// TestSnapshotComponent: deploy/components/snapshot-controller names only
// files of the pinned external-snapshotter release, and renders (from their
// module cache copies) to the six snapshot CRDs and a snapshot-controller
// of that release with its RBAC.
func TestSnapshotComponent(t *testing.T) {
	rel := pinnedSnapshotter(t)
	urls, _, err := snapshotcrds.Resources(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range urls {
		if _, err := rel.File(u); err != nil {
			t.Error(err)
		}
	}
	objs := objects(render(t, snapshotcrds.ComponentDir))
	for _, crd := range snapshotCRDs {
		mustObject(t, objs, "CustomResourceDefinition/"+crd)
	}
	dep := mustObject(t, objs, "Deployment/snapshot-controller")
	if ns := str(dep, "metadata", "namespace"); ns != "kube-system" {
		t.Errorf("snapshot-controller in namespace %q, want kube-system", ns)
	}
	c := containerNamed(t, dep, "snapshot-controller")
	if img, want := str(c.spec, "image"), "registry.k8s.io/sig-storage/snapshot-controller:"+rel.Version; img != want {
		t.Errorf("snapshot-controller image %s, want %s (the release the tests build)", img, want)
	}
	wantFlag(t, c, "leader-election", "true")
	role := mustObject(t, objs, "ClusterRole/snapshot-controller-runner")
	for _, need := range []struct{ group, resource, verb string }{
		{"snapshot.storage.k8s.io", "volumesnapshotcontents", "create"},
		{"snapshot.storage.k8s.io", "volumesnapshots/status", "update"},
		{"groupsnapshot.storage.k8s.io", "volumegroupsnapshotcontents", "create"},
		{"", "persistentvolumeclaims", "get"},
	} {
		if !rbacAllows(role, need.group, need.resource, need.verb) {
			t.Errorf("snapshot-controller-runner does not allow %s %s/%s", need.verb, need.group, need.resource)
		}
	}
	if sa := str(podSpec(dep), "serviceAccountName"); objs["ServiceAccount/"+sa] == nil {
		t.Errorf("snapshot-controller runs as ServiceAccount %q, which the component lacks", sa)
	}
}

// upstreamSnapshotterRules are the (group, resource, verb) triples of the
// ClusterRole external-snapshotter ships for the sidecar, from the module
// cache.
func upstreamSnapshotterRules(t *testing.T) [][3]string {
	t.Helper()
	f := filepath.Join(pinnedSnapshotter(t).SnapshotterDir, "deploy", "kubernetes", "csi-snapshotter", "rbac-csi-snapshotter.yaml")
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := decodeAll(f, b)
	if err != nil {
		t.Fatal(err)
	}
	var out [][3]string
	for _, d := range docs {
		if str(d.value, "kind") != "ClusterRole" {
			continue
		}
		for _, r := range list(d.value, "rules") {
			for _, g := range strs(r, "apiGroups") {
				for _, res := range strs(r, "resources") {
					for _, v := range strs(r, "verbs") {
						out = append(out, [3]string{g, res, v})
					}
				}
			}
		}
	}
	if len(out) < 10 {
		t.Fatalf("%s: only %d rules read", f, len(out))
	}
	return out
}

// snapshotterChecks: the controller Deployment's csi-snapshotter (pinned to
// the release the e2e builds, on nvmirror-csi's socket, leader election,
// group snapshots not switched off), and RBAC bound to its ServiceAccount
// allowing everything upstream's ClusterRole for the sidecar allows.
func snapshotterChecks(t *testing.T, objs map[string]any, namespace string) {
	t.Helper()
	rel := pinnedSnapshotter(t)
	dep := mustObject(t, objs, "Deployment/nvmirror-controller")
	c := containerNamed(t, dep, "csi-snapshotter")
	if img, want := str(c.spec, "image"), snapshotterImage+":"+rel.Version; img != want {
		t.Errorf("%s: image %s, want %s (hack/k8s/csi-snapshotter's)", c, img, want)
	}
	wantFlag(t, c, "csi-address", "/csi/csi.sock")
	wantFlag(t, c, "leader-election", "")
	if v, ok := flagValue(c, "feature-gates"); ok && strings.Contains(v, "CSIVolumeGroupSnapshot=false") {
		t.Errorf("%s: group snapshots switched off (--feature-gates=%s)", c, v)
	}
	csi := containerNamed(t, dep, "nvmirror-csi")
	if mountOf(c, "/csi") == nil || str(mountOf(c, "/csi"), "name") != str(mountOf(csi, "/csi"), "name") {
		t.Errorf("%s does not share nvmirror-csi's socket volume at /csi", c)
	}
	var roles []any
	for _, o := range objs {
		if str(o, "kind") != "ClusterRoleBinding" {
			continue
		}
		for _, s := range list(o, "subjects") {
			if str(s, "kind") == "ServiceAccount" && str(s, "name") == "nvmirror-controller" && str(s, "namespace") == namespace {
				roles = append(roles, mustObject(t, objs, "ClusterRole/"+str(o, "roleRef", "name")))
			}
		}
	}
	for _, r := range upstreamSnapshotterRules(t) {
		if !slices.ContainsFunc(roles, func(role any) bool { return rbacAllows(role, r[0], r[1], r[2]) }) {
			t.Errorf("csi-snapshotter needs %s %s/%s (upstream's RBAC): no ClusterRole bound to %s/nvmirror-controller allows it", r[2], r[0], r[1], namespace)
		}
	}
}

func TestSnapshotterSidecar(t *testing.T) {
	snapshotterChecks(t, baseObjects(t), "nvmirror")
}

// TestHelmSnapshotterSwitch: the chart runs the sidecar with its RBAC by
// default (as the base does: TestHelmChartMatchesKustomize), and
// controller.snapshotter.enabled=false leaves out both.
func TestHelmSnapshotterSwitch(t *testing.T) {
	docs, _ := helmRender(t, helmchart.DefaultRelease, nil)
	snapshotterChecks(t, objects(docs), helmchart.DefaultRelease.Namespace)

	docs, _ = helmRender(t, helmchart.DefaultRelease, map[string]any{"controller": map[string]any{"snapshotter": map[string]any{"enabled": false}}})
	objs := objects(docs)
	for _, c := range containersOf(mustObject(t, objs, "Deployment/nvmirror-controller")) {
		if c.name() == "csi-snapshotter" {
			t.Errorf("controller.snapshotter.enabled=false still runs %s", c)
		}
	}
	for _, key := range []string{"ClusterRole/nvmirror-external-snapshotter", "ClusterRoleBinding/nvmirror-external-snapshotter"} {
		if objs[key] != nil {
			t.Errorf("controller.snapshotter.enabled=false still renders %s", key)
		}
	}
	// The other sidecars stay.
	for _, name := range []string{"csi-provisioner", "csi-attacher", "csi-resizer"} {
		containerNamed(t, mustObject(t, objs, "Deployment/nvmirror-controller"), name)
	}
}

// TestSnapshotExamples: deploy/examples/snapshots' classes are nvmirror's
// (deletionPolicy Delete), the snapshot and the clone are of the example
// claim of deploy/examples in one of nvmirror's classes, and the restored
// claim names the snapshot and asks for no less than its source.
func TestSnapshotExamples(t *testing.T) {
	ex := objects(render(t, "deploy/examples"))
	objs := objects(render(t, "deploy/examples/snapshots"))
	for _, key := range []string{"VolumeSnapshotClass/nvmirror-snapshots", "VolumeGroupSnapshotClass/nvmirror-group-snapshots"} {
		c := mustObject(t, objs, key)
		if str(c, "driver") != "csi.nvmirror.io" || str(c, "deletionPolicy") != "Delete" {
			t.Errorf("%s: driver %q deletionPolicy %q, want csi.nvmirror.io and Delete", key, str(c, "driver"), str(c, "deletionPolicy"))
		}
	}
	snap := mustObject(t, objs, "VolumeSnapshot/nvmirror-example-snapshot")
	if cls := str(snap, "spec", "volumeSnapshotClassName"); objs["VolumeSnapshotClass/"+cls] == nil {
		t.Errorf("VolumeSnapshot names class %q, not the example's", cls)
	}
	source := mustObject(t, ex, "PersistentVolumeClaim/"+str(snap, "spec", "source", "persistentVolumeClaimName"))
	group := mustObject(t, objs, "VolumeGroupSnapshot/nvmirror-example-group")
	if cls := str(group, "spec", "volumeGroupSnapshotClassName"); objs["VolumeGroupSnapshotClass/"+cls] == nil {
		t.Errorf("VolumeGroupSnapshot names class %q, not the example's", cls)
	}
	if get(group, "spec", "source", "selector", "matchLabels") == nil {
		t.Error("VolumeGroupSnapshot selects no claims by label")
	}
	for _, c := range []struct{ name, kind, from string }{
		{"nvmirror-example-restored", "VolumeSnapshot", snap.(map[string]any)["metadata"].(map[string]any)["name"].(string)},
		{"nvmirror-example-clone", "PersistentVolumeClaim", str(source, "metadata", "name")},
	} {
		pvc := mustObject(t, objs, "PersistentVolumeClaim/"+c.name)
		if k, n := str(pvc, "spec", "dataSource", "kind"), str(pvc, "spec", "dataSource", "name"); k != c.kind || n != c.from {
			t.Errorf("%s: dataSource %s/%s, want %s/%s", c.name, k, n, c.kind, c.from)
		}
		if sc := str(pvc, "spec", "storageClassName"); ex["StorageClass/"+sc] == nil {
			t.Errorf("%s: StorageClass %q is not one of deploy/examples'", c.name, sc)
		}
		if got, want := str(pvc, "spec", "resources", "requests", "storage"), str(source, "spec", "resources", "requests", "storage"); got != want {
			t.Errorf("%s asks for %s, the source claim has %s", c.name, got, want)
		}
	}
}
