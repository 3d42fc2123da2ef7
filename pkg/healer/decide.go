package healer

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// The rules, in one place (docs/healer.md, section "The rules"):
//
// Down. A replica in the volume's configuration is down when it does not
// serve and is not syncing: md failed it, md does not hold it, or its NVMe
// controller is not live (reconnecting, or gone). The controller matters
// because an idle md does not notice a lost leg until the next write. Its
// down clock (DownSince) starts at the first cycle that sees it down and
// stops when it serves or syncs again.
//
// Degraded. A volume is degraded while any replica of its configuration
// does not serve (down or syncing). DegradedSince starts at the first
// sighting (or at the provisioner's degraded_since when that is earlier, so
// a lost state directory does not restart the clock) and survives restarts.
//
// Wait or replace: one rule. A down replica whose controller is live (or can
// be connected again) is joined back at once, with a bitmap re-add. A
// replica down for maxReplicaDownTime (its own clock; the volume has been
// degraded at least as long) whose controller is not live is replaced,
// provided the configuration has fewer than four replicas, another replica
// serves, the volume has no replacement running and the node runs fewer
// than MaxConcurrentReplacements. A replica that was replaced (or that the
// provisioner says is removed or deleted) never rejoins; if it returns it
// is disconnected and taken out of md. A flapping replica resets its clock
// each time it serves again, so flaps never cause a replacement. A replica
// a promotion gave up (diverged) is down and never joined or connected,
// whatever its link: it is replaced when its time is up.
//
// Events are edges: each is sent once when its state changes, with the
// transition time as its time, and its ID is a hash of its content, so a
// resend after a crash is the same event.

// Decide is the healer's pure decision: from what was observed, the
// settings, what was remembered and the time, the actions to run, the events
// to report and the memory to keep. It has no side effects and does not
// modify mem.
func Decide(obs Observation, cfg Config, mem Memory, now time.Time) ([]Action, []events.Event, Memory) {
	d := decideCycle(obs, cfg, mem, now, nil)
	return d.actions, d.events, d.mem
}

// cycleDecision is Decide's result with what the loop needs to decide the
// next cycle incrementally.
type cycleDecision struct {
	actions []Action
	events  []events.Event
	mem     Memory
	// settled are the volumes whose decision this cycle was a fixed point
	// (see settledVolume), for the next cycle.
	settled map[string]settledVolume
	// carried are the volumes not decided again this cycle: settled at the
	// last one and observed alike; their memory is the input's, as is.
	carried map[string]bool
}

