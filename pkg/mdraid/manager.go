package mdraid

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/klog/v2"
	"k8s.io/utils/exec"
)

// Errors callers can test for with errors.Is. Returned errors wrap one of
// these and, when mdadm ran, a *CommandError carrying its exit code and stderr.
var (
	// ErrNotFound: the array, member or device does not exist.
	ErrNotFound = errors.New("not found")
	// ErrBusy: a device is held by something else (a mounted file system,
	// another array, a still-active member).
	ErrBusy = errors.New("busy")
	// ErrInvalidArgument: a request this package refuses before running
	// anything.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNoSuperblock: the device carries no md superblock.
	ErrNoSuperblock = errors.New("no md superblock")
	// ErrReAddRefused: mdadm will not re-add the member (its slot is taken,
	// it is not a recent member, or the bitmap cannot cover the gap); the
	// caller falls back to Add, which rebuilds it fully.
	ErrReAddRefused = errors.New("re-add refused")
	// ErrAssembledElsewhere: the array is already running under another
	// device node.
	ErrAssembledElsewhere = errors.New("array already assembled under another device")
	// ErrNotEnoughMembers: the members given cannot start the array even
	// degraded.
	ErrNotEnoughMembers = errors.New("not enough members to start the array")
	// ErrWouldFailArray: md refused to fail the last working member, or
	// the array has already failed.
	ErrWouldFailArray = errors.New("operation would fail the array")
	// ErrMalformed: kernel or mdadm output this package cannot read.
	ErrMalformed = errors.New("malformed md status")
	// ErrSyncInProgress: md refuses to resize while a resync or recovery
	// runs; the same request succeeds once the sync is done.
	ErrSyncInProgress = errors.New("resync or recovery in progress")
)

// mdadmCommand is run by name, so the node image's PATH decides which mdadm
// (and so which message formats, see testdata/README.md) is in use.
const mdadmCommand = "mdadm"

// Manager changes md arrays through mdadm and reads their state from sysfs
// and procfs. It keeps no state of its own, so one Manager may be shared.
// mdadm can block on a member whose I/O hangs, so callers pass contexts
// with deadlines; the process is killed when one expires.
type Manager struct {
	exec exec.Interface
	root string
}

// NewManager returns a Manager that runs mdadm through ex and reads system
// files under root: root/sys, root/proc and root/dev ("" or "/" is the real
// system; tests point it at a temporary tree).
func NewManager(ex exec.Interface, root string) *Manager {
	if root == "" {
		root = "/"
	}
	return &Manager{exec: ex, root: root}
}

func (m *Manager) sysPath(elem ...string) string {
	return filepath.Join(append([]string{m.root, "sys"}, elem...)...)
}

func (m *Manager) procPath(elem ...string) string {
	return filepath.Join(append([]string{m.root, "proc"}, elem...)...)
}

// CreateOptions describes a new RAID1 array.
type CreateOptions struct {
	// Device is the md device node, "/dev/mdN"; required.
	Device string
	// Name is stored in the superblock and identifies the volume: 1 to 31
	// of [A-Za-z0-9._-], not starting with '-' or '.'. A version-1
	// superblock holds 32 bytes including the terminating NUL, so mdadm
	// silently truncates a 32-byte name; 27 bytes or fewer are stored as
	// "any:NAME", longer ones without the homehost prefix.
	Name string
	// Devices are the member block devices, 2 to 4.
	Devices []string
	// BitmapChunk is the write-intent bitmap chunk in bytes: a power of two
	// of at least 4 KiB, or 0 for mdadm's default (64 MiB). Smaller chunks
	// make a re-add copy less at the cost of more bitmap writes.
	BitmapChunk int64
	// AssumeClean skips the initial resync; only correct when every member
	// is freshly zeroed, since otherwise the mirrors differ.
	AssumeClean bool
	// DataOffset, when set, is where data starts on each member (bytes, a
	// multiple of 1 MiB), passed as --data-offset. The superblock and the
	// internal bitmap live before it. Fixing it (instead of mdadm's
	// size-dependent default) makes the array size exactly member size
	// minus DataOffset, so replicas can be sized for the capacity promised.
	DataOffset int64
	// UUID, when set, is the array UUID to write (any form NormalizeUUID
	// reads), passed as --uuid. The provisioner assigns each volume's UUID
	// so that every node later assembles the array by a UUID it knew
	// before the array existed; empty lets mdadm pick a random one.
	UUID string
}

