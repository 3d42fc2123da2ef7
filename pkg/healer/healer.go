package healer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nvmirror/nvmirror/pkg/volume"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// MDWatcher wakes the loop when md changes; *mdraid.Watcher (Linux).
type MDWatcher interface {
	Wait(ctx context.Context, arrays []string) ([]string, error)
}

// Deps are the healer's seams; cmd/nvmirror-csi wires the real ones.
type Deps struct {
	Observer *Observer
	Actor    *Actor
	Queue    *EventQueue
	// Metrics may be nil.
	Metrics *Metrics
	// Rekeyer may be nil (no re-keying after credential rotations).
	Rekeyer *Rekeyer
	// Watcher may be nil: the interval and the NVMe poll still run.
	Watcher MDWatcher
	// KernelLog wakes the NVMe poll for the controllers the kernel logs
	// about; nil (no readable kernel log) polls every controller every
	// NVMePollInterval instead of every NVMeBackstopInterval.
	KernelLog KernelLog
	// Lock takes a volume's CSI lock without waiting (Driver.TryLockVolume);
	// nil means no locking. Actions on a locked volume wait a cycle.
	Lock  func(volumeID string) (unlock func(), ok bool)
	Clock clock.WithTicker
}

// Healer is the loop: observe, decide, act, persist, on a timer and on
// change notifications.
type Healer struct {
	cfg     Config
	deps    Deps
	memPath string
	trigger chan struct{}

	mu     sync.Mutex // guards mem, arrays, settled (cycles run one at a time)
	mem    Memory
	arrays []string
	// arraysSet is signalled when a cycle's arrays differ from the last
	// one's, so that the md watch waits on the new set at once.
	arraysSet chan struct{}
	// settled are the volumes the last cycle left settled: the next decides
	// them again only if their observation changed (decideCycle).
	settled map[string]settledVolume
	// decideAll turns the incremental decision off (the benchmarks' "before").
	decideAll bool

	// statusMu guards statuses and statusAt, apart from mu: a cycle holds
	// mu while it acts (a replacement takes minutes), and the CSI health
	// calls must not wait for it.
	statusMu sync.RWMutex
	statuses map[string]VolumeStatus
	// statusAt is when the last successful cycle ended.
	statusAt time.Time
}

// MemoryFile is the healer's memory under the state directory. It lives in
// a subdirectory: the state directory's *.json files are staging states.
func MemoryFile(stateDir string) string { return filepath.Join(stateDir, "healer", "memory.json") }

// EventQueueFile is the event outbox under the state directory.
func EventQueueFile(stateDir string) string { return filepath.Join(stateDir, "healer", "events.db") }

// New loads the memory from stateDir and returns the healer.
func New(cfg Config, stateDir string, deps Deps) (*Healer, error) {
	if deps.Observer == nil || deps.Actor == nil || deps.Queue == nil {
		return nil, fmt.Errorf("healer: observer, actor and event queue are required")
	}
	if deps.Clock == nil {
		deps.Clock = clock.RealClock{}
	}
	if deps.Observer.Now == nil {
		deps.Observer.Now = deps.Clock.Now
	}
	// Reusing md readings between cycles is sound only while md's change
	// notifications wake the healer.
	deps.Observer.MDNotifications(deps.Watcher != nil)
	path := MemoryFile(stateDir)
	mem, err := LoadMemory(path)
	if err != nil {
		return nil, err
	}
	klog.InfoS("Healer memory loaded", "path", path, "volumes", len(mem.Volumes), "storageNodes", len(mem.Hosts))
	return &Healer{cfg: cfg, deps: deps, memPath: path, trigger: make(chan struct{}, 1), arraysSet: make(chan struct{}, 1),
		mem: mem, statuses: map[string]VolumeStatus{}}, nil
}

// Trigger asks for a cycle as soon as possible (coalesced).
func (h *Healer) Trigger() {
	select {
	case h.trigger <- struct{}{}:
	default:
	}
}

// Status returns a volume's status after the last cycle (for the driver's
// VolumeCondition and NodeGetVolumeHealth).
func (h *Healer) Status(volumeID string) (VolumeStatus, bool) {
	h.statusMu.RLock()
	defer h.statusMu.RUnlock()
	s, ok := h.statuses[volumeID]
	return s, ok
}

// VolumeHealth is the volume's status for the driver's NodeGetVolumeHealth
// (volume.HealthSource). ok is false when the last cycle did not see the
// volume, or when no cycle succeeded for three intervals (the view is stale
// and the driver reads md itself).
func (h *Healer) VolumeHealth(volumeID string) (volume.VolumeHealth, bool) {
	h.statusMu.RLock()
	s, ok := h.statuses[volumeID]
	at := h.statusAt
	h.statusMu.RUnlock()
	now := h.deps.Clock.Now()
	if !ok || (h.cfg.Interval > 0 && now.Sub(at) > 3*h.cfg.Interval) {
		return volume.VolumeHealth{}, false
	}
	return healthOf(s, now), true
}

var _ volume.HealthSource = (*Healer)(nil)

