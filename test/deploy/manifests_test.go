package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/test/deploy/snapshotcrds"
)

// TestEveryYAMLDocumentParses decodes every document of every YAML file
// under deploy/ and checks its shape: a Kustomization, a JSON patch (a list
// of operations), or a Kubernetes object with apiVersion, kind and a name.
func TestEveryYAMLDocumentParses(t *testing.T) {
	files := yamlFiles(t, deployDir)
	if len(files) < 5 {
		t.Fatalf("only %d YAML files under deploy/", len(files))
	}
	for _, f := range files {
		docs := readDocs(t, f)
		if len(docs) == 0 {
			t.Errorf("%s: no YAML document", f)
		}
		for _, d := range docs {
			switch v := d.value.(type) {
			case []any:
				for i, op := range v {
					if str(op, "op") == "" || !strings.HasPrefix(str(op, "path"), "/") {
						t.Errorf("%s: list item %d is not a JSON patch operation (op, path): %v", d, i, op)
					}
				}
			case map[string]any:
				if str(v, "apiVersion") == "" || str(v, "kind") == "" {
					t.Errorf("%s: no apiVersion or kind", d)
					continue
				}
				if filepath.Base(f) == "kustomization.yaml" {
					kustomization := str(v, "kind") == "Kustomization" && str(v, "apiVersion") == "kustomize.config.k8s.io/v1beta1"
					component := str(v, "kind") == "Component" && str(v, "apiVersion") == "kustomize.config.k8s.io/v1alpha1"
					if !kustomization && !component {
						t.Errorf("%s: kustomization.yaml holds %s %s", d, str(v, "apiVersion"), str(v, "kind"))
					}
					continue
				}
				if str(v, "metadata", "name") == "" {
					t.Errorf("%s: %s without metadata.name", d, str(v, "kind"))
				}
			default:
				t.Errorf("%s: neither a mapping nor a list: %T", d, d.value)
			}
		}
	}
}

// TestKustomizationsReferenceExistingFiles checks every path a
// kustomization names (resources, components, patches, generator sources)
// exists, that no resource is remote (the manifests must be whole here),
// and that every YAML file under deploy/ is used by some kustomization: a
// manifest kustomize never reads would be an untested, hand-kept copy.
func TestKustomizationsReferenceExistingFiles(t *testing.T) {
	used := map[string]bool{}
	for _, root := range kustomizationRoots(t) {
		kf := filepath.Join(root, "kustomization.yaml")
		used[kf] = true
		k := readDocs(t, kf)[0].value
		ref := func(what, p string) {
			if root == snapshotcrds.ComponentDir && what == "resources" {
				// The one exception: upstream's snapshot CRDs and
				// controller, by URL at the release the tests build
				// (TestSnapshotComponent checks each maps to a file of
				// it).
				if _, err := pinnedSnapshotter(t).File(p); err != nil {
					t.Errorf("%s: %v", kf, err)
				}
				return
			}
			if strings.Contains(p, "://") || strings.HasPrefix(p, "github.com/") {
				t.Errorf("%s: %s %q is remote; deploy/ must be self-contained (only %s may name upstream's files)", kf, what, p, snapshotcrds.ComponentDir)
				return
			}
			full := filepath.Join(repoRoot, root, p)
			fi, err := os.Stat(full)
			if err != nil {
				t.Errorf("%s: %s %q: %v", kf, what, p, err)
				return
			}
			rel, _ := filepath.Rel(repoRoot, full)
			if fi.IsDir() {
				if _, err := os.Stat(filepath.Join(full, "kustomization.yaml")); err != nil {
					t.Errorf("%s: %s %q is a directory without kustomization.yaml", kf, what, p)
				}
				return
			}
			used[rel] = true
		}
		for _, key := range []string{"resources", "components", "crds"} {
			for _, p := range strs(k, key) {
				ref(key, p)
			}
		}
		for _, key := range []string{"patchesStrategicMerge", "bases"} {
			if get(k, key) != nil {
				t.Errorf("%s: %s is deprecated; use resources/patches", kf, key)
			}
		}
		for _, p := range list(k, "patches") {
			if path := str(p, "path"); path != "" {
				ref("patch", path)
			} else if str(p, "patch") == "" {
				t.Errorf("%s: patch without path or patch: %v", kf, p)
			}
		}
		for _, gen := range []string{"configMapGenerator", "secretGenerator"} {
			for _, g := range list(k, gen) {
				for _, f := range strs(g, "files") {
					// key=path or path
					if _, p, ok := strings.Cut(f, "="); ok {
						f = p
					}
					ref(gen+" "+str(g, "name")+" file", f)
				}
				for _, f := range strs(g, "envs") {
					ref(gen+" "+str(g, "name")+" env file", f)
				}
			}
		}
	}
	for _, f := range yamlFiles(t, deployDir) {
		if !used[f] {
			t.Errorf("%s is not referenced by any kustomization under deploy/", f)
		}
	}
}

