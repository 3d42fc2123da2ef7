// Package helmchart renders nvmirror's Helm chart (deploy/helm/nvmirror)
// for the tests of test/deploy (the render against kustomize's, values
// landing where they should, the schema) and test/k8s (the render sent to
// a real API server). The rendering itself is hack/helm-render, the Helm
// library in a module of its own (its dependencies would otherwise raise
// the etcd client and bbolt nvmirror's binaries are built with); this
// package builds it once per test process and runs it.
package helmchart

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// ChartDir is the chart, relative to the repository root.
const ChartDir = "deploy/helm/nvmirror"

// Release names the release and its namespace, as helm's NAME and
// --namespace.
type Release struct {
	Name, Namespace string
}

// DefaultRelease is how docs/install.md installs the chart.
var DefaultRelease = Release{Name: "nvmirror", Namespace: "nvmirror"}

// ExampleSite is a site's release with every kind of value set, none to its
// default: test/deploy checks each lands where it should, test/k8s sends
// the render to a real API server.
var ExampleSite = struct {
	Release Release
	Values  map[string]any
}{
	Release: Release{Name: "nvm", Namespace: "storage-system"},
	Values: map[string]any{
		"image":     map[string]any{"repository": "registry.example.com/nvmirror", "tag": "v9.9.9"},
		"namespace": map[string]any{"create": false},
		"credentials": map[string]any{
			"caSecret": "site-ca", "provisionerTLSSecret": "site-provisioner-tls",
			"provisionerClientTLSSecret": "site-provisioner-client-tls", "controllerTLSSecret": "site-controller-tls",
			"adminTLSSecret": "site-admin-tls"},
		"storageNodes": []any{
			map[string]any{"name": "sn-1", "address": "10.0.0.11:9400"},
			map[string]any{"name": "sn-2", "address": "10.0.0.12:9400"}},
		"racks": []any{map[string]any{"name": "rack-a", "zone": "zone-1"}, map[string]any{"name": "rack-b"}},
		// Maps merge with the chart's defaults, as always with Helm: null
		// drops a default key.
		"target": map[string]any{"nodeSelector": map[string]any{"node-role.example.com/storage": "yes", "nvmirror.io/storage-node": nil},
			"certificateHostPath": "/var/lib/site-pki/nvmirror-target"},
		"node": map[string]any{
			"certificateHostPath": "/var/lib/site-pki/nvmirror-node",
			"healer": map[string]any{"healInterval": "10s", "maxConcurrentReplacements": 1, "ctrlLossTmo": 600,
				"maxRebuildBandwidth": 1000000},
			"resources": map[string]any{"requests": map[string]any{"cpu": "100m", "memory": "128Mi"}}},
		"controller": map[string]any{"replicas": 3},
		"provisioner": map[string]any{
			"store": "etcd",
			"etcd": map[string]any{"endpoints": []any{"https://etcd-1.example:2379", "https://etcd-2.example:2379"},
				"clientSecret": "site-etcd-client"},
			"syslog":    map[string]any{"address": "syslog.example:6514", "transport": "tls"},
			"extraArgs": []any{"--event-retention=5000"}},
	},
}

// Rendered is the chart rendered for a release: hack/helm-render's -json
// output.
type Rendered struct {
	// YAML is every object's document in Helm's install order, as `helm
	// template` prints them.
	YAML string `json:"yaml"`
	// Notes is the rendered NOTES.txt.
	Notes string `json:"notes"`
}

var tool struct {
	once sync.Once
	path string
	err  error
}

// build compiles hack/helm-render once per process (go's build cache makes
// later processes quick; the first build of the Helm library takes minutes).
func build(repo string) (string, error) {
	tool.once.Do(func() {
		dir, err := os.MkdirTemp("", "nvmirror-helm-render-")
		if err != nil {
			tool.err = err
			return
		}
		tool.path = filepath.Join(dir, "helm-render")
		cmd := exec.Command("go", "build", "-o", tool.path, ".")
		cmd.Dir = filepath.Join(repo, "hack", "helm-render")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			tool.err = fmt.Errorf("building hack/helm-render: %v\n%s", err, out)
		}
	})
	return tool.path, tool.err
}

// Render renders the chart of the repository at repo for rel with values
// (nil: the chart's defaults). Values the chart's schema refuses, and
// template errors, are returned as errors with helm's message.
func Render(repo string, rel Release, values map[string]any) (Rendered, error) {
	bin, err := build(repo)
	if err != nil {
		return Rendered{}, err
	}
	args := []string{"-chart", filepath.Join(repo, ChartDir), "-name", rel.Name, "-namespace", rel.Namespace, "-json"}
	if values != nil {
		f, err := os.CreateTemp("", "nvmirror-values-*.json")
		if err != nil {
			return Rendered{}, err
		}
		defer os.Remove(f.Name())
		if err := json.NewEncoder(f).Encode(values); err != nil {
			f.Close()
			return Rendered{}, err
		}
		if err := f.Close(); err != nil {
			return Rendered{}, err
		}
		args = append(args, "-f", f.Name())
	}
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Rendered{}, fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	var r Rendered
	if err := json.Unmarshal(out, &r); err != nil {
		return Rendered{}, fmt.Errorf("helm-render's JSON: %w", err)
	}
	if strings.TrimSpace(r.YAML) == "" {
		return Rendered{}, fmt.Errorf("the chart rendered no manifests")
	}
	return r, nil
}
