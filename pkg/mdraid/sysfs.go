package mdraid

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/sysfs"
)

// Array is the state of one md array as the kernel shows it under
// /sys/block/<Name>/md. Reading it spawns no process.
type Array struct {
	// Name is the kernel name, e.g. "md127".
	Name string
	// Device is the device node, e.g. "/dev/md127".
	Device string
	// UUID is in NormalizeUUID's form, or empty when the kernel has not
	// loaded a superblock yet (an array whose members were added but which
	// was never started reads all zeros) or has no md/uuid attribute.
	UUID string
	// Level is the personality, e.g. "raid1"; empty for an unconfigured array.
	Level string
	// ArrayState is md/array_state: clear, inactive, suspended, readonly,
	// read-auto, clean, active, write-pending, active-idle or broken.
	ArrayState string
	// RaidDisks is the number of slots (md/raid_disks).
	RaidDisks int
	// Degraded is how many slots lack an in-sync member (md/degraded); 0 for
	// levels without redundancy.
	Degraded int
	// SyncAction is md/sync_action: idle, resync, recover, check, repair,
	// frozen or reshape; empty for levels without redundancy.
	SyncAction string
	// SyncCompleted is md/sync_completed, in 512-byte sectors.
	SyncCompleted SyncProgress
	// SyncSpeedKiB is md/sync_speed: the rate of the running resync or
	// recovery in KiB/s over the last few seconds (0: none runs).
	SyncSpeedKiB uint64
	// SyncSpeedMax is md/sync_speed_max: the array's rate limit.
	SyncSpeedMax SyncSpeedLimit
	// MismatchCount is md/mismatch_cnt after the last check or repair.
	MismatchCount uint64
	// SizeKiB is md/component_size: the space used on each member, in KiB.
	SizeKiB uint64
	// Members are the md/dev-* entries, sorted by Name.
	Members []Member
}

// SyncProgress is md/sync_completed.
type SyncProgress struct {
	// State is "none" (no sync running), "delayed" (waiting for another
	// array sharing a device), "pending" (accepted for forward
	// compatibility; current kernels do not print it) or "progress".
	State string
	// Done and Total are 512-byte sectors; set only when State is "progress".
	Done, Total uint64
}

// Member is one md/dev-* entry: a device bound to the array.
type Member struct {
	// Name is the sysfs entry, e.g. "dev-nvme1n1".
	Name string
	// Device is the kernel block device name, e.g. "nvme1n1".
	Device string
	// Slot is the mirror slot, or -1 when the member has none (a spare, or
	// a faulty member md has taken out of its slot).
	Slot  int
	State MemberState
	// Errors is the count of read errors md corrected on this member.
	Errors uint64
}

// MemberState is md/dev-*/state: comma-separated flags.
type MemberState struct {
	InSync, Faulty, WriteMostly, Spare, Failfast, Blocked, WriteError, WantReplacement, Replacement, Journal bool
	// ExternalBBL means the bad block list is managed from user space.
	ExternalBBL bool
	// Raw is the attribute as read, without surrounding white space.
	Raw string
}

// ParseMemberState parses md/dev-*/state. Flags it does not know stay in Raw
// only, so a newer kernel's additions never make a member unreadable.
func ParseMemberState(s string) MemberState {
	st := MemberState{Raw: strings.TrimSpace(s)}
	for _, flag := range strings.Split(st.Raw, ",") {
		switch strings.TrimSpace(flag) {
		case "in_sync":
			st.InSync = true
		case "faulty":
			st.Faulty = true
		case "write_mostly":
			st.WriteMostly = true
		case "spare":
			st.Spare = true
		case "failfast":
			st.Failfast = true
		case "blocked":
			st.Blocked = true
		case "write_error":
			st.WriteError = true
		case "want_replacement":
			st.WantReplacement = true
		case "replacement":
			st.Replacement = true
		case "journal":
			st.Journal = true
		case "external_bbl":
			st.ExternalBBL = true
		}
	}
	return st
}

// SyncSpeedLimit is md/sync_speed_max: a rate in KiB/s, either the
// array's own ("local") or the system-wide /proc/sys/dev/raid/speed_limit_max
// ("system").
type SyncSpeedLimit struct {
	KiB    uint64
	System bool
}

// ParseSyncSpeedLimit parses md/sync_speed_max, "200000 (system)" or
// "2048 (local)".
func ParseSyncSpeedLimit(s string) (SyncSpeedLimit, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return SyncSpeedLimit{}, fmt.Errorf("%w: sync_speed_max %q is empty", ErrMalformed, s)
	}
	kib, err := strconv.ParseUint(fields[0], 10, 64)
	if err != nil {
		return SyncSpeedLimit{}, fmt.Errorf("%w: sync_speed_max %q: %w", ErrMalformed, s, err)
	}
	return SyncSpeedLimit{KiB: kib, System: len(fields) > 1 && fields[1] == "(system)"}, nil
}