// healthOf renders a status for CSI: what is missing, where, since when,
// and how far a resync got.
func healthOf(s VolumeStatus, now time.Time) volume.VolumeHealth {
	var parts []string
	if len(s.MissingReplicas) > 0 {
		var rs []string
		for _, r := range s.MissingReplicas {
			d := fmt.Sprintf("%s (%s", r.ID, orUnknown(r.StorageNode))
			if !r.DownSince.IsZero() {
				d += fmt.Sprintf(", down since %s", r.DownSince.UTC().Format(time.RFC3339))
			} else {
				d += ", syncing"
			}
			rs = append(rs, d+")")
		}
		parts = append(parts, "replicas not serving: "+strings.Join(rs, ", "))
	}
	if !s.DegradedSince.IsZero() {
		parts = append(parts, fmt.Sprintf("degraded since %s (%s)", s.DegradedSince.UTC().Format(time.RFC3339),
			now.Sub(s.DegradedSince).Round(time.Second)))
	}
	if s.SyncProgress >= 0 {
		parts = append(parts, fmt.Sprintf("resync %.1f%% done", 100*s.SyncProgress))
	}
	msg := "volume " + string(s.Health)
	if len(parts) > 0 {
		msg += ": " + strings.Join(parts, "; ")
	}
	switch s.Health {
	case HealthUnavailable:
		return volume.VolumeHealth{Abnormal: true, Inaccessible: true, Reason: "VolumeUnavailable", Message: msg}
	case HealthSyncing:
		return volume.VolumeHealth{Abnormal: true, Reason: "MirrorSyncing", Message: msg}
	case HealthDegraded:
		return volume.VolumeHealth{Abnormal: true, Reason: "MirrorDegraded", Message: msg}
	}
	return volume.VolumeHealth{Message: msg}
}

// Memory returns a copy of the current memory.
func (h *Healer) Memory() Memory {
	h.mu.Lock()
	defer h.mu.Unlock()
	return RecordOutcomes(h.mem, nil, h.cfg, time.Time{})
}

// RunOnce runs one cycle. Events are queued (fsynced) before the memory
// that records their transitions is saved: a crash between the two resends
// events rather than losing them.
func (h *Healer) RunOnce(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	start := h.deps.Clock.Now()
	obs, err := h.deps.Observer.Observe(ctx)
	if err != nil {
		return fmt.Errorf("observe: %w", err)
	}
	now := h.deps.Clock.Now()
	var prev map[string]settledVolume
	if !h.decideAll {
		prev = h.settled
	}
	d := decideCycle(obs, h.cfg, h.mem, now, prev)
	actions, evs, mem := d.actions, d.events, d.mem
	if err := h.deps.Queue.Enqueue(evs); err != nil {
		// Keep the old memory: the next cycle sees the same transitions
		// and queues their events again.
		h.settled = nil
		return fmt.Errorf("queue events: %w", err)
	}
	var outs []Outcome
	for _, a := range actions {
		unlock, ok := func() (func(), bool) {
			if h.deps.Lock == nil || a.Kind == ActRecordSync || a.Kind == ActSetRebuildRate {
				// A sync record or a rate limit changes nothing a
				// CSI call works on: they never wait behind one.
				return func() {}, true
			}
			return h.deps.Lock(a.VolumeID)
		}()
		if !ok {
			klog.V(2).InfoS("Volume busy with a CSI call; repair waits for the next cycle", "volumeID", a.VolumeID, "action", a.Kind)
			h.deps.Metrics.repair(Outcome{Action: a}, true)
			continue
		}
		o := h.deps.Actor.Do(ctx, a)
		unlock()
		// What the action changed is read again next cycle: not every md
		// attribute it writes (sync_speed_max) is signalled.
		if arr := arrayOf(obs, a.VolumeID); arr != "" {
			h.deps.Observer.ArraysChanged(arr)
		}
		if o.Record != nil {
			// Without this the cached record would say the replica's old
			// sync state until it expires, and every cycle meanwhile (md
			// signals each step of a resync) would report it again.
			h.deps.Observer.Recorded(o.Record)
		}
		h.deps.Metrics.repair(o, false)
		outs = append(outs, o)
		delete(d.carried, a.VolumeID) // its memory may change below
	}
	if len(outs) > 0 {
		mem = RecordOutcomes(mem, outs, h.cfg, h.deps.Clock.Now())
	}
	if h.deps.Rekeyer != nil {
		evs, err := h.deps.Rekeyer.Run(ctx, obs.Volumes, h.deps.Lock)
		if err != nil {
			klog.ErrorS(err, "Re-keying check failed")
		}
		if err := h.deps.Queue.Enqueue(evs); err != nil {
			klog.ErrorS(err, "Cannot queue re-keying events")
		}
	}
	if memoryChanged(h.mem, mem, d.carried) {
		if err := SaveMemory(h.memPath, mem); err != nil {
			// The in-process memory moves on (events were queued); the
			// file catches up at the next successful save.
			klog.ErrorS(err, "Could not save healer memory", "path", h.memPath)
		}
	}
	h.mem = mem
	h.settled = d.settled
	// A carried volume's status is the last one: volumeStatus reads only
	// what sameObservation compares and the memory, both unchanged. Only
	// this cycle writes h.statuses, so it reads it without statusMu.
	statuses := make(map[string]VolumeStatus, len(obs.Volumes))
	lastArrays := h.arrays
	h.arrays = make([]string, 0, len(obs.Volumes))
	for _, v := range obs.Volumes {
		s, ok := h.statuses[v.VolumeID]
		if !ok || !d.carried[v.VolumeID] {
			s = volumeStatus(v, mem.Volumes[v.VolumeID])
		}
		statuses[v.VolumeID] = s
		if v.Array != nil {
			h.arrays = append(h.arrays, v.Array.Name)
		}
	}
	sort.Strings(h.arrays)
	if !slices.Equal(lastArrays, h.arrays) {
		select {
		case h.arraysSet <- struct{}{}:
		default:
		}
	}
	end := h.deps.Clock.Now()
	h.statusMu.Lock()
	h.statuses, h.statusAt = statuses, end
	h.statusMu.Unlock()
	h.deps.Metrics.update(obs, statuses, end, d.carried)
	h.deps.Metrics.cycleDone(end.Sub(start), h.deps.Queue.Len())
	klog.V(4).InfoS("Healer cycle", "volumes", len(obs.Volumes), "actions", len(actions), "events", len(evs), "duration", end.Sub(start))
	return nil
}

