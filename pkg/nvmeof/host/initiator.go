package host

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/dhchap"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/sysfs"
)

// DefaultWaitTimeout bounds waits whose context carries no deadline, so a
// forgotten deadline cannot hang a caller forever.
const DefaultWaitTimeout = 30 * time.Second

// pollInterval is how often waits re-read sysfs. Short, because the events
// waited for (a namespace appearing, a controller going away) usually
// happen within milliseconds of the triggering write.
const pollInterval = 100 * time.Millisecond

// Initiator drives the host side of NVMe-oF: connects through
// /dev/nvme-fabrics and reads controllers and namespaces from sysfs.
// It is safe for concurrent use: it keeps no state besides its paths, and
// the kernel itself refuses duplicate connects (EALREADY), which Connect
// turns into returning the existing controller.
type Initiator struct {
	sys     Sysfs
	fabrics Fabrics
	poll    time.Duration
	// authOK caches a positive answer of hostAuthCompiled.
	authOK atomic.Bool
}

// NewInitiator returns an initiator using root/dev/nvme-fabrics and
// root/sys/...; root "" means "/".
func NewInitiator(root string) *Initiator {
	if root == "" {
		root = "/"
	}
	return NewInitiatorWithFabrics(root, devFabrics{path: filepath.Join(root, "dev/nvme-fabrics")})
}

// NewInitiatorWithFabrics is NewInitiator with a replaceable fabrics device
// (tests pass a fake).
func NewInitiatorWithFabrics(root string, f Fabrics) *Initiator {
	if root == "" {
		root = "/"
	}
	return &Initiator{sys: Sysfs{root: root}, fabrics: f, poll: pollInterval}
}

// SupportedOptions returns the option names the kernel's /dev/nvme-fabrics
// accepts (read without writing), e.g. "transport", "fast_io_fail_tmo".
func (i *Initiator) SupportedOptions() ([]string, error) {
	var (
		s   string
		err error
	)
	if r, ok := i.fabrics.(FabricsOptionReader); ok {
		s, err = r.ReadOptions()
	} else {
		s, err = devFabrics{path: i.sys.dev("nvme-fabrics")}.ReadOptions()
	}
	if err != nil {
		return nil, err
	}
	names := parseOptionNames(s)
	if len(names) == 0 {
		return nil, fmt.Errorf("no options listed by %s (read %q)", i.sys.dev("nvme-fabrics"), s)
	}
	return names, nil
}

