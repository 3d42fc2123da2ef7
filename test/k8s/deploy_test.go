package k8s

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/test/vm"
)

// deployDir holds the project's Kubernetes manifests: a kustomize base,
// overlays and examples.
const deployDir = "deploy"

// TestDeployManifests sends every manifest of deploy/ to a real API server
// with a server-side dry run: each kustomization rendered by `kubectl
// kustomize` as a user would apply it, and each plain YAML file. Decoding,
// defaulting, validation and admission all run, so a misspelt field, a
// wrong apiVersion or an invalid value fails here rather than in a cluster.
func TestDeployManifests(t *testing.T) {
	tools := FindTools(t)
	repo, err := vm.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	e := NewEnv(t)
	cp := StartControlPlane(e, tools)
	t.Logf("timing: control plane ready in %v", cp.Ready.Round(1e6))
	// The snapshot CRDs, for real: the snapshot examples and the controller
	// are of their kinds (a cluster has them before nvmirror is installed,
	// docs/install.md).
	cp.InstallSnapshotCRDs(repo)
	ms := cp.DeployManifests(repo, deployDir)
	total := 0
	for _, m := range ms {
		objs, err := cp.DryRun(m)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		total += len(objs)
		t.Logf("%s: %d objects accepted: %s", m.Source, len(objs), kindCounts(objs))
	}
	if total == 0 {
		t.Errorf("%s/ holds no Kubernetes objects (%d manifest units found)", deployDir, len(ms))
	}

	// The snapshot component's controller for real, as its Deployment and
	// RBAC run it (this needs no driver): it must take its Lease and keep
	// running without a Forbidden (StartSnapshotController fails the test
	// on one).
	cp.StartSnapshotController(repo)
	took := cp.WaitFor(time.Minute, "snapshot-controller's Lease", func() (bool, string) {
		holder, err := cp.JSONPath("kube-system", "lease", "snapshot-controller-leader", "{.spec.holderIdentity}")
		if err != nil {
			return false, err.Error()
		}
		return holder != "", "no holder yet"
	})
	t.Logf("timing: snapshot-controller leader in %v", took.Round(time.Millisecond))
}

