package healer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// ArrayReader reads md state without spawning anything; *mdraid.Manager.
type ArrayReader interface {
	ReadMdstat() (mdraid.Mdstat, error)
	ReadArray(name string) (mdraid.Array, error)
}

// NVMeReader reads NVMe controller states and namespace identities from
// sysfs; SysfsNVMe is the real one.
type NVMeReader interface {
	// Controllers lists every controller with its subsystem NQN and state.
	Controllers() ([]NVMeController, error)
	// NamespaceIdentities returns the uuid/nguid/wwid of a namespace block
	// device ("nvme1n1"); nil when the device is gone.
	NamespaceIdentities(device string) ([]string, error)
}

// ConfigSource is the provisioner as observation needs it.
type ConfigSource interface {
	GetVolume(ctx context.Context, id string) (*volume.Volume, error)
}

// NVMeController is one /sys/class/nvme/<Name>.
type NVMeController struct {
	Name, SubsysNQN string
	State           host.ControllerState
	TrAddr, TrSvcID string
}

var _ ArrayReader = (*mdraid.Manager)(nil)

// Observer builds an Observation: one read of /proc/mdstat, the md sysfs
// directories of the staged volumes' arrays, one listing of the NVMe
// controllers, and the provisioner's record of each volume.
type Observer struct {
	// Staged lists the staged volumes (stagestate.ListVolumes on the state dir).
	Staged      func() ([]stagestate.Volume, error)
	Arrays      ArrayReader
	NVMe        NVMeReader
	Provisioner ConfigSource
	// ConfigMaxAge is how long a configuration read from the provisioner
	// counts as fresh: cycles triggered by md or NVMe changes in quick
	// succession reuse it instead of asking again for every volume.
	ConfigMaxAge time.Duration
	// CallTimeout bounds each GetVolume.
	CallTimeout time.Duration
	// Now is the clock (tests pass a fake one).
	Now func() time.Time
	// ArrayReread is how long an md array's sysfs reading may be reused
	// while md change notifications are watched (the healer says so when
	// it has a watcher); 0 reads every array every cycle. See arrayCache.
	ArrayReread time.Duration

	cache  map[string]cachedRecord
	mdRead arrayCache
	mdstat parsedMdstat
	// arrayObs is each array's last observation with the reading it was
	// built from: the same reading (arrayCache hands out the same copy
	// until the array is read again) with the same member identities is
	// the same observation, shared, so that a quiet cycle builds none and
	// sameObservation compares pointers.
	arrayObs map[string]observedArray
	// uuids memoises NormalizeUUID of the staged volumes' md UUIDs.
	uuids map[string]string
}

type observedArray struct {
	from *mdraid.Array
	obs  *ArrayObservation
}

// parsedMdstat is the last /proc/mdstat read, as read and parsed.
type parsedMdstat struct {
	raw  []byte
	st   mdraid.Mdstat
	keys map[string]string
}

// cycleStarter is an NVMeReader that keeps what it read between cycles
// (CachedNVMe): Observe tells it where a cycle starts, so that it checks
// its cached namespace identities against the block devices once per
// cycle.
type cycleStarter interface {
	StartCycle() error
}

// ArraysChanged marks arrays md signalled a change of (the md watcher's
// report), or that the healer acted on, so that the next cycle reads them
// again instead of reusing their last reading.
func (o *Observer) ArraysChanged(arrays ...string) { o.mdRead.changed(arrays...) }

// MDNotifications says whether md change notifications are being watched:
// only then may an array's reading be reused (see ArrayReread).
func (o *Observer) MDNotifications(watched bool) { o.mdRead.setNotified(watched) }

// Recorded replaces the cached record of a volume with the provisioner's
// answer to a change the healer made (a sync report), counted fresh from
// now: the answer is newer than what was cached.
func (o *Observer) Recorded(vol *volume.Volume) {
	if vol == nil || vol.ID == "" {
		return
	}
	if o.cache == nil {
		o.cache = map[string]cachedRecord{}
	}
	c := *vol
	c.Replicas = slices.Clone(vol.Replicas)
	o.cache[vol.ID] = cachedRecord{vol: &c, at: o.now()}
}

type cachedRecord struct {
	vol *volume.Volume
	at  time.Time
}

