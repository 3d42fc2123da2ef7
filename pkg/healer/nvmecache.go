//go:build linux

package healer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/sysfs"
)

// CachedNVMe is the NVMeReader of a node with many staged volumes: it reads
// only what can change between two looks.
//
// A controller's subsystem NQN and transport address are fixed once it has
// been live (the kernel identifies the subsystem at the first connect and
// never again); only its state changes. So CachedNVMe keeps, per
// controller, the NQN and address it read once it saw the controller live,
// and the state file open, and a poll is one directory listing of
// /sys/class/nvme plus one pread of each state file: no open, no close, no
// other attribute. Until a controller has been live (a connect in
// progress) its NQN and address are read again at every Controllers.
// A controller is recognised by its name *and* its directory entry's inode
// number: the kernel reuses names (a controller deleted after
// ctrl_loss_tmo and connected again is often nvme3 again) but never inode
// numbers, and a read of the old state file fails (ENODEV) once the
// controller is gone. Either way the entry is dropped and read again from
// scratch, so a reconnect, a new controller or a vanished one is never
// answered from the cache.
//
// Namespace identities (uuid, nguid, wwid of a block device) are kept the
// same way, keyed by the block device's name and inode in /sys/block, which
// StartCycle lists once per cycle: a namespace removed and added again (a
// reconnect, a namespace change on the target) is a new inode and is read
// again. Any change of the controller set drops every cached identity too.
//
// It is safe for concurrent use (the NVMe poll and the cycle share one).
type CachedNVMe struct {
	root string

	mu    sync.Mutex
	ctrls map[string]*cachedCtrl
	// ctrlGen changes whenever a controller appears, vanishes or is
	// replaced; idsGen is the ctrlGen the identities were read under.
	ctrlGen, idsGen uint64
	ids             map[string]cachedIDs
	// blockInos is /sys/block as StartCycle last listed it; nil before the
	// first StartCycle (then identities are read, not cached).
	blockInos map[string]uint64
	dirBuf    []byte
	readBuf   []byte
	// entries is list's result, reused (callers hold c.mu while they use
	// it); names interns the names listed, so that a listing of thousands
	// of unchanged entries allocates nothing.
	entries []dirEntry
	names   map[string]string
	// listGen numbers Controllers' listings (cachedCtrl.listed).
	listGen uint64
	// statesFor: while positive, Controllers answers a settled
	// controller's state from its last read when that is more recent
	// (TrustPolledStates).
	statesFor time.Duration
	now       func() time.Time
}

type cachedCtrl struct {
	ino uint64
	// listed is the listGen of the last listing that showed it.
	listed uint64
	nqn    string
	// lastState is the last state read, by Poll or Controllers, at readAt.
	lastState string
	readAt    time.Time
	// settled: nqn and trAddr/trSvcID were read after the controller had
	// been live, so they hold for its life.
	settled         bool
	trAddr, trSvcID string
	// stateFD is the open state attribute; -1 when it could not be kept
	// open (out of descriptors): then it is read by path.
	stateFD int
}

type cachedIDs struct {
	ino uint64
	ids []string
}

var _ NVMeReader = (*CachedNVMe)(nil)

// NewCachedNVMe returns the cache for the system under root ("" is "/").
func NewCachedNVMe(root string) *CachedNVMe {
	if root == "" {
		root = "/"
	}
	return &CachedNVMe{root: root, ctrls: map[string]*cachedCtrl{}, ids: map[string]cachedIDs{},
		dirBuf: make([]byte, 32<<10), readBuf: make([]byte, 256), names: map[string]string{}, now: time.Now}
}

// TrustPolledStates lets Controllers answer a controller's state from the
// last read of it, by a poll or a cycle, when that read is more recent than
// maxAge; 0 reads every state at every Controllers. The healer sets it
// while it follows the kernel log: the kernel logs every state change under
// the controller's name, and the poll reads a named controller at once and
// every controller every --nvme-backstop-interval, so a state read since is
// as current as the poll's detection; a cycle then costs no read per
// controller (a resync triggers several cycles a second).
func (c *CachedNVMe) TrustPolledStates(maxAge time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.statesFor = maxAge
}

