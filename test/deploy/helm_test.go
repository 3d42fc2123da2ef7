package deploy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/nvmirror/nvmirror/test/deploy/helmchart"
)

// helmRender renders the chart (with the Helm library, through
// hack/helm-render) and decodes its documents.
func helmRender(t *testing.T, rel helmchart.Release, values map[string]any) ([]doc, string) {
	t.Helper()
	r, err := helmchart.Render(repoRoot, rel, values)
	if err != nil {
		t.Fatalf("rendering %s: %v", helmchart.ChartDir, err)
	}
	docs, err := decodeAll("helm "+helmchart.ChartDir, []byte(r.YAML))
	if err != nil {
		t.Fatal(err)
	}
	return docs, r.Notes
}

// objectKey is what identifies an object in a cluster.
func objectKey(v any) string {
	return fmt.Sprintf("%s %s/%s", str(v, "kind"), str(v, "metadata", "namespace"), str(v, "metadata", "name"))
}

// TestHelmChartMatchesKustomize renders the chart with the values that
// stand for the base and each overlay, and compares the render object by
// object with `kubectl kustomize` of the same: the same set of
// kind/namespace/name, and each object equal, field for field, nothing
// normalised (the chart adds no labels of its own, and names generated
// ConfigMaps and Secrets with kustomize's content hash). Whatever changes
// in one and not the other fails here.
func TestHelmChartMatchesKustomize(t *testing.T) {
	for _, tc := range []struct {
		kustomization string
		values        map[string]any
	}{
		{"deploy/base", nil},
		{"deploy/overlays/racks", map[string]any{"racks": []any{
			map[string]any{"name": "rack-a"}, map[string]any{"name": "rack-b"}}}},
		{"deploy/overlays/etcd", map[string]any{"provisioner": map[string]any{"store": "etcd",
			"etcd": map[string]any{"endpoints": []any{"https://etcd.example.internal:2379"}}}}},
	} {
		t.Run(tc.kustomization, func(t *testing.T) {
			want := render(t, tc.kustomization)
			have, _ := helmRender(t, helmchart.DefaultRelease, tc.values)
			compareRenders(t, want, have)
		})
	}
}

// compareRenders reports objects only one render has, and the fields in
// which objects both have differ.
func compareRenders(t *testing.T, kustomize, helm []doc) {
	t.Helper()
	index := func(docs []doc, what string) map[string]any {
		out := map[string]any{}
		for _, d := range docs {
			k := objectKey(d.value)
			if _, dup := out[k]; dup {
				t.Errorf("%s renders %s twice", what, k)
			}
			out[k] = d.value
		}
		return out
	}
	k, h := index(kustomize, "kustomize"), index(helm, "the chart")
	var keys []string
	for key := range k {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if _, ok := h[key]; !ok {
			t.Errorf("%s: rendered by kustomize, not by the chart", key)
			continue
		}
		if diffs := diffValues(k[key], h[key], ""); len(diffs) > 0 {
			t.Errorf("%s differs (kustomize, then the chart):\n  %s", key, strings.Join(diffs, "\n  "))
		}
	}
	for key := range h {
		if _, ok := k[key]; !ok {
			t.Errorf("%s: rendered by the chart, not by kustomize", key)
		}
	}
	if len(k) < 10 {
		t.Errorf("kustomize rendered only %d objects", len(k))
	}
}

// diffValues lists the paths at which two decoded YAML values differ.
func diffValues(a, b any, path string) []string {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			break
		}
		var keys []string
		for key := range av {
			keys = append(keys, key)
		}
		for key := range bv {
			if _, ok := av[key]; !ok {
				keys = append(keys, key)
			}
		}
		sort.Strings(keys)
		var out []string
		for _, key := range keys {
			out = append(out, diffValues(av[key], bv[key], path+"/"+key)...)
		}
		return out
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			break
		}
		var out []string
		for i := range av {
			out = append(out, diffValues(av[i], bv[i], fmt.Sprintf("%s/%d", path, i))...)
		}
		return out
	}
	if reflect.DeepEqual(a, b) {
		return nil
	}
	return []string{fmt.Sprintf("%s: %#v != %#v", path, a, b)}
}