// ParseSyncCompleted parses md/sync_completed: "none", "delayed", or
// "DONE / TOTAL" in sectors. Done beyond Total is refused as malformed so
// that progress a caller reports is never above 100%.
func ParseSyncCompleted(s string) (SyncProgress, error) {
	text := strings.TrimSpace(s)
	switch text {
	case "none", "delayed", "pending":
		return SyncProgress{State: text}, nil
	}
	doneText, totalText, ok := strings.Cut(text, " / ")
	if !ok {
		return SyncProgress{}, fmt.Errorf("%w: sync_completed %q is neither none, delayed nor DONE / TOTAL", ErrMalformed, text)
	}
	done, err := strconv.ParseUint(doneText, 10, 64)
	if err != nil {
		return SyncProgress{}, fmt.Errorf("%w: sync_completed %q: done: %w", ErrMalformed, text, err)
	}
	total, err := strconv.ParseUint(totalText, 10, 64)
	if err != nil {
		return SyncProgress{}, fmt.Errorf("%w: sync_completed %q: total: %w", ErrMalformed, text, err)
	}
	if done > total {
		return SyncProgress{}, fmt.Errorf("%w: sync_completed %q: done exceeds total", ErrMalformed, text)
	}
	return SyncProgress{State: "progress", Done: done, Total: total}, nil
}

// IsDegraded reports whether md counts at least one slot without an in-sync
// member, which includes a member it failed but that is still bound.
func (a Array) IsDegraded() bool { return a.Degraded > 0 }

// Member returns the member bound from the given block device, named as
// "nvme1n1", "/dev/nvme1n1" or "dev-nvme1n1".
func (a Array) Member(device string) (Member, bool) {
	name := strings.TrimPrefix(strings.TrimPrefix(device, "/dev/"), "dev-")
	for _, mem := range a.Members {
		if mem.Device == name {
			return mem, true
		}
	}
	return Member{}, false
}

var arrayNamePattern = regexp.MustCompile(`^md[0-9]+$`)

// ReadArray reads /sys/block/<name>/md. It returns ErrNotFound when the
// array does not exist (or disappears while being read).
func (m *Manager) ReadArray(name string) (Array, error) {
	if !arrayNamePattern.MatchString(name) {
		return Array{}, fmt.Errorf("%w: md array name %q is not mdN", ErrInvalidArgument, name)
	}
	mdDir := m.sysPath("block", name, "md")
	a := Array{Name: name, Device: "/dev/" + name}
	var err error
	if a.ArrayState, err = attrs.ReadAttr(filepath.Join(mdDir, "array_state")); err != nil {
		return Array{}, arrayReadError(name, err)
	}
	if a.Level, err = attrs.ReadOptionalAttr(filepath.Join(mdDir, "level")); err != nil {
		return Array{}, arrayReadError(name, err)
	}
	uuid, err := attrs.ReadOptionalAttr(filepath.Join(mdDir, "uuid"))
	if err != nil {
		return Array{}, arrayReadError(name, err)
	}
	if uuid != "" {
		canonical, err := NormalizeUUID(uuid)
		if err != nil {
			return Array{}, fmt.Errorf("%w: %s: md/uuid: %w", ErrMalformed, name, err)
		}
		if canonical != zeroUUID {
			a.UUID = canonical
		}
	}
	if a.RaidDisks, err = attrs.ReadInt(filepath.Join(mdDir, "raid_disks")); err != nil {
		return Array{}, arrayReadError(name, err)
	}
	if a.Degraded, err = attrs.ReadInt(filepath.Join(mdDir, "degraded")); err != nil {
		return Array{}, arrayReadError(name, err)
	}
	if a.SyncAction, err = attrs.ReadOptionalAttr(filepath.Join(mdDir, "sync_action")); err != nil {
		return Array{}, arrayReadError(name, err)
	}
	a.SyncCompleted = SyncProgress{State: "none"}
	if text, err := attrs.ReadOptionalAttr(filepath.Join(mdDir, "sync_completed")); err != nil {
		return Array{}, arrayReadError(name, err)
	} else if text != "" {
		if a.SyncCompleted, err = ParseSyncCompleted(text); err != nil {
			return Array{}, fmt.Errorf("%s: %w", name, err)
		}
	}
	if text, err := attrs.ReadOptionalAttr(filepath.Join(mdDir, "sync_speed")); err != nil {
		return Array{}, arrayReadError(name, err)
	} else if text != "" && text != "none" {
		if a.SyncSpeedKiB, err = strconv.ParseUint(text, 10, 64); err != nil {
			return Array{}, fmt.Errorf("%s: %w: sync_speed %q", name, ErrMalformed, text)
		}
	}
	if text, err := attrs.ReadOptionalAttr(filepath.Join(mdDir, "sync_speed_max")); err != nil {
		return Array{}, arrayReadError(name, err)
	} else if text != "" {
		if a.SyncSpeedMax, err = ParseSyncSpeedLimit(text); err != nil {
			return Array{}, fmt.Errorf("%s: %w", name, err)
		}
	}
	if a.MismatchCount, err = attrs.ReadUint(filepath.Join(mdDir, "mismatch_cnt")); err != nil {
		return Array{}, arrayReadError(name, err)
	}
	if a.SizeKiB, err = attrs.ReadUint(filepath.Join(mdDir, "component_size")); err != nil {
		return Array{}, arrayReadError(name, err)
	}
	if a.Members, err = readMembers(mdDir); err != nil {
		return Array{}, arrayReadError(name, err)
	}
	return a, nil
}