// decideCycle is Decide, skipping the volumes of prev that are observed
// exactly as when they settled: deciding them again would give no action,
// no event and the same memory (Decide is pure, and a settled volume's
// memory holds no clock that time could make due). prev nil decides every
// volume.
func decideCycle(obs Observation, cfg Config, mem Memory, now time.Time, prev map[string]settledVolume) cycleDecision {
	next := Memory{Version: MemoryVersion, Volumes: make(map[string]VolumeMemory, len(obs.Volumes)), Hosts: map[string]HostMemory{}}
	out := cycleDecision{settled: make(map[string]settledVolume, len(obs.Volumes)), carried: map[string]bool{}}
	var actions []Action
	var volEvents []events.Event
	replacing := 0
	for _, vm := range mem.Volumes {
		replacing += len(vm.Replacements)
	}
	// Replacements first counted from memory; those that end this cycle
	// free their place before decisions are made.
	vols := obs.Volumes
	if !slices.IsSortedFunc(vols, byVolumeID) {
		vols = slices.Clone(obs.Volumes)
		slices.SortFunc(vols, byVolumeID)
	}
	var hostReplicas []hostReplica
	views := make([][]*replicaView, len(vols))
	for i, v := range vols {
		if p, ok := prev[v.VolumeID]; ok {
			if vm, known := mem.Volumes[v.VolumeID]; known && settledMemory(vm) && sameObservation(p.obs, v) {
				out.carried[v.VolumeID] = true
				next.Volumes[v.VolumeID] = vm
				continue
			}
		}
		vm := cloneVolumeMemory(mem.Volumes[v.VolumeID])
		before := len(vm.Replacements)
		views[i] = buildViews(v, &vm)
		endReplacements(&vm, views[i])
		replacing -= before - len(vm.Replacements)
		next.Volumes[v.VolumeID] = vm
	}
	rates := decideRebuildRates(vols, cfg)
	actions = append(actions, rates...)
	var opened, closed []events.Event
	observed := make(map[string]bool, len(vols))
	for i, v := range vols {
		observed[v.VolumeID] = true
		if out.carried[v.VolumeID] {
			p := prev[v.VolumeID]
			hostReplicas = append(hostReplicas, p.hosts...)
			out.settled[v.VolumeID] = p
			continue
		}
		vm := next.Volumes[v.VolumeID]
		prevVM, known := mem.Volumes[v.VolumeID]
		d := volumeDecision{obs: v, cfg: cfg, now: now, mem: &vm, known: known, views: views[i], replacing: &replacing}
		acts, evs := d.run()
		actions = append(actions, acts...)
		volEvents = append(volEvents, evs...)
		o, c := decideSessions(v.VolumeID, views[i], !known || prevVM.SessionsTracked, cfg.NodeID, now)
		opened, closed = append(opened, o...), append(closed, c...)
		vm.SessionsTracked = true
		syncViews(&vm, views[i])
		next.Volumes[v.VolumeID] = vm
		var hosts []hostReplica
		for _, rv := range views[i] {
			if v.Staged && rv.expected() {
				hosts = append(hosts, hostReplica{storageNode: rv.storageNode, id: rv.id, live: rv.link == linkLive})
			}
		}
		hostReplicas = append(hostReplicas, hosts...)
		if known && len(acts)+len(evs)+len(o)+len(c) == 0 && settledMemory(vm) && reflect.DeepEqual(prevVM, vm) {
			out.settled[v.VolumeID] = settledVolume{obs: v, hosts: hosts}
		}
	}
	for _, a := range rates {
		// Its rate is set this cycle: decided again at the next.
		delete(out.settled, a.VolumeID)
	}
	// A volume no longer observed was unstaged: its sessions were closed.
	gone := make([]string, 0)
	for id := range mem.Volumes {
		if !observed[id] {
			gone = append(gone, id)
		}
	}
	sort.Strings(gone)
	for _, id := range gone {
		closed = append(closed, closeVolumeSessions(id, mem.Volumes[id], cfg.NodeID, now)...)
	}
	hostDown, hostUp := decideHosts(hostReplicas, mem.Hosts, next.Hosts, cfg.NodeID, now)
	var evs []events.Event
	evs = append(evs, closed...)
	evs = append(evs, hostDown...)
	evs = append(evs, volEvents...)
	evs = append(evs, hostUp...)
	evs = append(evs, opened...)
	out.actions, out.events, out.mem = actions, evs, next
	return out
}

func byVolumeID(a, b VolumeObservation) int { return strings.Compare(a.VolumeID, b.VolumeID) }

// endReplacements drops replacements whose new replica serves (or left the
// configuration), freeing their place under MaxConcurrentReplacements.
func endReplacements(vm *VolumeMemory, views []*replicaView) {
	var keep []Replacement
	for _, r := range vm.Replacements {
		var nv *replicaView
		for _, rv := range views {
			if rv.id == r.New {
				nv = rv
			}
		}
		if nv == nil || nv.serving() || (nv.state != "" && nv.state != volume.ReplicaActive) {
			continue
		}
		keep = append(keep, r)
	}
	vm.Replacements = keep
}

type volumeDecision struct {
	obs VolumeObservation
	cfg Config
	now time.Time
	mem *VolumeMemory
	// known: the volume was in memory; when not (first cycle, or the state
	// directory was lost) the provisioner's degraded_since seeds the clocks.
	known     bool
	views     []*replicaView
	replacing *int
	actions   []Action
	events    []events.Event
}

