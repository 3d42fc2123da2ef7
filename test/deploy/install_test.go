package deploy_test

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// installDocBlock returns the YAML block of docs/install.md after the
// comment <!-- marker ... -->.
func installDocBlock(t *testing.T, marker string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "<!-- "+marker)
	if !ok {
		t.Fatalf("docs/install.md has no <!-- %s --> marker before its block", marker)
	}
	_, after, _ = strings.Cut(after, "```yaml\n")
	block, _, ok := strings.Cut(after, "```")
	if !ok {
		t.Fatalf("no yaml block after the %s marker", marker)
	}
	return block
}

// TestInstallDocSiteOverlay follows docs/install.md: the site overlay it
// shows, with certificates and tokens from deploy/gen-secrets.sh and a
// storage node list, renders; every placeholder is replaced; the image is
// the site's; every nvmirror flag still parses; and the certificates carry
// the names the manifests make each client verify (the host of the CSI
// driver's --provisioner-address, the provisioner's --agent-server-name).
func TestInstallDocSiteOverlay(t *testing.T) {
	kubectl(t)
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed: gen-secrets.sh cannot run")
	}
	block := installDocBlock(t, "site-kustomization")

	tmp := t.TempDir()
	if err := os.Symlink(repoRoot, filepath.Join(tmp, "nvmirror")); err != nil {
		t.Fatal(err)
	}
	site := filepath.Join(tmp, "my-site")
	if err := os.MkdirAll(site, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(site, "kustomization.yaml"), []byte(block), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(site, "storage-nodes.txt"), []byte("sn-1=10.0.0.11:9400\nsn-2=10.0.0.12:9400\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(repoRoot, "deploy", "gen-secrets.sh"), filepath.Join(site, "secrets")).CombinedOutput(); err != nil {
		t.Fatalf("gen-secrets.sh: %v\n%s", err, out)
	}
	if out, err := exec.Command(filepath.Join(repoRoot, "deploy", "gen-secrets.sh"), filepath.Join(site, "secrets")).CombinedOutput(); err == nil {
		t.Errorf("gen-secrets.sh overwrote existing secrets:\n%s", out)
	}

	docs := render(t, site)
	objs := objects(docs)
	secretData := func(prefix, key string) []byte {
		t.Helper()
		for name, o := range objs {
			if strings.HasPrefix(name, "Secret/"+prefix+"-") {
				b, err := base64.StdEncoding.DecodeString(str(o, "data", key))
				if err != nil {
					t.Fatalf("%s %s: %v", name, key, err)
				}
				return b
			}
		}
		t.Fatalf("no Secret %s rendered", prefix)
		return nil
	}
	for _, d := range docs {
		if str(d.value, "kind") != "Secret" {
			continue
		}
		for k, v := range get(d.value, "data").(map[string]any) {
			b, _ := base64.StdEncoding.DecodeString(v.(string))
			if len(strings.TrimSpace(string(b))) == 0 || strings.Contains(string(b), "REPLACE-ME") {
				t.Errorf("%s key %s still holds the placeholder %q", str(d.value, "metadata", "name"), k, b)
			}
		}
	}
	if tok := string(secretData("nvmirror-api-token", "token")); len(strings.TrimSpace(tok)) != 64 {
		t.Errorf("API token %q: want 64 hex digits", tok)
	}
	for name, o := range objs {
		if strings.HasPrefix(name, "ConfigMap/nvmirror-storage-nodes-") && !strings.Contains(str(o, "data", "storage-nodes"), "sn-2=10.0.0.12:9400") {
			t.Errorf("%s does not hold the site's storage nodes: %q", name, str(o, "data", "storage-nodes"))
		}
	}
	invs := invocationsOf(t, docs, "registry.example.com/nvmirror")
	if len(invs) != 4 {
		t.Errorf("%d nvmirror containers with the site's image, want 4 (controller, node, provisioner, agent)", len(invs))
	}
	for _, inv := range invs {
		checkInvocation(t, inv)
	}
	for _, d := range docs {
		for _, c := range containersOf(d.value) {
			if strings.Contains(str(c.spec, "image"), "nvmirror") && !strings.HasPrefix(str(c.spec, "image"), "registry.example.com/nvmirror:v0.1.0") {
				t.Errorf("%s: image %s, want the site's", c, str(c.spec, "image"))
			}
		}
	}

	// The names each client verifies, read from the rendered manifests.
	ctrl := containerNamed(t, mustObject(t, objs, "Deployment/nvmirror-controller"), "nvmirror-csi")
	provAddr, _ := flagValue(ctrl, "provisioner-address")
	provHost, _, err := net.SplitHostPort(provAddr)
	if err != nil {
		t.Fatalf("--provisioner-address %q: %v", provAddr, err)
	}
	agentName, _ := flagValue(containerNamed(t, mustObject(t, objs, "Deployment/nvmirror-provisioner"), "nvmirror-provisioner"), "agent-server-name")
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(secretData("nvmirror-ca", "ca.crt")) {
		t.Fatal("nvmirror-ca holds no PEM certificate")
	}
	for _, tc := range []struct{ secret, name string }{
		{"nvmirror-provisioner-tls", provHost},
		{"nvmirror-provisioner-tls", provHost + ".nvmirror.svc"},
		{"nvmirror-target-tls", agentName},
	} {
		blk, _ := pem.Decode(secretData(tc.secret, "tls.crt"))
		if blk == nil {
			t.Errorf("%s tls.crt is not PEM", tc.secret)
			continue
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: tc.name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("%s does not verify for %q, the name its clients check: %v", tc.secret, tc.name, err)
		}
	}
}