// arrayReadError turns a vanished sysfs directory into ErrNotFound: an array
// stopped between two reads is simply not there any more.
func arrayReadError(name string, err error) error {
	// An array being stopped also answers EBUSY (md_attr_show: the array
	// is leaving the list of arrays) just before its directory goes. A
	// listing that met another array's stop failed whole on it.
	if sysfsGone(err) || errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("%w: md array %s", ErrNotFound, name)
	}
	return fmt.Errorf("md array %s: %w", name, err)
}

// readMembers reads every dev-* entry. A member that vanishes between the
// directory listing and its attributes was removed meanwhile and is skipped.
func readMembers(mdDir string) ([]Member, error) {
	entries, err := os.ReadDir(mdDir)
	if err != nil {
		return nil, err
	}
	var members []Member
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "dev-") {
			continue
		}
		dir := filepath.Join(mdDir, e.Name())
		mem := Member{Name: e.Name(), Device: strings.TrimPrefix(e.Name(), "dev-")}
		state, err := attrs.ReadAttr(filepath.Join(dir, "state"))
		if sysfsGone(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		mem.State = ParseMemberState(state)
		slot, err := attrs.ReadOptionalAttr(filepath.Join(dir, "slot"))
		if sysfsGone(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if mem.Slot, err = parseSlot(slot); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		if mem.Errors, err = attrs.ReadUint(filepath.Join(dir, "errors")); sysfsGone(err) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		members = append(members, mem)
	}
	sort.Slice(members, func(i, j int) bool { return members[i].Name < members[j].Name })
	return members, nil
}

// sysfsGone reports whether reading an md attribute failed because its
// object went away meanwhile: ENOENT once its directory is gone, ENODEV
// while sysfs deactivates its attributes (seen in the VM on
// dev-nvme2n1/state while a member was being removed, and on an array's
// md/sync_speed while it was being stopped). A member or an array that is
// gone is simply not there any more.
func sysfsGone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENODEV)
}

// parseSlot reads dev-*/slot: a number, "none" for no slot, or "journal".
func parseSlot(s string) (int, error) {
	switch s {
	case "", "none", "journal":
		return -1, nil
	}
	n, err := strconv.ParseUint(s, 10, 31)
	if err != nil {
		return 0, fmt.Errorf("%w: slot %q", ErrMalformed, s)
	}
	return int(n), nil
}

// ListArrays reads every /sys/block/md*, in numeric order, including
// unconfigured ones (ArrayState "clear") that the kernel creates when a
// /dev/mdN node is opened.
func (m *Manager) ListArrays() ([]Array, error) {
	names, err := m.arrayNames()
	if err != nil {
		return nil, err
	}
	arrays := make([]Array, 0, len(names))
	for _, name := range names {
		a, err := m.ReadArray(name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		arrays = append(arrays, a)
	}
	return arrays, nil
}

// arrayNames lists mdN entries of /sys/block sorted by N.
func (m *Manager) arrayNames() ([]string, error) {
	entries, err := os.ReadDir(m.sysPath("block"))
	if err != nil {
		return nil, fmt.Errorf("list md arrays: %w", err)
	}
	var names []string
	for _, e := range entries {
		if arrayNamePattern.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Slice(names, func(i, j int) bool {
		a, _ := strconv.Atoi(names[i][2:])
		b, _ := strconv.Atoi(names[j][2:])
		return a < b
	})
	return names, nil
}

// uuidFallbackTimeout bounds the mdadm --detail calls FindByUUID makes on
// kernels without md/uuid; FindByUUID takes no context to keep its API.
const uuidFallbackTimeout = 30 * time.Second

// FindByUUID returns the running array with this UUID, or ErrNotFound.
// Arrays that were assembled but never started have no UUID in sysfs and are
// not found; Manager.ArrayHolding finds those by member. On a kernel without
// md/uuid it asks mdadm --detail for each array lacking the attribute.
func (m *Manager) FindByUUID(uuid string) (Array, error) {
	want, err := NormalizeUUID(uuid)
	if err != nil {
		return Array{}, err
	}
	arrays, err := m.ListArrays()
	if err != nil {
		return Array{}, err
	}
	for _, a := range arrays {
		if a.UUID == want {
			return a, nil
		}
	}
	for _, a := range arrays {
		if a.UUID != "" || a.ArrayState == "clear" || a.ArrayState == "inactive" {
			continue
		}
		if _, err := os.Stat(m.sysPath("block", a.Name, "md", "uuid")); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), uuidFallbackTimeout)
		d, err := m.Detail(ctx, a.Device)
		cancel()
		if err != nil {
			klog.V(4).InfoS("Cannot read md array UUID through mdadm", "array", a.Device, "err", err)
			continue
		}
		if d.UUID == want {
			a.UUID = d.UUID
			return a, nil
		}
	}
	return Array{}, fmt.Errorf("%w: no running md array has UUID %s", ErrNotFound, want)
}

