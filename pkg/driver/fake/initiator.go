package fake

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
)

// Initiator connects to the Fabric's namespaces. Each connected namespace
// gets a controller nvmeN and an empty file root/dev/nvmeNn1 standing in for
// the block device (so stat and bind mounts of it work).
type Initiator struct {
	mu     sync.Mutex
	fabric *Fabric
	root   string
	next   int
	ctrls  map[string]*conn // by subsystem NQN
	// Connects counts successful Connect calls that made a new controller.
	Connects int
	// Options records the options of every Connect call.
	Options []host.ConnectOptions
	// Supported is what SupportedOptions returns.
	Supported []string
}

type conn struct {
	ctrl host.Controller
	dev  host.Device
}

// NewInitiator returns an initiator whose device files live under root/dev.
func NewInitiator(f *Fabric, root string) *Initiator {
	return &Initiator{fabric: f, root: root, ctrls: map[string]*conn{},
		Supported: []string{"transport", "traddr", "trsvcid", "nqn", "hostnqn", "hostid", "ctrl_loss_tmo", "reconnect_delay", "fast_io_fail_tmo", "keep_alive_tmo", "nr_io_queues", "dhchap_secret", "dhchap_ctrl_secret"}}
}

func (i *Initiator) Connect(_ context.Context, o host.ConnectOptions) (host.Controller, error) {
	if err := o.Validate(); err != nil {
		return host.Controller{}, err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.Options = append(i.Options, o)
	if c, ok := i.ctrls[o.SubsysNQN]; ok {
		return c.ctrl, nil
	}
	if o.DHCHAPSecret != "" && !slices.Contains(i.Supported, "dhchap_secret") {
		return host.Controller{}, fmt.Errorf("connect %s: %w: /dev/nvme-fabrics does not accept dhchap_secret (kernel built without CONFIG_NVME_HOST_AUTH)", o.SubsysNQN, nvmeof.ErrAuthUnsupported)
	}
	ns, ok := i.fabric.Get(o.SubsysNQN)
	if !ok || ns.Down || ns.AllowedHost != o.HostNQN {
		return host.Controller{}, fmt.Errorf("connect %s at %s:%s as %s: %w", o.SubsysNQN, o.TrAddr, o.TrSvcID, o.HostNQN, nvmeof.ErrConnectRefused)
	}
	if ns.Secret != "" && o.DHCHAPSecret != ns.Secret {
		return host.Controller{}, fmt.Errorf("connect %s as %s: %w", o.SubsysNQN, o.HostNQN, nvmeof.ErrAuthFailed)
	}
	n := i.next
	i.next++
	name := fmt.Sprintf("nvme%d", n)
	devName := name + "n1"
	path := filepath.Join(i.root, "dev", devName)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return host.Controller{}, err
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		return host.Controller{}, err
	}
	c := &conn{
		ctrl: host.Controller{Name: name, Instance: n, Transport: "tcp", SubsysNQN: o.SubsysNQN, HostNQN: o.HostNQN,
			TrAddr: o.TrAddr, TrSvcID: o.TrSvcID, State: host.StateLive, Subsystem: fmt.Sprintf("nvme-subsys%d", n)},
		dev: host.Device{Name: devName, Path: path, NSID: 1, UUID: ns.UUID, SizeBytes: uint64(ns.SizeBytes),
			Subsystem: fmt.Sprintf("nvme-subsys%d", n), SubsysNQN: o.SubsysNQN},
	}
	i.ctrls[o.SubsysNQN] = c
	i.Connects++
	return c.ctrl, nil
}

func (i *Initiator) FindDevice(nqn, nsUUID string) (host.Device, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	c, ok := i.ctrls[nqn]
	if !ok {
		return host.Device{}, fmt.Errorf("%s: %w", nqn, nvmeof.ErrDeviceNotFound)
	}
	ns, _ := i.fabric.Get(nqn)
	if nsUUID != "" && ns.UUID != nsUUID {
		return host.Device{}, fmt.Errorf("%s has namespace %s, want %s: %w: %w", nqn, ns.UUID, nsUUID, nvmeof.ErrDeviceNotFound, nvmeof.ErrIdentityMismatch)
	}
	d := c.dev
	d.SizeBytes = uint64(ns.SizeBytes)
	return d, nil
}

// WaitForDevice does not wait: a fake device exists as soon as it is
// connected.
func (i *Initiator) WaitForDevice(_ context.Context, nqn, nsUUID string) (host.Device, error) {
	return i.FindDevice(nqn, nsUUID)
}

func (i *Initiator) ControllersFor(nqn string) ([]host.Controller, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if c, ok := i.ctrls[nqn]; ok {
		return []host.Controller{c.ctrl}, nil
	}
	return nil, nil
}

func (i *Initiator) DisconnectNQN(_ context.Context, nqn string) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	c, ok := i.ctrls[nqn]
	if !ok {
		return nil
	}
	delete(i.ctrls, nqn)
	return os.Remove(c.dev.Path)
}

func (i *Initiator) SupportedOptions() ([]string, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]string(nil), i.Supported...), nil
}

// Connected returns the NQNs with a controller, sorted.
func (i *Initiator) Connected() []string {
	i.mu.Lock()
	defer i.mu.Unlock()
	var out []string
	for n := range i.ctrls {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// SizeOf returns the current size of a connected device path (0 if none):
// the fake md reads member sizes through it.
func (i *Initiator) SizeOf(path string) int64 {
	i.mu.Lock()
	defer i.mu.Unlock()
	for nqn, c := range i.ctrls {
		if c.dev.Path == path {
			ns, _ := i.fabric.Get(nqn)
			return ns.SizeBytes
		}
	}
	return 0
}

// IdentityOf names what is behind a device path: "ns:<nqn>" for a
// connected namespace (its data outlives the device name, which changes on
// every reconnect), the path itself otherwise.
func (i *Initiator) IdentityOf(path string) string {
	i.mu.Lock()
	defer i.mu.Unlock()
	for nqn, c := range i.ctrls {
		if c.dev.Path == path {
			return "ns:" + nqn
		}
	}
	return path
}

// SetState changes a controller's state (tests of health reporting).
func (i *Initiator) SetState(nqn string, s host.ControllerState) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if c, ok := i.ctrls[nqn]; ok {
		c.ctrl.State = s
	}
}

var _ driver.Initiator = (*Initiator)(nil)