// TestKustomizationsRender renders every kustomization with `kubectl
// kustomize` and checks that what pods reference (Secrets, ConfigMaps,
// claims, service accounts) is in the same render: kustomize renames
// generated objects with a hash suffix and only rewrites references it can
// match, so a patch in the wrong namespace leaves a dangling name.
func TestKustomizationsRender(t *testing.T) {
	for _, root := range kustomizationRoots(t) {
		t.Run(root, func(t *testing.T) {
			docs := render(t, root)
			if len(docs) == 0 {
				t.Fatal("renders nothing")
			}
			checkReferences(t, docs)
		})
	}
}

// checkReferences checks that what pods reference (service accounts,
// Secrets, ConfigMaps, claims) is in the same render, when the render is a
// whole installation (it has the namespace).
func checkReferences(t *testing.T, docs []doc) {
	t.Helper()
	have := map[string]bool{}
	for _, d := range docs {
		have[str(d.value, "kind")+"/"+str(d.value, "metadata", "name")] = true
	}
	// A piece of an installation (the examples, one rack's agents)
	// uses what the installation around it makes: only whole ones,
	// those with the namespace, must be self-contained.
	whole := have["Namespace/nvmirror"]
	for _, d := range docs {
		ps := podSpec(d.value)
		if ps == nil {
			continue
		}
		owner := str(d.value, "kind") + "/" + str(d.value, "metadata", "name")
		need := func(kind, name string) {
			if name != "" && !have[kind+"/"+name] && whole {
				t.Errorf("%s references %s/%s, which this render does not contain", owner, kind, name)
			}
		}
		if sa := str(ps, "serviceAccountName"); sa != "" {
			need("ServiceAccount", sa)
		}
		for _, v := range list(ps, "volumes") {
			need("Secret", str(v, "secret", "secretName"))
			need("ConfigMap", str(v, "configMap", "name"))
			need("PersistentVolumeClaim", str(v, "persistentVolumeClaim", "claimName"))
		}
		for _, c := range containersOf(d.value) {
			for _, e := range list(c.spec, "env") {
				need("ConfigMap", str(e, "valueFrom", "configMapKeyRef", "name"))
				need("Secret", str(e, "valueFrom", "secretKeyRef", "name"))
			}
		}
	}
}

// invocation is how a manifest runs an nvmirror binary.
type invocation struct {
	where  string
	binary string
	args   []string
	env    map[string]string // values Kubernetes substitutes for $(VAR); nil: not known
}

// nvmirrorInvocations finds the containers running the nvmirror image in
// docs and checks they name the binary to run.
func nvmirrorInvocations(t *testing.T, docs []doc) []invocation {
	t.Helper()
	return invocationsOf(t, docs, nvmirrorImage)
}