// Connect connects to a subsystem, or returns the existing controller when
// one already exists for the same subsystem NQN, address, port and host NQN
// (whatever its state, unless deleting or dead; a "connecting" controller
// is the kernel reconnecting and is returned as is). It refuses options
// the kernel does not list, e.g. fast_io_fail_tmo on old kernels, instead
// of letting the write fail with a bare EINVAL.
//
// With DH-HMAC-CHAP secrets, Connect first makes sure the kernel will
// authenticate (nvmeof.ErrAuthUnsupported otherwise, nothing written), and an
// existing controller is returned only if it was connected with the same
// secrets: one with other secrets (or none) is nvmeof.ErrBusy, because returning
// it would hand the caller a connection that did not authenticate the way
// it asked (rotate it with SetControllerSecrets, or disconnect it first;
// the kernel refuses a second controller to the same place). Options
// without secrets accept an existing controller whatever its secrets. A
// refusal by authentication is nvmeof.ErrAuthFailed (with nvmeof.ErrConnectRefused).
//
// The kernel's connect blocks until the target answers or TCP gives up. If
// ctx ends first Connect returns, but the write cannot be interrupted: a
// connection that completes afterwards stays, and the next Connect with the
// same options returns it.
func (i *Initiator) Connect(ctx context.Context, o ConnectOptions) (Controller, error) {
	if err := o.Validate(); err != nil {
		return Controller{}, err
	}
	target := fmt.Sprintf("%s:%s", o.canonicalAddr(), o.TrSvcID)
	if o.wantsAuth() {
		if err := i.checkAuthSupport(o); err != nil {
			return Controller{}, fmt.Errorf("connecting %s at %s with DH-HMAC-CHAP: %w", o.SubsysNQN, target, err)
		}
	}
	if c, ok, err := i.existing(o); err != nil {
		return Controller{}, err
	} else if ok {
		if err := i.checkSameSecrets(c, o, target); err != nil {
			return Controller{}, err
		}
		klog.V(4).InfoS("NVMe-oF controller already connected", "controller", c.Name, "nqn", o.SubsysNQN, "target", target, "state", c.State)
		return c, nil
	}
	opts := o.FabricsString()
	if supported, err := i.SupportedOptions(); err == nil {
		for _, kv := range o.pairs() {
			if !slices.Contains(supported, kv[0]) {
				if secretOptions[kv[0]] {
					return Controller{}, fmt.Errorf("%w: the kernel's /dev/nvme-fabrics does not accept option %s (connecting %s at %s): it is built without %s",
						nvmeof.ErrAuthUnsupported, kv[0], o.SubsysNQN, target, hostAuthConfig)
				}
				return Controller{}, fmt.Errorf("%w: kernel does not support NVMe-oF option %s (connecting %s at %s); supported: %s",
					nvmeof.ErrInvalidArgument, kv[0], o.SubsysNQN, target, strings.Join(supported, " "))
			}
		}
	} else {
		// The write below reports a missing device better; an unreadable
		// option list alone is no reason to refuse.
		klog.V(4).InfoS("Cannot read supported NVMe-oF options", "err", err)
	}
	if err := ctx.Err(); err != nil {
		return Controller{}, fmt.Errorf("connecting %s at %s: %w", o.SubsysNQN, target, err)
	}
	// The kernel log tells what the fabrics write does not: whether the
	// controller authenticated (bidirectional: required), and whether a
	// connect that failed with a plain EIO failed in authentication.
	var kmsg *kmsgCursor
	if o.wantsAuth() {
		var err error
		kmsg, err = openKmsg(i.sys.dev("kmsg"))
		switch {
		case err != nil && o.DHCHAPCtrlSecret != "":
			return Controller{}, fmt.Errorf("%w: connecting %s at %s with bidirectional DH-HMAC-CHAP: the kernel log is needed to verify that the controller authenticated: %w",
				nvmeof.ErrAuthUnsupported, o.SubsysNQN, target, err)
		case err != nil:
			klog.V(4).InfoS("Kernel log unreadable; connect failures are classified by errno only", "err", err)
		default:
			defer kmsg.Close()
		}
	}

	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := i.fabrics.Write(opts)
		if err == nil && ctx.Err() != nil {
			klog.InfoS("NVMe-oF connect completed after the caller gave up; the controller stays and the next Connect returns it",
				"nqn", o.SubsysNQN, "target", target, "result", strings.TrimSpace(out))
		}
		done <- result{out, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		return Controller{}, fmt.Errorf("connecting %s at %s: %w", o.SubsysNQN, target, ctx.Err())
	}
	if r.err != nil {
		return i.connectFailed(o, target, r.err, kmsg)
	}
	instance, _, err := parseConnectResult(r.out)
	if err != nil {
		return Controller{}, fmt.Errorf("connecting %s at %s: %w", o.SubsysNQN, target, err)
	}
	name := "nvme" + strconv.Itoa(instance)
	c, err := i.waitController(ctx, name)
	if err != nil {
		return Controller{}, fmt.Errorf("connected %s at %s as %s but: %w", o.SubsysNQN, target, name, err)
	}
	if o.wantsAuth() {
		// Defence in depth behind checkAuthSupport: a controller without
		// the dhchap_secret attribute was connected by a kernel that
		// ignored the secret. It must not be used.
		if _, err := os.Stat(filepath.Join(i.sys.classNVMe(), name, "dhchap_secret")); errors.Is(err, fs.ErrNotExist) {
			derr := i.Disconnect(ctx, name)
			return Controller{}, errors.Join(fmt.Errorf("%w: controller %s for %s at %s has no dhchap_secret attribute: the kernel connected without authenticating (built without %s); disconnected it",
				nvmeof.ErrAuthUnsupported, name, o.SubsysNQN, target, hostAuthConfig), derr)
		}
	}
	if o.DHCHAPCtrlSecret != "" {
		// The kernel logs the line before the fabrics write returns.
		found, err := kmsg.find(controllerAuthenticatedLog(instance))
		if err != nil || found == "" {
			why := "the target did not authenticate itself (it did not ask for DH-HMAC-CHAP, and the kernel then skips the controller's authentication)"
			if err != nil {
				why = "cannot verify that the controller authenticated: " + err.Error()
			}
			derr := i.Disconnect(ctx, name)
			return Controller{}, errors.Join(fmt.Errorf("%w: %w: controller %s for %s at %s: %s; disconnected it",
				nvmeof.ErrAuthFailed, nvmeof.ErrConnectRefused, name, o.SubsysNQN, target, why), derr)
		}
	}
	klog.InfoS("Connected NVMe-oF controller", "controller", c.Name, "nqn", o.SubsysNQN, "target", target, "hostnqn", o.HostNQN,
		"state", c.State, "subsystem", c.Subsystem, "dhchap", o.authMode())
	return c, nil
}

