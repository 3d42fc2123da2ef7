package host

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/dhchap"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/sysfs"
)

// canonicalOrRaw is nvmeof.CanonicalSecret for callers that validated already.
func canonicalOrRaw(s string) string {
	if sec, err := dhchap.Parse(s); err == nil {
		return sec.Encode()
	}
	return s
}

// secretOptions are the fabrics options whose values are secrets.
var secretOptions = map[string]bool{"dhchap_secret": true, "dhchap_ctrl_secret": true, "tls_key": true}

// redactOptions returns a fabrics option string with the values of secret
// options replaced, for messages about a write to /dev/nvme-fabrics.
func redactOptions(opts string) string {
	parts := strings.Split(opts, ",")
	for i, kv := range parts {
		k, v, ok := strings.Cut(kv, "=")
		if ok && secretOptions[strings.TrimSpace(k)] {
			parts[i] = k + "=" + nvmeof.RedactSecret(v)
		}
	}
	return strings.Join(parts, ",")
}

// scrubError returns err, or an error with the same message minus any of
// secrets when its text contains one (a Fabrics implementation could quote
// what it wrote). The replacement keeps errors.Is working for the errno
// and the sentinels err wraps, but not errors.Unwrap to the original text.
func scrubError(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	leaked := false
	for _, s := range secrets {
		if s != "" && strings.Contains(msg, s) {
			msg = strings.ReplaceAll(msg, s, nvmeof.RedactSecret(s))
			leaked = true
		}
	}
	if !leaked {
		return err
	}
	return &scrubbedError{msg: msg, orig: err}
}

type scrubbedError struct {
	msg  string
	orig error
}

func (e *scrubbedError) Error() string { return e.msg }

// Is reports whether the original error matches, so errno and sentinel
// checks keep working; the original itself is not reachable.
func (e *scrubbedError) Is(target error) bool { return errors.Is(e.orig, target) }

// As lets errors.As find an errno in the original.
func (e *scrubbedError) As(target any) bool { return errors.As(e.orig, target) }

// hostAuthSymbol is a function of the kernel's NVMe host authentication
// (drivers/nvme/host/auth.c), present in /proc/kallsyms exactly when the
// host side is built with it (CONFIG_NVME_AUTH on 6.0-6.6,
// CONFIG_NVME_HOST_AUTH from 6.7), whether built in or in nvme-core.
const hostAuthSymbol = "nvme_auth_negotiate"

// hostAuthConfig names the kernel options in messages.
const hostAuthConfig = "CONFIG_NVME_AUTH (CONFIG_NVME_HOST_AUTH on 6.7 and later)"

// hostAuthCompiled reports whether the host side of the kernel can
// authenticate. /dev/nvme-fabrics is no evidence: Debian's 6.1 lists the
// dhchap_secret options in its table although it is built without
// authentication, and then connects without authenticating. The evidence
// used, cheapest first: a fabrics controller in sysfs with a dhchap_secret
// attribute (only created with host authentication), then the symbol in
// /proc/kallsyms. The answer is cached once positive (the kernel cannot
// lose it while running).
func (i *Initiator) hostAuthCompiled() error {
	if i.authOK.Load() {
		return nil
	}
	names, err := listNames(i.sys.classNVMe(), ctrlNameRE)
	if err != nil {
		return err
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(i.sys.classNVMe(), n, "dhchap_secret")); err == nil {
			i.authOK.Store(true)
			return nil
		}
	}
	ks := filepath.Join(i.sys.root, "proc/kallsyms")
	f, err := os.Open(ks)
	if err != nil {
		return fmt.Errorf("%w: cannot tell whether the kernel has NVMe host authentication (%s): no controller shows it and %s is unreadable: %w",
			nvmeof.ErrAuthUnsupported, hostAuthConfig, ks, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "ffffffffc0a1b2c0 T nvme_auth_negotiate\t[nvme_core]"
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == hostAuthSymbol {
			i.authOK.Store(true)
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: cannot tell whether the kernel has NVMe host authentication (%s): reading %s: %w",
			nvmeof.ErrAuthUnsupported, hostAuthConfig, ks, err)
	}
	return fmt.Errorf("%w: the kernel's NVMe host is built without %s (%s is not in %s); its nvme-fabrics would connect without authenticating",
		nvmeof.ErrAuthUnsupported, hostAuthConfig, hostAuthSymbol, ks)
}