// Observe reads the system. A provisioner outage is not an error: the
// cached configurations are used (not fresh) and the first failure stops
// further calls for this cycle, so an outage costs one timeout, not one per
// volume.
func (o *Observer) Observe(ctx context.Context) (Observation, error) {
	staged, err := o.Staged()
	if err != nil {
		return Observation{}, fmt.Errorf("list staged volumes: %w", err)
	}
	arrays, err := o.arrays(staged)
	if err != nil {
		return Observation{}, err
	}
	ctrls, err := o.NVMe.Controllers()
	if err != nil {
		return Observation{}, fmt.Errorf("list NVMe controllers: %w", err)
	}
	// After the controllers: a controller that came or went since the last
	// cycle invalidates the namespace identities read below.
	if cs, ok := o.NVMe.(cycleStarter); ok {
		if err := cs.StartCycle(); err != nil {
			return Observation{}, fmt.Errorf("list block devices: %w", err)
		}
	}
	byNQN := make(map[string][]ControllerObservation, len(ctrls))
	for _, c := range ctrls {
		byNQN[c.SubsysNQN] = append(byNQN[c.SubsysNQN], ControllerObservation{Name: c.Name, State: c.State, TrAddr: c.TrAddr, TrSvcID: c.TrSvcID})
	}
	if o.cache == nil {
		o.cache = map[string]cachedRecord{}
	}
	now := o.now()
	provDown := false
	seen := make(map[string]bool, len(staged))
	obs := Observation{Volumes: make([]VolumeObservation, 0, len(staged))}
	arrayObs := make(map[string]observedArray, len(arrays))
	for _, sv := range staged {
		seen[sv.VolumeID] = true
		v := VolumeObservation{VolumeID: sv.VolumeID, Staged: sv.Staged, MDUUID: sv.MDUUID, StagedReplicas: sv.Replicas,
			Controllers: make(map[string][]ControllerObservation, len(sv.Replicas))}
		if sv.MDUUID != "" {
			if a, ok := arrays[sv.VolumeID]; ok {
				oa := o.arrayObservation(a)
				arrayObs[a.Name] = oa
				v.Array = oa.obs
			}
		}
		c, cached := o.cache[sv.VolumeID]
		// A record cached before the volume's current stage began is not
		// reused: the volume may have been unstaged and staged again
		// between two cycles, and changed meanwhile (a promotion gives
		// replicas up), so acting on it could connect a replica no node
		// may use. Nor is it a fallback while the provisioner is away.
		if cached && c.at.Before(sv.StageStarted) {
			c, cached = cachedRecord{}, false
			delete(o.cache, sv.VolumeID)
		}
		switch {
		case cached && now.Sub(c.at) < o.ConfigMaxAge:
			v.Record, v.RecordFresh = c.vol, true
		case provDown:
			v.Record = c.vol
		default:
			vol, err := o.getVolume(ctx, sv.VolumeID)
			switch {
			case err == nil:
				o.cache[sv.VolumeID] = cachedRecord{vol: vol, at: now}
				v.Record, v.RecordFresh = vol, true
			case errors.Is(err, volume.ErrNotFound):
				// Unknown to the registry: nothing to heal towards.
				delete(o.cache, sv.VolumeID)
				klog.V(2).InfoS("Staged volume unknown to the provisioner", "volumeID", sv.VolumeID)
			default:
				provDown = true
				v.Record = c.vol
				klog.InfoS("Provisioner unreachable; using the cached configuration, repairs that need it wait", "volumeID", sv.VolumeID, "err", err)
			}
		}
		for _, r := range sv.Replicas {
			if cs := byNQN[r.NQN]; len(cs) > 0 {
				v.Controllers[r.NQN] = cs
			}
		}
		if v.Record != nil {
			for _, r := range v.Record.Replicas {
				if cs := byNQN[r.NQN]; len(cs) > 0 {
					v.Controllers[r.NQN] = cs
				}
			}
		}
		obs.Volumes = append(obs.Volumes, v)
	}
	o.arrayObs = arrayObs
	for id := range o.cache {
		if !seen[id] {
			delete(o.cache, id)
		}
	}
	return obs, nil
}

func (o *Observer) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Observer) getVolume(ctx context.Context, id string) (*volume.Volume, error) {
	if o.CallTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.CallTimeout)
		defer cancel()
	}
	return o.Provisioner.GetVolume(ctx, id)
}

