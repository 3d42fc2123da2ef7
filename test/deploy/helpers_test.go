package deploy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/test/deploy/snapshotcrds"
	"go.yaml.in/yaml/v3"
)

// repoRoot is the module root, two levels up from this package.
var repoRoot = func() string {
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return abs
}()

var deployDir = filepath.Join(repoRoot, "deploy")

// nvmirrorImage is the image every nvmirror container runs; its tag is set
// once, by the kustomize images: transformer.
const nvmirrorImage = "ghcr.io/nvmirror/nvmirror"

// doc is one YAML document with where it came from.
type doc struct {
	file  string // relative to the repository
	index int    // position in the file
	value any
}

func (d doc) String() string { return fmt.Sprintf("%s#%d", d.file, d.index) }

// decodeAll decodes every document of a YAML stream; empty documents are
// dropped.
func decodeAll(name string, data []byte) ([]doc, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []doc
	for i := 0; ; i++ {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s document %d: %w", name, i, err)
		}
		if v != nil {
			out = append(out, doc{file: name, index: i, value: v})
		}
	}
}

// notManifests are the directories under deploy/ that hold no kustomize
// manifests, each checked by a test of its own: the Helm chart (templates,
// not YAML until rendered: helm_test.go) and the monitoring configuration
// (a Grafana dashboard and Prometheus rules: monitoring_test.go).
var notManifests = []string{filepath.Join(deployDir, "helm"), filepath.Join(deployDir, "monitoring")}

// yamlFiles lists every .yaml/.yml file under dir, relative to the
// repository, sorted, but for those under notManifests.
func yamlFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && slices.Contains(notManifests, p) {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			rel, _ := filepath.Rel(repoRoot, p)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

func readDocs(t *testing.T, rel string) []doc {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, rel))
	if err != nil {
		t.Fatal(err)
	}
	docs, err := decodeAll(rel, data)
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

