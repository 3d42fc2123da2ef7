package fake

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
)

// Devices tells the fake md what is behind a member path.
type Devices interface {
	SizeOf(path string) int64
	IdentityOf(path string) string
}

// Raid records md arrays and the superblocks written on member devices
// (keyed by the namespace behind the path, as on a real disk).
type Raid struct {
	mu      sync.Mutex
	devs    Devices
	arrays  map[string]*mdraid.Array // by device "/dev/mdN"
	members map[string][]string      // device -> member paths
	sbs     map[string]mdraid.Superblock
	// Busy makes Stop of these devices fail with ErrBusy (still mounted).
	Busy map[string]bool
	// Creates counts Create calls that made an array.
	Creates int
	// LastCreate is the options of the last successful Create.
	LastCreate mdraid.CreateOptions
	// BeforeAssemble, when set, runs once at the start of the next
	// Assemble: udev's incremental assembly racing NodeStage.
	BeforeAssemble func()
}

// NewRaid returns an empty md over devs.
func NewRaid(devs Devices) *Raid {
	return &Raid{devs: devs, arrays: map[string]*mdraid.Array{}, members: map[string][]string{},
		sbs: map[string]mdraid.Superblock{}, Busy: map[string]bool{}}
}

func (r *Raid) Create(_ context.Context, o mdraid.CreateOptions) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(o.Devices) < 2 {
		return fmt.Errorf("create %s: %w", o.Device, mdraid.ErrInvalidArgument)
	}
	if _, ok := r.arrays[o.Device]; ok {
		return fmt.Errorf("create %s: in use: %w", o.Device, mdraid.ErrBusy)
	}
	uuid, err := mdraid.NormalizeUUID(o.UUID)
	if err != nil {
		return err
	}
	for _, d := range o.Devices {
		if r.holder(d) != "" {
			return fmt.Errorf("create %s: %s held: %w", o.Device, d, mdraid.ErrBusy)
		}
	}
	for i, d := range o.Devices {
		r.sbs[r.devs.IdentityOf(d)] = mdraid.Superblock{UUID: uuid, Name: o.Name, HomeHost: "any", Level: "raid1", RaidDevices: len(o.Devices), DeviceUUID: strconv.Itoa(i), Events: 1}
	}
	r.start(o.Device, uuid, len(o.Devices), o.Devices)
	r.Creates++
	r.LastCreate = o
	return nil
}

func (r *Raid) start(dev, uuid string, raidDisks int, members []string) {
	a := &mdraid.Array{Name: filepath.Base(dev), Device: dev, UUID: uuid, Level: "raid1", ArrayState: "clean",
		RaidDisks: raidDisks, Degraded: raidDisks - len(members), SyncAction: "idle"}
	for i, m := range members {
		a.Members = append(a.Members, mdraid.Member{Name: "dev-" + filepath.Base(m), Device: filepath.Base(m), Slot: i,
			State: mdraid.MemberState{InSync: true, Raw: "in_sync"}})
	}
	r.arrays[dev] = a
	r.members[dev] = append([]string(nil), members...)
	r.resize(dev)
}

func (r *Raid) resize(dev string) {
	var smallest int64 = -1
	for _, m := range r.members[dev] {
		if s := r.devs.SizeOf(m); smallest < 0 || s < smallest {
			smallest = s
		}
	}
	if smallest < 0 {
		smallest = 0
	}
	r.arrays[dev].SizeKiB = uint64(smallest / 1024)
}

func (r *Raid) holder(member string) string {
	for dev, ms := range r.members {
		for _, m := range ms {
			if m == member {
				return dev
			}
		}
	}
	return ""
}