// ArrayHolding returns the array that has the device (a path such as
// "/dev/nvme1n1", which may be a symlink, or a kernel name such as
// "nvme1n1") bound as a member, whatever its state: this is how a stray
// array that udev auto-assembled from our replicas is found and stopped.
func (m *Manager) ArrayHolding(device string) (Array, error) {
	arrays, err := m.ListArrays()
	if err != nil {
		return Array{}, err
	}
	if a, ok := m.holderOf(arrays, device); ok {
		return a, nil
	}
	return Array{}, fmt.Errorf("%w: no md array holds %s", ErrNotFound, device)
}

func (m *Manager) holderOf(arrays []Array, device string) (Array, bool) {
	name := m.kernelDeviceName(device)
	for _, a := range arrays {
		if _, ok := a.Member(name); ok {
			return a, true
		}
	}
	return Array{}, false
}

// kernelDeviceName maps a device path to the kernel's name for it,
// following symlinks such as /dev/disk/by-id/* under root; a name that
// cannot be resolved is used as given.
func (m *Manager) kernelDeviceName(device string) string {
	if !strings.HasPrefix(device, "/dev/") {
		return device
	}
	if resolved, err := filepath.EvalSymlinks(filepath.Join(m.root, device)); err == nil {
		return filepath.Base(resolved)
	}
	return filepath.Base(device)
}

// NextFreeDevice returns a /dev/mdN whose N is not in /sys/block, trying N in
// the order mdadm does (127 down to 0, then 511 down to 129) so our arrays
// do not collide with numbers an admin's own mdadm would pick first.
// Nothing reserves the number: two callers can get the same one, and the
// second Create then fails with ErrBusy.
func (m *Manager) NextFreeDevice() (string, error) {
	next := func(n int) int {
		if n == 0 {
			return 511
		}
		return n - 1
	}
	for n := 127; n != 128; n = next(n) {
		name := "md" + strconv.Itoa(n)
		_, err := os.Lstat(m.sysPath("block", name))
		if errors.Is(err, fs.ErrNotExist) {
			return "/dev/" + name, nil
		}
		if err != nil {
			return "", fmt.Errorf("check /sys/block/%s: %w", name, err)
		}
	}
	return "", fmt.Errorf("%w: every md device number mdadm would use is taken", ErrBusy)
}

// attrs reads md's sysfs attributes. An optional attribute whose directory
// is gone is the directory's error, not "": an array stopped (or a member
// removed) between two reads must read as gone, never as an array without
// that attribute. ENODEV is passed through as it is: sysfsGone tells it
// apart.
var attrs = sysfs.Reader{MissingDirIsError: true, Malformed: ErrMalformed}

// SetSyncSpeedMax limits the array's resync and recovery rate to kib KiB/s
// (md/sync_speed_max); 0 returns it to the system-wide limit. It takes
// effect on a running resync within md's next rate check.
func (m *Manager) SetSyncSpeedMax(name string, kib uint64) error {
	if !arrayNamePattern.MatchString(name) {
		return fmt.Errorf("%w: md array name %q is not mdN", ErrInvalidArgument, name)
	}
	value := "system"
	if kib > 0 {
		value = strconv.FormatUint(kib, 10)
	}
	path := m.sysPath("block", name, "md", "sync_speed_max")
	if err := sysfs.WriteAttr(path, value); err != nil {
		return fmt.Errorf("set %s sync_speed_max to %s: %w", name, value, err)
	}
	klog.V(2).InfoS("Set md rebuild rate limit", "array", name, "kibPerSecond", kib)
	return nil
}
