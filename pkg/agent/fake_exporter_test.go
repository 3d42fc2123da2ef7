package agent

import (
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
)

// fakeExporter is an in-memory nvmet: subsystems, namespaces, allowed hosts
// and port links, with nvmet.Target's error conventions (ErrNotFound for a
// missing subsystem; Remove* of missing things succeed). It counts session
// cuts and can fail a chosen method.
type fakeExporter struct {
	mu    sync.Mutex
	ports map[int]nvmet.Port
	subs  map[string]*nvmet.Subsystem
	cuts  map[string]int
	calls []string
	// failOn makes the named method return err once per entry.
	failOn map[string]error
	// auth is each host entry's secrets; like the kernel, an entry (and
	// its secrets) goes when the host's last allowance goes.
	auth            map[string]nvmet.HostAuth
	authUnsupported bool
	// allowedWith records the host secret in place when a host was
	// allowed on a subsystem (nqn/host → secret; "" = none).
	allowedWith map[string]string
}

func newFakeExporter() *fakeExporter {
	return &fakeExporter{ports: map[int]nvmet.Port{}, subs: map[string]*nvmet.Subsystem{}, cuts: map[string]int{}, failOn: map[string]error{},
		auth: map[string]nvmet.HostAuth{}, allowedWith: map[string]string{}}
}

var _ Exporter = (*fakeExporter)(nil)

func (f *fakeExporter) call(name string) error {
	f.calls = append(f.calls, name)
	if err, ok := f.failOn[name]; ok {
		delete(f.failOn, name)
		return err
	}
	return nil
}

// wipe forgets everything, as a reboot does to configfs.
func (f *fakeExporter) wipe() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ports = map[int]nvmet.Port{}
	f.subs = map[string]*nvmet.Subsystem{}
	f.auth = map[string]nvmet.HostAuth{}
}

func (f *fakeExporter) AuthSupported() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.authUnsupported {
		return fmt.Errorf("%w: no dhchap_key attribute (CONFIG_NVME_TARGET_AUTH)", nvmeof.ErrAuthUnsupported)
	}
	return nil
}

func (f *fakeExporter) SetHostAuth(host string, a nvmet.HostAuth) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("SetHostAuth"); err != nil {
		return err
	}
	if f.authUnsupported {
		return fmt.Errorf("%w: no dhchap_key attribute (CONFIG_NVME_TARGET_AUTH)", nvmeof.ErrAuthUnsupported)
	}
	if a.Secret == "" {
		delete(f.auth, host)
	} else {
		f.auth[host] = a
	}
	return nil
}

func (f *fakeExporter) hostAuth(host string) nvmet.HostAuth {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.auth[host]
}

func (f *fakeExporter) Available() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.call("Available")
}

func (f *fakeExporter) EnsurePort(p nvmet.Port) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("EnsurePort"); err != nil {
		return err
	}
	if _, ok := f.ports[p.ID]; !ok {
		f.ports[p.ID] = p
	}
	return nil
}

func (f *fakeExporter) sub(nqn string) (*nvmet.Subsystem, error) {
	s, ok := f.subs[nqn]
	if !ok {
		return nil, fmt.Errorf("%w: subsystem %s", nvmeof.ErrNotFound, nqn)
	}
	return s, nil
}

func cloneSub(s *nvmet.Subsystem) nvmet.Subsystem {
	c := *s
	c.AllowedHosts = slices.Clone(s.AllowedHosts)
	c.Namespaces = slices.Clone(s.Namespaces)
	c.Ports = slices.Clone(s.Ports)
	return c
}

func (f *fakeExporter) ListSubsystems() ([]nvmet.Subsystem, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ListSubsystems"); err != nil {
		return nil, err
	}
	var out []nvmet.Subsystem
	for _, s := range f.subs {
		out = append(out, cloneSub(s))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NQN < out[j].NQN })
	return out, nil
}

