package host

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/sysfs"
)

// ControllerState is the content of /sys/class/nvme/<ctrl>/state.
type ControllerState string

// Controller states as printed by the kernel (nvme_sysfs_show_state).
const (
	StateNew          ControllerState = "new"
	StateLive         ControllerState = "live"
	StateResetting    ControllerState = "resetting"
	StateConnecting   ControllerState = "connecting"
	StateDeleting     ControllerState = "deleting"
	StateDeletingNoIO ControllerState = "deleting (no IO)"
	StateDead         ControllerState = "dead"
)

// IsLive reports whether I/O flows through the controller right now.
func (s ControllerState) IsLive() bool { return s == StateLive }

// isGone reports whether the controller is on its way out; the kernel itself
// ignores such controllers when it looks for duplicates, and so do we.
func (s ControllerState) isGone() bool {
	return s == StateDeleting || s == StateDeletingNoIO || s == StateDead
}

// Controller is an NVMe controller as seen in /sys/class/nvme/<Name>.
type Controller struct {
	Name      string // "nvme3"
	Instance  int    // 3
	Transport string // "tcp"
	SubsysNQN string
	HostNQN   string
	TrAddr    string
	TrSvcID   string
	SrcAddr   string
	State     ControllerState
	Subsystem string // "nvme-subsys1"; "" if not (yet) linked to a subsystem
	// hostTrAddr/hostIface matter for duplicate detection only: the kernel
	// does not treat a controller pinned to a local address or interface
	// as a duplicate of an unpinned one.
	hostTrAddr, hostIface string
}

// Device is an NVMe namespace block device on the initiator.
type Device struct {
	Name      string // "nvme1n2"
	Path      string // root + "/dev/nvme1n2"
	NSID      int
	UUID      string // as shown by sysfs (dashed), "" if absent
	NGUID     string // as shown by sysfs (dashed), "" if absent
	WWID      string // sysfs wwid, e.g. "uuid.<uuid>" or "eui.<hex>"
	SizeBytes uint64
	Subsystem string // "nvme-subsys1"
	SubsysNQN string
}

var (
	ctrlNameRE = regexp.MustCompile(`^nvme([0-9]+)$`)
	// nsNameRE matches namespace block devices (multipath heads
	// nvme<subsys>n<ns>, or per-controller nvme<ctrl>n<ns> without native
	// multipath) but not hidden per-path devices nvme<s>c<c>n<n> nor
	// partitions.
	nsNameRE     = regexp.MustCompile(`^nvme[0-9]+n[0-9]+$`)
	subsysNameRE = regexp.MustCompile(`^nvme-subsys[0-9]+$`)
)

// ParseAddress splits the sysfs "address" attribute of a fabrics controller,
// e.g. "traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1\n". Unknown keys
// (host_traddr, host_iface) are ignored; missing keys give "".
func ParseAddress(s string) (traddr, trsvcid, srcaddr string) {
	m := parseAddressFields(s)
	return m["traddr"], m["trsvcid"], m["src_addr"]
}

func parseAddressFields(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			continue
		}
		if _, dup := m[k]; !dup {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// Sysfs reads the host's NVMe state from sysfs: controllers, their state
// and namespace devices, under a root directory in which sys/class/nvme,
// sys/class/nvme-subsystem, sys/block and dev live ("/" on a node, a temp
// tree in tests). It is the initiator's read side, and the only reader of
// NVMe controller state from sysfs: the healer uses it too.
type Sysfs struct {
	root string
}

// NewSysfs returns the reader for root ("" means "/").
func NewSysfs(root string) Sysfs {
	if root == "" {
		root = "/"
	}
	return Sysfs{root: root}
}

func (s Sysfs) classNVMe() string       { return filepath.Join(s.root, "sys/class/nvme") }
func (s Sysfs) classSubsys() string     { return filepath.Join(s.root, "sys/class/nvme-subsystem") }
func (s Sysfs) block(dev string) string { return filepath.Join(s.root, "sys/block", dev) }
func (s Sysfs) dev(name string) string  { return filepath.Join(s.root, "dev", name) }

// attrs reads the host's NVMe sysfs attributes. A controller being
// deleted keeps its attribute files for a moment but every read fails with
// ENODEV (seen on 6.12 while a controller is disconnected); to every reader
// here that is the same as already gone.
var attrs = sysfs.Reader{NoDevIsGone: true}

// listNames returns the names in dir matching re, sorted naturally (nvme2
// before nvme10). A missing dir is an empty list: the class directories do
// not exist until the nvme modules are loaded.
func listNames(dir string, re *regexp.Regexp) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		if re.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sortNatural(names)
	return names, nil
}