const (
	minMembers = 2
	// maxMembers bounds a volume at four replicas, the product's limit.
	maxMembers = 4
	// maxNameLen is what fits a version-1 superblock's 32-byte name.
	maxNameLen = 31
	// minBitmapChunk is the smallest chunk md's bitmap supports (a page).
	minBitmapChunk  = 4096
	failedKeyword   = "failed"
	detachedKeyword = "detached"
)

var (
	mdDevicePattern  = regexp.MustCompile(`^/dev/md[0-9]+$`)
	mdNamePattern    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]*$`)
	kernelDevPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.!-]*$`)
	// mdadmMemberWords are names mdadm's manage mode reads as keywords, not
	// devices; only the ones a method documents may pass.
	mdadmMemberWords = map[string]bool{"failed": true, "faulty": true, "detached": true, "missing": true}
)

// Create makes a new RAID1 array and starts it.
//
// A one-member volume is refused: mdadm accepts --raid-devices=1 only with
// --force, which this package never passes, and a two-slot array with a
// "missing" member would report itself degraded forever. One-replica volumes
// are served without md.
//
// Every member gets the failfast flag, so md ejects a leg whose I/O fails
// instead of retrying while the whole array waits; the homehost is "any"
// so that any node may assemble the array after a move.
func (m *Manager) Create(ctx context.Context, o CreateOptions) error {
	if err := validateMDDevice(o.Device); err != nil {
		return err
	}
	if err := validateMDName(o.Name); err != nil {
		return err
	}
	if len(o.Devices) < minMembers {
		return fmt.Errorf("%w: create %s with %d member(s): a RAID1 needs at least %d members; 1-replica volumes are served without md", ErrInvalidArgument, o.Device, len(o.Devices), minMembers)
	}
	if len(o.Devices) > maxMembers {
		return fmt.Errorf("%w: create %s with %d members: at most %d are supported", ErrInvalidArgument, o.Device, len(o.Devices), maxMembers)
	}
	seen := map[string]bool{}
	for _, d := range o.Devices {
		if err := validateMemberPath(d); err != nil {
			return err
		}
		if seen[d] {
			return fmt.Errorf("%w: create %s: member %s listed twice", ErrInvalidArgument, o.Device, d)
		}
		seen[d] = true
	}
	if o.BitmapChunk != 0 && (o.BitmapChunk < minBitmapChunk || o.BitmapChunk&(o.BitmapChunk-1) != 0) {
		return fmt.Errorf("%w: bitmap chunk %d bytes for %s: must be 0 or a power of two of at least %d", ErrInvalidArgument, o.BitmapChunk, o.Device, minBitmapChunk)
	}

	if o.DataOffset < 0 || o.DataOffset%(1<<20) != 0 {
		return fmt.Errorf("%w: data offset %d bytes for %s: must be a multiple of 1 MiB", ErrInvalidArgument, o.DataOffset, o.Device)
	}
	uuid := ""
	if o.UUID != "" {
		u, err := NormalizeUUID(o.UUID)
		if err != nil {
			return err
		}
		uuid = u
	}

	args := []string{"--create", o.Device, "--run", "--metadata=1.2", "--level=1",
		"--raid-devices=" + strconv.Itoa(len(o.Devices)), "--bitmap=internal"}
	if o.BitmapChunk != 0 {
		args = append(args, "--bitmap-chunk="+strconv.FormatInt(o.BitmapChunk/1024, 10)+"K")
	}
	if o.DataOffset != 0 {
		args = append(args, "--data-offset="+strconv.FormatInt(o.DataOffset>>10, 10)+"K")
	}
	args = append(args, "--failfast", "--homehost=any", "--name="+o.Name)
	if uuid != "" {
		args = append(args, "--uuid="+uuid)
	}
	if o.AssumeClean {
		args = append(args, "--assume-clean")
	}
	args = append(args, o.Devices...)
	if _, err := m.run(ctx, args...); err != nil {
		return classify(fmt.Sprintf("create %s (name %s) from %s", o.Device, o.Name, strings.Join(o.Devices, ",")), err, commonRules)
	}
	klog.InfoS("Created md array", "device", o.Device, "name", o.Name, "members", o.Devices, "assumeClean", o.AssumeClean)
	return nil
}