// TestHelmChartValues renders the chart with a site's values, none of them
// the default, and checks each lands where it should; every nvmirror
// container's command line still parses in its binary.
func TestHelmChartValues(t *testing.T) {
	rel, site := helmchart.ExampleSite.Release, helmchart.ExampleSite.Values
	docs, notes := helmRender(t, rel, site)
	objs := objects(docs)

	for _, d := range docs {
		kind, ns := str(d.value, "kind"), str(d.value, "metadata", "namespace")
		switch kind {
		case "Namespace", "Secret", "PersistentVolumeClaim":
			t.Errorf("%s rendered: the namespace exists, every Secret is the site's, etcd needs no claim", objectKey(d.value))
		case "CSIDriver", "ClusterRole", "ClusterRoleBinding":
		default:
			if ns != rel.Namespace {
				t.Errorf("%s: not in the release namespace %s", objectKey(d.value), rel.Namespace)
			}
		}
		for _, s := range list(d.value, "subjects") {
			if str(s, "namespace") != rel.Namespace {
				t.Errorf("%s: subject %v not in the release namespace", objectKey(d.value), s)
			}
		}
	}
	invs := invocationsOf(t, docs, "registry.example.com/nvmirror")
	if len(invs) != 5 { // controller, node, provisioner, two racks' agents
		t.Errorf("%d nvmirror containers run the site's image, want 5", len(invs))
	}
	for _, inv := range invs {
		checkInvocation(t, inv)
	}
	for _, d := range docs {
		for _, c := range containersOf(d.value) {
			if img := str(c.spec, "image"); strings.Contains(img, "nvmirror") && img != "registry.example.com/nvmirror:v9.9.9" {
				t.Errorf("%s: image %s, want the site's", c, img)
			}
		}
	}
	if r, _ := get(mustObject(t, objs, "Deployment/nvmirror-controller"), "spec", "replicas").(int); r != 3 {
		t.Errorf("controller replicas %v, want 3", get(objs["Deployment/nvmirror-controller"], "spec", "replicas"))
	}

	// Credentials: every Secret volume names the site's Secret, and each
	// node's own certificate comes from the site's directory on the host.
	wantSecret := func(key, volume, secret string) {
		t.Helper()
		if have := str(volumeOf(mustObject(t, objs, key), volume), "secret", "secretName"); have != secret {
			t.Errorf("%s volume %s: Secret %q, want %q", key, volume, have, secret)
		}
	}
	wantSecret("Deployment/nvmirror-controller", "ca", "site-ca")
	wantSecret("Deployment/nvmirror-controller", "controller-tls", "site-controller-tls")
	wantSecret("DaemonSet/nvmirror-node", "ca", "site-ca")
	wantSecret("Deployment/nvmirror-provisioner", "tls", "site-provisioner-tls")
	wantSecret("Deployment/nvmirror-provisioner", "ca", "site-ca")
	wantSecret("Deployment/nvmirror-provisioner", "agent-client", "site-provisioner-client-tls")
	wantSecret("Deployment/nvmirror-provisioner", "admin", "site-admin-tls")
	wantSecret("Deployment/nvmirror-provisioner", "etcd-client", "site-etcd-client")
	wantSecret("DaemonSet/nvmirror-target-rack-a", "ca", "site-ca")
	wantSecret("DaemonSet/nvmirror-target-rack-b", "ca", "site-ca")
	wantHostDir := func(key, volume, dir string) {
		t.Helper()
		v := volumeOf(mustObject(t, objs, key), volume)
		if have := str(v, "hostPath", "path"); have != dir || str(v, "hostPath", "type") != "Directory" {
			t.Errorf("%s volume %s: hostPath %v, want the directory %s", key, volume, get(v, "hostPath"), dir)
		}
	}
	wantHostDir("DaemonSet/nvmirror-node", "node-tls", "/var/lib/site-pki/nvmirror-node")
	wantHostDir("DaemonSet/nvmirror-target-rack-a", "target-tls", "/var/lib/site-pki/nvmirror-target")
	wantHostDir("DaemonSet/nvmirror-target-rack-b", "target-tls", "/var/lib/site-pki/nvmirror-target")

	// Storage nodes: the list, under a name of its content, is what the
	// provisioner mounts.
	prov := mustObject(t, objs, "Deployment/nvmirror-provisioner")
	cmName := str(volumeOf(prov, "storage-nodes"), "configMap", "name")
	if data := str(objs["ConfigMap/"+cmName], "data", "storage-nodes"); data != "sn-1=10.0.0.11:9400\nsn-2=10.0.0.12:9400\n" {
		t.Errorf("ConfigMap %s (the provisioner's storage-nodes volume) holds %q", cmName, data)
	}
	defaults, _ := helmRender(t, helmchart.DefaultRelease, nil)
	if _, same := objects(defaults)["ConfigMap/"+cmName]; same {
		t.Errorf("the storage node list kept the placeholder's name %s: pods would not roll when it changes", cmName)
	}

	// Racks and zones replace the single agent DaemonSet.
	if _, ok := objs["DaemonSet/nvmirror-target"]; ok {
		t.Error("the rackless agent DaemonSet is rendered beside the per-rack ones")
	}
	for rack, zone := range map[string]string{"rack-a": "zone-1", "rack-b": ""} {
		ds := mustObject(t, objs, "DaemonSet/nvmirror-target-"+rack)
		sel := get(podSpec(ds), "nodeSelector")
		if !reflect.DeepEqual(sel, map[string]any{"kubernetes.io/os": "linux", "node-role.example.com/storage": "yes", "nvmirror.io/rack": rack}) {
			t.Errorf("%s: nodeSelector %v, want the site's storage node label and the rack's", rack, sel)
		}
		if str(ds, "spec", "selector", "matchLabels", "nvmirror.io/rack") != rack {
			t.Errorf("%s: selector %v without its rack", rack, get(ds, "spec", "selector"))
		}
		c := containerNamed(t, ds, "nvmirror-target")
		wantFlag(t, c, "rack", rack)
		if v, ok := flagValue(c, "zone"); v != zone || ok != (zone != "") {
			t.Errorf("%s: --zone %q (present %v), want %q", rack, v, ok, zone)
		}
	}

	// Healer timers become the node plugin's flags, integers as integers.
	node := containerNamed(t, mustObject(t, objs, "DaemonSet/nvmirror-node"), "nvmirror-csi")
	for flag, v := range map[string]string{"heal-interval": "10s", "max-concurrent-replacements": "1",
		"ctrl-loss-tmo": "600", "max-rebuild-bandwidth": "1000000"} {
		wantFlag(t, node, flag, v)
	}
	if _, ok := flagValue(node, "keep-alive-tmo"); ok {
		t.Error("--keep-alive-tmo passed though not set: unset timers must keep the binary's default")
	}
	if cpu := str(node.spec, "resources", "requests", "cpu"); cpu != "100m" {
		t.Errorf("node plugin cpu request %q, want 100m", cpu)
	}

	// The etcd store and syslog forwarding.
	pc := containerNamed(t, prov, "nvmirror-provisioner")
	wantFlag(t, pc, "store", "etcd")
	wantFlag(t, pc, "syslog-address", "syslog.example:6514")
	wantFlag(t, pc, "syslog-transport", "tls")
	wantFlag(t, pc, "event-retention", "5000")
	for _, e := range list(pc.spec, "env") {
		if str(e, "name") == "ETCD_ENDPOINTS" {
			cm := str(e, "valueFrom", "configMapKeyRef", "name")
			if got := str(objs["ConfigMap/"+cm], "data", "endpoints"); got != "https://etcd-1.example:2379,https://etcd-2.example:2379" {
				t.Errorf("ETCD_ENDPOINTS from ConfigMap %s = %q", cm, got)
			}
		}
	}
	if s := str(prov, "spec", "strategy", "type"); s != "RollingUpdate" {
		t.Errorf("provisioner strategy %s with etcd, want RollingUpdate", s)
	}

	if strings.Contains(notes, "NOT READY") || !strings.Contains(notes, "-n storage-system") || !strings.Contains(notes, "nvmirror.io/rack=rack-b") ||
		!strings.Contains(notes, "/var/lib/site-pki/nvmirror-node") || !strings.Contains(notes, "/var/lib/site-pki/nvmirror-target") {
		t.Errorf("NOTES.txt for a complete site:\n%s", notes)
	}
}

