package k8s

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nvmirror/nvmirror/test/deploy/helmchart"
	"github.com/nvmirror/nvmirror/test/deploy/snapshotcrds"
)

// Manifests is one unit of deploy/ as the API server would receive it: a
// kustomization rendered with `kubectl kustomize`, or a plain YAML file.
type Manifests struct {
	Source string // path relative to the repository root
	YAML   string
}

// kustomizationFiles are the names kustomize accepts for a kustomization.
var kustomizationFiles = []string{"kustomization.yaml", "kustomization.yml", "Kustomization"}

func isKustomization(dir string) bool {
	for _, n := range kustomizationFiles {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			return true
		}
	}
	return false
}

// notManifests are the directories under deploy/ whose YAML files are not
// Kubernetes objects: the Helm chart's templates (the chart is rendered
// instead, below) and the monitoring configuration (Prometheus rules).
var notManifests = []string{"helm", "monitoring"}

// HelmReleases are the renders of the Helm chart the dry run sends: the
// default values (the same objects as the kustomize base) and a site's,
// with every kind of value set.
var HelmReleases = []struct {
	Name    string
	Release helmchart.Release
	Values  map[string]any
}{
	{"default values", helmchart.DefaultRelease, nil},
	{"a site's values", helmchart.ExampleSite.Release, helmchart.ExampleSite.Values},
}

// needsCRDs are the kustomizations of deploy/ made of other projects'
// custom resources, which this test's API server (kube-apiserver alone)
// does not serve: they are rendered here, and their objects checked by
// test/deploy, but not sent to the API server.
var needsCRDs = map[string]string{
	filepath.Join("deploy", "examples", "cert-manager"): "cert-manager.io/v1 (Issuer, Certificate)",
}

// DeployManifests renders every kustomization under dir (base and overlays
// alike, each as a user would apply it) and the Helm chart (HelmReleases),
// and reads every other YAML file. Files inside a kustomization's directory
// tree are its resources or patches, which are not valid objects alone:
// they are checked through the rendering instead.
func (cp *ControlPlane) DeployManifests(repo, dir string) []Manifests {
	cp.t.Helper()
	root := filepath.Join(repo, dir)
	var kdirs, files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if filepath.Dir(path) == root && slices.Contains(notManifests, d.Name()) {
				return filepath.SkipDir
			}
			if isKustomization(path) {
				kdirs = append(kdirs, path)
			}
			return nil
		}
		if ext := filepath.Ext(path); ext == ".yaml" || ext == ".yml" {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		cp.t.Fatalf("reading %s: %v", dir, err)
	}
	inKustomization := func(path string) bool {
		for _, k := range kdirs {
			if strings.HasPrefix(path, k+string(filepath.Separator)) {
				return true
			}
		}
		return false
	}
	rel := func(p string) string {
		r, err := filepath.Rel(repo, p)
		if err != nil {
			return p
		}
		return r
	}
	var out []Manifests
	for _, k := range kdirs {
		render := k
		if rel(k) == snapshotcrds.ComponentDir {
			// Upstream's files by URL: the module cache copies of the
			// same release instead (the tests have no network).
			render = cp.localSnapshotComponent(repo)
		}
		y, err := cp.Kubectl("kustomize", render)
		if err != nil {
			cp.t.Fatalf("rendering %s: %v", rel(k), err)
		}
		if crds, ok := needsCRDs[rel(k)]; ok {
			cp.t.Logf("%s: rendered, not sent: its objects are of %s, not installed here", rel(k), crds)
			continue
		}
		out = append(out, Manifests{Source: rel(k) + " (kustomize)", YAML: y})
	}
	for _, f := range files {
		if inKustomization(f) {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			cp.t.Fatal(err)
		}
		out = append(out, Manifests{Source: rel(f), YAML: string(b)})
	}
	for _, h := range HelmReleases {
		r, err := helmchart.Render(repo, h.Release, h.Values)
		if err != nil {
			cp.t.Fatalf("rendering %s with %s: %v", helmchart.ChartDir, h.Name, err)
		}
		out = append(out, Manifests{Source: fmt.Sprintf("%s (helm, %s)", helmchart.ChartDir, h.Name), YAML: r.YAML})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Source < out[j].Source })
	return out
}