func kindCounts(objs []Object) string {
	n := map[string]int{}
	for _, o := range objs {
		n[o.Kind()]++
	}
	var parts []string
	for k, c := range n {
		parts = append(parts, fmt.Sprintf("%d %s", c, k))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// deployObjects are the objects of deploy/ the lifecycle test uses, with
// where each came from.
type deployObjects struct {
	CSIDriver, StorageClass, PVC                   Object
	CSIDriverSource, StorageClassSource, PVCSource string

	// Controller is the controller Deployment's view of the sidecars: the
	// ServiceAccount they run as, each sidecar's args by name
	// (csi-provisioner, csi-attacher, csi-resizer, csi-snapshotter), and the RBAC objects
	// (namespace, service accounts, roles, bindings) of its manifest unit.
	Controller struct {
		Source                    string
		Namespace, ServiceAccount string
		SidecarArgs               map[string][]string
		RBAC                      []Object
	}
}

// sidecarNames are the controller sidecars, as their images are named.
var sidecarNames = []string{"csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter"}

// pickDeployObjects finds in deploy/: nvmirror's CSIDriver; an example PVC
// and the StorageClass of nvmirror's it names (examples, i.e. a source path
// naming "example", come first); and the controller Deployment running the
// sidecars, with the RBAC objects beside it (a "base" unit first).
func pickDeployObjects(t *testing.T, cp *ControlPlane, repo string) deployObjects {
	t.Helper()
	type found struct {
		obj    Object
		source string
	}
	var drivers, classes, claims []found
	var d deployObjects
	ms := cp.DeployManifests(repo, deployDir)
	rank := func(src string) int {
		switch {
		case strings.Contains(src, "example"):
			return 0
		case strings.Contains(src, "base"):
			return 1
		}
		return 2
	}
	sort.SliceStable(ms, func(i, j int) bool { return rank(ms[i].Source) < rank(ms[j].Source) })
	for _, m := range ms {
		objs, err := cp.Objects(m)
		if err != nil {
			t.Fatalf("reading %s: %v", m.Source, err)
		}
		for _, o := range objs {
			f := found{o, m.Source}
			switch {
			case o.Kind() == "CSIDriver" && o.Name() == driverName:
				drivers = append(drivers, f)
			case o.Kind() == "StorageClass" && str(o["provisioner"]) == driverName:
				classes = append(classes, f)
			case o.Kind() == "PersistentVolumeClaim":
				claims = append(claims, f)
			case o.Kind() == "Deployment" && d.Controller.Source == "":
				if args := sidecarArgs(o); len(args) > 0 {
					c := &d.Controller
					c.Source, c.SidecarArgs = m.Source, args
					c.Namespace = o.Namespace()
					podSpec := mapAt(mapAt(spec(o), "template"), "spec")
					c.ServiceAccount = str(podSpec["serviceAccountName"])
					for _, r := range objs {
						if rbacKinds[r.Kind()] {
							c.RBAC = append(c.RBAC, r)
						}
					}
				}
			}
		}
	}
	if len(drivers) == 0 {
		t.Fatalf("%s/ has no CSIDriver %s (looked in %d manifest units)", deployDir, driverName, len(ms))
	}
	d.CSIDriver, d.CSIDriverSource = drivers[0].obj, drivers[0].source
	if d.Controller.Source == "" {
		t.Fatalf("%s/ has no Deployment running the CSI sidecars (%s)", deployDir, strings.Join(sidecarNames, ", "))
	}
	if d.Controller.ServiceAccount == "" || d.Controller.Namespace == "" {
		t.Fatalf("%s: the controller Deployment names no serviceAccountName or namespace", d.Controller.Source)
	}
	for _, c := range claims {
		scName := str(spec(c.obj)["storageClassName"])
		for _, sc := range classes {
			if sc.obj.Name() == scName {
				d.PVC, d.PVCSource = c.obj, c.source
				d.StorageClass, d.StorageClassSource = sc.obj, sc.source
				return d
			}
		}
	}
	t.Fatalf("%s/ has no example PersistentVolumeClaim naming one of its %s StorageClasses (%d claims, %d classes)", deployDir, driverName, len(claims), len(classes))
	return d
}

// sidecarArgs returns the args of each CSI sidecar container of a
// Deployment, by sidecar name (found in the image name).
func sidecarArgs(deployment Object) map[string][]string {
	podSpec := mapAt(mapAt(spec(deployment), "template"), "spec")
	containers, _ := podSpec["containers"].([]any)
	out := map[string][]string{}
	for _, c := range containers {
		cm, _ := c.(map[string]any)
		image := str(cm["image"])
		for _, name := range sidecarNames {
			if strings.Contains(image, "/"+name+":") || strings.HasPrefix(image, name+":") {
				var args []string
				list, _ := cm["args"].([]any)
				for _, a := range list {
					args = append(args, str(a))
				}
				out[name] = args
			}
		}
	}
	return out
}

// params returns the StorageClass's parameters, creating the map.
func (d *deployObjects) params() map[string]any {
	p, ok := d.StorageClass["parameters"].(map[string]any)
	if !ok {
		p = map[string]any{}
		d.StorageClass["parameters"] = p
	}
	return p
}

// defaultNumReplicas is the provisioner's default for numReplicas.
const defaultNumReplicas = 2

// fitStorageClass changes what the example StorageClass must not have for
// this test's storage nodes, saying each change: more replicas than nodes,
// and placement selectors that name the example's nodes, zones or racks. It
// also makes sure expansion is allowed, which the test exercises. It returns
// the number of replicas the class asks for.
func (d *deployObjects) fitStorageClass(t *testing.T, nodes int) int {
	t.Helper()
	p := d.params()
	n := defaultNumReplicas
	if v, ok := p["numReplicas"].(string); ok {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatalf("%s: StorageClass numReplicas %q: %v", d.StorageClassSource, v, err)
		}
	}
	if n > nodes {
		t.Logf("StorageClass %s: numReplicas %d > the %d storage nodes here; using %d", d.StorageClass.Name(), n, nodes, nodes)
		n = nodes
		p["numReplicas"] = strconv.Itoa(n)
	}
	for _, sel := range []string{"zones", "racks", "storageNodes"} {
		if v, ok := p[sel]; ok {
			t.Logf("StorageClass %s: dropping placement selector %s=%v (names the example's topology)", d.StorageClass.Name(), sel, v)
			delete(p, sel)
		}
	}
	if d.StorageClass["allowVolumeExpansion"] != true {
		t.Logf("StorageClass %s: allowVolumeExpansion is %v; set to true for the resize step (nvmirror supports online expansion: should the example allow it?)",
			d.StorageClass.Name(), d.StorageClass["allowVolumeExpansion"])
		d.StorageClass["allowVolumeExpansion"] = true
	}
	return n
}

// volumeBindingMode is the class's binding mode (Immediate by default).
func (d *deployObjects) volumeBindingMode() string {
	if m := str(d.StorageClass["volumeBindingMode"]); m != "" {
		return m
	}
	return "Immediate"
}

// fsType is the filesystem the class asks for (ext4 by default).
func (d *deployObjects) fsType() string {
	if v, ok := d.params()["csi.storage.k8s.io/fstype"].(string); ok && v != "" {
		return v
	}
	return "ext4"
}

// requestedStorage is the claim's spec.resources.requests.storage.
func (d *deployObjects) requestedStorage() string {
	res, _ := spec(d.PVC)["resources"].(map[string]any)
	req, _ := res["requests"].(map[string]any)
	return str(req["storage"])
}

// setRequestedStorage changes the claim's size.
func (d *deployObjects) setRequestedStorage(q string) {
	res, _ := spec(d.PVC)["resources"].(map[string]any)
	req, _ := res["requests"].(map[string]any)
	req["storage"] = q
}
