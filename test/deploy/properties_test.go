package deploy_test

import (
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// objects indexes documents by Kind/name.
func objects(docs []doc) map[string]any {
	out := map[string]any{}
	for _, d := range docs {
		out[str(d.value, "kind")+"/"+str(d.value, "metadata", "name")] = d.value
	}
	return out
}

func baseObjects(t *testing.T) map[string]any {
	t.Helper()
	var docs []doc
	for _, f := range yamlFiles(t, deployDir+"/base") {
		if path.Base(f) != "kustomization.yaml" {
			docs = append(docs, readDocs(t, f)...)
		}
	}
	return objects(docs)
}

func mustObject(t *testing.T, objs map[string]any, key string) any {
	t.Helper()
	o, ok := objs[key]
	if !ok {
		t.Fatalf("%s missing", key)
	}
	return o
}

func containerNamed(t *testing.T, obj any, name string) container {
	t.Helper()
	for _, c := range containersOf(obj) {
		if c.name() == name {
			return c
		}
	}
	t.Fatalf("%s/%s has no container %s", str(obj, "kind"), str(obj, "metadata", "name"), name)
	return container{}
}

// flagValue returns the value of --name=value in c's args ("" if absent)
// and whether it is there.
func flagValue(c container, name string) (string, bool) {
	for _, a := range append(strs(c.spec, "command"), strs(c.spec, "args")...) {
		a = strings.TrimLeft(a, "-")
		if a == name {
			return "", true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func wantFlag(t *testing.T, c container, name, value string) {
	t.Helper()
	v, ok := flagValue(c, name)
	if !ok || (value != "" && v != value) {
		t.Errorf("%s: want --%s %s, have %q (present %v)", c, name, value, v, ok)
	}
}

// mountOf returns the volumeMount of c at mountPath.
func mountOf(c container, mountPath string) map[string]any {
	for _, m := range list(c.spec, "volumeMounts") {
		if str(m, "mountPath") == mountPath {
			mm, _ := m.(map[string]any)
			return mm
		}
	}
	return nil
}

func volumeOf(obj any, name string) map[string]any {
	for _, v := range list(podSpec(obj), "volumes") {
		if str(v, "name") == name {
			m, _ := v.(map[string]any)
			return m
		}
	}
	return nil
}

// wantHostMount checks c mounts hostPath at the same path in the container.
func wantHostMount(t *testing.T, obj any, c container, hostPath string, readOnly bool, propagation string) {
	t.Helper()
	m := mountOf(c, hostPath)
	if m == nil {
		t.Errorf("%s: %s not mounted", c, hostPath)
		return
	}
	if v := volumeOf(obj, str(m, "name")); str(v, "hostPath", "path") != hostPath {
		t.Errorf("%s: %s is volume %s, not the host's %s: %v", c, hostPath, str(m, "name"), hostPath, v)
	}
	if ro, _ := m["readOnly"].(bool); ro != readOnly {
		t.Errorf("%s: %s readOnly=%v, want %v", c, hostPath, ro, readOnly)
	}
	if str(m, "mountPropagation") != propagation {
		t.Errorf("%s: %s mountPropagation %q, want %q", c, hostPath, str(m, "mountPropagation"), propagation)
	}
}

func privileged(c container) bool {
	p, _ := get(c.spec, "securityContext", "privileged").(bool)
	return p
}

// TestCSIDriverObject: the CSIDriver as the driver behaves.
func TestCSIDriverObject(t *testing.T) {
	d := mustObject(t, baseObjects(t), "CSIDriver/csi.nvmirror.io")
	if v, _ := get(d, "spec", "attachRequired").(bool); !v {
		t.Error("attachRequired must be true: ControllerPublish fences the replicas to the host")
	}
	if m := strs(d, "spec", "volumeLifecycleModes"); !slices.Equal(m, []string{"Persistent"}) {
		t.Errorf("volumeLifecycleModes %v, want [Persistent]", m)
	}
}

// TestControllerDeployment: nvmirror-csi in controller mode with the three
// sidecars (pinned versions, leader election) on one socket.
func TestControllerDeployment(t *testing.T) {
	objs := baseObjects(t)
	dep := mustObject(t, objs, "Deployment/nvmirror-controller")
	csi := containerNamed(t, dep, "nvmirror-csi")
	wantFlag(t, csi, "mode", "controller")
	wantFlag(t, csi, "endpoint", "unix:///csi/csi.sock")
	for _, sc := range []struct{ name, image string }{
		{"csi-provisioner", "registry.k8s.io/sig-storage/csi-provisioner:v6.3.0"},
		{"csi-attacher", "registry.k8s.io/sig-storage/csi-attacher:v4.13.0"},
		{"csi-resizer", "registry.k8s.io/sig-storage/csi-resizer:v2.3.0"},
	} {
		c := containerNamed(t, dep, sc.name)
		if str(c.spec, "image") != sc.image {
			t.Errorf("%s: image %s, want %s", c, str(c.spec, "image"), sc.image)
		}
		wantFlag(t, c, "leader-election", "")
		wantFlag(t, c, "csi-address", "/csi/csi.sock")
		if mountOf(c, "/csi") == nil || str(mountOf(c, "/csi"), "name") != str(mountOf(csi, "/csi"), "name") {
			t.Errorf("%s does not share nvmirror-csi's socket volume at /csi", c)
		}
	}
	wantFlag(t, containerNamed(t, dep, "csi-provisioner"), "extra-create-metadata", "")
	wantFlag(t, containerNamed(t, dep, "liveness-probe"), "csi-address", "/csi/csi.sock")
	if sa := str(podSpec(dep), "serviceAccountName"); sa != "nvmirror-controller" {
		t.Errorf("serviceAccountName %q", sa)
	}
}

// rbacAllows reports whether a role's rules allow verb on group/resource.
func rbacAllows(role any, group, resource, verb string) bool {
	for _, r := range list(role, "rules") {
		if slices.Contains(strs(r, "apiGroups"), group) && slices.Contains(strs(r, "resources"), resource) && slices.Contains(strs(r, "verbs"), verb) {
			return true
		}
	}
	return false
}

// TestSidecarRBAC: the controller's service account can do what each
// sidecar must, including the leases of leader election, and is bound.
func TestSidecarRBAC(t *testing.T) {
	objs := baseObjects(t)
	var clusterRoles, roles []any
	for key, o := range objs {
		var subjects []any
		switch {
		case strings.HasPrefix(key, "ClusterRoleBinding/"), strings.HasPrefix(key, "RoleBinding/"):
			subjects = list(o, "subjects")
		default:
			continue
		}
		bound := false
		for _, s := range subjects {
			bound = bound || (str(s, "kind") == "ServiceAccount" && str(s, "name") == "nvmirror-controller" && str(s, "namespace") == "nvmirror")
		}
		if !bound {
			continue
		}
		role := mustObject(t, objs, str(o, "roleRef", "kind")+"/"+str(o, "roleRef", "name"))
		if str(o, "kind") == "RoleBinding" {
			roles = append(roles, role)
		} else {
			clusterRoles = append(clusterRoles, role)
		}
	}
	anyAllows := func(rs []any, group, resource, verb string) bool {
		for _, r := range rs {
			if rbacAllows(r, group, resource, verb) {
				return true
			}
		}
		return false
	}
	for _, need := range []struct{ who, group, resource, verb string }{
		{"csi-provisioner", "", "persistentvolumes", "create"},
		{"csi-provisioner", "", "persistentvolumes", "delete"},
		{"csi-provisioner", "", "persistentvolumeclaims", "watch"},
		{"csi-provisioner", "storage.k8s.io", "storageclasses", "get"},
		{"csi-provisioner", "", "events", "create"},
		{"csi-attacher", "storage.k8s.io", "volumeattachments", "patch"},
		{"csi-attacher", "storage.k8s.io", "volumeattachments/status", "patch"},
		{"csi-attacher", "storage.k8s.io", "csinodes", "get"},
		{"csi-resizer", "", "persistentvolumeclaims/status", "patch"},
		{"csi-resizer", "", "persistentvolumes", "patch"},
		{"csi-resizer", "storage.k8s.io", "volumeattributesclasses", "get"},
	} {
		if !anyAllows(clusterRoles, need.group, need.resource, need.verb) {
			t.Errorf("%s needs %s %s/%s: no ClusterRole bound to nvmirror-controller allows it", need.who, need.verb, need.group, need.resource)
		}
	}
	for _, verb := range []string{"get", "create", "update"} {
		if !anyAllows(roles, "coordination.k8s.io", "leases", verb) {
			t.Errorf("leader election needs %s on leases in the namespace", verb)
		}
	}
}

// TestNodeDaemonSet: what the node plugin needs from the host.
func TestNodeDaemonSet(t *testing.T) {
	ds := mustObject(t, baseObjects(t), "DaemonSet/nvmirror-node")
	ps := podSpec(ds)
	if v, _ := ps["hostNetwork"].(bool); !v {
		t.Error("hostNetwork must be true: NVMe/TCP connections live in the plugin's network namespace")
	}
	if str(ps, "priorityClassName") != "system-node-critical" {
		t.Errorf("priorityClassName %q", str(ps, "priorityClassName"))
	}
	csi := containerNamed(t, ds, "nvmirror-csi")
	if !privileged(csi) {
		t.Error("nvmirror-csi must be privileged")
	}
	wantFlag(t, csi, "mode", "node")
	wantHostMount(t, ds, csi, "/var/lib/kubelet", false, "Bidirectional")
	wantHostMount(t, ds, csi, "/dev", false, "")
	wantHostMount(t, ds, csi, "/sys", false, "")
	wantHostMount(t, ds, csi, "/etc/nvme", false, "")
	wantHostMount(t, ds, csi, "/lib/modules", true, "")
	wantHostMount(t, ds, csi, "/run/mdadm", false, "")
	stateDir, _ := flagValue(csi, "state-dir")
	wantHostMount(t, ds, csi, stateDir, false, "")

	// kubelet finds the socket where the registrar says it is.
	reg := containerNamed(t, ds, "node-driver-registrar")
	sock := str(volumeOf(ds, str(mountOf(csi, "/csi"), "name")), "hostPath", "path") + "/csi.sock"
	wantFlag(t, reg, "kubelet-registration-path", sock)
	if !strings.HasPrefix(sock, "/var/lib/kubelet/plugins/") {
		t.Errorf("socket %s is not under kubelet's plugins directory", sock)
	}
	if v := volumeOf(ds, str(mountOf(reg, "/registration"), "name")); str(v, "hostPath", "path") != "/var/lib/kubelet/plugins_registry" {
		t.Errorf("registrar's /registration is %v, want kubelet's plugins_registry", v)
	}
	containerNamed(t, ds, "liveness-probe")
}

// TestProvisionerDeployment: one replica on its bolt file (Recreate), the
// probes on the --http-address endpoint.
func TestProvisionerDeployment(t *testing.T) {
	objs := baseObjects(t)
	dep := mustObject(t, objs, "Deployment/nvmirror-provisioner")
	if r, _ := get(dep, "spec", "replicas").(int); r != 1 {
		t.Errorf("replicas %v, want 1 (the bolt file is locked by one process)", get(dep, "spec", "replicas"))
	}
	if s := str(dep, "spec", "strategy", "type"); s != "Recreate" {
		t.Errorf("strategy %q, want Recreate: the old pod must release the bolt file first", s)
	}
	c := containerNamed(t, dep, "nvmirror-provisioner")
	if get(c.spec, "livenessProbe", "httpGet", "path") != "/healthz" || get(c.spec, "readinessProbe", "httpGet", "path") != "/readyz" {
		t.Errorf("%s: probes must be /healthz (liveness) and /readyz (readiness)", c)
	}
	// The default --bolt-path is /var/lib/nvmirror/provisioner/registry.db:
	// that directory must be the claim.
	m := mountOf(c, "/var/lib/nvmirror/provisioner")
	if m == nil || str(volumeOf(dep, str(m, "name")), "persistentVolumeClaim", "claimName") == "" {
		t.Errorf("%s: the registry directory is not on a PersistentVolumeClaim", c)
	}
	mustObject(t, objs, "PersistentVolumeClaim/"+str(volumeOf(dep, str(m, "name")), "persistentVolumeClaim", "claimName"))
	mustObject(t, objs, "Service/nvmirror-provisioner")
}

// TestEtcdOverlay: the etcd overlay runs the etcd store without the claim.
func TestEtcdOverlay(t *testing.T) {
	objs := objects(render(t, "deploy/overlays/etcd"))
	dep := mustObject(t, objs, "Deployment/nvmirror-provisioner")
	c := containerNamed(t, dep, "nvmirror-provisioner")
	wantFlag(t, c, "store", "etcd")
	if _, ok := flagValue(c, "etcd-endpoints"); !ok {
		t.Error("no --etcd-endpoints")
	}
	if str(dep, "spec", "strategy", "type") != "RollingUpdate" {
		t.Errorf("strategy %q, want RollingUpdate", str(dep, "spec", "strategy", "type"))
	}
	for key := range objs {
		if strings.HasPrefix(key, "PersistentVolumeClaim/") {
			t.Errorf("%s rendered with the etcd store", key)
		}
	}
}

// TestTargetDaemonSet: the agent on labelled storage nodes, privileged,
// with configfs and its pool on the host.
func TestTargetDaemonSet(t *testing.T) {
	ds := mustObject(t, baseObjects(t), "DaemonSet/nvmirror-target")
	ps := podSpec(ds)
	if str(ps, "nodeSelector", "nvmirror.io/storage-node") != "true" {
		t.Errorf("nodeSelector %v, want nvmirror.io/storage-node: \"true\"", get(ps, "nodeSelector"))
	}
	if v, _ := ps["hostNetwork"].(bool); !v {
		t.Error("hostNetwork must be true: exports and the agent API are on the node's address")
	}
	c := containerNamed(t, ds, "nvmirror-target")
	if !privileged(c) {
		t.Error("nvmirror-target must be privileged (nvmet configfs)")
	}
	wantHostMount(t, ds, c, "/sys/kernel/config", false, "")
	pool, _ := flagValue(c, "pool-dir")
	wantHostMount(t, ds, c, pool, false, "")
}

// listenPort returns the port of a listen-address or port flag value.
func listenPort(flagName, v string) (int, bool) {
	switch flagName {
	case "health-port":
		n, err := strconv.Atoi(v)
		return n, err == nil
	case "http-address", "metrics-address", "listen", "http-endpoint", "nvme-address":
		_, p, err := net.SplitHostPort(v)
		if err != nil {
			return 0, false
		}
		n, err := strconv.Atoi(p)
		return n, err == nil
	}
	return 0, false
}

// TestPortsMatchFlags: every declared containerPort is one a container of
// the pod opens by its flags, and every probe targets a declared port: a
// probe on a port nothing listens on restarts a healthy container forever.
func TestPortsMatchFlags(t *testing.T) {
	for key, obj := range baseObjects(t) {
		if podSpec(obj) == nil {
			continue
		}
		listening := map[int]bool{}
		for _, c := range containersOf(obj) {
			for _, a := range strs(c.spec, "args") {
				name, v, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
				if p, ok := listenPort(name, v); ok {
					listening[p] = true
				}
			}
		}
		declared := map[string]int{}
		for _, c := range containersOf(obj) {
			for _, p := range list(c.spec, "ports") {
				n, _ := get(p, "containerPort").(int)
				declared[str(p, "name")] = n
				if !listening[n] {
					t.Errorf("%s %s: containerPort %d (%s) is opened by no container's flags", key, c, n, str(p, "name"))
				}
			}
		}
		for _, c := range containersOf(obj) {
			for _, probe := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
				port := get(c.spec, probe, "httpGet", "port")
				if port == nil {
					port = get(c.spec, probe, "tcpSocket", "port")
				}
				switch p := port.(type) {
				case nil:
				case string:
					if _, ok := declared[p]; !ok {
						t.Errorf("%s %s: %s port %q is not a declared containerPort", key, c, probe, p)
					}
				case int:
					if !listening[p] {
						t.Errorf("%s %s: %s port %d is opened by no container", key, c, probe, p)
					}
				}
			}
		}
	}
}

// TestMountedFilesExist renders the base and checks every file an nvmirror
// flag names (--*-file, --*-path, --*-dir) lies under a volume mounted in
// that container, and for Secret and ConfigMap volumes that the file is one
// of the object's keys: a certificate under the wrong key name is a pod
// that starts and then cannot read it.
func TestMountedFilesExist(t *testing.T) {
	docs := render(t, "deploy/base")
	objs := objects(docs)
	for _, d := range docs {
		for _, c := range containersOf(d.value) {
			if imageName(str(c.spec, "image")) != nvmirrorImage {
				continue
			}
			for _, a := range strs(c.spec, "args") {
				name, v, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
				if !(strings.HasSuffix(name, "-file") || strings.HasSuffix(name, "-dir")) || !strings.HasPrefix(v, "/") {
					continue
				}
				var mount map[string]any
				for _, m := range list(c.spec, "volumeMounts") {
					mp := str(m, "mountPath")
					if v == mp || strings.HasPrefix(v, strings.TrimSuffix(mp, "/")+"/") {
						mount, _ = m.(map[string]any)
					}
				}
				if mount == nil {
					t.Errorf("%s: --%s=%s is on no mounted volume (the container's own filesystem is read-only or ephemeral)", c, name, v)
					continue
				}
				vol := volumeOf(d.value, str(mount, "name"))
				rel := strings.TrimPrefix(strings.TrimPrefix(v, str(mount, "mountPath")), "/")
				var obj any
				switch {
				case get(vol, "secret") != nil:
					obj = objs["Secret/"+str(vol, "secret", "secretName")]
				case get(vol, "configMap") != nil:
					obj = objs["ConfigMap/"+str(vol, "configMap", "name")]
				default:
					continue
				}
				if obj == nil {
					t.Errorf("%s: --%s: volume %s's object is not rendered", c, name, str(mount, "name"))
					continue
				}
				if get(obj, "data", rel) == nil && get(obj, "stringData", rel) == nil {
					t.Errorf("%s: --%s=%s: %s/%s has no key %q", c, name, v, str(obj, "kind"), str(obj, "metadata", "name"), rel)
				}
			}
		}
	}
}

// TestRackOverlay: the rack example replaces the base's agent DaemonSet by
// one per rack, each selecting its rack's nodes and reporting that rack.
func TestRackOverlay(t *testing.T) {
	objs := objects(render(t, "deploy/overlays/racks"))
	if _, ok := objs["DaemonSet/nvmirror-target"]; ok {
		t.Error("the base's agent DaemonSet is still rendered beside the per-rack ones")
	}
	n := 0
	for key, obj := range objs {
		rack, ok := strings.CutPrefix(key, "DaemonSet/nvmirror-target-")
		if !ok {
			continue
		}
		n++
		ps := podSpec(obj)
		if str(ps, "nodeSelector", "nvmirror.io/rack") != rack || str(ps, "nodeSelector", "nvmirror.io/storage-node") != "true" {
			t.Errorf("%s: nodeSelector %v, want storage nodes of rack %s", key, get(ps, "nodeSelector"), rack)
		}
		if str(obj, "spec", "selector", "matchLabels", "nvmirror.io/rack") != rack {
			t.Errorf("%s: selector %v does not include its rack (DaemonSets would share pods)", key, get(obj, "spec", "selector"))
		}
		wantFlag(t, containerNamed(t, obj, "nvmirror-target"), "rack", rack)
	}
	if n != 2 {
		t.Errorf("%d per-rack agent DaemonSets, want 2", n)
	}
}