// checkAuthSupport refuses a connect with secrets unless the kernel will
// authenticate with them: the options must be listed by
// /dev/nvme-fabrics (when the list is readable; an unreadable list alone
// proves nothing, and a missing device fails the write with nvmeof.ErrNotFound),
// and the host authentication code must be built in.
func (i *Initiator) checkAuthSupport(o ConnectOptions) error {
	if supported, err := i.SupportedOptions(); err == nil {
		for _, kv := range o.pairs() {
			if secretOptions[kv[0]] && !slices.Contains(supported, kv[0]) {
				return fmt.Errorf("%w: the kernel's /dev/nvme-fabrics does not accept option %s: it is built without %s",
					nvmeof.ErrAuthUnsupported, kv[0], hostAuthConfig)
			}
		}
	}
	return i.hostAuthCompiled()
}

// authFailure explains a failed connect as an authentication failure, or
// returns "" when err is something else. The errnos are what the fabrics
// write returned on 6.12 (test/kernel/auth_vmguest_test.go):
//   - EKEYREJECTED: the target refused the host's response (dmesg, target:
//     "nvmet: ctrl N qid 0 host response mismatch", "failure1", "fatal error
//     occurred!"; host: "qid 0: authentication failed, error -129"); the
//     controller's response did not match the controller secret (host:
//     "qid 0: controller authentication failed"); or the host asked for
//     bidirectional authentication and the target has no controller
//     secret (target: "qid 0 no ctrl key").
//   - ENOKEY: the target requires authentication and the host has no
//     secret (host: "qid 0: no key", "authentication setup failed").
//
// A target whose own configured secret is unusable (bad CRC) answers the
// Connect command with an error instead: EIO, like a host not allowed.
func authFailure(o ConnectOptions, err error) string {
	switch {
	case errors.Is(err, syscall.EKEYREJECTED):
		if o.DHCHAPCtrlSecret != "" {
			return "authentication refused: the target does not accept the host secret, or the controller failed to prove the controller secret (a wrong one, or none configured on the target)"
		}
		return "authentication refused: the target does not accept the host secret"
	case errors.Is(err, syscall.ENOKEY):
		if !o.wantsAuth() {
			return "the target requires DH-HMAC-CHAP authentication and no secret was given"
		}
		return "authentication impossible: a secret is missing"
	}
	return ""
}

// authFailureLogs are the host's log lines of a failed authentication
// (drivers/nvme/host/auth.c, 6.12).
var authFailureLogs = []string{": qid 0: authentication failed", ": qid 0: controller authentication failed", ": qid 0: no key"}

// authFailureLogged explains a failed connect whose errno says nothing
// about authentication by the kernel log written meanwhile. Seen on 6.12:
// when the target drops the association right after refusing the host
// (its "fatal error"), the host sometimes waits for its outstanding
// authentication command until nvme_core's admin_timeout (60 s) and the
// write then fails with EIO, as for a host that is not allowed at all. The
// log shows "qid 0: authentication failed, error 880". Another connect
// failing at the same moment could be the one that logged it: the
// classification is a hint, nvmeof.ErrConnectRefused holds either way.
func authFailureLogged(kmsg *kmsgCursor) string {
	l, _ := kmsg.find(authFailureLogs...)
	if l == "" {
		return ""
	}
	return fmt.Sprintf("authentication failed (the kernel logged %q while connecting; the connection was dropped mid-authentication)", strings.TrimPrefix(l, ": "))
}

// ControllerSecrets returns the DH-HMAC-CHAP secrets controller name
// ("nvme3") authenticates with, as its sysfs dhchap_secret and
// dhchap_ctrl_secret show them ("" for none). A controller without these
// attributes (a kernel without host authentication, or PCIe) is
// nvmeof.ErrAuthUnsupported; a missing controller nvmeof.ErrNotFound. Never log the
// result.
func (i *Initiator) ControllerSecrets(name string) (secret, ctrlSecret string, err error) {
	dir, err := i.controllerDir(name)
	if err != nil {
		return "", "", err
	}
	vals := make([]string, 2)
	for k, attr := range []string{"dhchap_secret", "dhchap_ctrl_secret"} {
		v, err := attrs.ReadAttr(filepath.Join(dir, attr))
		if errors.Is(err, fs.ErrNotExist) {
			return "", "", fmt.Errorf("%w: controller %s has no %s attribute (kernel without %s, or not a fabrics controller)",
				nvmeof.ErrAuthUnsupported, name, attr, hostAuthConfig)
		}
		if err != nil {
			return "", "", fmt.Errorf("reading %s of controller %s: %w", attr, name, err)
		}
		// The kernel shows "none" for a secret it was not given.
		if v == "none" {
			v = ""
		}
		vals[k] = v
	}
	return vals[0], vals[1], nil
}