// checkSameSecrets refuses an existing controller whose secrets differ from
// those o asks for (see Connect).
func (i *Initiator) checkSameSecrets(c Controller, o ConnectOptions, target string) error {
	if !o.wantsAuth() {
		return nil
	}
	secret, ctrlSecret, err := i.ControllerSecrets(c.Name)
	if err != nil {
		return fmt.Errorf("checking the secrets of existing controller %s for %s at %s: %w", c.Name, o.SubsysNQN, target, err)
	}
	var diff []string
	if !dhchap.Equal(secret, canonicalOrRaw(o.DHCHAPSecret)) {
		diff = append(diff, fmt.Sprintf("host secret %s (asked: %s)", nvmeof.RedactSecret(secret), nvmeof.RedactSecret(o.DHCHAPSecret)))
	}
	if !dhchap.Equal(ctrlSecret, canonicalOrRaw(o.DHCHAPCtrlSecret)) {
		diff = append(diff, fmt.Sprintf("controller secret %s (asked: %s)", nvmeof.RedactSecret(ctrlSecret), nvmeof.RedactSecret(o.DHCHAPCtrlSecret)))
	}
	if len(diff) > 0 {
		return fmt.Errorf("%w: controller %s for %s at %s is connected with other DH-HMAC-CHAP secrets: %s; rotate them with SetControllerSecrets or disconnect it first",
			nvmeof.ErrBusy, c.Name, o.SubsysNQN, target, strings.Join(diff, ", "))
	}
	return nil
}

// connectFailed maps a failed fabrics write to the package's errors.
func (i *Initiator) connectFailed(o ConnectOptions, target string, err error, kmsg *kmsgCursor) (Controller, error) {
	err = scrubError(err, o.DHCHAPSecret, o.DHCHAPCtrlSecret, canonicalOrRaw(o.DHCHAPSecret), canonicalOrRaw(o.DHCHAPCtrlSecret))
	authErr := authFailure(o, err)
	if authErr == "" && kmsg != nil {
		authErr = authFailureLogged(kmsg)
	}
	if authErr != "" {
		return Controller{}, fmt.Errorf("%w: %w: connecting %s at %s as host %s: %s: %w",
			nvmeof.ErrAuthFailed, nvmeof.ErrConnectRefused, o.SubsysNQN, target, o.HostNQN, authErr, err)
	}
	switch {
	case errors.Is(err, syscall.EALREADY):
		// Someone connected the same controller between our check and our
		// write (the kernel refuses duplicates): return theirs.
		if c, ok, e := i.existing(o); e == nil && ok {
			if err := i.checkSameSecrets(c, o, target); err != nil {
				return Controller{}, err
			}
			klog.V(4).InfoS("NVMe-oF controller connected concurrently", "controller", c.Name, "nqn", o.SubsysNQN, "target", target)
			return c, nil
		}
		return Controller{}, fmt.Errorf("%w: kernel reports a controller for %s at %s (host %s) already exists but it is not visible or is being deleted; retry: %w",
			nvmeof.ErrBusy, o.SubsysNQN, target, o.HostNQN, err)
	case errors.Is(err, syscall.EINVAL):
		return Controller{}, fmt.Errorf("%w: kernel rejected the connect options for %s at %s (an unsupported option, or host NQN %s / host ID %s already in use with a different partner; see dmesg): %w",
			nvmeof.ErrInvalidArgument, o.SubsysNQN, target, o.HostNQN, o.HostID, err)
	case isConnectionErrno(err):
		return Controller{}, fmt.Errorf("%w: connecting %s at %s as host %s (target unreachable, port closed, subsystem not exported on that port, or host not allowed): %w",
			nvmeof.ErrConnectRefused, o.SubsysNQN, target, o.HostNQN, err)
	}
	return Controller{}, fmt.Errorf("connecting %s at %s as host %s: %w", o.SubsysNQN, target, o.HostNQN, err)
}