func (d *volumeDecision) run() ([]Action, []events.Event) {
	defer syncViews(d.mem, d.views)
	if d.obs.MDUUID == "" {
		// Single replica: no mirror to heal, host events only.
		return nil, nil
	}
	if d.obs.Array == nil {
		// The array does not run: NodeStage (or an admin) must bring it up;
		// nothing here can be added to or failed in it. Clocks stay as
		// they are.
		return nil, nil
	}
	if !d.obs.Staged {
		// NodeStage or NodeUnstage is connecting or tearing the volume
		// down: members and controllers coming and going are theirs, not
		// a degradation to report or repair.
		return nil, nil
	}
	d.clocks()
	degradedEv, healedEv := d.degradation()
	started, ended := d.sync()
	d.events = append(d.events, degradedEv...)
	d.events = append(d.events, started...)
	d.events = append(d.events, ended...)
	d.events = append(d.events, healedEv...)
	d.repairs()
	return d.actions, d.events
}

// clocks starts and stops the replicas' down clocks.
func (d *volumeDecision) clocks() {
	for _, rv := range d.views {
		if rv.down() {
			if rv.mem.DownSince.IsZero() {
				rv.mem.DownSince = d.now
				if c := d.obs.Record; c != nil && !d.known && !c.DegradedSince.IsZero() && c.DegradedSince.Before(d.now) {
					// First sighting in this node's memory, but the
					// provisioner knows the volume has been degraded since
					// earlier (the state directory was lost): the replica
					// has been down at least since then as far as anyone
					// can tell, so its clock does not restart from zero.
					rv.mem.DownSince = c.DegradedSince
				}
			}
		} else {
			rv.mem.DownSince = time.Time{}
		}
	}
}

// degradation tracks the degraded episode and its Degraded/Healed events.
func (d *volumeDecision) degradation() (degraded, healed []events.Event) {
	var down, notServing []*replicaView
	for _, rv := range d.views {
		if !rv.active() || rv.moveTarget {
			continue // a move's new replica is extra until it serves
		}
		if rv.down() {
			down = append(down, rv)
		}
		if !rv.serving() {
			notServing = append(notServing, rv)
		}
	}
	if len(notServing) == 0 {
		if !d.mem.DegradedSince.IsZero() {
			healed = append(healed, d.event(events.VolumeHealed, d.now, d.mem.Named,
				fmt.Sprintf("Replicated volume %s healed after %s; replicas back or replaced: %s",
					d.obs.VolumeID, d.now.Sub(d.mem.DegradedSince).Round(time.Second), d.describe(d.mem.Named))))
		}
		d.mem.DegradedSince, d.mem.Named = time.Time{}, nil
		return nil, healed
	}
	missing := down
	if len(missing) == 0 {
		missing = notServing // degraded by syncing replicas only
	}
	ids := viewIDs(missing)
	if d.mem.DegradedSince.IsZero() {
		d.mem.DegradedSince = d.now
		if c := d.obs.Record; c != nil && !d.known && !c.DegradedSince.IsZero() && c.DegradedSince.Before(d.now) {
			// The provisioner recorded an earlier start (this node's state
			// was lost): keep the clock it knows.
			d.mem.DegradedSince = c.DegradedSince
		}
		d.mem.Named = ids
		degraded = append(degraded, d.event(events.VolumeDegraded, d.mem.DegradedSince, ids,
			fmt.Sprintf("Replicated volume %s degraded: %d of %d replicas missing: %s",
				d.obs.VolumeID, len(ids), d.activeCount(), d.describe(ids))))
		return degraded, nil
	}
	var fresh []string
	for _, rv := range down {
		if !rv.replacement && !slices.Contains(d.mem.Named, rv.id) {
			fresh = append(fresh, rv.id)
		}
	}
	if len(fresh) > 0 {
		// Worse than reported: one more transition, naming every missing
		// replica (not only the new one).
		d.mem.Named = sortedUnion(d.mem.Named, fresh)
		degraded = append(degraded, d.event(events.VolumeDegraded, d.now, ids,
			fmt.Sprintf("Replicated volume %s degraded further: %d of %d replicas missing: %s",
				d.obs.VolumeID, len(ids), d.activeCount(), d.describe(ids))))
	}
	return degraded, nil
}