// Accessors over decoded YAML. They return zero values for missing or
// differently typed nodes, so checks read as plain field paths.
func get(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func str(v any, path ...string) string {
	s, _ := get(v, path...).(string)
	return s
}

func list(v any, path ...string) []any {
	l, _ := get(v, path...).([]any)
	return l
}

func strs(v any, path ...string) []string {
	var out []string
	for _, x := range list(v, path...) {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// workloadKinds are the kinds with a pod template at spec.template.spec.
var workloadKinds = map[string]bool{"Deployment": true, "DaemonSet": true, "StatefulSet": true, "ReplicaSet": true, "Job": true}

// podSpec returns the pod spec of a workload or pod, or nil.
func podSpec(obj any) map[string]any {
	kind := str(obj, "kind")
	var ps any
	switch {
	case workloadKinds[kind]:
		ps = get(obj, "spec", "template", "spec")
	case kind == "Pod":
		ps = get(obj, "spec")
	case kind == "CronJob":
		ps = get(obj, "spec", "jobTemplate", "spec", "template", "spec")
	}
	m, _ := ps.(map[string]any)
	return m
}

// container is one container of a pod spec with its owner.
type container struct {
	owner string // Kind/name
	spec  map[string]any
}

func (c container) name() string { return str(c.spec, "name") }
func (c container) String() string {
	return c.owner + " container " + c.name()
}

func containersOf(obj any) []container {
	ps := podSpec(obj)
	if ps == nil {
		return nil
	}
	owner := str(obj, "kind") + "/" + str(obj, "metadata", "name")
	var out []container
	for _, key := range []string{"initContainers", "containers"} {
		for _, c := range list(ps, key) {
			if m, ok := c.(map[string]any); ok {
				out = append(out, container{owner: owner, spec: m})
			}
		}
	}
	return out
}

// imageName strips the tag or digest.
func imageName(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

// binaries builds every command under cmd/ once per test run.
var binaries = struct {
	once sync.Once
	dir  string
	err  error
}{}

// binDir returns a directory holding every nvmirror binary.
func binDir(t *testing.T) string {
	t.Helper()
	binaries.once.Do(func() {
		dir, err := os.MkdirTemp("", "nvmirror-deploy-test-")
		if err != nil {
			binaries.err = err
			return
		}
		binaries.dir = dir
		cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/...")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binaries.err = fmt.Errorf("go build ./cmd/...: %v\n%s", err, out)
		}
	})
	if binaries.err != nil {
		t.Fatal(binaries.err)
	}
	return binaries.dir
}

// commandNames lists the binaries the repository builds (cmd/*).
func commandNames(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(repoRoot, "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

var flagLine = regexp.MustCompile(`^  -([A-Za-z0-9][A-Za-z0-9_.-]*)`)

var flagSets = struct {
	mu   sync.Mutex
	sets map[string]map[string]bool
}{sets: map[string]map[string]bool{}}

// flagsOf returns the flag names a binary registers, read from its -h
// output (the standard flag package's usage, which every nvmirror binary
// uses: its own flags and klog's).
func flagsOf(t *testing.T, binary string) map[string]bool {
	t.Helper()
	flagSets.mu.Lock()
	defer flagSets.mu.Unlock()
	if s, ok := flagSets.sets[binary]; ok {
		return s
	}
	// -h exits 0 with the usage on stderr (nvmirrorctl prints it on its
	// own terms: any exit status is accepted, the lines are what counts).
	out, _ := exec.Command(filepath.Join(binDir(t), binary), "-h").CombinedOutput()
	set := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			set[m[1]] = true
		}
	}
	if len(set) == 0 {
		t.Fatalf("%s -h listed no flags:\n%s", binary, out)
	}
	flagSets.sets[binary] = set
	return set
}

// kubectl returns the kubectl binary: the one `make k8s-tools` built (the
// version the e2e tests run), else one on PATH; it skips (fails with
// NVMIRROR_REQUIRE_KUBECTL=1, as `make unit` sets) when there is none.
func kubectl(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command("bash", filepath.Join(repoRoot, "hack", "k8s-tools.sh"), "--print-bin-dir").Output(); err == nil {
		built := filepath.Join(strings.TrimSpace(string(out)), "kubectl")
		if fi, err := os.Stat(built); err == nil && fi.Mode()&0o111 != 0 {
			return built
		}
	}
	p, err := exec.LookPath("kubectl")
	if err != nil {
		if os.Getenv("NVMIRROR_REQUIRE_KUBECTL") == "1" {
			t.Fatalf("kubectl not found and NVMIRROR_REQUIRE_KUBECTL=1: %v", err)
		}
		t.Skip("kubectl not installed: rendering the kustomizations is not checked")
	}
	return p
}

var renders = struct {
	mu  sync.Mutex
	out map[string][]doc
}{out: map[string][]doc{}}

// render runs `kubectl kustomize` on a directory (relative to the
// repository, or absolute) and returns its documents.
func render(t *testing.T, dir string) []doc {
	t.Helper()
	k := kubectl(t)
	renders.mu.Lock()
	defer renders.mu.Unlock()
	if d, ok := renders.out[dir]; ok {
		return d
	}
	full := dir
	if !filepath.IsAbs(dir) {
		full = filepath.Join(repoRoot, dir)
	}
	if filepath.Clean(full) == filepath.Join(repoRoot, snapshotcrds.ComponentDir) {
		// Upstream's files by URL: rendered from the module cache copies
		// of the same release instead (no network in the tests).
		full = localSnapshotComponent(t)
	}
	cmd := exec.Command(k, "kustomize", full)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
	}
	docs, err := decodeAll("kustomize "+dir, out)
	if err != nil {
		t.Fatal(err)
	}
	renders.out[dir] = docs
	return docs
}

// kustomizationRoots lists the directories under deploy/ that hold a
// kustomization, relative to the repository.
func kustomizationRoots(t *testing.T) []string {
	t.Helper()
	var roots []string
	for _, f := range yamlFiles(t, deployDir) {
		if filepath.Base(f) == "kustomization.yaml" {
			roots = append(roots, filepath.Dir(f))
		}
	}
	if len(roots) == 0 {
		t.Fatal("no kustomization.yaml under deploy/")
	}
	return roots
}

// execCommand runs a binary under test with a deadline: a command line that
// did not stop at --version would otherwise start the real process.
func execCommand(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return exec.CommandContext(ctx, name, args...)
}

var snapshotRelease = struct {
	once sync.Once
	rel  snapshotcrds.Release
	dir  string
	err  error
}{}

// pinnedSnapshotter is the external-snapshotter release
// hack/k8s/csi-snapshotter pins, from the module cache.
func pinnedSnapshotter(t *testing.T) snapshotcrds.Release {
	t.Helper()
	localSnapshotComponent(t)
	return snapshotRelease.rel
}

// localSnapshotComponent returns deploy/components/snapshot-controller
// localized (snapshotcrds.Localize) into a directory of its own, made once
// per test run.
func localSnapshotComponent(t *testing.T) string {
	t.Helper()
	s := &snapshotRelease
	s.once.Do(func() {
		s.rel, s.err = snapshotcrds.Pinned(repoRoot)
		if s.err != nil {
			return
		}
		s.dir, s.err = os.MkdirTemp("", "nvmirror-snapshot-component-")
		if s.err != nil {
			return
		}
		_, s.err = snapshotcrds.Localize(repoRoot, s.rel, s.dir)
	})
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.dir
}
