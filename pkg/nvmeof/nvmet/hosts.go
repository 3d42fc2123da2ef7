package nvmet

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

// AllowHost lets hostNQN connect to subsystem nqn: creates hosts/<hostNQN>
// if missing and links it into the subsystem's allowed_hosts (with an
// absolute target, which configfs requires). allow_any_host is written 0
// first, since the kernel refuses host links while it is 1. Idempotent.
//
// An existing host entry is linked as it is, with the DH-HMAC-CHAP secrets
// SetHostAuth gave it; a created one has none, so a host that must
// authenticate needs SetHostAuth before AllowHost.
func (t *Target) AllowHost(nqn, hostNQN string) error {
	if err := validateSubsysNQN(nqn); err != nil {
		return err
	}
	if err := nvmeof.ValidateNQN(hostNQN); err != nil {
		return fmt.Errorf("host NQN: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.requireSubsystem(nqn); err != nil {
		return err
	}
	dir := t.subsysDir(nqn)
	if err := t.write(filepath.Join(dir, "attr_allow_any_host"), "0"); err != nil {
		return fmt.Errorf("restricting subsystem %s to allowed hosts: %w", nqn, err)
	}
	hd := t.hostDir(hostNQN)
	link := filepath.Join(dir, "allowed_hosts", hostNQN)
	if fi, err := t.fs.Lstat(link); err == nil {
		if fi.Mode()&fs.ModeSymlink == 0 {
			return fmt.Errorf("%w: %s exists and is not a symlink", nvmeof.ErrBusy, link)
		}
		if tgt, err := t.fs.Readlink(link); err == nil && filepath.Base(tgt) != hostNQN {
			return fmt.Errorf("%w: %s points to %s, not to host %s", nvmeof.ErrBusy, link, tgt, hostNQN)
		}
		klog.V(4).InfoS("Host already allowed on nvmet subsystem", "nqn", nqn, "host", hostNQN)
		return nil
	}
	// The host entry may vanish between creating it and linking it:
	// another process on the same kernel (agents sharing one, as in the
	// tests) removes an entry it saw unreferenced. Linking a vanished
	// entry fails with ENOENT; create it again and retry. An entry being
	// removed still answers stat while configfs refuses links to it
	// (ENOENT), so the retries wait a little longer each time: ten tight
	// ones were all spent inside one removal in a CI run.
	var err error
	for attempt := range hostLinkAttempts {
		if attempt > 0 {
			t.sleep(hostLinkBackoff(attempt))
		}
		if err = t.ensureHostDir(hostNQN, hd); err != nil {
			return err
		}
		if err = t.fs.Symlink(hd, link); err == nil || errors.Is(err, fs.ErrExist) {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("allowing host %s on subsystem %s (link %s): %w", hostNQN, nqn, link, err)
	}
	klog.InfoS("Allowed host on nvmet subsystem", "nqn", nqn, "host", hostNQN)
	return nil
}

// hostLinkAttempts bounds AllowHost's create-and-link retries when the
// host entry keeps vanishing under it: with hostLinkBackoff, about 2.4 s
// of trying.
const hostLinkAttempts = 20

// hostLinkBackoff is the wait before AllowHost's retry number attempt
// (from 1): 1 ms, doubling, at most 100 ms.
func hostLinkBackoff(attempt int) time.Duration {
	return min(time.Millisecond<<min(attempt-1, 7), 100*time.Millisecond)
}

// ensureHostDir creates hosts/<hostNQN> when it is missing.
func (t *Target) ensureHostDir(hostNQN, hd string) error {
	ok, err := t.exists(hd)
	if err != nil || ok {
		return err
	}
	if err := t.fs.Mkdir(hd); err != nil && !errors.Is(err, fs.ErrExist) {
		return t.mkdirError("host "+hostNQN, hd, err)
	}
	return nil
}

// RevokeHost removes hostNQN from nqn's allowed hosts, and the host entry
// when no other subsystem references it and it has no DH-HMAC-CHAP secret
// (SetHostAuth): an entry with a secret stays for the next AllowHost.
//
// This does NOT end a connection the host already has: the target checks
// allowed hosts only when a controller connects. Call CutSessions(nqn)
// afterwards to drop live connections; the host's reconnects are refused.
func (t *Target) RevokeHost(nqn, hostNQN string) error {
	if err := validateSubsysNQN(nqn); err != nil {
		return err
	}
	if err := nvmeof.ValidateNQN(hostNQN); err != nil {
		return fmt.Errorf("host NQN: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	link := filepath.Join(t.subsysDir(nqn), "allowed_hosts", hostNQN)
	if err := t.fs.Remove(link); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("revoking host %s on subsystem %s (unlink %s): %w", hostNQN, nqn, link, err)
		}
	} else {
		klog.InfoS("Revoked host on nvmet subsystem (live connections stay until cut)", "nqn", nqn, "host", hostNQN)
	}
	return t.removeHostIfOrphan(hostNQN)
}

// hostReferenced reports whether any subsystem lists host as allowed.
func (t *Target) hostReferenced(host string) (bool, error) {
	subs, err := t.names(t.subsystemsDir())
	if err != nil {
		return false, err
	}
	for _, s := range subs {
		ok, err := t.exists(filepath.Join(t.subsysDir(s), "allowed_hosts", host))
		if err != nil {
			return false, err
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

// removeHostIfOrphan removes host's entry when no subsystem allows it any
// more, unless it carries a DH-HMAC-CHAP secret (see SetHostAuth): the
// secret is configuration of its own, and removing it here would let the
// next AllowHost create the entry without one.
func (t *Target) removeHostIfOrphan(host string) error {
	return t.removeOrphanHost(host, true)
}

func (t *Target) removeOrphanHost(host string, keepAuth bool) error {
	hd := t.hostDir(host)
	ok, err := t.exists(hd)
	if err != nil || !ok {
		return err
	}
	ref, err := t.hostReferenced(host)
	if err != nil || ref {
		return err
	}
	if keepAuth {
		key, err := t.readOptional(t.hostAuthAttr(host, "dhchap_key"))
		if err != nil {
			return err
		}
		if key != "" {
			klog.V(4).InfoS("Unreferenced nvmet host entry kept: it carries DH-HMAC-CHAP secrets", "host", host)
			return nil
		}
	}
	if err := t.fs.Rmdir(hd); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		// Another process may have linked it meanwhile: not our failure.
		if errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.ENOTEMPTY) {
			klog.InfoS("nvmet host entry still in use; kept", "host", host, "err", err)
			return nil
		}
		return fmt.Errorf("removing host entry %s: %w", hd, err)
	}
	klog.V(4).InfoS("Removed unreferenced nvmet host entry", "host", host)
	return nil
}
