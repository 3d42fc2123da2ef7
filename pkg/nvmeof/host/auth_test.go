package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

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

func authOpts(t *testing.T) ConnectOptions {
	o := baseOpts()
	o.DHCHAPSecret = testSecret(t, 1, 32)
	return o
}

func TestConnectOptionsSecrets(t *testing.T) {
	s32, s48, s64 := testSecret(t, 1, 32), testSecret(t, 2, 48), testSecret(t, 3, 64)
	bad := strings.Replace(s32, "AQEB", "AQEC", 1)
	tests := []struct {
		name         string
		secret, ctrl string
		want         string // "" = valid
	}{
		{"host secret", s32, "", ""},
		{"padded secrets", s48, s64, ""},
		{"bad secret", bad, "", "DHCHAPSecret: invalid DH-HMAC-CHAP secret: CRC"},
		{"bad ctrl secret", s32, bad, "DHCHAPCtrlSecret: invalid"},
		{"injection", s32 + ",duplicate_connect", "", "DHCHAPSecret: invalid"},
		{"newline", s32 + "\n", "", "DHCHAPSecret: invalid"},
		{"ctrl only", "", s32, "DHCHAPCtrlSecret without DHCHAPSecret"},
		{"same secrets", s32, s32, "two different secrets"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := baseOpts()
			o.DHCHAPSecret, o.DHCHAPCtrlSecret = tc.secret, tc.ctrl
			err := o.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				m := parseOpts(o.FabricsString())
				if m["dhchap_secret"] != tc.secret || m["dhchap_ctrl_secret"] != tc.ctrl {
					t.Errorf("FabricsString does not carry the secrets")
				}
				return
			}
			if !errors.Is(err, nvmeof.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want nvmeof.ErrInvalidArgument saying %q", err, tc.want)
			}
			assertNoSecret(t, err.Error(), s32, bad)
		})
	}
}

func TestConnectOptionsRedacted(t *testing.T) {
	o := authOpts(t)
	o.DHCHAPCtrlSecret = testSecret(t, 2, 48)
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	want := "transport=tcp,traddr=127.0.0.1,trsvcid=4421,nqn=" + testNQN + ",hostnqn=" + testHostNQN + ",hostid=" + testHostID +
		",dhchap_secret=" + o.DHCHAPSecret + ",dhchap_ctrl_secret=" + o.DHCHAPCtrlSecret
	if got := o.FabricsString(); got != want {
		t.Fatalf("FabricsString =\n%s\nwant\n%s", got, want)
	}
	type holder struct {
		Opts ConnectOptions
		Ptr  *ConnectOptions
	}
	for _, out := range []string{o.String(), fmt.Sprintf("%v", o), fmt.Sprintf("%+v", o), fmt.Sprintf("%#v", o), fmt.Sprintf("%s", o),
		fmt.Sprintf("%+v", holder{o, &o}), fmt.Sprint(o.MarshalLog()), redactOptions(o.FabricsString())} {
		assertNoSecret(t, out, o.DHCHAPSecret, o.DHCHAPCtrlSecret)
		if !strings.Contains(out, "dhchap_secret=DHHC-1:00:<redacted") || !strings.Contains(out, testNQN) {
			t.Errorf("%q: not the redacted fabrics string", out)
		}
	}
	if got := redactOptions("transport=tcp,dhchap_secret=garbage,tls_key=x"); got != "transport=tcp,dhchap_secret=<redacted invalid secret>,tls_key=<redacted invalid secret>" {
		t.Errorf("redactOptions = %q", got)
	}
}