// Assemble starts the array with this UUID from the given members at
// device. --run starts it degraded when members are missing; --force, which
// could bring back a member with stale data, is never used.
//
// It is idempotent: when the array already runs at device it returns nil
// without running mdadm, and when it runs elsewhere it returns
// ErrAssembledElsewhere naming that device.
func (m *Manager) Assemble(ctx context.Context, device, uuid string, devices []string) error {
	if err := validateMDDevice(device); err != nil {
		return err
	}
	canonical, err := NormalizeUUID(uuid)
	if err != nil {
		return err
	}
	if len(devices) == 0 {
		return fmt.Errorf("%w: assemble %s (uuid %s): no member devices given", ErrInvalidArgument, device, canonical)
	}
	for _, d := range devices {
		if err := validateMemberPath(d); err != nil {
			return err
		}
	}
	running, err := m.FindByUUID(canonical)
	switch {
	case err == nil && running.Device == device:
		klog.V(4).InfoS("md array already assembled", "device", device, "uuid", canonical)
		return nil
	case err == nil:
		return fmt.Errorf("%w: array uuid %s runs as %s, not %s", ErrAssembledElsewhere, canonical, running.Device, device)
	case !errors.Is(err, ErrNotFound):
		return fmt.Errorf("assemble %s (uuid %s): %w", device, canonical, err)
	}
	// mdadm skips a member that another array holds, or merges into that
	// array and starts it under its own name: both hide where the volume
	// went, so a holder (usually an inactive array that udev's incremental
	// assembly began) must be stopped first.
	arrays, err := m.ListArrays()
	if err != nil {
		return fmt.Errorf("assemble %s (uuid %s): %w", device, canonical, err)
	}
	for _, d := range devices {
		if holder, ok := m.holderOf(arrays, d); ok {
			return fmt.Errorf("%w: assemble %s (uuid %s): member %s is held by %s (%s); stop that array first", ErrBusy, device, canonical, d, holder.Device, holder.ArrayState)
		}
	}
	args := append([]string{"--assemble", device, "--uuid=" + canonical, "--run"}, devices...)
	if _, err := m.run(ctx, args...); err != nil {
		return classify(fmt.Sprintf("assemble %s (uuid %s) from %s", device, canonical, strings.Join(devices, ",")), err, assembleRules)
	}
	if running, err := m.FindByUUID(canonical); err == nil && running.Device != device {
		return fmt.Errorf("%w: assembling uuid %s started it as %s, not %s", ErrAssembledElsewhere, canonical, running.Device, device)
	}
	klog.InfoS("Assembled md array", "device", device, "uuid", canonical, "members", devices)
	return nil
}

// Stop stops the array. An array that does not exist, or exists only as an
// unconfigured device, counts as stopped.
func (m *Manager) Stop(ctx context.Context, device string) error {
	if err := validateMDDevice(device); err != nil {
		return err
	}
	// Unreadable sysfs state is no reason not to try: mdadm decides.
	a, err := m.ReadArray(filepath.Base(device))
	if errors.Is(err, ErrNotFound) || (err == nil && a.ArrayState == "clear") {
		klog.V(4).InfoS("md array already stopped", "device", device)
		return nil
	}
	if _, err := m.run(ctx, "--stop", device); err != nil {
		if stderrHasAny(err, "No such file or directory", "does not appear to be an md device") {
			klog.V(4).InfoS("md array vanished while stopping", "device", device)
			return nil
		}
		return classify("stop "+device, err, commonRules)
	}
	klog.InfoS("Stopped md array", "device", device)
	return nil
}