func (f *fakeExporter) GetSubsystem(nqn string) (nvmet.Subsystem, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("GetSubsystem"); err != nil {
		return nvmet.Subsystem{}, err
	}
	s, err := f.sub(nqn)
	if err != nil {
		return nvmet.Subsystem{}, err
	}
	return cloneSub(s), nil
}

func (f *fakeExporter) EnsureSubsystem(nqn, serial string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("EnsureSubsystem"); err != nil {
		return err
	}
	if _, ok := f.subs[nqn]; !ok {
		f.subs[nqn] = &nvmet.Subsystem{NQN: nqn, Serial: serial}
	}
	return nil
}

func (f *fakeExporter) EnsureNamespace(nqn string, ns nvmet.Namespace) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("EnsureNamespace"); err != nil {
		return err
	}
	s, err := f.sub(nqn)
	if err != nil {
		return err
	}
	for _, cur := range s.Namespaces {
		if cur.NSID == ns.NSID {
			if cur.DevicePath != ns.DevicePath || cur.UUID != ns.UUID {
				return fmt.Errorf("%w: namespace %d of %s enabled with another device", nvmeof.ErrBusy, ns.NSID, nqn)
			}
			return nil
		}
	}
	ns.Enabled = true
	s.Namespaces = append(s.Namespaces, ns)
	return nil
}

func (f *fakeExporter) RevalidateNamespace(nqn string, nsid int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("RevalidateNamespace"); err != nil {
		return err
	}
	_, err := f.sub(nqn)
	return err
}

func (f *fakeExporter) AllowHost(nqn, host string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("AllowHost"); err != nil {
		return err
	}
	s, err := f.sub(nqn)
	if err != nil {
		return err
	}
	if !slices.Contains(s.AllowedHosts, host) {
		s.AllowedHosts = append(s.AllowedHosts, host)
		slices.Sort(s.AllowedHosts)
	}
	f.allowedWith[nqn+"/"+host] = f.auth[host].Secret
	return nil
}

func (f *fakeExporter) RevokeHost(nqn, host string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("RevokeHost"); err != nil {
		return err
	}
	if s, ok := f.subs[nqn]; ok {
		s.AllowedHosts = slices.DeleteFunc(s.AllowedHosts, func(h string) bool { return h == host })
	}
	for _, s := range f.subs {
		if slices.Contains(s.AllowedHosts, host) {
			return nil
		}
	}
	delete(f.auth, host) // the orphan host entry goes, with its secrets
	return nil
}

func (f *fakeExporter) CutSessions(nqn string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("CutSessions"); err != nil {
		return err
	}
	if _, err := f.sub(nqn); err != nil {
		return err
	}
	f.cuts[nqn]++
	return nil
}

func (f *fakeExporter) LinkSubsystem(port int, nqn string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("LinkSubsystem"); err != nil {
		return err
	}
	if _, ok := f.ports[port]; !ok {
		return fmt.Errorf("%w: port %d", nvmeof.ErrNotFound, port)
	}
	s, err := f.sub(nqn)
	if err != nil {
		return err
	}
	if !slices.Contains(s.Ports, port) {
		s.Ports = append(s.Ports, port)
		slices.Sort(s.Ports)
	}
	return nil
}

func (f *fakeExporter) UnlinkSubsystem(port int, nqn string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("UnlinkSubsystem"); err != nil {
		return err
	}
	if s, ok := f.subs[nqn]; ok {
		s.Ports = slices.DeleteFunc(s.Ports, func(p int) bool { return p == port })
	}
	return nil
}

func (f *fakeExporter) RemoveSubsystem(nqn string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("RemoveSubsystem"); err != nil {
		return err
	}
	delete(f.subs, nqn)
	return nil
}

// exported returns a copy of subsystem nqn and whether it exists.
func (f *fakeExporter) exported(nqn string) (nvmet.Subsystem, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.subs[nqn]
	if !ok {
		return nvmet.Subsystem{}, false
	}
	return cloneSub(s), true
}

func (f *fakeExporter) subsystemCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

func (f *fakeExporter) cutCount(nqn string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cuts[nqn]
}

func (f *fakeExporter) fail(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failOn[method] = err
}