func (c *CachedNVMe) classDir() string { return filepath.Join(c.root, "sys/class/nvme") }

// Controllers lists the controllers with their NQN, address and current
// state, reading the state of each and nothing else it already knows.
func (c *CachedNVMe) Controllers() ([]NVMeController, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	entries, err := c.list(c.classDir(), isCtrlName[[]byte])
	if errors.Is(err, fs.ErrNotExist) {
		c.dropAll()
		return nil, nil // nvme not loaded: no controller
	}
	if err != nil {
		return nil, err
	}
	out := make([]NVMeController, 0, len(entries))
	c.listGen++
	for _, e := range entries {
		cc := c.ctrls[e.name]
		if cc != nil && cc.ino != e.ino {
			c.drop(e.name) // the name was reused by a new controller
			cc = nil
		}
		var state string
		now := c.now()
		if cc != nil && cc.settled && c.statesFor > 0 && now.Sub(cc.readAt) < c.statesFor {
			cc.listed = c.listGen
			out = append(out, NVMeController{Name: e.name, SubsysNQN: cc.nqn, State: host.ControllerState(cc.lastState), TrAddr: cc.trAddr, TrSvcID: cc.trSvcID})
			continue
		}
		if cc != nil {
			state, err = c.readState(e.name, cc)
			if err != nil {
				// Deleted since the listing (ENODEV on the open file), or
				// unreadable: forget it and look at it afresh.
				c.drop(e.name)
				cc = nil
			}
		}
		if cc == nil {
			cc, state, err = c.load(e.name, e.ino)
			if errors.Is(err, fs.ErrNotExist) {
				continue // vanished while being read
			}
			if err != nil {
				return nil, err
			}
			c.ctrls[e.name] = cc
			c.ctrlGen++
		}
		if !cc.settled {
			// Connecting for the first time: the subsystem may not be
			// identified yet, so its NQN is not to be trusted before.
			if err := c.readIdentity(e.name, cc); errors.Is(err, fs.ErrNotExist) {
				c.drop(e.name)
				continue
			} else if err != nil {
				return nil, err
			}
			if host.ControllerState(state).IsLive() {
				cc.settled = true
				c.ctrlGen++ // its namespaces come with it
			}
		}
		cc.listed = c.listGen
		cc.lastState, cc.readAt = state, now
		out = append(out, NVMeController{Name: e.name, SubsysNQN: cc.nqn, State: host.ControllerState(state), TrAddr: cc.trAddr, TrSvcID: cc.trSvcID})
	}
	for name, cc := range c.ctrls {
		if cc.listed != c.listGen {
			c.drop(name) // not in this listing
		}
	}
	return out, nil
}

// Poll reports whether any controller appeared, vanished, was replaced or
// changed state since the last Poll or Controllers, which is all the NVMe
// poll between cycles needs to know: it compares each state read with the
// last one in place, building nothing, so that a quiet poll costs one
// listing and one pread per controller.
func (c *CachedNVMe) Poll() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	entries, err := c.list(c.classDir(), isCtrlName[[]byte])
	if errors.Is(err, fs.ErrNotExist) {
		had := len(c.ctrls) > 0
		c.dropAll()
		return had, nil
	}
	if err != nil {
		return false, err
	}
	changed := len(entries) != len(c.ctrls)
	for _, e := range entries {
		cc := c.ctrls[e.name]
		if cc == nil || cc.ino != e.ino {
			changed = true
			continue // Controllers, at the cycle this triggers, loads it
		}
		changed = c.stateChanged(e.name, cc) || changed
	}
	return changed, nil
}

// PollControllers is Poll for the named controllers only (those the kernel
// just logged about): one pread each, no listing. A name it does not know
// is a change when the controller exists (a new one, for the cycle to
// load).
func (c *CachedNVMe) PollControllers(names []string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := false
	for _, name := range names {
		cc := c.ctrls[name]
		if cc == nil {
			changed = changed || unix.Access(filepath.Join(c.classDir(), name), unix.F_OK) == nil
			continue
		}
		changed = c.stateChanged(name, cc) || changed
	}
	return changed, nil
}