// arrays finds each staged volume's running array: first under the device
// NodeStage recorded, checked by UUID; the others (re-assembled under
// another number after a reboot) by reading the remaining arrays of
// /proc/mdstat once.
//
// An array that cannot be read (its /proc/mdstat entry or its sysfs
// directory) is logged and skipped: a volume whose array it is has no array
// this cycle (nothing is repaired in it), and every other volume is healed
// as usual. If /proc/mdstat as a whole cannot be parsed, each staged
// volume's array is still read under the device NodeStage recorded.
func (o *Observer) arrays(staged []stagestate.Volume) (map[string]*mdraid.Array, error) {
	out := make(map[string]*mdraid.Array, len(staged))
	st, keys, err := o.readMdstat()
	if errors.Is(err, mdraid.ErrNotFound) {
		return out, nil // md not loaded: no array runs
	}
	listed := true
	if errors.Is(err, mdraid.ErrMalformed) {
		klog.ErrorS(err, "Cannot parse /proc/mdstat; reading only the arrays the staged volumes were assembled as")
		listed = false
	} else if err != nil {
		return nil, fmt.Errorf("read mdstat: %w", err)
	}
	running := map[string]bool{}
	for _, a := range st.Arrays {
		running[a.Name] = true
		if a.Err != nil {
			klog.ErrorS(a.Err, "Cannot read an md array's /proc/mdstat entry; reading its sysfs state only", "array", a.Name)
		}
	}
	cached := o.mdRead.begin(keys, o.now(), o.ArrayReread)
	read := map[string]*mdraid.Array{}
	readArray := func(name string) *mdraid.Array {
		if a, ok := read[name]; ok {
			return a
		}
		if a, ok := cached.get(name); ok {
			read[name] = a
			return a
		}
		a, err := o.Arrays.ReadArray(name)
		switch {
		case errors.Is(err, mdraid.ErrNotFound):
			read[name] = nil
			cached.put(name, nil)
			return nil
		case err != nil:
			klog.ErrorS(err, "Cannot read an md array; skipping it this cycle", "array", name)
			read[name] = nil
			return nil
		}
		read[name] = &a
		cached.put(name, &a)
		return &a
	}
	var missing []stagestate.Volume
	for _, sv := range staged {
		if sv.MDUUID == "" {
			continue
		}
		want, err := o.normalizeUUID(sv.MDUUID)
		if err != nil {
			klog.ErrorS(err, "Staged volume has an unreadable md UUID", "volumeID", sv.VolumeID)
			continue
		}
		name := filepath.Base(sv.MDDevice)
		if running[name] || (!listed && sv.MDDevice != "") {
			if a := readArray(name); a != nil && a.UUID == want {
				out[sv.VolumeID] = a
				continue
			}
		}
		sv.MDUUID = want
		missing = append(missing, sv)
	}
	if len(missing) == 0 || !listed {
		return out, nil
	}
	byUUID := map[string]*mdraid.Array{}
	for _, a := range st.Arrays {
		if arr := readArray(a.Name); arr != nil && arr.UUID != "" {
			byUUID[arr.UUID] = arr
		}
	}
	for _, sv := range missing {
		if a, ok := byUUID[sv.MDUUID]; ok {
			out[sv.VolumeID] = a
		}
	}
	return out, nil
}

// mdstatBytesReader reads /proc/mdstat unparsed (*mdraid.Manager).
type mdstatBytesReader interface {
	ReadMdstatBytes() ([]byte, error)
}

// readMdstat reads /proc/mdstat and returns it parsed with each array's
// entry as arrayCache compares it. The parse (regular expressions over
// every line, some milliseconds with a thousand arrays) is redone only when
// the text differs from the last cycle's.
func (o *Observer) readMdstat() (mdraid.Mdstat, map[string]string, error) {
	br, ok := o.Arrays.(mdstatBytesReader)
	if !ok {
		st, err := o.Arrays.ReadMdstat()
		if err != nil {
			return st, nil, err
		}
		return st, mdstatKeys(st), nil
	}
	b, err := br.ReadMdstatBytes()
	if err != nil {
		o.mdstat = parsedMdstat{}
		return mdraid.Mdstat{}, nil, err
	}
	if o.mdstat.keys != nil && bytes.Equal(b, o.mdstat.raw) {
		return o.mdstat.st, o.mdstat.keys, nil
	}
	st, err := mdraid.ParseMdstat(b)
	if err != nil {
		o.mdstat = parsedMdstat{}
		return st, nil, err
	}
	o.mdstat = parsedMdstat{raw: b, st: st, keys: mdstatKeys(st)}
	return st, o.mdstat.keys, nil
}