func TestConnectWithSecret(t *testing.T) {
	tree := newSysTree(t)
	tree.enableHostAuth()
	f := kernelLikeFabrics(tree, 3)
	in := fastInitiator(tree.root, f)
	o := authOpts(t)
	o.DHCHAPCtrlSecret = testSecret(t, 2, 64)
	c, err := in.Connect(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if w := f.Writes(); len(w) != 1 || w[0] != o.FabricsString() {
		t.Fatalf("writes = %d, want the fabrics string with both secrets", len(w))
	}
	secret, ctrl, err := in.ControllerSecrets(c.Name)
	if err != nil || secret != o.DHCHAPSecret || ctrl != o.DHCHAPCtrlSecret {
		t.Fatalf("ControllerSecrets = %s %s %v", nvmeof.RedactSecret(secret), nvmeof.RedactSecret(ctrl), err)
	}

	// Same secrets: the existing controller, no write.
	if c2, err := in.Connect(context.Background(), o); err != nil || c2.Name != c.Name || len(f.Writes()) != 1 {
		t.Fatalf("second Connect = %+v, %v, %d writes", c2, err, len(f.Writes()))
	}
	// No secrets asked: the existing controller whatever its secrets.
	plain := baseOpts()
	if c3, err := in.Connect(context.Background(), plain); err != nil || c3.Name != c.Name {
		t.Fatalf("Connect without secrets = %+v, %v", c3, err)
	}
	// Other secrets, or only the host one: nvmeof.ErrBusy naming both, no write.
	for _, mod := range []func(*ConnectOptions){
		func(o *ConnectOptions) { o.DHCHAPSecret = testSecret(t, 7, 32) },
		func(o *ConnectOptions) { o.DHCHAPCtrlSecret = "" },
		func(o *ConnectOptions) { o.DHCHAPCtrlSecret = testSecret(t, 8, 32) },
	} {
		o2 := o
		mod(&o2)
		_, err := in.Connect(context.Background(), o2)
		if !errors.Is(err, nvmeof.ErrBusy) || !strings.Contains(err.Error(), c.Name) || !strings.Contains(err.Error(), "SetControllerSecrets") {
			t.Errorf("Connect with other secrets = %v, want nvmeof.ErrBusy", err)
		}
		if err != nil {
			assertNoSecret(t, err.Error(), o.DHCHAPSecret, o.DHCHAPCtrlSecret, o2.DHCHAPSecret, o2.DHCHAPCtrlSecret)
		}
		if len(f.Writes()) != 1 {
			t.Fatalf("Connect with other secrets wrote to nvme-fabrics")
		}
	}
	// A controller connected without secrets is not one with secrets.
	tree.addController(ctrlSpec{name: "nvme9", nqn: testNQN, traddr: "127.0.0.1", trsvcid: "4499", hostnqn: testHostNQN})
	o3 := authOpts(t)
	o3.TrSvcID = "4499"
	if _, err := in.Connect(context.Background(), o3); !errors.Is(err, nvmeof.ErrBusy) || !strings.Contains(err.Error(), `host secret ""`) {
		t.Errorf("Connect with secrets to an unauthenticated controller = %v", err)
	}
}

func TestConnectWithSecretUnsupported(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(*sysTree, *fakeFabrics)
		errHas  string
		noWrite bool
	}{
		{
			// Debian 6.1: the option table lists dhchap_secret, the kernel
			// has no authentication code and would connect without it.
			name:   "6.1: options listed, no host auth",
			setup:  func(s *sysTree, f *fakeFabrics) { s.withoutHostAuth() },
			errHas: "CONFIG_NVME_AUTH",
		},
		{
			name: "options not listed",
			setup: func(s *sysTree, f *fakeFabrics) {
				s.enableHostAuth()
				f.options = strings.Replace(kernelOptions61, ",dhchap_secret=%s,dhchap_ctrl_secret=%s", "", 1)
			},
			errHas: "does not accept option dhchap_secret",
		},
		{
			name:   "kallsyms unreadable",
			setup:  func(s *sysTree, f *fakeFabrics) {},
			errHas: "cannot tell",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tree := newSysTree(t)
			f := kernelLikeFabrics(tree, 0)
			tc.setup(tree, f)
			_, err := fastInitiator(tree.root, f).Connect(context.Background(), authOpts(t))
			if !errors.Is(err, nvmeof.ErrAuthUnsupported) || !strings.Contains(err.Error(), tc.errHas) || !strings.Contains(err.Error(), testNQN) {
				t.Fatalf("Connect = %v, want nvmeof.ErrAuthUnsupported saying %q", err, tc.errHas)
			}
			if n := len(f.Writes()); n != 0 {
				t.Fatalf("connected although authentication is unsupported (%d writes)", n)
			}
		})
	}
}

