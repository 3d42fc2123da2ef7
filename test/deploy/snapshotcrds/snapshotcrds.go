// Package snapshotcrds renders deploy/components/snapshot-controller
// offline, for test/deploy and test/k8s. The component names upstream's
// files (the snapshot CRDs, the snapshot-controller's RBAC and Deployment)
// by their URLs at an external-snapshotter release tag, which kustomize
// fetches when a user renders it; the tests read the same files from the Go
// module cache instead: the modules of that release which
// hack/k8s/csi-snapshotter pins to build csi-snapshotter and
// snapshot-controller (external-snapshotter/v8 and its client/v8). A URL of
// another release or repository, or a file the modules lack, is an error:
// the component, the sidecar and the binaries the e2e runs stay one
// release.
package snapshotcrds

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ComponentDir is the component, relative to the repository root.
const ComponentDir = "deploy/components/snapshot-controller"

// HelperModule builds csi-snapshotter and snapshot-controller
// (hack/k8s-tools.sh); its go.mod pins the release.
const HelperModule = "hack/k8s/csi-snapshotter"

const (
	snapshotterModule = "github.com/kubernetes-csi/external-snapshotter/v8"
	clientModule      = "github.com/kubernetes-csi/external-snapshotter/client/v8"
	// URLPrefix is where the component's resources are: URLPrefix +
	// VERSION + "/" + the file's path in the repository.
	URLPrefix = "https://raw.githubusercontent.com/kubernetes-csi/external-snapshotter/"
)

// Release is the pinned external-snapshotter release in the module cache.
type Release struct {
	Version        string // v8.7.0
	SnapshotterDir string // the external-snapshotter/v8 module's directory
	ClientDir      string // the client/v8 module's (the repository's client/)
}

// Pinned downloads (if need be) and locates the two modules as
// hack/k8s/csi-snapshotter's go.mod pins them. Their versions must agree:
// upstream builds the release against its own client/ directory.
func Pinned(repo string) (Release, error) {
	var r Release
	dl := func(mod string) (string, string, error) {
		cmd := exec.Command("go", "mod", "download", "-json", mod)
		cmd.Dir = filepath.Join(repo, HelperModule)
		out, err := cmd.Output()
		if err != nil {
			msg := ""
			if ee, ok := err.(*exec.ExitError); ok {
				msg = strings.TrimSpace(string(ee.Stderr))
			}
			return "", "", fmt.Errorf("go mod download %s (in %s): %v %s %s", mod, HelperModule, err, msg, out)
		}
		var m struct{ Version, Dir, Error string }
		if err := json.Unmarshal(out, &m); err != nil {
			return "", "", fmt.Errorf("go mod download %s: %v", mod, err)
		}
		if m.Error != "" || m.Dir == "" {
			return "", "", fmt.Errorf("go mod download %s: %s", mod, m.Error)
		}
		return m.Version, m.Dir, nil
	}
	v, dir, err := dl(snapshotterModule)
	if err != nil {
		return r, err
	}
	cv, cdir, err := dl(clientModule)
	if err != nil {
		return r, err
	}
	if v != cv {
		return r, fmt.Errorf("%s pins %s %s but %s %s: the release's own client is its version", HelperModule, snapshotterModule, v, clientModule, cv)
	}
	return Release{Version: v, SnapshotterDir: dir, ClientDir: cdir}, nil
}

// File maps a component resource URL to the module cache file holding it.
func (r Release) File(url string) (string, error) {
	rest, ok := strings.CutPrefix(url, URLPrefix)
	if !ok {
		return "", fmt.Errorf("%q is not a file of %s", url, URLPrefix)
	}
	version, p, ok := strings.Cut(rest, "/")
	if !ok || version != r.Version {
		return "", fmt.Errorf("%q is not of the pinned release %s (%s/go.mod)", url, r.Version, HelperModule)
	}
	p = path.Clean(p)
	var f string
	if c, ok := strings.CutPrefix(p, "client/"); ok {
		f = filepath.Join(r.ClientDir, filepath.FromSlash(c))
	} else {
		f = filepath.Join(r.SnapshotterDir, filepath.FromSlash(p))
	}
	if _, err := os.Stat(f); err != nil {
		return "", fmt.Errorf("%q: the release's modules have no such file: %v", url, err)
	}
	return f, nil
}

// Resources returns the component's resource URLs, in order.
func Resources(repo string) ([]string, map[string]any, error) {
	kf := filepath.Join(repo, ComponentDir, "kustomization.yaml")
	b, err := os.ReadFile(kf)
	if err != nil {
		return nil, nil, err
	}
	var k map[string]any
	if err := yaml.Unmarshal(b, &k); err != nil {
		return nil, nil, fmt.Errorf("%s: %v", kf, err)
	}
	list, _ := k["resources"].([]any)
	var urls []string
	for _, v := range list {
		s, _ := v.(string)
		urls = append(urls, s)
	}
	return urls, k, nil
}

// Localize writes into dst (a new directory) the component with every
// resource replaced by its module cache copy, for `kubectl kustomize dst`.
// It returns the files it copied by URL.
func Localize(repo string, r Release, dst string) (map[string]string, error) {
	urls, k, err := Resources(repo)
	if err != nil {
		return nil, err
	}
	if len(urls) == 0 {
		return nil, fmt.Errorf("%s: no resources", ComponentDir)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return nil, err
	}
	files := map[string]string{}
	var local []any
	for i, u := range urls {
		f, err := r.File(u)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", ComponentDir, err)
		}
		files[u] = f
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("%02d-%s", i, filepath.Base(f))
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o644); err != nil {
			return nil, err
		}
		local = append(local, name)
	}
	k["resources"] = local
	out, err := yaml.Marshal(k)
	if err != nil {
		return nil, err
	}
	return files, os.WriteFile(filepath.Join(dst, "kustomization.yaml"), out, 0o644)
}

// IsCRD reports whether a component URL is one of the CRDs (the
// repository's client/config/crd).
func IsCRD(url string) bool {
	return strings.Contains(url, "/client/config/crd/")
}