// stateChanged reads a known controller's state and reports whether it
// differs from the last one read (remembering it), or cannot be read: a
// controller replaced under its name or deleted fails the read on its open
// file (ENODEV), and the cycle this triggers reads it afresh.
func (c *CachedNVMe) stateChanged(name string, cc *cachedCtrl) bool {
	n, err := c.readStateBytes(name, cc)
	if err != nil {
		return true
	}
	cc.readAt = c.now()
	if st := bytes.TrimSpace(c.readBuf[:n]); string(st) != cc.lastState {
		cc.lastState = string(st)
		return true
	}
	return false
}

// load reads a controller it does not know: NQN, address, state, and keeps
// the state file open for the next polls.
func (c *CachedNVMe) load(name string, ino uint64) (*cachedCtrl, string, error) {
	dir := filepath.Join(c.classDir(), name)
	cc := &cachedCtrl{ino: ino, stateFD: -1}
	fd, err := unix.Open(filepath.Join(dir, "state"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV):
		return nil, "", fs.ErrNotExist
	case err != nil:
		// Out of descriptors, say: keep the rest cached and read the
		// state by path.
		klog.V(2).InfoS("Cannot keep an NVMe controller's state open; reading it by path", "controller", name, "err", err)
	default:
		cc.stateFD = fd
	}
	state, err := c.readState(name, cc)
	if err != nil {
		c.closeCtrl(cc)
		if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) || errors.Is(err, fs.ErrNotExist) {
			return nil, "", fs.ErrNotExist
		}
		return nil, "", fmt.Errorf("reading controller %s state: %w", name, err)
	}
	return cc, state, nil
}

// readIdentity reads the controller's subsystem NQN and address.
func (c *CachedNVMe) readIdentity(name string, cc *cachedCtrl) error {
	dir := filepath.Join(c.classDir(), name)
	nqn, err := nvmeAttrs.ReadAttr(filepath.Join(dir, "subsysnqn"))
	if err != nil {
		return err
	}
	addr, _ := nvmeAttrs.ReadAttr(filepath.Join(dir, "address"))
	cc.nqn = nqn
	cc.trAddr, cc.trSvcID, _ = host.ParseAddress(addr)
	return nil
}

// readState reads the state attribute from the start: sysfs renders a
// fresh value for every read at offset 0.
func (c *CachedNVMe) readState(name string, cc *cachedCtrl) (string, error) {
	n, err := c.readStateBytes(name, cc)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(c.readBuf[:n])), nil
}

// readStateBytes reads the state into c.readBuf.
func (c *CachedNVMe) readStateBytes(name string, cc *cachedCtrl) (int, error) {
	if cc.stateFD < 0 {
		v, err := nvmeAttrs.ReadAttr(filepath.Join(c.classDir(), name, "state"))
		return copy(c.readBuf, v), err
	}
	for {
		n, err := unix.Pread(cc.stateFD, c.readBuf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return n, err
	}
}

func (c *CachedNVMe) drop(name string) {
	if cc, ok := c.ctrls[name]; ok {
		c.closeCtrl(cc)
		delete(c.ctrls, name)
		c.ctrlGen++
	}
}

func (c *CachedNVMe) dropAll() {
	for name := range c.ctrls {
		c.drop(name)
	}
}

func (c *CachedNVMe) closeCtrl(cc *cachedCtrl) {
	if cc.stateFD >= 0 {
		unix.Close(cc.stateFD)
		cc.stateFD = -1
	}
}

// Close releases the open state files.
func (c *CachedNVMe) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropAll()
	return nil
}

// StartCycle lists /sys/block once, so that NamespaceIdentities can tell a
// device it has read before from a new one under the same name.
func (c *CachedNVMe) StartCycle() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	entries, err := c.list(filepath.Join(c.root, "sys/block"), isNamespaceName[[]byte])
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.blockInos = nil
		return err
	}
	inos := c.blockInos // refilled: only NamespaceIdentities reads it, under c.mu
	if inos == nil {
		inos = make(map[string]uint64, len(entries))
	}
	clear(inos)
	for _, e := range entries {
		inos[e.name] = e.ino
	}
	c.blockInos = inos
	if c.idsGen != c.ctrlGen {
		// A controller came, went or was replaced since the identities
		// were read: namespaces may have moved with it.
		clear(c.ids)
		c.idsGen = c.ctrlGen
	}
	for dev, id := range c.ids {
		if inos[dev] != id.ino {
			delete(c.ids, dev)
		}
	}
	return nil
}