// Object is one object of a manifest, as JSON decodes it.
type Object map[string]any

// Kind, Name and Namespace read the object's type and metadata.
func (o Object) Kind() string      { return str(o["kind"]) }
func (o Object) Name() string      { return str(o.metadata()["name"]) }
func (o Object) Namespace() string { return str(o.metadata()["namespace"]) }

func (o Object) metadata() map[string]any {
	m, _ := o["metadata"].(map[string]any)
	return m
}

// JSON is the object as `kubectl apply -f -` accepts it.
func (o Object) JSON() string {
	b, err := json.Marshal(map[string]any(o))
	if err != nil {
		panic(err) // decoded from JSON, so it encodes
	}
	return string(b)
}

// ListJSON is objects as one v1 List, to apply them with one kubectl call.
func ListJSON(objs []Object) string {
	items := make([]any, len(objs))
	for i, o := range objs {
		items[i] = map[string]any(o)
	}
	b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	if err != nil {
		panic(err) // decoded from JSON, so it encodes
	}
	return string(b)
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// Objects parses manifests with kubectl itself (client-side, nothing is sent
// to the server), so the YAML is read exactly as `kubectl apply` reads it.
func (cp *ControlPlane) Objects(m Manifests) ([]Object, error) {
	if strings.TrimSpace(m.YAML) == "" {
		return nil, nil
	}
	out, err := cp.KubectlIn(m.YAML, "create", "--dry-run=client", "-f", "-", "-o", "json")
	if err != nil {
		return nil, err
	}
	// kubectl prints one JSON document per object, one after the other
	// (a List only when the input was one).
	var objs []Object
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var obj Object
		if err := dec.Decode(&obj); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("kubectl's JSON: %w", err)
		}
		if !strings.HasSuffix(obj.Kind(), "List") {
			objs = append(objs, obj)
			continue
		}
		items, _ := obj["items"].([]any)
		for _, it := range items {
			if o, ok := it.(map[string]any); ok {
				objs = append(objs, Object(o))
			}
		}
	}
	return objs, nil
}

// DryRun sends manifests to the API server with `kubectl apply
// --dry-run=server`: every object goes through decoding, defaulting,
// validation and admission, and nothing is stored. Namespaces the objects
// live in are created for real first, since the server checks that a
// namespaced object's namespace exists.
func (cp *ControlPlane) DryRun(m Manifests) ([]Object, error) {
	objs, err := cp.Objects(m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Source, err)
	}
	for _, o := range objs {
		ns := o.Namespace()
		if o.Kind() == "Namespace" {
			ns = o.Name()
		}
		if ns == "" {
			continue
		}
		if err := cp.EnsureNamespace(ns); err != nil {
			return nil, fmt.Errorf("%s: %w", m.Source, err)
		}
	}
	if out, err := cp.KubectlIn(m.YAML, "apply", "--dry-run=server", "-f", "-"); err != nil {
		return nil, fmt.Errorf("%s: %w\naccepted before the error:\n%s", m.Source, err, out)
	}
	return objs, nil
}

// EnsureNamespace creates a namespace unless it exists, and waits for its
// default ServiceAccount: the ServiceAccount admission plugin refuses pods
// (dry run included) until the controller manager has created it.
func (cp *ControlPlane) EnsureNamespace(ns string) error {
	if _, err := cp.Kubectl("get", "namespace", ns); err != nil {
		// --save-config: a manifest applying the same Namespace later
		// would otherwise warn that it was not created by apply.
		if _, err := cp.Kubectl("create", "namespace", ns, "--save-config"); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cp.Kubectl("get", "serviceaccount", "default", "-n", ns)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s has no default ServiceAccount after 30s: %w", ns, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rbacKinds are what the controller's sidecars need to exist to be allowed
// anything.
var rbacKinds = map[string]bool{"Namespace": true, "ServiceAccount": true, "ClusterRole": true,
	"ClusterRoleBinding": true, "Role": true, "RoleBinding": true}

func mapAt(m map[string]any, key string) map[string]any {
	v, _ := m[key].(map[string]any)
	return v
}

func spec(o Object) map[string]any {
	s, _ := o["spec"].(map[string]any)
	return s
}
