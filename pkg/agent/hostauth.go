package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/atomicfile"
	"github.com/nvmirror/nvmirror/pkg/dhchap"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
)

// HostAuthFileName is the file, beside the state file, holding the hosts'
// DH-HMAC-CHAP secrets (mode 0600). It is separate from the state file so
// that the replica records can be read, copied and attached to bug reports
// without secrets.
const HostAuthFileName = "hostauth.json"

// HostSecrets are one host's DH-HMAC-CHAP secrets on this storage node.
type HostSecrets struct {
	Secret     string `json:"secret"`
	CtrlSecret string `json:"ctrlSecret,omitempty"`
}

type hostAuthFile struct {
	Version int                    `json:"version"`
	Hosts   map[string]HostSecrets `json:"hosts"`
}

// HostAuthStore persists the hosts' secrets, atomically, like Store.
type HostAuthStore struct{ path string }

// NewHostAuthStore returns a store for the file at path.
func NewHostAuthStore(path string) *HostAuthStore { return &HostAuthStore{path: path} }

// Load reads the secrets; a missing file is none. Temporary files a crash
// during Save left beside the file are removed first: they hold secrets,
// and nothing else would ever delete them.
func (s *HostAuthStore) Load() (map[string]HostSecrets, error) {
	if err := atomicfile.RemoveTemps(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		klog.ErrorS(err, "Could not remove temporary host secrets files left by a crash; delete them by hand", "path", s.path)
	}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]HostSecrets{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read host secrets: %w", err)
	}
	var f hostAuthFile
	if err := json.Unmarshal(b, &f); err != nil {
		// Never echo the content: it is secrets.
		return nil, fmt.Errorf("host secrets file %s is corrupt (restore it, or delete it and rotate every host's secrets)", s.path)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("host secrets file %s has version %d; this agent reads version 1", s.path, f.Version)
	}
	if f.Hosts == nil {
		f.Hosts = map[string]HostSecrets{}
	}
	return f.Hosts, nil
}

// Save replaces the secrets, atomically and durably, readable by the owner
// only.
func (s *HostAuthStore) Save(hosts map[string]HostSecrets) error {
	b, err := json.MarshalIndent(hostAuthFile{Version: 1, Hosts: hosts}, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(s.path, append(b, '\n'), 0o600)
}

// SetHostAuth records host's secrets and sets them on the kernel target's
// entry for the host (created if needed: the secrets must be in place
// before the host is allowed anywhere). An empty secret removes
// authentication for the host.
//
// Order: (1) record, (2) configfs. After a crash between them the next
// start applies the record; a repeated call is harmless.
func (s *Service) SetHostAuth(ctx context.Context, host string, sec HostSecrets) error {
	if err := validateHostNQN("host_nqn", host); err != nil {
		return err
	}
	if sec.Secret == "" && sec.CtrlSecret != "" {
		return fieldError("dhchap_ctrl_key", "set without dhchap_key: bidirectional authentication needs the host's key too")
	}
	if sec.Secret != "" {
		if err := dhchap.Validate(sec.Secret); err != nil {
			return fieldError("dhchap_key", "%v", err)
		}
	}
	if sec.CtrlSecret != "" {
		if err := dhchap.Validate(sec.CtrlSecret); err != nil {
			return fieldError("dhchap_ctrl_key", "%v", err)
		}
	}
	if sec.Secret != "" {
		if err := s.exp.AuthSupported(); err != nil {
			return fmt.Errorf("%w: %v", ErrFailedPrecondition, err)
		}
	}
	s.authMu.Lock()
	defer s.authMu.Unlock()
	if cur, had := s.hostAuth[host]; cur != sec || had != (sec.Secret != "") {
		next := maps.Clone(s.hostAuth)
		if sec.Secret == "" {
			delete(next, host)
		} else {
			next[host] = sec
		}
		if err := s.authStore.Save(next); err != nil { // (1)
			return err
		}
		s.hostAuth = next
	}
	// (2), also when recorded already: configfs may lag after a failed or
	// interrupted call. An empty sec clears the kernel's entry.
	if err := s.setKernelHostAuth(host, sec); err != nil {
		return err
	}
	klog.InfoS("Host authentication set", "host", host, "bidirectional", sec.CtrlSecret != "", "cleared", sec.Secret == "")
	return nil
}

// applyHostAuth puts the recorded secrets of host (or none) on its kernel
// target entry. Called before every allowance, because the kernel target
// drops a host entry (and its secrets) when its last allowance goes.
func (s *Service) applyHostAuth(host string) error {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	sec, ok := s.hostAuth[host]
	if !ok {
		return nil
	}
	return s.setKernelHostAuth(host, sec)
}

// setKernelHostAuth sets (or, with no secret, clears) the kernel target's
// secrets of host.
func (s *Service) setKernelHostAuth(host string, sec HostSecrets) error {
	if err := s.exp.SetHostAuth(host, kernelHostAuth(sec)); err != nil {
		if errors.Is(err, nvmeof.ErrAuthUnsupported) {
			return fmt.Errorf("%w: host %s: %v", ErrFailedPrecondition, host, err)
		}
		return fmt.Errorf("set authentication of host %s: %w", host, err)
	}
	return nil
}

// HostAuthHosts lists the hosts with secrets (for tests and status).
func (s *Service) HostAuthHosts() []string {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	out := make([]string, 0, len(s.hostAuth))
	for h := range s.hostAuth {
		out = append(out, h)
	}
	return out
}

// kernelHostAuth is the kernel target's form of a host's secrets; hash and
// DH group are nvmet's defaults (the kernel target offers them, the host
// negotiates).
func kernelHostAuth(s HostSecrets) nvmet.HostAuth {
	return nvmet.HostAuth{Secret: s.Secret, CtrlSecret: s.CtrlSecret}
}