// TestHelmChartDefaultNotes: installed with the defaults, NOTES.txt names
// every placeholder that keeps nvmirror from starting, and where each node's
// own certificate must be.
func TestHelmChartDefaultNotes(t *testing.T) {
	docs, notes := helmRender(t, helmchart.DefaultRelease, nil)
	checkReferences(t, docs)
	for _, want := range []string{"NOT READY", "nvmirror-ca", "nvmirror-provisioner-tls", "nvmirror-provisioner-client-tls",
		"nvmirror-controller-tls", "nvmirror-admin-tls", "storageNodes is empty", "nvmirrorctl nodes",
		"/etc/nvmirror/node-tls", "/etc/nvmirror/target-tls"} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES.txt does not say %q:\n%s", want, notes)
		}
	}
}

// TestHelmChartSchemaRejects: values.schema.json refuses bad values, and
// helm's message names the value at fault.
func TestHelmChartSchemaRejects(t *testing.T) {
	for _, tc := range []struct {
		values map[string]any
		names  string
	}{
		{map[string]any{"provisioner": map[string]any{"store": "sqlite"}}, "/provisioner/store"},
		{map[string]any{"provisioner": map[string]any{"store": "etcd"}}, "/provisioner/etcd"},
		{map[string]any{"provisioner": map[string]any{"syslog": map[string]any{"transport": "http"}}}, "/provisioner/syslog/transport"},
		{map[string]any{"storageNodes": []any{map[string]any{"name": "sn-1", "address": "10.0.0.11"}}}, "/storageNodes/0/address"},
		{map[string]any{"storageNodes": []any{map[string]any{"address": "10.0.0.11:9400"}}}, "/storageNodes/0"},
		{map[string]any{"node": map[string]any{"healer": map[string]any{"healInterval": "10"}}}, "/node/healer/healInterval"},
		{map[string]any{"node": map[string]any{"healer": map[string]any{"ctrlLossTmo": "600s"}}}, "/node/healer/ctrlLossTmo"},
		{map[string]any{"node": map[string]any{"healer": map[string]any{"healEvery": "10s"}}}, "healEvery"},
		{map[string]any{"credentials": map[string]any{"caSecret": "My_CA"}}, "/credentials/caSecret"},
		{map[string]any{"credentials": map[string]any{"adminTLSSecret": "Admin TLS"}}, "/credentials/adminTLSSecret"},
		{map[string]any{"credentials": map[string]any{"apiTokenSecret": "nvmirror-api-token"}}, "apiTokenSecret"},
		{map[string]any{"node": map[string]any{"certificateHostPath": "etc/nvmirror/node-tls"}}, "/node/certificateHostPath"},
		{map[string]any{"node": map[string]any{"certificateHostPath": nil}}, "certificateHostPath"},
		{map[string]any{"target": map[string]any{"certificateHostPath": "/etc/nvmirror/../shadow"}}, "/target/certificateHostPath"},
		{map[string]any{"target": map[string]any{"certificateHostPath": "/"}}, "/target/certificateHostPath"},
		{map[string]any{"racks": []any{map[string]any{"name": "Rack A"}}}, "/racks/0/name"},
		{map[string]any{"controller": map[string]any{"extraArgs": []any{"-v=4"}}}, "/controller/extraArgs/0"},
		{map[string]any{"controller": map[string]any{"replicas": 0}}, "/controller/replicas"},
		{map[string]any{"contoller": map[string]any{"replicas": 3}}, "contoller"},
	} {
		_, err := helmchart.Render(repoRoot, helmchart.DefaultRelease, tc.values)
		if err == nil {
			t.Errorf("values %v rendered; the schema should refuse them", tc.values)
			continue
		}
		if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.names) {
			t.Errorf("values %v: the error does not name %s as the schema's: %v", tc.values, tc.names, err)
		}
	}
}