// Add adds member to the array; md rebuilds it fully unless mdadm finds it
// is a recent member that the bitmap can bring up to date. The member gets
// the failfast flag like those Create makes.
func (m *Manager) Add(ctx context.Context, device, member string) error {
	if err := validateMDDevice(device); err != nil {
		return err
	}
	if err := validateMemberPath(member); err != nil {
		return err
	}
	if _, err := m.run(ctx, device, "--add", "--failfast", member); err != nil {
		return classify(fmt.Sprintf("add %s to %s", member, device), err, addRules)
	}
	klog.InfoS("Added member to md array", "device", device, "member", member)
	return nil
}

// ReAdd puts a former member back into its old slot, copying only what the
// bitmap marks as changed. When mdadm refuses, the error wraps
// ErrReAddRefused and the caller may fall back to Add.
func (m *Manager) ReAdd(ctx context.Context, device, member string) error {
	if err := validateMDDevice(device); err != nil {
		return err
	}
	if err := validateMemberPath(member); err != nil {
		return err
	}
	if _, err := m.run(ctx, device, "--re-add", member); err != nil {
		return classify(fmt.Sprintf("re-add %s to %s", member, device), err, reAddRules)
	}
	klog.InfoS("Re-added member to md array", "device", device, "member", member)
	return nil
}

// Fail marks member faulty. member is a device path, a kernel device name
// such as "nvme1n1" (mdadm then goes through sysfs, which works after the
// device node is gone), or "detached" for every member whose device has
// disappeared. md refuses to fail the last working member (ErrWouldFailArray),
// but Linux 6.1 marks the array "broken" in md/array_state while refusing,
// though the member stays in sync: never ask to fail the last in-sync member.
func (m *Manager) Fail(ctx context.Context, device, member string) error {
	if err := validateMDDevice(device); err != nil {
		return err
	}
	if err := validateManagedMember(member, detachedKeyword); err != nil {
		return err
	}
	if _, err := m.run(ctx, device, "--fail", member); err != nil {
		return classify(fmt.Sprintf("fail %s in %s", member, device), err, failRules)
	}
	klog.InfoS("Failed member of md array", "device", device, "member", member)
	return nil
}

// Remove unbinds a faulty or spare member. member is a device path, a
// kernel device name, "failed" (every faulty member) or "detached" (every
// member whose device has disappeared). An active member must be failed
// first; removing one gives ErrBusy.
func (m *Manager) Remove(ctx context.Context, device, member string) error {
	if err := validateMDDevice(device); err != nil {
		return err
	}
	if err := validateManagedMember(member, failedKeyword, detachedKeyword); err != nil {
		return err
	}
	if _, err := m.run(ctx, device, "--remove", member); err != nil {
		return classify(fmt.Sprintf("remove %s from %s", member, device), err, removeRules)
	}
	klog.InfoS("Removed member from md array", "device", device, "member", member)
	return nil
}

// GrowSize makes the array use all the space its members now have, after
// every replica has been enlarged.
func (m *Manager) GrowSize(ctx context.Context, device string) error {
	if err := validateMDDevice(device); err != nil {
		return err
	}
	if _, err := m.run(ctx, "--grow", device, "--size=max"); err != nil {
		return classify("grow "+device+" to its members' size", err, growRules)
	}
	klog.InfoS("Grew md array to its members' size", "device", device)
	return nil
}

// SetRaidDevices changes how many members the array has slots for. After a
// replica leaves a volume for good (deleted, not replaced), its empty slot
// would keep md reporting the array degraded; shrinking the slot count
// makes md agree with the volume's configuration. md refuses (ErrBusy) to
// go below the members it holds, so a present member is never dropped.
func (m *Manager) SetRaidDevices(ctx context.Context, device string, n int) error {
	if err := validateMDDevice(device); err != nil {
		return err
	}
	if n < 1 || n > maxMembers {
		return fmt.Errorf("%w: %d raid devices for %s: must be 1 to %d", ErrInvalidArgument, n, device, maxMembers)
	}
	if _, err := m.run(ctx, "--grow", device, "--raid-devices="+strconv.Itoa(n)); err != nil {
		return classify(fmt.Sprintf("set %s to %d raid devices", device, n), err, growRules)
	}
	klog.InfoS("Changed the number of md array slots", "device", device, "raidDevices", n)
	return nil
}