// The cheap evidence first: a controller showing dhchap_secret proves host
// authentication without reading kallsyms; a positive answer is cached.
func TestHostAuthCompiledEvidence(t *testing.T) {
	tree := newSysTree(t)
	tree.hostAuth = true
	tree.addController(ctrlSpec{name: "nvme0", nqn: "nqn.2024-01.io.nvmirror:other", traddr: "127.0.0.9", trsvcid: "4420", hostnqn: testHostNQN})
	in := fastInitiator(tree.root, kernelLikeFabrics(tree, 1))
	if err := in.hostAuthCompiled(); err != nil {
		t.Fatalf("with a controller showing dhchap_secret: %v", err)
	}
	tree2 := newSysTree(t)
	tree2.enableHostAuth()
	in2 := fastInitiator(tree2.root, kernelLikeFabrics(tree2, 1))
	if err := in2.hostAuthCompiled(); err != nil {
		t.Fatalf("from kallsyms: %v", err)
	}
	if err := os.Remove(tree2.path("proc/kallsyms")); err != nil {
		t.Fatal(err)
	}
	if err := in2.hostAuthCompiled(); err != nil {
		t.Fatalf("cached answer not used: %v", err)
	}
}

// A kernel that takes the secret and connects without authenticating (the
// controller lacks dhchap_secret) is caught after the fact: the
// controller is deleted and the caller gets nvmeof.ErrAuthUnsupported.
func TestConnectDisconnectsUnauthenticatedController(t *testing.T) {
	tree := newSysTree(t)
	tree.enableHostAuth()
	tree.hostAuth = false // controllers come without the attributes
	f := kernelLikeFabrics(tree, 4)
	stop := kernelDeleter(t, tree, "nvme4")
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := fastInitiator(tree.root, f).Connect(ctx, authOpts(t))
	if !errors.Is(err, nvmeof.ErrAuthUnsupported) || !strings.Contains(err.Error(), "nvme4") {
		t.Fatalf("Connect = %v", err)
	}
	if _, err := os.Stat(tree.path("sys/class/nvme/nvme4")); !os.IsNotExist(err) {
		t.Error("the unauthenticated controller was kept")
	}
}

// A target that does not ask for authentication gets no controller
// authentication from the kernel, silently: with a controller secret,
// Connect sees no "controller authenticated" log line for the new
// controller and refuses it. An older line about another controller (or
// the same name before) does not count.
func TestConnectBidirectionalNeedsControllerAuthenticated(t *testing.T) {
	tree := newSysTree(t)
	tree.enableHostAuth() // logs "nvme0 ... controller authenticated" before the connect
	tree.rogueTarget = true
	f := kernelLikeFabrics(tree, 0)
	stop := kernelDeleter(t, tree, "nvme0")
	defer stop()
	o := authOpts(t)
	o.DHCHAPCtrlSecret = testSecret(t, 2, 32)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := fastInitiator(tree.root, f).Connect(ctx, o)
	if !errors.Is(err, nvmeof.ErrAuthFailed) || !errors.Is(err, nvmeof.ErrConnectRefused) || !strings.Contains(err.Error(), "did not authenticate itself") {
		t.Fatalf("Connect to a target that skips authentication = %v", err)
	}
	if _, err := os.Stat(tree.path("sys/class/nvme/nvme0")); !os.IsNotExist(err) {
		t.Error("the unauthenticated controller was kept")
	}
	assertNoSecret(t, err.Error(), o.DHCHAPSecret, o.DHCHAPCtrlSecret)
	// Unidirectional: the host proves itself, nothing to verify about the
	// controller, so no log line is needed.
	if c, err := fastInitiator(tree.root, f).Connect(ctx, authOpts(t)); err != nil || c.Name != "nvme1" {
		t.Fatalf("unidirectional Connect = %+v, %v", c, err)
	}

	// Without the kernel log nothing can be verified: refused before writing.
	tree2 := newSysTree(t)
	tree2.enableHostAuth()
	if err := os.Remove(tree2.path("dev/kmsg")); err != nil {
		t.Fatal(err)
	}
	f2 := kernelLikeFabrics(tree2, 0)
	if _, err := fastInitiator(tree2.root, f2).Connect(ctx, o); !errors.Is(err, nvmeof.ErrAuthUnsupported) || !strings.Contains(err.Error(), "kmsg") || len(f2.Writes()) != 0 {
		t.Fatalf("Connect without /dev/kmsg = %v (%d writes)", err, len(f2.Writes()))
	}
	// Unidirectional needs no log.
	if _, err := fastInitiator(tree2.root, f2).Connect(ctx, authOpts(t)); err != nil {
		t.Fatalf("unidirectional Connect without /dev/kmsg = %v", err)
	}
}