// invocationsOf is nvmirrorInvocations for the image renamed (a site's
// registry).
func invocationsOf(t *testing.T, docs []doc, image string) []invocation {
	t.Helper()
	commands := commandNames(t)
	var out []invocation
	for _, d := range docs {
		for _, c := range containersOf(d.value) {
			if imageName(str(c.spec, "image")) != image {
				continue
			}
			cmd := strs(c.spec, "command")
			if len(cmd) == 0 {
				t.Errorf("%s (%s): the image holds every binary; command must name one of %v", c, d.file, commands)
				continue
			}
			bin := filepath.Base(cmd[0])
			if !slices.Contains(commands, bin) {
				t.Errorf("%s (%s): command %q is not one of the binaries %v", c, d.file, cmd[0], commands)
				continue
			}
			env := map[string]string{}
			for _, e := range list(c.spec, "env") {
				v := str(e, "value")
				switch str(e, "valueFrom", "fieldRef", "fieldPath") {
				case "spec.nodeName":
					v = "node-1"
				case "status.hostIP", "status.podIP":
					v = "192.0.2.10"
				case "metadata.name":
					v = "pod-1"
				case "metadata.namespace":
					v = "nvmirror"
				}
				env[str(e, "name")] = v
			}
			out = append(out, invocation{where: c.String() + " (" + d.file + ")", binary: bin,
				args: append(cmd[1:], strs(c.spec, "args")...), env: env})
		}
	}
	return out
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// checkInvocation checks each argument is --name=value or --name, that the
// binary registers name, and then lets the binary parse the whole command
// line for real (appending --version, which every nvmirror binary handles
// after parsing: a bad value, such as a duration without unit, fails there
// as it would in the pod).
func checkInvocation(t *testing.T, inv invocation) {
	t.Helper()
	flags := flagsOf(t, inv.binary)
	var resolved []string
	bad := false
	errorf := func(format string, args ...any) {
		t.Helper()
		bad = true
		t.Errorf(format, args...)
	}
	for _, a := range inv.args {
		if !strings.HasPrefix(a, "-") {
			errorf("%s: argument %q is not a flag; write every flag as --name=value (a separate value would stop the check below at it)", inv.where, a)
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !flags[name] {
			errorf("%s: %s has no flag --%s", inv.where, inv.binary, name)
		}
		resolved = append(resolved, varRef.ReplaceAllStringFunc(a, func(m string) string {
			if inv.env == nil {
				return "x" // unknown here; the rendered check resolves it
			}
			v, ok := inv.env[varRef.FindStringSubmatch(m)[1]]
			if !ok {
				errorf("%s: %q refers to %s, which the container's env does not define (Kubernetes would pass it literally)", inv.where, a, m)
			}
			return v
		}))
	}
	if bad {
		return
	}
	cmd := execCommand(t, filepath.Join(binDir(t), inv.binary), append(resolved, "--version")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		// The error, not the usage the flag package prints after it.
		msg, _, _ := strings.Cut(string(out), "Usage of")
		t.Errorf("%s: %s %s --version: %v\n%s", inv.where, inv.binary, strings.Join(resolved, " "), err, msg)
	}
}

// TestNvmirrorContainerFlags checks every flag given to an nvmirror
// container, in the files as written (JSON patches included: the flags an
// overlay appends are checked against the container they land in) and, with
// kubectl, in every rendered kustomization.
func TestNvmirrorContainerFlags(t *testing.T) {
	var raw []doc
	for _, f := range yamlFiles(t, deployDir) {
		raw = append(raw, readDocs(t, f)...)
	}
	invs := nvmirrorInvocations(t, raw)
	seen := map[string]bool{}
	for _, inv := range invs {
		seen[inv.binary] = true
		checkInvocation(t, inv)
		// The tag comes from the kustomize images: transformer, once.
	}
	for _, b := range []string{"nvmirror-csi", "nvmirror-provisioner", "nvmirror-target"} {
		if !seen[b] {
			t.Errorf("no manifest runs %s", b)
		}
	}
	for _, d := range raw {
		for _, c := range containersOf(d.value) {
			if img := str(c.spec, "image"); imageName(img) == nvmirrorImage && img != nvmirrorImage {
				t.Errorf("%s (%s): image %q carries a tag; set it once with the kustomize images: transformer", c, d.file, img)
			}
		}
	}
	checkJSONPatchFlags(t, raw)

	t.Run("rendered", func(t *testing.T) {
		for _, root := range kustomizationRoots(t) {
			for _, inv := range nvmirrorInvocations(t, render(t, root)) {
				inv.where = root + ": " + inv.where
				checkInvocation(t, inv)
			}
		}
	})
}

var argsPatchPath = regexp.MustCompile(`^/spec/template/spec/containers/(\d+)/args/-$`)

// checkJSONPatchFlags checks the flags JSON patches append to container
// args, against the binary of the container they target (found in the
// raw documents by the patch's target kind and name).
func checkJSONPatchFlags(t *testing.T, raw []doc) {
	t.Helper()
	for _, root := range kustomizationRoots(t) {
		k := readDocs(t, filepath.Join(root, "kustomization.yaml"))[0].value
		for _, p := range list(k, "patches") {
			path := str(p, "path")
			kind, name := str(p, "target", "kind"), str(p, "target", "name")
			if path == "" || kind == "" {
				continue
			}
			file := filepath.Join(root, path)
			ops, ok := readDocs(t, file)[0].value.([]any)
			if !ok {
				continue // a strategic merge patch: checked as a manifest
			}
			// The resource itself, not a strategic merge patch of it (which
			// has the same kind and name but no image).
			var target any
			for _, d := range raw {
				if str(d.value, "kind") == kind && str(d.value, "metadata", "name") == name && hasImages(d.value) {
					target = d.value
				}
			}
			if target == nil {
				t.Errorf("%s: patch target %s/%s not found under deploy/", file, kind, name)
				continue
			}
			for _, op := range ops {
				m := argsPatchPath.FindStringSubmatch(str(op, "path"))
				if m == nil {
					continue
				}
				cs := list(podSpec(target), "containers")
				idx := 0
				for _, ch := range m[1] {
					idx = idx*10 + int(ch-'0')
				}
				if idx >= len(cs) {
					t.Errorf("%s: %s targets container %d of %s/%s, which has %d", file, str(op, "path"), idx, kind, name, len(cs))
					continue
				}
				cmd := strs(cs[idx], "command")
				if imageName(str(cs[idx], "image")) != nvmirrorImage || len(cmd) == 0 {
					continue
				}
				checkInvocation(t, invocation{where: file + " on " + kind + "/" + name, binary: filepath.Base(cmd[0]),
					args: []string{str(op, "value")}}) // env: the patch's own SMP may add it
			}
		}
	}
}

// TestStorageClassExamples parses every StorageClass and
// VolumeAttributesClass of nvmirror under deploy/ with the provisioner's
// own parameter parser: a misspelt key would make every claim fail.
func TestStorageClassExamples(t *testing.T) {
	n := 0
	for _, f := range yamlFiles(t, deployDir) {
		for _, d := range readDocs(t, f) {
			kind := str(d.value, "kind")
			driver := str(d.value, "provisioner")
			if kind == "VolumeAttributesClass" {
				driver = str(d.value, "driverName")
			}
			if (kind != "StorageClass" && kind != "VolumeAttributesClass") || driver != "csi.nvmirror.io" {
				continue
			}
			n++
			ps := map[string]string{}
			if m, ok := get(d.value, "parameters").(map[string]any); ok {
				for k, v := range m {
					s, ok := v.(string)
					if !ok {
						t.Errorf("%s: parameter %s is a %T; StorageClass parameters are strings (quote it)", d, k, v)
					}
					ps[k] = s
				}
			}
			if _, err := storageclass.Parse(ps); err != nil {
				t.Errorf("%s: %v", d, err)
			}
			if kind == "VolumeAttributesClass" {
				for k := range ps {
					if !storageclass.IsMutable(k) {
						t.Errorf("%s: %s is not mutable (mutable: %s)", d, k, strings.Join(storageclass.MutableKeys(), ", "))
					}
				}
			}
		}
	}
	if n < 2 {
		t.Errorf("%d nvmirror StorageClasses under deploy/, want the examples", n)
	}
}

// hasImages reports whether obj's containers name their images (a full
// resource rather than a patch of one).
func hasImages(obj any) bool {
	cs := containersOf(obj)
	for _, c := range cs {
		if str(c.spec, "image") == "" {
			return false
		}
	}
	return len(cs) > 0
}
