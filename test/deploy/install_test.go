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

	"github.com/nvmirror/nvmirror/pkg/rpcauth"
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
// shows, with certificates from deploy/gen-secrets.sh and a storage node
// list, renders; every placeholder is replaced; the image is the site's;
// every nvmirror flag still parses; the server certificates carry the
// names the manifests make each client verify (the host of the CSI
// driver's --provisioner-address; each storage node's name, which the
// provisioner checks as it runs without --agent-server-name); and every
// certificate names the identity pkg/rpcauth reads (role and name).
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
	secrets := filepath.Join(site, "secrets")
	genSecrets := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(filepath.Join(repoRoot, "deploy", "gen-secrets.sh"), append([]string{secrets}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("gen-secrets.sh %v: %v\n%s", args, err, out)
		}
	}
	genSecrets("--nodes", "cn-1,cn-2", "--storage-nodes", "sn-1,sn-2")
	caBefore, _ := os.ReadFile(filepath.Join(secrets, "ca.crt"))
	nodeBefore, _ := os.ReadFile(filepath.Join(secrets, "nodes", "cn-1", "tls.crt"))
	// Run again to add a node: nothing that exists is replaced.
	genSecrets("--nodes", "cn-1,cn-3")
	caAfter, _ := os.ReadFile(filepath.Join(secrets, "ca.crt"))
	nodeAfter, _ := os.ReadFile(filepath.Join(secrets, "nodes", "cn-1", "tls.crt"))
	if string(caBefore) != string(caAfter) || string(nodeBefore) != string(nodeAfter) {
		t.Error("gen-secrets.sh run again replaced existing certificates")
	}
	if out, err := exec.Command(filepath.Join(repoRoot, "deploy", "gen-secrets.sh"), secrets, "--nodes", "Bad_Name").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), `--nodes "Bad_Name"`) {
		t.Errorf("gen-secrets.sh with an invalid node name: %v\n%s", err, out)
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
	if name, ok := flagValue(containerNamed(t, mustObject(t, objs, "Deployment/nvmirror-provisioner"), "nvmirror-provisioner"), "agent-server-name"); ok {
		t.Errorf("the provisioner runs with --agent-server-name=%s: every agent would present one name, and a storage node could answer for another", name)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(secretData("nvmirror-ca", "ca.crt")) {
		t.Fatal("nvmirror-ca holds no PEM certificate")
	}
	parse := func(what string, pemBytes []byte) *x509.Certificate {
		t.Helper()
		blk, _ := pem.Decode(pemBytes)
		if blk == nil {
			t.Fatalf("%s is not PEM", what)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	readFile := func(rel string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(secrets, rel))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Servers: the name their clients verify.
	for _, tc := range []struct {
		what string
		pem  []byte
		name string
	}{
		{"nvmirror-provisioner-tls", secretData("nvmirror-provisioner-tls", "tls.crt"), provHost},
		{"nvmirror-provisioner-tls", secretData("nvmirror-provisioner-tls", "tls.crt"), provHost + ".nvmirror.svc"},
		{"storage node sn-1", readFile("storage-nodes/sn-1/tls.crt"), "sn-1"},
		{"storage node sn-2", readFile("storage-nodes/sn-2/tls.crt"), "sn-2"},
	} {
		if _, err := parse(tc.what, tc.pem).Verify(x509.VerifyOptions{DNSName: tc.name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("%s does not verify for %q, the name its clients check: %v", tc.what, tc.name, err)
		}
	}
	// Callers: a client certificate naming who they are.
	for _, tc := range []struct {
		what string
		pem  []byte
		want rpcauth.Identity
	}{
		{"nvmirror-controller-tls", secretData("nvmirror-controller-tls", "tls.crt"), rpcauth.Identity{Name: "nvmirror-controller", Roles: []rpcauth.Role{rpcauth.RoleController}}},
		{"nvmirror-provisioner-client-tls", secretData("nvmirror-provisioner-client-tls", "tls.crt"), rpcauth.Identity{Name: "nvmirror-provisioner", Roles: []rpcauth.Role{rpcauth.RoleProvisioner}}},
		{"nvmirror-admin-tls", secretData("nvmirror-admin-tls", "tls.crt"), rpcauth.Identity{Name: "admin", Roles: []rpcauth.Role{rpcauth.RoleAdmin}}},
		{"node cn-1", readFile("nodes/cn-1/tls.crt"), rpcauth.Identity{Name: "cn-1", Roles: []rpcauth.Role{rpcauth.RoleNode}}},
		{"node cn-3", readFile("nodes/cn-3/tls.crt"), rpcauth.Identity{Name: "cn-3", Roles: []rpcauth.Role{rpcauth.RoleNode}}},
	} {
		cert := parse(tc.what, tc.pem)
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s is not a client certificate of the CA: %v", tc.what, err)
		}
		id, err := rpcauth.IdentityFromCertificate(cert)
		if err != nil || id.String() != tc.want.String() {
			t.Errorf("%s names %v (%v), want %v", tc.what, id, err, tc.want)
		}
	}
}
