package provisioner_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/dhchap"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
)

// secretsByNode returns GetHostCredentials as storage node → secrets.
func secretsByNode(t *testing.T, e *env, host string) map[string]provisioner.StorageNodeCredentials {
	t.Helper()
	creds, err := e.svc.GetHostCredentials(e.ctx, host)
	if err != nil {
		t.Fatalf("GetHostCredentials: %v", err)
	}
	out := map[string]provisioner.StorageNodeCredentials{}
	for _, c := range creds {
		out[c.StorageNode] = c
	}
	return out
}

func TestPublishWithAuthenticationSetsSecretsBeforeAllowing(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-auth", gib, map[string]string{"numReplicas": "3", "authentication": "bidirectional"})
	if got := secretsByNode(t, e, hostA); len(got) != 0 {
		t.Fatalf("secrets exist before the volume was published: %v", got)
	}
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-a"); err != nil {
		t.Fatal(err)
	}
	creds := secretsByNode(t, e, hostA)
	if len(creds) != 3 {
		t.Fatalf("credentials for %d storage nodes, want 3: %v", len(creds), creds)
	}
	seen := map[string]bool{}
	for _, r := range v.Replicas {
		c := creds[r.StorageNode]
		for _, s := range []string{c.Secret, c.CtrlSecret} {
			if err := dhchap.Validate(s); err != nil {
				t.Errorf("storage node %s: secret is not a valid DHHC-1 key: %v", r.StorageNode, err)
			}
			if seen[s] {
				t.Errorf("a secret is used twice: every pair and direction must have its own")
			}
			seen[s] = true
		}
		if c.Generation != 1 {
			t.Errorf("first secrets have generation %d, want 1", c.Generation)
		}
		held := e.cluster.HostAuth(r.StorageNode, hostA)
		if held.Secret != c.Secret || held.CtrlSecret != c.CtrlSecret {
			t.Errorf("storage node %s holds other secrets than the registry", r.StorageNode)
		}
		if s, ok := e.cluster.AllowedWithSecret(r.StorageNode, r.ID, hostA); !ok || s != c.Secret {
			t.Errorf("storage node %s: host allowed (%v) before it held the host's secret", r.StorageNode, ok)
		}
	}
	// Publishing again keeps the secrets (no silent rotation).
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-a"); err != nil {
		t.Fatal(err)
	}
	again := secretsByNode(t, e, hostA)
	for n, c := range creds {
		if again[n].Secret != c.Secret {
			t.Errorf("storage node %s: secrets changed on a repeated publish", n)
		}
	}
}

func TestVolumeWithoutAuthenticationUsesExistingPairSecrets(t *testing.T) {
	e := newEnv(t, threeRacks())
	plain := e.create(t, "pvc-plain", gib, map[string]string{"numReplicas": "3"})
	if _, err := e.svc.PublishVolume(e.ctx, plain.ID, hostA, "node-a"); err != nil {
		t.Fatal(err)
	}
	if got := secretsByNode(t, e, hostA); len(got) != 0 {
		t.Fatalf("a volume without authentication created secrets: %v", got)
	}
	for _, r := range plain.Replicas {
		if s := e.cluster.HostAuth(r.StorageNode, hostA); s.Secret != "" {
			t.Errorf("storage node %s was given secrets for a volume without authentication", r.StorageNode)
		}
	}
	authed := e.create(t, "pvc-auth", gib, map[string]string{"numReplicas": "3", "authentication": "host"})
	if _, err := e.svc.PublishVolume(e.ctx, authed.ID, hostA, "node-a"); err != nil {
		t.Fatal(err)
	}
	creds := secretsByNode(t, e, hostA)
	if len(creds) != 3 {
		t.Fatalf("credentials for %d storage nodes, want 3", len(creds))
	}
	// The kernel target now demands them from hostA for every replica on
	// those nodes, the plain volume's included: the node uses them for all.
	for _, r := range plain.Replicas {
		if e.cluster.HostAuth(r.StorageNode, hostA).Secret != creds[r.StorageNode].Secret {
			t.Errorf("storage node %s does not hold the pair's secret", r.StorageNode)
		}
	}
}

func TestPublishAuthenticationOnKernelWithoutSupportFails(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-auth", gib, map[string]string{"numReplicas": "3", "authentication": "host"})
	bad := v.Replicas[1].StorageNode
	e.cluster.SetAuthUnsupported(bad, true)
	_, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-a")
	wantCode(t, err, provisioner.ErrFailedPrecondition, "CONFIG_NVME_TARGET_AUTH", bad)
	if _, ok := e.cluster.AllowedWithSecret(bad, v.Replicas[1].ID, hostA); ok {
		t.Error("the host was allowed without authentication on a node that cannot authenticate")
	}
	// Its secrets stay pending: never handed to the host.
	if _, ok := secretsByNode(t, e, hostA)[bad]; ok {
		t.Error("secrets the storage node never confirmed are handed out")
	}
}