func (r *Raid) Assemble(ctx context.Context, device, uuid string, devices []string) error {
	r.mu.Lock()
	hook := r.BeforeAssemble
	r.BeforeAssemble = nil
	r.mu.Unlock()
	if hook != nil {
		hook()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	uuid, err := mdraid.NormalizeUUID(uuid)
	if err != nil {
		return err
	}
	for dev, a := range r.arrays {
		if a.UUID == uuid {
			if dev == device {
				return nil
			}
			return fmt.Errorf("uuid %s runs at %s: %w", uuid, dev, mdraid.ErrAssembledElsewhere)
		}
	}
	if _, ok := r.arrays[device]; ok {
		return fmt.Errorf("assemble at %s: in use: %w", device, mdraid.ErrBusy)
	}
	var ok []string
	raidDisks := 0
	for _, d := range devices {
		if sb, has := r.sbs[r.devs.IdentityOf(d)]; has && sb.UUID == uuid {
			ok = append(ok, d)
			raidDisks = sb.RaidDevices
		}
	}
	if len(ok) == 0 {
		return fmt.Errorf("assemble %s: no member of %s: %w", device, uuid, mdraid.ErrNotEnoughMembers)
	}
	r.start(device, uuid, raidDisks, ok)
	return nil
}

func (r *Raid) Stop(_ context.Context, device string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Busy[device] {
		return fmt.Errorf("stop %s: %w", device, mdraid.ErrBusy)
	}
	delete(r.arrays, device)
	delete(r.members, device)
	return nil
}

func (r *Raid) GrowSize(_ context.Context, device string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.arrays[device]; !ok {
		return fmt.Errorf("grow %s: %w", device, mdraid.ErrNotFound)
	}
	r.resize(device)
	return nil
}

func (r *Raid) Examine(_ context.Context, member string) (mdraid.Superblock, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sb, ok := r.sbs[r.devs.IdentityOf(member)]
	if !ok {
		return mdraid.Superblock{}, fmt.Errorf("examine %s: %w", member, mdraid.ErrNoSuperblock)
	}
	return sb, nil
}

func (r *Raid) ReadArray(name string) (mdraid.Array, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.arrays["/dev/"+name]
	if !ok {
		return mdraid.Array{}, fmt.Errorf("array %s: %w", name, mdraid.ErrNotFound)
	}
	return copyArray(a), nil
}

func copyArray(a *mdraid.Array) mdraid.Array {
	c := *a
	c.Members = append([]mdraid.Member(nil), a.Members...)
	return c
}

func (r *Raid) FindByUUID(uuid string) (mdraid.Array, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u, err := mdraid.NormalizeUUID(uuid)
	if err != nil {
		return mdraid.Array{}, err
	}
	for _, a := range r.arrays {
		if a.UUID == u {
			return copyArray(a), nil
		}
	}
	return mdraid.Array{}, fmt.Errorf("uuid %s: %w", u, mdraid.ErrNotFound)
}

func (r *Raid) ArrayHolding(device string) (mdraid.Array, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if dev := r.holder(device); dev != "" {
		return copyArray(r.arrays[dev]), nil
	}
	return mdraid.Array{}, fmt.Errorf("%s: %w", device, mdraid.ErrNotFound)
}

func (r *Raid) NextFreeDevice() (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for n := 127; n >= 0; n-- {
		dev := "/dev/md" + strconv.Itoa(n)
		if _, ok := r.arrays[dev]; !ok {
			return dev, nil
		}
	}
	return "", fmt.Errorf("no free md device: %w", mdraid.ErrBusy)
}

// Arrays returns the running array devices, sorted.
func (r *Raid) Arrays() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for d := range r.arrays {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// SetSuperblock writes a superblock on a device (tests of foreign data).
func (r *Raid) SetSuperblock(path string, sb mdraid.Superblock) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sbs[r.devs.IdentityOf(path)] = sb
}

// Update changes a running array in place (tests of health reporting).
func (r *Raid) Update(device string, f func(a *mdraid.Array)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, ok := r.arrays[device]; ok {
		f(a)
	}
}

// ContentKey names what blkid would read at path: the array's UUID for a
// running md device (so a filesystem survives stop and re-assembly under
// another number), the namespace behind an NVMe device path otherwise.
func (r *Raid) ContentKey(path string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, ok := r.arrays[path]; ok && strings.HasPrefix(path, "/dev/md") {
		return "md:" + a.UUID
	}
	return r.devs.IdentityOf(path)
}

var _ driver.RaidManager = (*Raid)(nil)