func TestConnectAuthErrors(t *testing.T) {
	pathErr := func(e syscall.Errno) error {
		return &os.PathError{Op: "write", Path: "/dev/nvme-fabrics", Err: e}
	}
	ctrlOpts := authOpts(t)
	ctrlOpts.DHCHAPCtrlSecret = testSecret(t, 2, 32)
	tests := []struct {
		name     string
		o        ConnectOptions
		err      error
		sentinel []error
		has      string
		kmsg     string // logged by the kernel during the write
	}{
		{"wrong host secret", authOpts(t), pathErr(syscall.EKEYREJECTED), []error{nvmeof.ErrAuthFailed, nvmeof.ErrConnectRefused}, "refused", ""},
		// The target dropped the association mid-authentication and the
		// host waited out its admin timeout: EIO, but the log tells.
		{"EIO after a logged authentication failure", authOpts(t), pathErr(syscall.EIO), []error{nvmeof.ErrAuthFailed, nvmeof.ErrConnectRefused},
			`logged "qid 0: authentication failed"`, "nvme nvme4: qid 0: authentication failed, error 880"},
		{"EIO, nothing logged: host not allowed", authOpts(t), pathErr(syscall.EIO), []error{nvmeof.ErrConnectRefused}, "host not allowed",
			"nvmet: creating nvm controller 1 for subsystem x for NQN y"},
		{"wrong controller secret", ctrlOpts, pathErr(syscall.EKEYREJECTED), []error{nvmeof.ErrAuthFailed, nvmeof.ErrConnectRefused}, "controller", ""},
		{"no secret, target requires one", baseOpts(), pathErr(syscall.ENOKEY), []error{nvmeof.ErrAuthFailed, nvmeof.ErrConnectRefused}, "no secret was given", ""},
		{"missing secret on one side", ctrlOpts, pathErr(syscall.ENOKEY), []error{nvmeof.ErrAuthFailed, nvmeof.ErrConnectRefused}, "missing", ""},
		{"other refusal stays refusal", authOpts(t), pathErr(syscall.ECONNREFUSED), []error{nvmeof.ErrConnectRefused}, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tree := newSysTree(t)
			tree.enableHostAuth()
			// A Fabrics that quotes what it wrote: Connect must scrub it.
			f := &fakeFabrics{options: kernelOptions61, onWrite: func(opts string) (string, error) {
				if tc.kmsg != "" {
					tree.logKmsg(tc.kmsg)
				}
				return "", fmt.Errorf("writing %q: %w", opts, tc.err)
			}}
			_, err := fastInitiator(tree.root, f).Connect(context.Background(), tc.o)
			for _, s := range tc.sentinel {
				if !errors.Is(err, s) {
					t.Fatalf("Connect = %v, want %v", err, s)
				}
			}
			if len(tc.sentinel) == 1 && errors.Is(err, nvmeof.ErrAuthFailed) {
				t.Fatalf("Connect = %v: not an authentication failure", err)
			}
			var errno syscall.Errno
			if !errors.As(tc.err, &errno) || !errors.Is(err, errno) {
				t.Errorf("error %v lost the errno", err)
			}
			if !strings.Contains(err.Error(), tc.has) || !strings.Contains(err.Error(), testNQN) {
				t.Errorf("error %q does not say %q and name the NQN", err, tc.has)
			}
			assertNoSecret(t, err.Error(), tc.o.DHCHAPSecret, tc.o.DHCHAPCtrlSecret)
		})
	}
}