// sync tracks a resync between its Started and Ended events. A bitmap
// re-add of an idle array can finish before the next observation; the
// replica's JoinedAt still makes it one Started/Ended pair.
func (d *volumeDecision) sync() (started, ended []events.Event) {
	var syncing, joined []string
	unseen := false
	for _, rv := range d.views {
		if rv.syncing() {
			syncing = append(syncing, rv.id)
		}
		if !rv.mem.JoinedAt.IsZero() {
			if rv.nqn == "" {
				// A replacement known only from memory (its subsystem is
				// not recorded yet): nothing says its sync ended.
				unseen = true
			}
			joined = append(joined, rv.id)
		}
	}
	a := d.obs.Array
	arraySync := a.SyncAction == "resync" || a.SyncAction == "recover"
	running := len(syncing) > 0 || arraySync || unseen
	s := &d.mem.Sync
	// A sync is reported when it concerns a replica: md also runs an
	// array-level "recover" for a moment after a member fails (looking for a
	// spare it does not have), which copies nothing to anyone.
	if !s.Active && (len(syncing) > 0 || len(joined) > 0) {
		since := d.now
		for _, rv := range d.views {
			if t := rv.mem.JoinedAt; !t.IsZero() && t.Before(since) {
				since = t
			}
		}
		s.Active, s.Since, s.Replicas = true, since, sortedUnion(syncing, joined)
		started = append(started, d.event(events.SynchStarted, since, s.Replicas,
			fmt.Sprintf("Replicated volume %s: synchronisation started (%s) of %s", d.obs.VolumeID, a.SyncAction, d.describe(s.Replicas))))
	} else if s.Active {
		s.Replicas = sortedUnion(s.Replicas, syncing)
	}
	if s.Active && !running {
		ended = append(ended, d.event(events.SynchEnded, d.now, s.Replicas,
			fmt.Sprintf("Replicated volume %s: synchronisation ended after %s for %s", d.obs.VolumeID,
				d.now.Sub(s.Since).Round(time.Second), d.describe(s.Replicas))))
		*s = SyncMemory{}
	}
	for _, rv := range d.views {
		if rv.nqn != "" && !rv.syncing() && (!s.Active || !slices.Contains(s.Replicas, rv.id)) {
			rv.mem.JoinedAt = time.Time{}
		}
	}
	return started, ended
}