// Examine reads the md superblock on a member device. A device without one
// gives ErrNoSuperblock.
func (m *Manager) Examine(ctx context.Context, member string) (Superblock, error) {
	if err := validateMemberPath(member); err != nil {
		return Superblock{}, err
	}
	out, err := m.run(ctx, "--examine", "--export", member)
	if err != nil {
		return Superblock{}, classify("examine "+member, err, examineRules)
	}
	sb, err := ParseExamineExport(out)
	if err != nil {
		return Superblock{}, fmt.Errorf("examine %s: %w", member, err)
	}
	return sb, nil
}

// Detail asks mdadm about a running array. When mdadm's map file has no
// entry for the array, the UUID comes from sysfs instead.
func (m *Manager) Detail(ctx context.Context, device string) (Detail, error) {
	if err := validateMDDevice(device); err != nil {
		return Detail{}, err
	}
	out, err := m.run(ctx, "--detail", "--export", device)
	if err != nil {
		return Detail{}, classify("detail "+device, err, detailRules)
	}
	d, err := ParseDetailExport(out)
	if err != nil {
		return Detail{}, fmt.Errorf("detail %s: %w", device, err)
	}
	if d.UUID == "" {
		if a, err := m.ReadArray(filepath.Base(device)); err == nil {
			d.UUID = a.UUID
		}
	}
	return d, nil
}

// CommandError is a failed mdadm run.
type CommandError struct {
	Args []string
	// ExitCode is mdadm's exit status, or -1 when it did not run to an exit.
	ExitCode int
	Stderr   string
	Err      error
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%s %s", mdadmCommand, strings.Join(e.Args, " "))
	if e.ExitCode >= 0 {
		msg += fmt.Sprintf(": exit %d", e.ExitCode)
	} else {
		msg += ": " + e.Err.Error()
	}
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }

// run executes mdadm and returns its stdout. It refuses any argv that
// carries --force or a short option: --force can resurrect stale members or
// start an array that should stay down, and short options mean different
// things in different mdadm modes (-f is --fail in one and --force in another).
func (m *Manager) run(ctx context.Context, args ...string) ([]byte, error) {
	for _, a := range args {
		if strings.HasPrefix(a, "--force") || (strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--")) {
			return nil, fmt.Errorf("%w: refusing to run mdadm with %q", ErrInvalidArgument, a)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd := m.exec.CommandContext(ctx, mdadmCommand, args...)
	cmd.SetStdout(&stdout)
	cmd.SetStderr(&stderr)
	klog.V(4).InfoS("Running mdadm", "args", args)
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	ce := &CommandError{Args: args, ExitCode: -1, Stderr: strings.TrimSpace(stderr.String()), Err: err}
	var exitErr exec.ExitError
	if errors.As(err, &exitErr) && exitErr.Exited() {
		ce.ExitCode = exitErr.ExitStatus()
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		ce.ExitCode = -1
		ce.Err = ctxErr
	}
	klog.V(4).InfoS("mdadm failed", "args", args, "exitCode", ce.ExitCode, "stderr", ce.Stderr)
	return stdout.Bytes(), ce
}

// stderrRule maps a phrase in mdadm's stderr to a sentinel error.
type stderrRule struct {
	phrase   string
	sentinel error
}

var commonRules = []stderrRule{
	{"Device or resource busy", ErrBusy},
	{"is busy", ErrBusy},
	{"already in use", ErrBusy},
	{"Cannot get exclusive access", ErrBusy},
	{"No such file or directory", ErrNotFound},
	{"does not appear to be an md device", ErrNotFound},
	{"does not exist", ErrNotFound},
}

var assembleRules = append([]stderrRule{
	{"not enough to start the array", ErrNotEnoughMembers},
	{"Not enough devices to start the array", ErrNotEnoughMembers},
	{"already active, cannot restart it", ErrBusy},
	{"no recogniseable superblock", ErrNoSuperblock},
	{"no RAID superblock", ErrNoSuperblock},
	{"has no superblock", ErrNoSuperblock},
	{"no devices found", ErrNotFound},
	{"has wrong uuid", ErrNotFound},
	{"No suitable drives found", ErrNotFound},
}, commonRules...)

var addRules = append([]stderrRule{
	{"has failed so using --add cannot work", ErrWouldFailArray},
	{"not large enough to join array", ErrInvalidArgument},
}, commonRules...)

var reAddRules = append([]stderrRule{
	{"--re-add for", ErrReAddRefused},
}, addRules...)

// failRules come before the common ones because md answers EBUSY to a
// request to fail its last working member.
var failRules = append([]stderrRule{
	{"array will be failed", ErrWouldFailArray},
	{"set device faulty failed", ErrWouldFailArray},
	{"does not appear to be a component", ErrNotFound},
}, commonRules...)

// growRules: seen on Debian 6.1 with mdadm 4.2 when a grow came during the
// initial resync: "mdadm: /dev/md127 is performing resync/recovery and
// cannot be reshaped".
var growRules = append([]stderrRule{
	{"is performing resync/recovery", ErrSyncInProgress},
}, commonRules...)

var removeRules = append([]stderrRule{
	{"does not appear to be a component", ErrNotFound},
	{"No such device or address", ErrNotFound},
}, commonRules...)

var examineRules = append([]stderrRule{
	{"No md superblock detected", ErrNoSuperblock},
}, commonRules...)

var detailRules = commonRules

// classify wraps a failed run in the sentinel its stderr points to.
func classify(what string, err error, rules []stderrRule) error {
	var ce *CommandError
	if errors.As(err, &ce) {
		if ce.ExitCode < 0 {
			return fmt.Errorf("%s: %w", what, err)
		}
		for _, r := range rules {
			if strings.Contains(ce.Stderr, r.phrase) {
				return fmt.Errorf("%s: %w: %w", what, r.sentinel, err)
			}
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// stderrHasAny reports whether err is a CommandError whose stderr contains
// any of the phrases.
func stderrHasAny(err error, phrases ...string) bool {
	var ce *CommandError
	if !errors.As(err, &ce) || ce.ExitCode < 0 {
		return false
	}
	for _, p := range phrases {
		if strings.Contains(ce.Stderr, p) {
			return true
		}
	}
	return false
}

func validateMDDevice(device string) error {
	if !mdDevicePattern.MatchString(device) {
		return fmt.Errorf("%w: md device %q is not /dev/mdN", ErrInvalidArgument, device)
	}
	return nil
}

func validateMDName(name string) error {
	if len(name) == 0 || len(name) > maxNameLen || !mdNamePattern.MatchString(name) {
		return fmt.Errorf("%w: md name %q must be 1 to %d of [A-Za-z0-9._-], not starting with '-' or '.'", ErrInvalidArgument, name, maxNameLen)
	}
	return nil
}

// validateMemberPath accepts a clean absolute path under /dev. Anything that
// could be read as an option, or smuggle white space into mdadm's argv, is
// refused before mdadm runs.
func validateMemberPath(p string) error {
	if !strings.HasPrefix(p, "/dev/") || filepath.Clean(p) != p || len(p) == len("/dev/") ||
		strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("%w: member device %q is not a clean path under /dev", ErrInvalidArgument, p)
	}
	return nil
}

// validateManagedMember accepts what mdadm's --fail/--remove take: a path
// under /dev, a kernel device name, or one of the given keywords.
func validateManagedMember(member string, keywords ...string) error {
	for _, k := range keywords {
		if member == k {
			return nil
		}
	}
	if strings.HasPrefix(member, "/") {
		return validateMemberPath(member)
	}
	// mdadm takes a name without '/' or ':' and shorter than 50 bytes as a
	// kernel device name and goes through md/dev-NAME in sysfs.
	if kernelDevPattern.MatchString(member) && len(member) < 50 && !mdadmMemberWords[member] && !strings.HasPrefix(member, "set-") {
		return nil
	}
	return fmt.Errorf("%w: member %q is neither a path under /dev, a kernel device name nor one of %v", ErrInvalidArgument, member, keywords)
}