func mdstatKeys(st mdraid.Mdstat) map[string]string {
	keys := make(map[string]string, len(st.Arrays))
	for _, a := range st.Arrays {
		keys[a.Name] = mdstatKey(a)
	}
	return keys
}

// arrayObservation is the observation of an array reading: the last one
// when it was built from the same reading and its members' identities are
// the same (CachedNVMe hands out the same identities until the device
// changes), else a new one. The readings and observations are never
// modified once made.
func (o *Observer) arrayObservation(a *mdraid.Array) observedArray {
	last, ok := o.arrayObs[a.Name]
	reuse := ok && last.from == a && len(last.obs.Members) == len(a.Members)
	var ids [][]string // built once the last observation cannot be reused
	for i, m := range a.Members {
		id, err := o.NVMe.NamespaceIdentities(m.Device)
		if err != nil {
			klog.V(2).InfoS("Cannot read the identity of an md member", "array", a.Name, "member", m.Device, "err", err)
		}
		if reuse && slices.Equal(last.obs.Members[i].Identities, id) {
			continue
		}
		if ids == nil {
			ids = make([][]string, len(a.Members))
			for j := 0; j < i; j++ {
				ids[j] = last.obs.Members[j].Identities
			}
		}
		ids[i], reuse = id, false
	}
	if reuse {
		return last
	}
	return observedArray{from: a, obs: newArrayObservation(a, ids)}
}

// normalizeUUID is mdraid.NormalizeUUID, remembered: the staged volumes'
// UUIDs are the same every cycle.
func (o *Observer) normalizeUUID(s string) (string, error) {
	if u, ok := o.uuids[s]; ok {
		return u, nil
	}
	u, err := mdraid.NormalizeUUID(s)
	if err != nil {
		return "", err
	}
	if o.uuids == nil || len(o.uuids) > 4096 {
		o.uuids = map[string]string{} // bounded: unstaged volumes' go too
	}
	o.uuids[s] = u
	return u, nil
}

func newArrayObservation(a *mdraid.Array, ids [][]string) *ArrayObservation {
	ao := &ArrayObservation{Name: a.Name, Device: a.Device, UUID: a.UUID, State: a.ArrayState, RaidDisks: a.RaidDisks,
		Degraded: a.Degraded, SyncAction: a.SyncAction}
	if a.SyncCompleted.State == "progress" {
		ao.SyncDone, ao.SyncTotal = a.SyncCompleted.Done, a.SyncCompleted.Total
	}
	ao.SyncSpeedKiB, ao.SyncSpeedMaxKiB, ao.SyncSpeedMaxSystem = a.SyncSpeedKiB, a.SyncSpeedMax.KiB, a.SyncSpeedMax.System
	ao.Members = make([]MemberObservation, 0, len(a.Members))
	for i, m := range a.Members {
		ao.Members = append(ao.Members, MemberObservation{Device: m.Device, Identities: ids[i], Slot: m.Slot,
			InSync: m.State.InSync, Faulty: m.State.Faulty, Spare: m.State.Spare})
	}
	return ao
}

// SysfsNVMe reads controllers and namespaces under Root ("/" on a node)
// through host.Sysfs, the one reader of NVMe state in sysfs; it only turns
// host's types into the healer's.
type SysfsNVMe struct{ Root string }

// Controllers lists /sys/class/nvme with host.Sysfs.ControllerStatuses:
// three attributes per controller, no subsystem lookup; controllers
// vanishing meanwhile are skipped, and a missing class directory (nvme not
// loaded) is no controller.
func (s SysfsNVMe) Controllers() ([]NVMeController, error) {
	cs, err := host.NewSysfs(s.Root).ControllerStatuses()
	if cs == nil || err != nil {
		return nil, err
	}
	out := make([]NVMeController, 0, len(cs))
	for _, c := range cs {
		out = append(out, NVMeController{Name: c.Name, SubsysNQN: c.SubsysNQN, State: c.State, TrAddr: c.TrAddr, TrSvcID: c.TrSvcID})
	}
	return out, nil
}

// NamespaceIdentities reads /sys/block/<device>/{uuid,nguid,wwid}.
func (s SysfsNVMe) NamespaceIdentities(device string) ([]string, error) {
	return host.NewSysfs(s.Root).NamespaceIdentities(device)
}