var createdSecret = regexp.MustCompile(`kubectl -n nvmirror create secret (?:generic|tls) (\S+)`)

// TestInstallDocHelmValues follows docs/install.md's Helm path: the values
// it shows render; the chart then makes no Secret and no namespace of its
// own; every Secret pods mount is one the doc's kubectl commands make; the
// storage nodes and the image are the site's; the notes say nothing is
// missing; every nvmirror flag parses.
func TestInstallDocHelmValues(t *testing.T) {
	var values map[string]any
	if err := yaml.Unmarshal([]byte(installDocBlock(t, "site-values")), &values); err != nil {
		t.Fatalf("docs/install.md's values: %v", err)
	}
	docs, notes := helmRender(t, helmchart.DefaultRelease, values)
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	made := map[string]bool{}
	for _, m := range createdSecret.FindAllStringSubmatch(string(doc), -1) {
		made[m[1]] = true
	}
	if len(made) != 5 {
		t.Errorf("docs/install.md makes %d Secrets with kubectl, want the 5 credentials: %v", len(made), made)
	}
	mounted := map[string]bool{}
	for _, d := range docs {
		switch str(d.value, "kind") {
		case "Secret", "Namespace":
			t.Errorf("%s rendered: the doc makes it with kubectl", objectKey(d.value))
		case "ConfigMap":
			if data := str(d.value, "data", "storage-nodes"); data != "" && !strings.Contains(data, "sn-3=10.0.0.13:9400\n") {
				t.Errorf("storage nodes %q: not the doc's", data)
			}
		}
		for _, v := range list(podSpec(d.value), "volumes") {
			if name := str(v, "secret", "secretName"); name != "" {
				mounted[name] = true
				if !made[name] {
					t.Errorf("%s mounts Secret %s, which docs/install.md does not make", objectKey(d.value), name)
				}
			}
		}
	}
	for name := range made {
		if !mounted[name] {
			t.Errorf("docs/install.md makes Secret %s, which no pod mounts", name)
		}
	}
	invs := invocationsOf(t, docs, "registry.example.com/nvmirror")
	if len(invs) != 4 {
		t.Errorf("%d nvmirror containers with the site's image, want 4", len(invs))
	}
	for _, inv := range invs {
		checkInvocation(t, inv)
	}
	if strings.Contains(notes, "NOT READY") {
		t.Errorf("NOTES.txt for the doc's values:\n%s", notes)
	}
}