func TestScrubError(t *testing.T) {
	s := testSecret(t, 4, 32)
	orig := fmt.Errorf("kernel said no to %s: %w", s, fmt.Errorf("%w: %w", nvmeof.ErrConnectRefused, syscall.EIO))
	err := scrubError(orig, s)
	assertNoSecret(t, err.Error(), s)
	var errno syscall.Errno
	if !errors.Is(err, syscall.EIO) || !errors.Is(err, nvmeof.ErrConnectRefused) || !errors.As(err, &errno) || errno != syscall.EIO {
		t.Errorf("scrubbed error lost its chain: %v", err)
	}
	if plain := errors.New("no secret here"); scrubError(plain, s) != plain {
		t.Error("an error without secret was rewrapped")
	}
	if scrubError(nil, s) != nil {
		t.Error("nil became an error")
	}
}

func TestControllerSecrets(t *testing.T) {
	tree := newSysTree(t)
	tree.hostAuth = true
	key := testSecret(t, 1, 32)
	tree.addController(ctrlSpec{name: "nvme1", nqn: testNQN, traddr: "127.0.0.1", trsvcid: "4421", hostnqn: testHostNQN, secret: key})
	in := fastInitiator(tree.root, &fakeFabrics{})
	if s, c, err := in.ControllerSecrets("nvme1"); err != nil || s != key || c != "" {
		t.Fatalf("ControllerSecrets = %s %s %v", nvmeof.RedactSecret(s), nvmeof.RedactSecret(c), err)
	}
	if _, _, err := in.ControllerSecrets("nvme2"); !errors.Is(err, nvmeof.ErrNotFound) {
		t.Errorf("missing controller: %v", err)
	}
	if _, _, err := in.ControllerSecrets("../nvme1"); !errors.Is(err, nvmeof.ErrInvalidArgument) {
		t.Errorf("bad name: %v", err)
	}
	tree.hostAuth = false
	tree.addController(ctrlSpec{name: "nvme3", nqn: testNQN, traddr: "127.0.0.1", trsvcid: "4422", hostnqn: testHostNQN})
	if _, _, err := in.ControllerSecrets("nvme3"); !errors.Is(err, nvmeof.ErrAuthUnsupported) {
		t.Errorf("controller without the attributes: %v", err)
	}
}