// repairs decides the actions.
func (d *volumeDecision) repairs() {
	a := d.obs.Array
	fresh := d.obs.RecordFresh && d.obs.Record != nil
	serving := 0
	for _, rv := range d.views {
		if rv.serving() {
			serving++
		}
	}
	base := Action{VolumeID: d.obs.VolumeID, MDDevice: a.Device, MDUUID: d.obs.MDUUID}
	if d.obs.Record != nil {
		base.Auth = d.obs.Record.Authentication()
	}
	act := func(k ActionKind, rv *replicaView, f func(*Action)) {
		x := base
		x.Kind, x.Replica = k, rv.replica()
		if rv.member != nil {
			x.Member = rv.member.Device
		}
		if f != nil {
			f(&x)
		}
		d.actions = append(d.actions, x)
	}
	due := func(rv *replicaView) bool { return !d.now.Before(rv.mem.NextAttempt) }
	// servesElsewhere: taking rv out of md leaves a serving replica.
	servesElsewhere := func(rv *replicaView) bool {
		n := serving
		if rv.serving() {
			n--
		}
		return n >= 1
	}

	d.recordSync(act)

	// A lost leg md still counts in sync: fail it (local, no provisioner
	// needed, never the last serving member). It misses writes from then
	// on, so its record goes first.
	for _, rv := range d.views {
		if d.cfg.FailGoneMembers && rv.member != nil && rv.member.InSync && !rv.member.Faulty &&
			rv.link == linkGone && servesElsewhere(rv) {
			if fresh && rv.state == volume.ReplicaActive && rv.recordedInSync {
				act(ActRecordSync, rv, nil)
			}
			act(ActFail, rv, nil)
		}
	}

	retiring := false
	// Out of the configuration but still here: take it out. A deleted
	// replica is then marked removed; a removed or replaced one needs no
	// mark. The provisioner's word is needed, except for replicas this
	// healer replaced itself.
	for _, rv := range d.views {
		if rv.active() || !due(rv) {
			continue
		}
		deleted := fresh && rv.state == volume.ReplicaDeleted && !rv.mem.Removed
		gone := (fresh && rv.state == volume.ReplicaRemoved) || rv.mem.ReplacedBy != "" || rv.mem.Removed
		holds := rv.member != nil || hasController(rv.ctrls)
		if !(deleted || (gone && holds)) {
			continue
		}
		if rv.member != nil && rv.member.InSync && !rv.member.Faulty && !servesElsewhere(rv) {
			continue // the last good copy stays until another serves
		}
		retiring = true
		act(ActRetire, rv, func(x *Action) {
			x.Mark = deleted
			x.Slots = d.activeCount()
		})
	}

	if !fresh {
		return // joins and replacements wait for the provisioner
	}
	activeCount := d.activeCount()
	if !retiring && d.slotsOff(activeCount) {
		x := base
		x.Kind, x.Slots = ActSetSlots, activeCount
		d.actions = append(d.actions, x)
	}
	replacingHere := len(d.mem.Replacements)
	maxDown := d.maxDown()
	// Longest down first: it is the first due for replacement.
	down := []*replicaView{}
	for _, rv := range d.views {
		if rv.down() && rv.state == volume.ReplicaActive {
			down = append(down, rv)
		}
	}
	sort.SliceStable(down, func(i, j int) bool { return down[i].mem.DownSince.Before(down[j].mem.DownSince) })
	for _, rv := range down {
		// A replica a promotion gave up may hold writes the array lacks
		// and md cannot always tell (a bitmap re-add would keep them on
		// that leg alone): it is never joined or connected, only
		// replaced, whatever its link.
		if rv.link == linkLive && !rv.diverged {
			if due(rv) {
				act(ActJoin, rv, func(x *Action) { x.Slots = activeCount })
			}
			continue
		}
		overdue := maxDown > 0 && d.now.Sub(rv.mem.DownSince) >= maxDown
		if overdue && activeCount < 4 && servesElsewhere(rv) && replacingHere == 0 &&
			*d.replacing < d.cfg.MaxConcurrentReplacements && !d.now.Before(rv.mem.NextReplace) {
			act(ActReplace, rv, func(x *Action) { x.Slots = activeCount })
			*d.replacing++
			replacingHere++
			continue
		}
		if rv.link == linkGone && len(rv.endpoints) > 0 && due(rv) && !rv.diverged {
			// The kernel gave up on it: try to connect again (paced).
			act(ActJoin, rv, func(x *Action) { x.Connect, x.Slots = true, activeCount })
		}
	}
}

