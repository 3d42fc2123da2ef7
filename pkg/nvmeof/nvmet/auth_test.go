package nvmet

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/dhchap"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

// testSecret returns a valid secret whose key is n repeated (keyLen bytes).
func testSecret(t *testing.T, n byte, keyLen int) string {
	t.Helper()
	s, err := dhchap.New(dhchap.HashNone, bytes.Repeat([]byte{n}, keyLen))
	if err != nil {
		t.Fatal(err)
	}
	return s.Encode()
}

// assertNoSecret fails when text shows any 12-character run of a secret's
// base64 key.
func assertNoSecret(t *testing.T, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if len(s) < 12 {
			continue
		}
		b64 := strings.Trim(s[10:], ":=")
		for i := 0; i+12 <= len(b64); i++ {
			if strings.Contains(text, b64[i:i+12]) {
				t.Fatalf("%q shows a secret", text)
			}
		}
	}
}

func newFakeAuthTarget(t *testing.T) (*Target, *fakeConfigFS) {
	tg, f := newFakeTarget(t)
	f.targetAuth = true
	return tg, f
}

func TestSetHostAuth(t *testing.T) {
	tg, f := newFakeAuthTarget(t)
	key, ctrl := testSecret(t, 1, 32), testSecret(t, 2, 48)
	if err := tg.SetHostAuth(hostA, HostAuth{Secret: key, CtrlSecret: ctrl}); err != nil {
		t.Fatal(err)
	}
	// Hash and DH group before the secrets: the first authentication after
	// the host secret appears already uses them. Host secret before the
	// controller secret: authentication is required from the first write.
	ops := f.Ops()
	want := []string{"mkdir hosts/" + hostA, "write hosts/" + hostA + "/dhchap_hash=hmac(sha256)",
		"write hosts/" + hostA + "/dhchap_dhgroup=" + DefaultAuthDHGroup,
		"write hosts/" + hostA + "/dhchap_key=" + key, "write hosts/" + hostA + "/dhchap_ctrl_key=" + ctrl}
	if !slices.Equal(ops, want) {
		t.Fatalf("ops =\n%s\nwant\n%s", strings.Join(ops, "\n"), strings.Join(want, "\n"))
	}
	got, err := tg.HostAuth(hostA)
	if err != nil {
		t.Fatal(err)
	}
	if got != (HostAuth{Secret: key, CtrlSecret: ctrl, Hash: DefaultAuthHash, DHGroup: DefaultAuthDHGroup}) {
		t.Errorf("HostAuth = %s", got)
	}
	for _, out := range []string{got.String(), fmt.Sprintf("%v", got), fmt.Sprintf("%+v", got), fmt.Sprintf("%#v", got), fmt.Sprint(got.MarshalLog())} {
		assertNoSecret(t, out, key, ctrl)
		if !strings.Contains(out, "redacted") {
			t.Errorf("%q is not redacted", out)
		}
	}

	// Rotation to other secrets and parameters, unidirectional now: the
	// controller secret is cleared with the NUL write nvmet sees as "".
	key2 := testSecret(t, 3, 64)
	n := len(f.Ops())
	if err := tg.SetHostAuth(hostA, HostAuth{Secret: key2, Hash: "hmac(sha512)", DHGroup: "null"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := tg.HostAuth(hostA); got != (HostAuth{Secret: key2, Hash: "hmac(sha512)", DHGroup: "null"}) {
		t.Errorf("after rotation HostAuth = %s", got)
	}
	if ops := f.Ops()[n:]; !slices.Contains(ops, "write hosts/"+hostA+"/dhchap_ctrl_key=") || indexOf(ops, "mkdir") >= 0 {
		t.Errorf("rotation ops %q", ops)
	}

	// A non-canonical spelling is written canonically.
	if err := tg.SetHostAuth(hostA, HostAuth{Secret: key}); err != nil {
		t.Fatal(err)
	}
	if got := f.attr("hosts/" + hostA + "/dhchap_key"); got != key {
		t.Errorf("dhchap_key = %q", dhchap.Redact(got))
	}
}

func TestSetHostAuthInvalid(t *testing.T) {
	key := testSecret(t, 1, 32)
	bad := strings.Replace(key, "AQEB", "AQEC", 1) // CRC no longer matches
	for _, tc := range []struct {
		name string
		a    HostAuth
		want string
	}{
		{"bad secret", HostAuth{Secret: bad}, "Secret: invalid DH-HMAC-CHAP secret: CRC"},
		{"bad ctrl secret", HostAuth{Secret: key, CtrlSecret: bad}, "CtrlSecret: invalid"},
		{"not a secret", HostAuth{Secret: "hunter2-hunter2-hunter2"}, "does not start with"},
		{"ctrl without host", HostAuth{CtrlSecret: key}, "CtrlSecret without Secret"},
		{"same secrets", HostAuth{Secret: key, CtrlSecret: key}, "two different secrets"},
		{"hash", HostAuth{Secret: key, Hash: "hmac(md5)"}, `Hash "hmac(md5)"`},
		{"dh group", HostAuth{Secret: key, DHGroup: "ffdhe1024"}, `DHGroup "ffdhe1024"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg, f := newFakeAuthTarget(t)
			err := tg.SetHostAuth(hostA, tc.a)
			if !errors.Is(err, nvmeof.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("SetHostAuth = %v, want nvmeof.ErrInvalidArgument saying %q", err, tc.want)
			}
			assertNoSecret(t, err.Error(), key, bad)
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("%q shows the input", err)
			}
			if ops := f.Ops(); len(ops) != 0 {
				t.Errorf("invalid input changed configfs: %q", ops)
			}
		})
	}
	tg, _ := newFakeAuthTarget(t)
	if err := tg.SetHostAuth("not-an-nqn", HostAuth{Secret: key}); !errors.Is(err, nvmeof.ErrInvalidArgument) {
		t.Errorf("SetHostAuth(bad NQN) = %v", err)
	}
	if _, err := tg.HostAuth("nqn.x/../y"); !errors.Is(err, nvmeof.ErrInvalidArgument) {
		t.Errorf("HostAuth(bad NQN) = %v", err)
	}
}

func TestSetHostAuthKernelErrors(t *testing.T) {
	key := testSecret(t, 1, 32)
	t.Run("DH group missing from crypto API", func(t *testing.T) {
		tg, f := newFakeAuthTarget(t)
		f.noDH = true
		err := tg.SetHostAuth(hostA, HostAuth{Secret: key})
		if err == nil || !strings.Contains(err.Error(), "CONFIG_CRYPTO_DH") || !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("SetHostAuth = %v", err)
		}
		if f.exists("hosts/" + hostA) {
			t.Error("the entry created for the host was left half-configured")
		}
		if err := tg.SetHostAuth(hostA, HostAuth{Secret: key, DHGroup: "null"}); err != nil {
			t.Errorf("with the null group: %v", err)
		}
	})
	t.Run("key write refused", func(t *testing.T) {
		tg, f := newFakeAuthTarget(t)
		if err := tg.SetHostAuth(hostA, HostAuth{Secret: testSecret(t, 9, 32)}); err != nil {
			t.Fatal(err)
		}
		f.failWrite[filepath.Join(f.root, "hosts", hostA, "dhchap_key")] = perr("write", "dhchap_key", syscall.ENOMEM)
		err := tg.SetHostAuth(hostA, HostAuth{Secret: key})
		if !errors.Is(err, syscall.ENOMEM) {
			t.Fatalf("SetHostAuth = %v", err)
		}
		assertNoSecret(t, err.Error(), key)
		if !f.exists("hosts/" + hostA) {
			t.Error("an existing host entry was removed after a failed update")
		}
	})
	t.Run("kernel without target auth", func(t *testing.T) {
		tg, f := newFakeTarget(t) // Debian 6.1: host entries have no dhchap_* attributes
		err := tg.SetHostAuth(hostA, HostAuth{Secret: key})
		if !errors.Is(err, nvmeof.ErrAuthUnsupported) || !strings.Contains(err.Error(), "CONFIG_NVME_TARGET_AUTH") {
			t.Fatalf("SetHostAuth = %v, want nvmeof.ErrAuthUnsupported naming CONFIG_NVME_TARGET_AUTH", err)
		}
		if f.exists("hosts/" + hostA) {
			t.Error("host entry left behind")
		}
		// Clearing is a no-op: nothing can be configured.
		if err := tg.AllowHost(testNQN2(t, tg), hostA); err != nil {
			t.Fatal(err)
		}
		if err := tg.SetHostAuth(hostA, HostAuth{}); err != nil {
			t.Errorf("clearing on a kernel without auth = %v", err)
		}
		if _, err := tg.HostAuth(hostA); !errors.Is(err, nvmeof.ErrAuthUnsupported) {
			t.Errorf("HostAuth = %v, want nvmeof.ErrAuthUnsupported", err)
		}
	})
}

// testNQN2 creates subsystem testNQN on tg and returns its NQN.
func testNQN2(t *testing.T, tg *Target) string {
	t.Helper()
	if err := tg.EnsureSubsystem(testNQN, ""); err != nil {
		t.Fatal(err)
	}
	return testNQN
}

func TestClearHostAuth(t *testing.T) {
	tg, f := newFakeAuthTarget(t)
	key, ctrl := testSecret(t, 1, 32), testSecret(t, 2, 32)
	nqn := testNQN2(t, tg)
	for _, h := range []string{hostA, hostB} {
		if err := tg.SetHostAuth(h, HostAuth{Secret: key, CtrlSecret: ctrl}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tg.AllowHost(nqn, hostA); err != nil {
		t.Fatal(err)
	}
	// Linked host: secrets cleared, entry kept (the link needs it).
	if err := tg.SetHostAuth(hostA, HostAuth{}); err != nil {
		t.Fatal(err)
	}
	if got, err := tg.HostAuth(hostA); err != nil || got.Secret != "" || got.CtrlSecret != "" {
		t.Errorf("after clearing HostAuth = %s, %v", got, err)
	}
	// Unlinked host: its entry existed only for the secrets and goes.
	if err := tg.SetHostAuth(hostB, HostAuth{}); err != nil {
		t.Fatal(err)
	}
	if f.exists("hosts/" + hostB) {
		t.Error("unreferenced host entry kept after clearing its secrets")
	}
	if _, err := tg.HostAuth(hostB); !errors.Is(err, nvmeof.ErrNotFound) {
		t.Errorf("HostAuth(removed) = %v, want nvmeof.ErrNotFound", err)
	}
	// What the kernel does with the obvious ways to clear (the reason for
	// the NUL write): a zero-length write is EFAULT, "\n" a bad key.
	p := filepath.Join(f.root, "hosts", hostA, "dhchap_key")
	if err := f.WriteFile(p, nil); !errors.Is(err, syscall.EFAULT) {
		t.Errorf("zero-length write = %v, want EFAULT", err)
	}
	if err := f.WriteFile(p, []byte("\n")); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("newline write = %v, want EINVAL", err)
	}
	// Unknown host: nothing to do.
	n := len(f.Ops())
	if err := tg.SetHostAuth("nqn.2024-01.io.nvmirror:nobody", HostAuth{}); err != nil || len(f.Ops()) != n {
		t.Errorf("clearing an unknown host = %v, ops %q", err, f.Ops()[n:])
	}
}

// A host entry with secrets survives RevokeHost, so that AllowHost links
// it again with its secrets, never a fresh entry without them. Teardown
// removes it.
func TestHostAuthSurvivesRevoke(t *testing.T) {
	tg, f := newFakeAuthTarget(t)
	nqn := testNQN2(t, tg)
	key := testSecret(t, 5, 32)
	if err := tg.SetHostAuth(hostA, HostAuth{Secret: key}); err != nil {
		t.Fatal(err)
	}
	if err := tg.AllowHost(nqn, hostA); err != nil {
		t.Fatal(err)
	}
	if err := tg.AllowHost(nqn, hostB); err != nil { // no secrets: removed as before
		t.Fatal(err)
	}
	for _, h := range []string{hostA, hostB} {
		if err := tg.RevokeHost(nqn, h); err != nil {
			t.Fatal(err)
		}
	}
	if !f.exists("hosts/"+hostA) || f.attr("hosts/"+hostA+"/dhchap_key") != key {
		t.Fatal("RevokeHost removed a host entry carrying secrets")
	}
	if f.exists("hosts/" + hostB) {
		t.Error("RevokeHost kept an unreferenced host entry without secrets")
	}
	if err := tg.AllowHost(nqn, hostA); err != nil {
		t.Fatal(err)
	}
	if got, _ := tg.HostAuth(hostA); got.Secret != key {
		t.Errorf("after re-allowing, the secret is %s", nvmeof.RedactSecret(got.Secret))
	}
	if err := tg.RemoveSubsystem(nqn); err != nil {
		t.Fatal(err)
	}
	if !f.exists("hosts/" + hostA) {
		t.Error("RemoveSubsystem removed a host entry carrying secrets")
	}
	if err := tg.Teardown("nqn.2024-01.io.nvmirror:"); err != nil {
		t.Fatal(err)
	}
	if f.exists("hosts/" + hostA) {
		t.Error("Teardown kept an unreferenced host entry")
	}
}

// Two agents sharing a kernel target probe at once: one's probe entry, which
// it may be removing (here: seen without its attributes), must not make the
// other conclude the kernel lacks authentication.
func TestAuthSupportedIgnoresAnotherProcessProbe(t *testing.T) {
	tg, f := newFakeTarget(t)
	if err := f.Mkdir(tg.hostDir(authProbeHost + "-4242-1")); err != nil {
		t.Fatal(err)
	}
	f.targetAuth = true
	if err := tg.AuthSupported(); err != nil {
		t.Fatalf("AuthSupported with another process's half-gone probe entry = %v", err)
	}
}

func TestAuthSupported(t *testing.T) {
	tg, f := newFakeAuthTarget(t)
	if err := tg.AuthSupported(); err != nil {
		t.Fatalf("AuthSupported (probe entry) = %v", err)
	}
	if ops := f.Ops(); len(ops) != 2 || !strings.HasPrefix(ops[0], "mkdir hosts/"+authProbeHost) || !strings.HasPrefix(ops[1], "rmdir") {
		t.Errorf("probe ops = %q", ops)
	}
	if err := tg.SetHostAuth(hostA, HostAuth{Secret: testSecret(t, 1, 32)}); err != nil {
		t.Fatal(err)
	}
	n := len(f.Ops())
	if err := tg.AuthSupported(); err != nil || len(f.Ops()) != n {
		t.Errorf("AuthSupported with a host entry = %v (ops %q)", err, f.Ops()[n:])
	}

	old, f61 := newFakeTarget(t)
	err := old.AuthSupported()
	if !errors.Is(err, nvmeof.ErrAuthUnsupported) || !strings.Contains(err.Error(), "CONFIG_NVME_TARGET_AUTH") {
		t.Fatalf("AuthSupported on a kernel without target auth = %v", err)
	}
	if hosts, _ := old.names(old.hostsDir()); len(hosts) != 0 {
		t.Errorf("probe entry left behind: %v", hosts)
	}
	_ = f61
	if err := old.AllowHost(testNQN2(t, old), hostA); err != nil {
		t.Fatal(err)
	}
	if err := old.AuthSupported(); !errors.Is(err, nvmeof.ErrAuthUnsupported) {
		t.Errorf("AuthSupported with an existing entry = %v", err)
	}

	missing := newTargetWithFS(filepath.Join(t.TempDir(), "nvmet"), realConfigFS{})
	if err := missing.AuthSupported(); !errors.Is(err, nvmeof.ErrNotFound) {
		t.Errorf("AuthSupported without nvmet = %v, want nvmeof.ErrNotFound", err)
	}
}
