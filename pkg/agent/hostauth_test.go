package agent

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/dhchap"
)

const authHost = "nqn.2014-08.org.nvmexpress:uuid:6f1c2a10-7d3e-4b8a-9c1d-1a2b3c4d5e6f"

func newSecret(t *testing.T) string {
	t.Helper()
	s, err := dhchap.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSetHostAuthBeforeAllowAndAfterRestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sec := HostSecrets{Secret: newSecret(t), CtrlSecret: newSecret(t)}
	if err := e.svc.SetHostAuth(ctx, authHost, sec); err != nil {
		t.Fatal(err)
	}
	if got := e.exp.hostAuth(authHost); got.Secret != sec.Secret || got.CtrlSecret != sec.CtrlSecret {
		t.Fatalf("configfs holds %v", got)
	}
	// The file holding secrets is the owner's only and separate from the
	// replica records.
	fi, err := os.Stat(filepath.Join(e.dir, HostAuthFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("host secrets file: %v, mode %v", err, fi.Mode())
	}
	if b, _ := os.ReadFile(filepath.Join(e.dir, StateFileName)); strings.Contains(string(b), "DHHC-1") {
		t.Error("the replica state file carries secrets")
	}

	// Created with the host allowed, and allowed later: the secret is in
	// place before the allowance every time.
	e.create("r1", 1<<20, Thin, authHost)
	e.create("r2", 1<<20, Thin)
	if _, err := e.svc.AllowHost(ctx, "r2", authHost); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"r1", "r2"} {
		if s, ok := e.exp.allowedWith[e.svc.NQN(id)+"/"+authHost]; !ok || s != sec.Secret {
			t.Errorf("%s: host allowed (%v) before its secret was set", id, ok)
		}
	}
	// Revoking the last allowance drops the kernel's host entry and its
	// secrets; allowing again puts them back first.
	for _, id := range []string{"r1", "r2"} {
		if _, err := e.svc.RevokeHost(ctx, id, authHost); err != nil {
			t.Fatal(err)
		}
	}
	if e.exp.hostAuth(authHost).Secret != "" {
		t.Fatal("fake did not drop the orphan host entry")
	}
	if _, err := e.svc.AllowHost(ctx, "r1", authHost); err != nil {
		t.Fatal(err)
	}
	if s := e.exp.allowedWith[e.svc.NQN("r1")+"/"+authHost]; s != sec.Secret {
		t.Error("re-allowed host without its secret")
	}

	// A reboot empties configfs: the restart restores the secret before
	// re-allowing the host.
	e.exp.wipe()
	delete(e.exp.allowedWith, e.svc.NQN("r1")+"/"+authHost)
	if err := e.restart(); err != nil {
		t.Fatal(err)
	}
	if s, ok := e.exp.allowedWith[e.svc.NQN("r1")+"/"+authHost]; !ok || s != sec.Secret {
		t.Errorf("after restart the host was allowed (%v) without its secret", ok)
	}

	// Rotation replaces; clearing removes from file and configfs.
	next := HostSecrets{Secret: newSecret(t)}
	if err := e.svc.SetHostAuth(ctx, authHost, next); err != nil {
		t.Fatal(err)
	}
	if got := e.exp.hostAuth(authHost); got.Secret != next.Secret || got.CtrlSecret != "" {
		t.Errorf("after rotation configfs holds %v", got)
	}
	if err := e.svc.SetHostAuth(ctx, authHost, HostSecrets{}); err != nil {
		t.Fatal(err)
	}
	if got := e.exp.hostAuth(authHost); got.Secret != "" {
		t.Error("clearing left the secret in configfs")
	}
	if err := e.svc.SetHostAuth(ctx, authHost, HostSecrets{}); err != nil { // repeated: no-op
		t.Fatal(err)
	}
	if err := e.restart(); err != nil {
		t.Fatal(err)
	}
	if len(e.svc.HostAuthHosts()) != 0 {
		t.Errorf("cleared secrets came back after restart: %v", e.svc.HostAuthHosts())
	}
}

func TestSetHostAuthErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	good := newSecret(t)
	tests := []struct {
		name  string
		host  string
		sec   HostSecrets
		field string
	}{
		{"bad host", "not-an-nqn", HostSecrets{Secret: good}, "host_nqn"},
		{"malformed key", authHost, HostSecrets{Secret: "DHHC-1:00:bm90IGEga2V5:"}, "dhchap_key"},
		{"malformed ctrl key", authHost, HostSecrets{Secret: good, CtrlSecret: "secret"}, "dhchap_ctrl_key"},
		{"ctrl key alone", authHost, HostSecrets{CtrlSecret: good}, "dhchap_ctrl_key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := e.svc.SetHostAuth(ctx, tc.host, tc.sec)
			if !errors.Is(err, ErrInvalidArgument) || !strings.HasPrefix(strings.TrimPrefix(err.Error(), "invalid argument: "), tc.field) {
				t.Fatalf("err = %v, want InvalidArgument naming %s", err, tc.field)
			}
			if strings.Contains(err.Error(), "bm90IGEga2V5") || strings.Contains(err.Error(), good) {
				t.Errorf("error echoes the secret: %v", err)
			}
		})
	}
	e.exp.authUnsupported = true
	err := e.svc.SetHostAuth(ctx, authHost, HostSecrets{Secret: good})
	if !errors.Is(err, ErrFailedPrecondition) || !strings.Contains(err.Error(), "CONFIG_NVME_TARGET_AUTH") {
		t.Errorf("kernel without target auth: %v", err)
	}
	if len(e.svc.HostAuthHosts()) != 0 {
		t.Error("secrets recorded although the kernel cannot use them")
	}
}

// A crash during Save leaves a temporary file holding secrets beside the
// old file: Load returns the old secrets and removes the leftover.
func TestHostAuthStoreRemovesLeftoverTemps(t *testing.T) {
	dir := t.TempDir()
	s := NewHostAuthStore(filepath.Join(dir, HostAuthFileName))
	old := map[string]HostSecrets{authHost: {Secret: newSecret(t)}}
	if err := s.Save(old); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(dir, "."+HostAuthFileName+".tmp-12345")
	if err := os.WriteFile(leftover, []byte(`{"version":1,"hosts":{"h":{"secret":"DHHC-1:00:half`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil || len(got) != 1 || got[authHost] != old[authHost] {
		t.Fatalf("Load = %v, %v; want the old secrets", got, err)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatalf("leftover temporary file with secrets not removed: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("dir holds %d entries after Load, want only the secrets file", len(ents))
	}
}