// recordSync keeps the provisioner's record of which active replicas hold
// every write in step with md: a replica md runs the array without (absent,
// faulty, or not yet brought up to date) while another member is in sync is
// recorded out of sync, and one md holds in sync again is recorded in sync.
// NodeStage on any node refuses to start the volume from replicas recorded
// out of sync, so these go before any repair and are not paced: each cycle
// whose fresh record still differs reports again, which the provisioner
// answers idempotently.
func (d *volumeDecision) recordSync(act func(ActionKind, *replicaView, func(*Action))) {
	if d.obs.Record == nil || !d.obs.RecordFresh {
		// A cached record may predate a replacement or an earlier
		// report; the provisioner, when it answers again, is the one
		// to compare with.
		return
	}
	inSync := 0
	for _, rv := range d.views {
		if rv.inSyncMember() {
			inSync++
		}
	}
	if inSync == 0 {
		return // md never runs a mirror without one; nothing to compare
	}
	for _, rv := range d.views {
		if rv.state != volume.ReplicaActive {
			continue
		}
		switch {
		case rv.recordedInSync && !rv.inSyncMember():
			act(ActRecordSync, rv, nil)
		case !rv.recordedInSync && rv.inSyncMember():
			act(ActRecordSync, rv, func(x *Action) { x.InSync = true })
		}
	}
}

// maxDown is the volume's maxReplicaDownTime (typed by the registry; the
// StorageClass default before a record was read); 0 disables replacement.
func (d *volumeDecision) maxDown() time.Duration {
	p := storageclass.DefaultPolicy()
	if d.obs.Record != nil {
		p = d.obs.Record.Policy
	}
	return time.Duration(p.MaxReplicaDownTimeMinutes) * d.cfg.HealTimeUnit
}

// slotsOff: md's slot count should follow the replica count: it has more
// slots and holds no more members than the volume has replicas (shrinking
// drops only empty slots), or fewer slots while a spare waits for one.
func (d *volumeDecision) slotsOff(activeCount int) bool {
	a := d.obs.Array
	if activeCount < 2 {
		return false
	}
	held, spare := 0, false
	for _, m := range a.Members {
		if !m.Faulty {
			held++
			spare = spare || m.Spare
		}
	}
	return (a.RaidDisks > activeCount && held <= activeCount) || (a.RaidDisks < activeCount && spare)
}

func (d *volumeDecision) activeCount() int {
	n := 0
	for _, rv := range d.views {
		if rv.active() {
			n++
		}
	}
	return n
}

// describe renders replicas as "r1 (sn-1, reconnecting), r2 (sn-2, gone)".
func (d *volumeDecision) describe(ids []string) string {
	var parts []string
	for _, id := range ids {
		for _, rv := range d.views {
			if rv.id == id {
				parts = append(parts, fmt.Sprintf("%s (%s, %s)", id, orUnknown(rv.storageNode), rv.link))
			}
		}
	}
	return strings.Join(parts, ", ")
}

func orUnknown(s string) string {
	if s == "" {
		return "storage node unknown"
	}
	return s
}

// event builds a volume event naming ids and their storage nodes.
func (d *volumeDecision) event(t events.Type, at time.Time, ids []string, msg string) events.Event {
	var nodes []string
	for _, id := range ids {
		for _, rv := range d.views {
			if rv.id == id && rv.storageNode != "" && !slices.Contains(nodes, rv.storageNode) {
				nodes = append(nodes, rv.storageNode)
			}
		}
	}
	sort.Strings(nodes)
	e := events.Event{Time: at.UTC(), Type: t, Volume: d.obs.VolumeID, Node: d.cfg.NodeID,
		Replicas: slices.Clone(ids), StorageNode: strings.Join(nodes, ","), Message: msg}
	if len(ids) == 1 {
		e.Replica = ids[0]
	}
	return e
}

func sortedUnion(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// cloneVolumeMemory deep-copies vm so Decide never writes into its input.
func cloneVolumeMemory(vm VolumeMemory) VolumeMemory {
	out := vm
	out.Named = slices.Clone(vm.Named)
	out.Sync.Replicas = slices.Clone(vm.Sync.Replicas)
	out.Replacements = slices.Clone(vm.Replacements)
	out.Replicas = make(map[string]ReplicaMemory, len(vm.Replicas))
	for k, v := range vm.Replicas {
		if v.Sessions != nil {
			sessions := make(map[string]SessionMemory, len(v.Sessions))
			for n, s := range v.Sessions {
				sessions[n] = s
			}
			v.Sessions = sessions
		}
		out.Replicas[k] = v
	}
	return out
}