// sortNatural orders names by their embedded numbers so output is stable
// and readable.
func sortNatural(names []string) {
	key := func(s string) []int {
		var out []int
		n, in := 0, false
		for i := 0; i < len(s); i++ {
			if s[i] >= '0' && s[i] <= '9' {
				n = n*10 + int(s[i]-'0')
				in = true
				continue
			}
			if in {
				out = append(out, n)
				n, in = 0, false
			}
		}
		if in {
			out = append(out, n)
		}
		return out
	}
	sort.SliceStable(names, func(a, b int) bool {
		ka, kb := key(names[a]), key(names[b])
		for i := 0; i < len(ka) && i < len(kb); i++ {
			if ka[i] != kb[i] {
				return ka[i] < kb[i]
			}
		}
		if len(ka) != len(kb) {
			return len(ka) < len(kb)
		}
		return names[a] < names[b]
	})
}

// controller reads /sys/class/nvme/<name>. It returns nvmeof.ErrNotFound when the
// directory does not exist (never created, or deleted meanwhile).
func (s Sysfs) controller(name string) (Controller, error) {
	m := ctrlNameRE.FindStringSubmatch(name)
	if m == nil {
		return Controller{}, fmt.Errorf("%w: %q is not an NVMe controller name (nvme<N>)", nvmeof.ErrInvalidArgument, name)
	}
	dir := filepath.Join(s.classNVMe(), name)
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Controller{}, fmt.Errorf("%w: controller %s (%s)", nvmeof.ErrNotFound, name, dir)
		}
		return Controller{}, fmt.Errorf("reading controller %s: %w", dir, err)
	}
	c := Controller{Name: name}
	c.Instance, _ = strconv.Atoi(m[1])
	var address, state string
	for _, a := range []struct {
		file string
		dst  *string
	}{
		{"transport", &c.Transport},
		{"subsysnqn", &c.SubsysNQN},
		{"hostnqn", &c.HostNQN},
		{"address", &address},
		{"state", &state},
	} {
		v, err := attrs.ReadOptionalAttr(filepath.Join(dir, a.file))
		if err != nil {
			return Controller{}, fmt.Errorf("reading controller %s: %w", name, err)
		}
		*a.dst = v
	}
	// The directory may vanish between the Stat and the reads: report that
	// as not found rather than as a controller with empty attributes.
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return Controller{}, fmt.Errorf("%w: controller %s disappeared while reading it", nvmeof.ErrNotFound, name)
	}
	c.State = ControllerState(state)
	f := parseAddressFields(address)
	c.TrAddr, c.TrSvcID, c.SrcAddr = f["traddr"], f["trsvcid"], f["src_addr"]
	c.hostTrAddr, c.hostIface = f["host_traddr"], f["host_iface"]
	sub, err := s.subsystemOfController(name)
	if err != nil {
		return Controller{}, err
	}
	c.Subsystem = sub
	return c, nil
}

// controllers reads every controller under /sys/class/nvme, skipping those
// that disappear while being read.
func (s Sysfs) controllers() ([]Controller, error) {
	names, err := listNames(s.classNVMe(), ctrlNameRE)
	if err != nil {
		return nil, err
	}
	return nvmeof.ReadExisting(names, s.controller)
}

// subsystemOfController finds the nvme-subsysN directory holding a link to
// the controller; the controller directory itself has no back link.
func (s Sysfs) subsystemOfController(ctrl string) (string, error) {
	subs, err := listNames(s.classSubsys(), subsysNameRE)
	if err != nil {
		return "", err
	}
	for _, sub := range subs {
		if _, err := os.Lstat(filepath.Join(s.classSubsys(), sub, ctrl)); err == nil {
			return sub, nil
		}
	}
	return "", nil
}

// subsystemsFor returns the nvme-subsysN directories whose subsysnqn is nqn.
func (s Sysfs) subsystemsFor(nqn string) ([]string, error) {
	subs, err := listNames(s.classSubsys(), subsysNameRE)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, sub := range subs {
		v, err := attrs.ReadOptionalAttr(filepath.Join(s.classSubsys(), sub, "subsysnqn"))
		if err != nil {
			return nil, fmt.Errorf("reading subsystem %s: %w", sub, err)
		}
		if v == nqn {
			out = append(out, sub)
		}
	}
	return out, nil
}

