package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/rpcauth/rpcauthtest"
)

// externalFlags are flags the docs name that belong to other programs, each
// with the program: anything else spelt --like-this in the docs must be a
// flag of an nvmirror binary.
var externalFlags = map[string]string{
	"add": "mdadm", "create": "mdadm", "detail": "mdadm", "incremental": "mdadm", "re-add": "mdadm",
	"scan": "mdadm", "uuid": "mdadm", "stop": "mdadm",
	"build-arg": "docker buildx", "platform": "docker buildx", "push": "docker buildx",
	"extra-create-metadata": "csi-provisioner", "leader-election": "csi sidecars", "http-endpoint": "csi sidecars",
	"health-port": "livenessprobe", "csi-address": "csi sidecars", "kubelet-registration-path": "node-driver-registrar",
	"previous": "kubectl logs", "tail": "kubectl logs", "since-time": "kubectl logs", "all-containers": "kubectl logs",
	"print-dir": "hack/images.sh", "list-full": "busybox", "pull": "buildah", "variant": "mmdebstrap",
	"mount": "Dockerfile RUN", "tags": "git describe", "always": "git describe", "dirty": "git describe",
	"grow": "mdadm", "raid-devices": "mdadm", "examine": "mdadm", "assume-clean": "mdadm",
	"dry-run": "kubectl", "show-labels": "kubectl", "sort-by": "kubectl", "field-selector": "kubectl",
	"from-file": "kubectl create secret", "cert": "kubectl create secret tls", "key": "kubectl create secret tls",
}

// scriptOption matches a case pattern of gen-secrets.sh's argument loop
// ("    --nodes) ...").
var scriptOption = regexp.MustCompile(`(?m)^\s+--([a-z][a-z0-9-]*)\)`)

var docFlag = regexp.MustCompile(`(?:^|[^A-Za-z0-9-])--([a-z][a-z0-9-]*[a-z0-9])`)

// TestDocsNameRealFlags: every --flag named in README.md, docs/ and
// deploy/README.md is a flag of one of the nvmirror binaries (nvmirrorctl's
// subcommand flags included) or of a known other program. A renamed flag
// must not leave the admin docs pointing at nothing.
func TestDocsNameRealFlags(t *testing.T) {
	known := map[string]bool{}
	for _, b := range commandNames(t) {
		for f := range flagsOf(t, b) {
			known[f] = true
		}
	}
	// deploy/gen-secrets.sh's options, read from its argument parser.
	script, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "gen-secrets.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range scriptOption.FindAllStringSubmatch(string(script), -1) {
		known[m[1]] = true
	}
	if !known["nodes"] || !known["storage-nodes"] {
		t.Fatalf("gen-secrets.sh options not found: %v", known)
	}
	// nvmirrorctl events, promote, move and drain have flags of their own;
	// their usage needs a client certificate.
	crt, key := rpcauthtest.NewCA(t).Client(t, "docs", "admin").WriteNamed(t, t.TempDir(), "admin")
	for _, sub := range []string{"events", "promote", "move", "drain"} {
		out, _ := exec.Command(filepath.Join(binDir(t), "nvmirrorctl"), "--cert-file="+crt, "--key-file="+key, "--provisioner=127.0.0.1:1", sub, "-h").CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			if m := flagLine.FindStringSubmatch(line); m != nil {
				known[m[1]] = true
			}
		}
	}
	if !known["volume"] || !known["accept-data-loss"] || !known["to"] || !known["stop"] || !known["heal-interval"] || !known["http-address"] {
		t.Fatalf("flag sets look incomplete: %v", known)
	}

	docs, _ := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	docs = append(docs, filepath.Join(repoRoot, "README.md"), filepath.Join(repoRoot, "deploy", "README.md"))
	sort.Strings(docs)
	for _, path := range docs {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(repoRoot, path)
		for i, line := range strings.Split(string(b), "\n") {
			for _, m := range docFlag.FindAllStringSubmatch(line, -1) {
				if !known[m[1]] && externalFlags[m[1]] == "" {
					t.Errorf("%s:%d: --%s is not a flag of any nvmirror binary (nor a known one of another program)", rel, i+1, m[1])
				}
			}
		}
	}
}

var (
	mdLink    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	mdHeading = regexp.MustCompile(`(?m)^#{1,6} +(.+?) *$`)
	slugDrop  = regexp.MustCompile(`[^\p{L}\p{N} _-]`)
)

// slug is GitHub's anchor for a heading.
func slug(heading string) string {
	return strings.ReplaceAll(slugDrop.ReplaceAllString(strings.ToLower(heading), ""), " ", "-")
}

// TestDocsLinksResolve: every relative link in README.md, docs/ and
// deploy/README.md names a file that exists and, with #anchor, a heading
// of it: the admin docs send readers between each other a lot.
func TestDocsLinksResolve(t *testing.T) {
	docs, _ := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	docs = append(docs, filepath.Join(repoRoot, "README.md"), filepath.Join(repoRoot, "deploy", "README.md"))
	anchors := func(path string) map[string]bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		out := map[string]bool{}
		inCode := false
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "```") {
				inCode = !inCode
			}
			if m := mdHeading.FindStringSubmatch(line); m != nil && !inCode {
				out[slug(m[1])] = true
			}
		}
		return out
	}
	for _, path := range docs {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(repoRoot, path)
		var prose []string // outside fenced code blocks
		inCode := false
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "```") {
				inCode = !inCode
				continue
			}
			if !inCode {
				prose = append(prose, line)
			}
		}
		for _, m := range mdLink.FindAllStringSubmatch(strings.Join(prose, "\n"), -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			file, anchor, _ := strings.Cut(link, "#")
			target := path
			if file != "" {
				target = filepath.Join(filepath.Dir(path), file)
				if _, err := os.Stat(target); err != nil {
					t.Errorf("%s: link %s: %v", rel, link, err)
					continue
				}
			}
			if anchor != "" && strings.HasSuffix(target, ".md") && !anchors(target)[anchor] {
				t.Errorf("%s: link %s: no heading with anchor #%s in %s", rel, link, anchor, filepath.Base(target))
			}
		}
	}
}