// NamespaceIdentities returns the device's identities, from the cache when
// the device is the one read before (same inode in this cycle's listing).
func (c *CachedNVMe) NamespaceIdentities(device string) ([]string, error) {
	c.mu.Lock()
	ino, listed := c.blockInos[device]
	if id, ok := c.ids[device]; ok && listed && id.ino == ino {
		c.mu.Unlock()
		return id.ids, nil
	}
	c.mu.Unlock()
	ids, err := host.NewSysfs(c.root).NamespaceIdentities(device)
	if err != nil || ids == nil || !listed {
		// Not cached: an error, a device gone, or one that appeared after
		// the listing (no inode to know it by).
		return ids, err
	}
	c.mu.Lock()
	c.ids[device] = cachedIDs{ino: ino, ids: ids}
	c.mu.Unlock()
	return ids, nil
}

// nvmeAttrs reads controller attributes as host.Sysfs does: ENODEV (a
// controller being deleted) is "gone".
var nvmeAttrs = sysfs.Reader{NoDevIsGone: true}

type dirEntry struct {
	name string
	ino  uint64
}

// list reads a directory's names and inode numbers with getdents64: the
// inode comes with the listing for free, where os.ReadDir would need a
// stat per entry.
func (c *CachedNVMe) list(dir string, keep func([]byte) bool) ([]dirEntry, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fs.ErrNotExist
		}
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if len(c.names) > maxInterned {
		clear(c.names) // names of devices long gone; the next listings intern again
	}
	out := c.entries[:0]
	defer func() { c.entries = out[:0] }()
	for {
		n, err := unix.Getdents(fd, c.dirBuf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", dir, err)
		}
		if n <= 0 {
			return out, nil
		}
		out = parseDirents(c.dirBuf[:n], keep, c.intern, out)
	}
}

// maxInterned bounds the interned names: a node's controllers and block
// devices, with room for those that came and went.
const maxInterned = 1 << 16

// intern returns the name as a string, the same one for the same name
// (looking a []byte up in a map allocates nothing).
func (c *CachedNVMe) intern(b []byte) string {
	if s, ok := c.names[string(b)]; ok {
		return s
	}
	s := string(b)
	c.names[s] = s
	return s
}

// parseDirents decodes linux_dirent64 records: ino u64, off s64, reclen
// u16, type u8, name NUL-terminated.
func parseDirents(b []byte, keep func([]byte) bool, intern func([]byte) string, out []dirEntry) []dirEntry {
	const nameOff = int(unsafe.Offsetof(unix.Dirent{}.Name))
	for len(b) >= nameOff {
		ino := binary.NativeEndian.Uint64(b[0:8])
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < nameOff || reclen > len(b) {
			break
		}
		name := b[nameOff:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		if ino != 0 && keep(name) {
			out = append(out, dirEntry{name: intern(name), ino: ino})
		}
		b = b[reclen:]
	}
	return out
}

// isCtrlName is "nvme<N>" (host's pattern, without a regexp: it runs for
// every controller every second). It takes the listing's bytes as they are.
func isCtrlName[T string | []byte](s T) bool {
	return len(s) > 4 && string(s[:4]) == "nvme" && allDigits(s[4:])
}

// isNamespaceName is "nvme<N>n<M>": a namespace block device, not a
// per-path device (nvme<S>c<C>n<N>) nor a partition.
func isNamespaceName[T string | []byte](s T) bool {
	if len(s) <= 4 || string(s[:4]) != "nvme" {
		return false
	}
	d := s[4:]
	for i := 0; i < len(d); i++ {
		if d[i] == 'n' {
			return allDigits(d[:i]) && allDigits(d[i+1:])
		}
	}
	return false
}

func allDigits[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