func arrayOf(obs Observation, volumeID string) string {
	for _, v := range obs.Volumes {
		if v.VolumeID == volumeID && v.Array != nil {
			return v.Array.Name
		}
	}
	return ""
}

// memoryChanged reports whether the memory must be saved: whether its JSON
// differs. The volumes carried over unchanged (not decided this cycle, no
// action on them) are the same values in both and are not compared; the
// others, and the hosts, are compared with reflect.DeepEqual first, so a
// quiet cycle marshals nothing. Values that differ only where JSON does not
// (a nil and an empty slice) fall through to the comparison of the bytes.
func memoryChanged(a, b Memory, carried map[string]bool) bool {
	if len(a.Volumes) != len(b.Volumes) || a.Version != b.Version || !reflect.DeepEqual(a.Hosts, b.Hosts) {
		return jsonDiffers(a, b)
	}
	for id, vb := range b.Volumes {
		va, ok := a.Volumes[id]
		if !ok {
			return true
		}
		if !carried[id] && !reflect.DeepEqual(va, vb) {
			return jsonDiffers(a, b)
		}
	}
	return false
}

func jsonDiffers(a, b Memory) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 != nil || err2 != nil || !bytes.Equal(x, y)
}

// waitMD is one Wait on the last cycle's arrays; again is true when it
// ended because a cycle changed them.
func (h *Healer) waitMD(ctx context.Context) (changed []string, again bool, err error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-h.arraysSet:
			cancel()
		case <-stop:
		}
	}()
	changed, err = h.deps.Watcher.Wait(wctx, h.watchedArrays())
	return changed, err != nil && ctx.Err() == nil && wctx.Err() != nil, err
}

func (h *Healer) watchedArrays() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.arrays)
}

// Run runs cycles until ctx ends: at start, every Interval, when md signals
// a change of a staged volume's array, and when the NVMe poll sees a
// controller appear, vanish or change state. It also runs the event sender.
func (h *Healer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(1)
	go func() { defer wg.Done(); h.deps.Queue.Run(ctx) }()
	if h.deps.Watcher != nil {
		wg.Add(1)
		go func() { defer wg.Done(); h.watchMD(ctx) }()
	}
	if h.cfg.NVMePollInterval > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); h.pollNVMe(ctx, &wg) }()
	}
	tick := h.deps.Clock.NewTicker(h.cfg.Interval)
	defer tick.Stop()
	for {
		if err := h.RunOnce(ctx); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Healer cycle failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C():
		case <-h.trigger:
		}
	}
}

// watchMD turns md notifications into cycles. The arrays watched are those
// of the last cycle: when a cycle's arrays differ (the first cycle, a
// volume staged or unstaged), the running Wait is cancelled and the next
// one waits on the new set, which it arms; the files of the arrays kept
// stay armed, so a change of theirs meanwhile is still reported.
func (h *Healer) watchMD(ctx context.Context) {
	for ctx.Err() == nil {
		changed, again, err := h.waitMD(ctx)
		if ctx.Err() != nil {
			return
		}
		if again {
			continue
		}
		if err != nil {
			// Without notifications a cycle cannot tell an unchanged array
			// from one whose change it was not told about.
			h.deps.Observer.MDNotifications(false)
			klog.ErrorS(err, "md watch failed; relying on the interval until it recovers")
			t := h.deps.Clock.NewTimer(h.cfg.Interval)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C():
			}
			continue
		}
		klog.V(4).InfoS("md changed", "arrays", changed)
		h.deps.Observer.MDNotifications(true)
		h.deps.Observer.ArraysChanged(changed...)
		h.Trigger()
	}
}