func (i *Initiator) controllerDir(name string) (string, error) {
	if !ctrlNameRE.MatchString(name) {
		return "", fmt.Errorf("%w: %q is not an NVMe controller name (nvme<N>)", nvmeof.ErrInvalidArgument, name)
	}
	dir := filepath.Join(i.sys.classNVMe(), name)
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%w: controller %s (%s)", nvmeof.ErrNotFound, name, dir)
		}
		return "", err
	}
	return dir, nil
}

// SetControllerSecrets re-keys a live controller: it writes the new host
// secret or the new controller secret to the controller's sysfs
// dhchap_secret or dhchap_ctrl_secret ("" leaves that one as it is; a
// secret equal to the current one is not rewritten). The write makes the
// kernel re-authenticate the controller with the target in the background:
// the controller is not disconnected, I/O goes on, and the write returns
// before the re-authentication ends, without its outcome.
//
// The target must hold the new secrets first (Target.SetHostAuth; that
// does not disturb live sessions). Seen on 6.12, when it does not: the
// target fails the re-authentication as a fatal error and drops the
// association; the host reconnects with the secret it now has, which the
// target refuses, so I/O fails after fast_io_fail_tmo (md fails the leg)
// and the controller is deleted at ctrl_loss_tmo unless the right secret is
// set in time (a reconnect attempt caught in the failed authentication
// waited out the 60 s admin timeout).
//
// For the same reason at most one secret may change per call
// (nvmeof.ErrInvalidArgument otherwise): each write re-authenticates with the pair
// the controller holds at that moment, and with both changing the first
// re-authentication would run with one new and one old secret against a
// target that holds both new ones, and fail. Rotate bidirectional secrets
// one at a time: target host secret, then this with the host secret; target
// controller secret, then this with the controller secret.
//
// The kernel can only change a secret the controller was connected with (a
// controller connected without a controller secret cannot get one live):
// asking for that is nvmeof.ErrInvalidArgument too.
func (i *Initiator) SetControllerSecrets(name, secret, ctrlSecret string) error {
	if secret == "" && ctrlSecret == "" {
		return fmt.Errorf("%w: no secret to set on controller %s", nvmeof.ErrInvalidArgument, name)
	}
	var err error
	if secret != "" {
		if secret, err = nvmeof.CanonicalSecret("host secret", secret); err != nil {
			return fmt.Errorf("controller %s: %w", name, err)
		}
	}
	if ctrlSecret != "" {
		if ctrlSecret, err = nvmeof.CanonicalSecret("controller secret", ctrlSecret); err != nil {
			return fmt.Errorf("controller %s: %w", name, err)
		}
	}
	dir, err := i.controllerDir(name)
	if err != nil {
		return err
	}
	curSecret, curCtrl, err := i.ControllerSecrets(name)
	if err != nil {
		return err
	}
	newSecret, newCtrl := curSecret, curCtrl
	if secret != "" {
		newSecret = secret
	}
	if ctrlSecret != "" {
		newCtrl = ctrlSecret
	}
	if newCtrl != "" && dhchap.Equal(newSecret, newCtrl) {
		return fmt.Errorf("%w: controller %s: the controller secret would equal the host secret", nvmeof.ErrInvalidArgument, name)
	}
	if !dhchap.Equal(newSecret, curSecret) && !dhchap.Equal(newCtrl, curCtrl) {
		return fmt.Errorf("%w: controller %s: both secrets would change at once; change one per call (the target holding the matching pair each time)",
			nvmeof.ErrInvalidArgument, name)
	}
	for _, w := range []struct {
		attr, what, cur, val string
	}{
		{"dhchap_secret", "host secret", curSecret, secret},
		{"dhchap_ctrl_secret", "controller secret", curCtrl, ctrlSecret},
	} {
		if w.val == "" {
			continue
		}
		if w.cur == "" {
			return fmt.Errorf("%w: controller %s was connected without a %s; the kernel can only change secrets a controller was connected with (reconnect with it instead)",
				nvmeof.ErrInvalidArgument, name, w.what)
		}
		if dhchap.Equal(w.cur, w.val) {
			continue
		}
		p := filepath.Join(dir, w.attr)
		if err := sysfs.WriteAttr(p, w.val); err != nil {
			return fmt.Errorf("setting the %s %s of controller %s (%s): %w", w.what, nvmeof.RedactSecret(w.val), name, p, scrubError(err, w.val))
		}
		klog.InfoS("Set DH-HMAC-CHAP secret of NVMe controller; the kernel re-authenticates it", "controller", name,
			"secret", w.what, "new", nvmeof.RedactSecret(w.val), "old", nvmeof.RedactSecret(w.cur))
	}
	return nil
}