// namespaceCandidate is a namespace block device found for an NQN, with the
// directory it was found in (used when /sys/block/<name> is missing).
type namespaceCandidate struct {
	name, dir, subsystem string
}

// namespaceCandidates lists the namespace block devices of an NQN. With
// native multipath they are the nvme<S>n<N> heads inside the subsystem
// directory; without it, the nvme<C>n<N> disks inside each controller's
// directory. The names are never derived from controller names: after a
// reconnect controller nvme3 served block device nvme1n2.
func (s Sysfs) namespaceCandidates(nqn string) (subsystems []string, cands []namespaceCandidate, err error) {
	subsystems, err = s.subsystemsFor(nqn)
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	var ctrls []string
	for _, sub := range subsystems {
		dir := filepath.Join(s.classSubsys(), sub)
		heads, err := listNames(dir, nsNameRE)
		if err != nil {
			return nil, nil, err
		}
		for _, h := range heads {
			if !seen[h] {
				seen[h] = true
				cands = append(cands, namespaceCandidate{name: h, dir: filepath.Join(dir, h), subsystem: sub})
			}
		}
		cs, err := listNames(dir, ctrlNameRE)
		if err != nil {
			return nil, nil, err
		}
		ctrls = append(ctrls, cs...)
	}
	if len(cands) > 0 {
		return subsystems, cands, nil
	}
	// Non-multipath kernels: the disks hang off the controllers. Also take
	// controllers whose own subsysnqn matches, in case the subsystem link
	// is not there.
	all, err := s.controllers()
	if err != nil {
		return nil, nil, err
	}
	for _, c := range all {
		if c.SubsysNQN == nqn {
			ctrls = append(ctrls, c.Name)
		}
	}
	seenCtrl := map[string]bool{}
	for _, c := range ctrls {
		if seenCtrl[c] {
			continue
		}
		seenCtrl[c] = true
		dir := filepath.Join(s.classNVMe(), c)
		disks, err := listNames(dir, nsNameRE)
		if err != nil {
			return nil, nil, err
		}
		sub, err := s.subsystemOfController(c)
		if err != nil {
			return nil, nil, err
		}
		for _, d := range disks {
			if !seen[d] {
				seen[d] = true
				cands = append(cands, namespaceCandidate{name: d, dir: filepath.Join(dir, d), subsystem: sub})
			}
		}
	}
	return subsystems, cands, nil
}

// device reads the identity and size of a namespace block device.
func (s Sysfs) device(c namespaceCandidate, nqn string) (Device, error) {
	dir := s.block(c.name)
	if _, err := os.Stat(dir); err != nil {
		dir = c.dir
	}
	d := Device{Name: c.name, Path: s.dev(c.name), Subsystem: c.subsystem, SubsysNQN: nqn}
	var nsid, size string
	for _, a := range []struct {
		file string
		dst  *string
	}{
		{"uuid", &d.UUID}, {"nguid", &d.NGUID}, {"wwid", &d.WWID}, {"nsid", &nsid}, {"size", &size},
	} {
		v, err := attrs.ReadOptionalAttr(filepath.Join(dir, a.file))
		if err != nil {
			return Device{}, fmt.Errorf("reading namespace %s: %w", c.name, err)
		}
		*a.dst = v
	}
	// uuid falls back to the NGUID in the kernel when the namespace has no
	// UUID; keep the wwid form when neither file exists.
	if d.UUID == "" && strings.HasPrefix(d.WWID, "uuid.") {
		d.UUID = strings.TrimPrefix(d.WWID, "uuid.")
	}
	if nsid != "" {
		n, err := strconv.Atoi(nsid)
		if err != nil {
			return Device{}, fmt.Errorf("namespace %s: bad nsid %q in %s", c.name, nsid, dir)
		}
		d.NSID = n
	}
	if size != "" {
		n, err := strconv.ParseUint(size, 10, 64)
		if err != nil {
			return Device{}, fmt.Errorf("namespace %s: bad size %q in %s", c.name, size, dir)
		}
		d.SizeBytes = n * 512 // sysfs size is in 512-byte sectors whatever the LBA size
	}
	return d, nil
}

// matchesIdentity reports whether one of the device's identifiers equals id
// (a UUID or an NGUID, any case, dashed or not).
func (d Device) matchesIdentity(id string) bool {
	want := nvmeof.NormalizeID(id)
	if want == "" {
		return false
	}
	for _, have := range []string{d.UUID, d.NGUID, d.WWID} {
		if h := nvmeof.NormalizeID(have); h != "" && h == want {
			return true
		}
	}
	return false
}