func TestSetControllerSecrets(t *testing.T) {
	old, oldCtrl := testSecret(t, 1, 32), testSecret(t, 2, 32)
	newKey, newCtrl := testSecret(t, 3, 48), testSecret(t, 4, 64)
	setup := func(t *testing.T) (*Initiator, *sysTree) {
		tree := newSysTree(t)
		tree.hostAuth = true
		tree.addController(ctrlSpec{name: "nvme1", nqn: testNQN, traddr: "127.0.0.1", trsvcid: "4421", hostnqn: testHostNQN, secret: old, ctrlSecret: oldCtrl})
		tree.addController(ctrlSpec{name: "nvme2", nqn: testNQN, traddr: "127.0.0.2", trsvcid: "4421", hostnqn: testHostNQN, secret: old})
		return fastInitiator(tree.root, &fakeFabrics{}), tree
	}
	read := func(tree *sysTree, ctrl, attr string) string {
		b, err := os.ReadFile(tree.path("sys/class/nvme/" + ctrl + "/" + attr))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	t.Run("both, one per call", func(t *testing.T) {
		in, tree := setup(t)
		// Both at once would re-authenticate once with a mixed pair.
		err := in.SetControllerSecrets("nvme1", newKey, newCtrl)
		if !errors.Is(err, nvmeof.ErrInvalidArgument) || !strings.Contains(err.Error(), "one per call") {
			t.Fatalf("SetControllerSecrets(both) = %v", err)
		}
		if read(tree, "nvme1", "dhchap_secret") != old+"\n" {
			t.Fatal("a refused call wrote")
		}
		if err := in.SetControllerSecrets("nvme1", newKey, ""); err != nil {
			t.Fatal(err)
		}
		if err := in.SetControllerSecrets("nvme1", "", newCtrl); err != nil {
			t.Fatal(err)
		}
		// Written without a newline: the kernel keeps the bytes verbatim.
		if read(tree, "nvme1", "dhchap_secret") != newKey || read(tree, "nvme1", "dhchap_ctrl_secret") != newCtrl {
			t.Errorf("secrets not written verbatim")
		}
	})
	t.Run("one, other unchanged", func(t *testing.T) {
		in, tree := setup(t)
		mtime := func() time.Time {
			fi, _ := os.Stat(tree.path("sys/class/nvme/nvme1/dhchap_secret"))
			return fi.ModTime()
		}
		before := mtime()
		time.Sleep(10 * time.Millisecond) // distinct mtimes on coarse filesystems
		if err := in.SetControllerSecrets("nvme1", old, newCtrl); err != nil {
			t.Fatal(err)
		}
		if !mtime().Equal(before) {
			t.Error("an unchanged secret was rewritten (each write re-authenticates)")
		}
		if read(tree, "nvme1", "dhchap_ctrl_secret") != newCtrl {
			t.Error("controller secret not written")
		}
		if err := in.SetControllerSecrets("nvme2", newKey, ""); err != nil {
			t.Fatal(err)
		}
		if read(tree, "nvme2", "dhchap_secret") != newKey || strings.TrimSpace(read(tree, "nvme2", "dhchap_ctrl_secret")) != "none" {
			t.Error("host secret not written, or controller secret touched")
		}
	})
	t.Run("refusals", func(t *testing.T) {
		in, tree := setup(t)
		bad := strings.Replace(newKey, "AwMD", "AwME", 1)
		for _, tc := range []struct {
			name, ctrl, secret, ctrlSecret string
			sentinel                       error
			has                            string
		}{
			{"nothing", "nvme1", "", "", nvmeof.ErrInvalidArgument, "no secret"},
			{"invalid", "nvme1", bad, "", nvmeof.ErrInvalidArgument, "host secret: invalid DH-HMAC-CHAP secret"},
			{"ctrl secret on unidirectional", "nvme2", "", newCtrl, nvmeof.ErrInvalidArgument, "connected without a controller secret"},
			{"equal", "nvme1", oldCtrl, "", nvmeof.ErrInvalidArgument, "would equal"},
			{"missing controller", "nvme7", newKey, "", nvmeof.ErrNotFound, "nvme7"},
			{"bad name", "nvme1/../nvme2", newKey, "", nvmeof.ErrInvalidArgument, "not an NVMe controller name"},
		} {
			err := in.SetControllerSecrets(tc.ctrl, tc.secret, tc.ctrlSecret)
			if !errors.Is(err, tc.sentinel) || !strings.Contains(err.Error(), tc.has) {
				t.Errorf("%s: SetControllerSecrets = %v, want %v saying %q", tc.name, err, tc.sentinel, tc.has)
				continue
			}
			assertNoSecret(t, err.Error(), bad, newKey, newCtrl, old, oldCtrl)
		}
		if read(tree, "nvme1", "dhchap_secret") != old+"\n" || read(tree, "nvme2", "dhchap_ctrl_secret") != "none\n" {
			t.Error("a refused call wrote")
		}
	})
	t.Run("kernel refuses the write", func(t *testing.T) {
		in, tree := setup(t)
		p := tree.path("sys/class/nvme/nvme1/dhchap_secret")
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(p, 0o755); err != nil { // reads fail, writes fail
			t.Fatal(err)
		}
		err := in.SetControllerSecrets("nvme1", newKey, "")
		if err == nil {
			t.Fatal("SetControllerSecrets succeeded")
		}
		assertNoSecret(t, err.Error(), newKey)
	})
}