func TestRotateCredentials(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-auth", gib, map[string]string{"numReplicas": "2", "authentication": "host"})

	_, _, err := e.svc.RotateCredentials(e.ctx, v.ID)
	wantCode(t, err, provisioner.ErrFailedPrecondition, "not published")
	plain := e.create(t, "pvc-plain", gib, nil)
	if _, err := e.svc.PublishVolume(e.ctx, plain.ID, hostB, "node-b"); err != nil {
		t.Fatal(err)
	}
	_, _, err = e.svc.RotateCredentials(e.ctx, plain.ID)
	wantCode(t, err, provisioner.ErrFailedPrecondition, "authentication")

	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-a"); err != nil {
		t.Fatal(err)
	}
	before := secretsByNode(t, e, hostA)

	// One storage node away: its rotation stays pending, the other completes.
	away := v.Replicas[0].StorageNode
	e.cluster.SetDown(away, true)
	host, nodes, err := e.svc.RotateCredentials(e.ctx, v.ID)
	if err != nil || host != hostA || len(nodes) != 2 {
		t.Fatalf("RotateCredentials = %s, %+v, %v", host, nodes, err)
	}
	after := secretsByNode(t, e, hostA)
	for _, n := range nodes {
		switch n.StorageNode {
		case away:
			if n.Err == nil {
				t.Errorf("rotation on unreachable %s reported done", away)
			}
			if after[away] != before[away] {
				t.Errorf("the host is given secrets %s never confirmed", away)
			}
		default:
			if n.Err != nil || n.Generation != 2 {
				t.Errorf("rotation on %s: %+v", n.StorageNode, n)
			}
			if after[n.StorageNode].Secret == before[n.StorageNode].Secret || after[n.StorageNode].Generation != 2 {
				t.Errorf("storage node %s not rotated: %+v", n.StorageNode, after[n.StorageNode])
			}
			if e.cluster.HostAuth(n.StorageNode, hostA).Secret != after[n.StorageNode].Secret {
				t.Errorf("storage node %s does not hold the rotated secret", n.StorageNode)
			}
		}
	}
	// The retry pushes the same pending secrets, not another generation.
	e.cluster.SetDown(away, false)
	_, nodes, err = e.svc.RotateCredentials(e.ctx, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	final := secretsByNode(t, e, hostA)
	for _, n := range nodes {
		if n.Err != nil {
			t.Errorf("retry on %s: %v", n.StorageNode, n.Err)
		}
		if n.StorageNode == away && n.Generation != 2 {
			t.Errorf("retry on %s made generation %d, want the pending 2", away, n.Generation)
		}
		if n.StorageNode != away && n.Generation != 3 {
			t.Errorf("second rotation on %s has generation %d, want 3", n.StorageNode, n.Generation)
		}
		if e.cluster.HostAuth(n.StorageNode, hostA).Secret != final[n.StorageNode].Secret {
			t.Errorf("storage node %s and registry disagree after the retry", n.StorageNode)
		}
	}
}