// existing returns a controller equivalent to o in the kernel's sense
// (same transport, subsystem, address, port, host NQN, no local address or
// interface pinning), ignoring controllers being deleted.
func (i *Initiator) existing(o ConnectOptions) (Controller, bool, error) {
	cs, err := i.sys.controllers()
	if err != nil {
		return Controller{}, false, err
	}
	addr := o.canonicalAddr()
	for _, c := range cs {
		if c.State.isGone() || c.hostTrAddr != "" || c.hostIface != "" {
			continue
		}
		if c.Transport == o.transport() && c.SubsysNQN == o.SubsysNQN && c.TrAddr == addr &&
			c.TrSvcID == o.TrSvcID && c.HostNQN == o.HostNQN {
			return c, true, nil
		}
	}
	return Controller{}, false, nil
}

// waitController waits for a just-created controller's sysfs directory. The
// kernel creates it before the fabrics write returns, so this normally
// succeeds at once; the wait only covers slow sysfs population.
func (i *Initiator) waitController(ctx context.Context, name string) (Controller, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var (
		c    Controller
		last error
	)
	err := poll(ctx, i.poll, func() (bool, error) {
		var err error
		c, err = i.sys.controller(name)
		if errors.Is(err, nvmeof.ErrNotFound) {
			last = err
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		if last != nil {
			return Controller{}, fmt.Errorf("%w (last: %w)", err, last)
		}
		return Controller{}, err
	}
	return c, nil
}

// Controllers returns every controller under /sys/class/nvme (fabrics and
// PCIe alike), ordered by instance.
func (i *Initiator) Controllers() ([]Controller, error) {
	return i.sys.controllers()
}

// ControllersFor returns the controllers of subsystem nqn, including those
// reconnecting or being deleted (check State).
func (i *Initiator) ControllersFor(nqn string) ([]Controller, error) {
	if err := nvmeof.ValidateNQN(nqn); err != nil {
		return nil, err
	}
	cs, err := i.sys.controllers()
	if err != nil {
		return nil, err
	}
	var out []Controller
	for _, c := range cs {
		if c.SubsysNQN == nqn {
			out = append(out, c)
		}
	}
	return out, nil
}

// Controller returns the controller called name ("nvme3"), or nvmeof.ErrNotFound.
func (i *Initiator) Controller(name string) (Controller, error) {
	return i.sys.controller(name)
}

// Disconnect deletes controller name by writing 1 to its delete_controller
// attribute, then waits (until ctx's deadline, DefaultWaitTimeout without
// one) for its sysfs directory to disappear. A controller that is already
// gone is not an error.
//
// The kernel performs the deletion synchronously inside the write, so the
// write itself cannot be bounded by ctx; in practice it returns once the
// controller's queues are torn down, and the directory is then already gone.
func (i *Initiator) Disconnect(ctx context.Context, name string) error {
	if !ctrlNameRE.MatchString(name) {
		return fmt.Errorf("%w: %q is not an NVMe controller name (nvme<N>)", nvmeof.ErrInvalidArgument, name)
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	dir := filepath.Join(i.sys.classNVMe(), name)
	attr := filepath.Join(dir, "delete_controller")
	if err := sysfs.WriteAttr(attr, "1"); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(dir); errors.Is(serr, fs.ErrNotExist) {
				klog.V(4).InfoS("NVMe controller already gone", "controller", name)
				return nil
			}
		}
		return fmt.Errorf("deleting controller %s: %w", name, err)
	}
	err := poll(ctx, i.poll, func() (bool, error) {
		_, err := os.Stat(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		state, _ := attrs.ReadOptionalAttr(filepath.Join(dir, "state"))
		return fmt.Errorf("%w: controller %s still present (state %q) after writing %s: %w", nvmeof.ErrBusy, name, state, attr, err)
	}
	klog.InfoS("Disconnected NVMe controller", "controller", name)
	return nil
}

// DisconnectNQN disconnects every controller of subsystem nqn and returns
// the joined errors of those that failed.
func (i *Initiator) DisconnectNQN(ctx context.Context, nqn string) error {
	cs, err := i.ControllersFor(nqn)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cs {
		if err := i.Disconnect(ctx, c.Name); err != nil {
			errs = append(errs, fmt.Errorf("disconnecting %s of %s: %w", c.Name, nqn, err))
		}
	}
	return errors.Join(errs...)
}

// withDefaultTimeout gives ctx a deadline if it has none.
func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultWaitTimeout)
}

// poll calls cond at once and then every interval until it returns true or
// an error, or ctx ends (then ctx.Err() is returned).
func poll(ctx context.Context, interval time.Duration, cond func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