func TestReplacementIsGivenSecretsBeforeCreation(t *testing.T) {
	nodes := append(threeRacks(), node{"sn-4", "z1", "r4", 100})
	e := newEnv(t, nodes)
	v := e.create(t, "pvc-auth", gib, map[string]string{"numReplicas": "3", "authentication": "host"})
	if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-a"); err != nil {
		t.Fatal(err)
	}
	nr, err := e.svc.ReplaceReplica(e.ctx, v.ID, v.Replicas[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	creds := secretsByNode(t, e, hostA)
	c, ok := creds[nr.StorageNode]
	if !ok {
		t.Fatalf("no credentials for the replacement's storage node %s", nr.StorageNode)
	}
	if s, ok := e.cluster.AllowedWithSecret(nr.StorageNode, nr.ID, hostA); !ok || s != c.Secret {
		t.Errorf("replacement created with the host allowed (%v) before its node held the secret", ok)
	}
}

func TestGetHostCredentialsValidatesHost(t *testing.T) {
	e := newEnv(t, threeRacks())
	_, err := e.svc.GetHostCredentials(e.ctx, "not an nqn")
	wantCode(t, err, provisioner.ErrInvalidArgument, "host NQN")
	if got := secretsByNode(t, e, hostB); len(got) != 0 {
		t.Errorf("unknown host has credentials %v", got)
	}
}

// The secrets' fields carry csi_secret, so the request/response logging
// (protosanitizer) never prints them.
func TestCredentialSecretsAreStrippedFromLogs(t *testing.T) {
	const secret = "DHHC-1:00:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI0NTY3OA==:"
	resp := &provisionerapi.GetHostCredentialsResponse{HostNqn: hostA, Credentials: []*provisionerapi.StorageNodeCredentials{
		{StorageNode: "sn-1", DhchapSecret: secret, DhchapCtrlSecret: secret + "x", Generation: 1},
	}}
	logged := fmt.Sprint(protosanitizer.StripSecrets(resp))
	if strings.Contains(logged, "DHHC-1") || !strings.Contains(logged, "sn-1") {
		t.Errorf("logged form %s: secrets must be stripped, the rest kept", logged)
	}
	req := &agentapi.SetHostAuthRequest{HostNqn: hostA, DhchapKey: secret, DhchapCtrlKey: secret}
	if logged := fmt.Sprint(protosanitizer.StripSecrets(req)); strings.Contains(logged, "DHHC-1") {
		t.Errorf("agent request logged as %s", logged)
	}
}

func TestHostScopeSharesOneSecretAcrossStorageNodes(t *testing.T) {
	nodes := append(threeRacks(), node{"sn-4", "z1", "r4", 100})
	e := newEnvOpts(t, nodes, provisioner.Options{CredentialScope: provisioner.ScopeHost})
	a := e.create(t, "pvc-a", gib, map[string]string{"numReplicas": "2", "authentication": "host", "storageNodes": "sn-1,sn-2"})
	b := e.create(t, "pvc-b", gib, map[string]string{"numReplicas": "2", "authentication": "host", "storageNodes": "sn-3,sn-4"})
	for _, v := range []*store.Volume{a, b} {
		if _, err := e.svc.PublishVolume(e.ctx, v.ID, hostA, "node-a"); err != nil {
			t.Fatal(err)
		}
	}
	creds := secretsByNode(t, e, hostA)
	if len(creds) != 4 {
		t.Fatalf("credentials for %d storage nodes, want 4", len(creds))
	}
	first := creds["sn-1"].Secrets
	for n, c := range creds {
		if c.Secrets != first {
			t.Errorf("storage node %s has other secrets than sn-1 in host scope", n)
		}
	}
	// Rotating one volume rotates the host's one set everywhere, or the
	// other volume's storage nodes would demand secrets the host dropped.
	_, rotated, err := e.svc.RotateCredentials(e.ctx, a.ID)
	if err != nil || len(rotated) != 4 {
		t.Fatalf("RotateCredentials = %+v, %v; want all 4 storage nodes", rotated, err)
	}
	after := secretsByNode(t, e, hostA)
	for n, c := range after {
		if c.Generation != 2 || c.Secret == first.Secret || c.Secrets != after["sn-1"].Secrets {
			t.Errorf("storage node %s after rotation: generation %d, changed %v, shared %v", n, c.Generation, c.Secret != first.Secret, c.Secrets == after["sn-1"].Secrets)
		}
		if e.cluster.HostAuth(n, hostA).Secret != c.Secret {
			t.Errorf("storage node %s does not hold the rotated secret", n)
		}
	}
	if _, err := provisioner.New(provisioner.Options{Store: e.store, Agents: e.cluster, CredentialScope: "volume"}); err == nil {
		t.Error("an unknown credential scope was accepted")
	}
}

// A volume requiring authentication that failed on a storage node without
// kernel support leaves pending secrets; a later volume without
// authentication on that node must still publish.
func TestPendingSecretsDoNotBlockVolumesWithoutAuthentication(t *testing.T) {
	e := newEnv(t, threeRacks())
	for _, n := range []string{"sn-1", "sn-2", "sn-3"} {
		e.cluster.SetAuthUnsupported(n, true)
	}
	authed := e.create(t, "pvc-auth", gib, map[string]string{"numReplicas": "3", "authentication": "host"})
	_, err := e.svc.PublishVolume(e.ctx, authed.ID, hostA, "node-a")
	wantCode(t, err, provisioner.ErrFailedPrecondition, "CONFIG_NVME_TARGET_AUTH")
	if err := e.svc.UnpublishVolume(e.ctx, authed.ID, hostA); err != nil {
		t.Fatal(err)
	}
	plain := e.create(t, "pvc-plain", gib, map[string]string{"numReplicas": "3"})
	if _, err := e.svc.PublishVolume(e.ctx, plain.ID, hostA, "node-a"); err != nil {
		t.Fatalf("a volume without authentication failed on secrets that never took effect: %v", err)
	}
}
