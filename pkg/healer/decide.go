package healer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
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
// each time it serves again, so flaps never cause a replacement.
//
// Events are edges: each is sent once when its state changes, with the
// transition time as its time, and its ID is a hash of its content, so a
// resend after a crash is the same event.

// Decide is the healer's pure decision: from what was observed, the
// settings, what was remembered and the time, the actions to run, the events
// to report and the memory to keep. It has no side effects and does not
// modify mem.
func Decide(obs Observation, cfg Config, mem Memory, now time.Time) ([]Action, []events.Event, Memory) {
	next := Memory{Version: MemoryVersion, Volumes: map[string]VolumeMemory{}, Hosts: map[string]HostMemory{}}
	var actions []Action
	var volEvents []events.Event
	replacing := 0
	for _, vm := range mem.Volumes {
		replacing += len(vm.Replacements)
	}
	// Replacements first counted from memory; those that end this cycle
	// free their place before decisions are made.
	vols := slices.Clone(obs.Volumes)
	sort.Slice(vols, func(i, j int) bool { return vols[i].VolumeID < vols[j].VolumeID })
	var hostReplicas []hostReplica
	views := make([][]*replicaView, len(vols))
	for i, v := range vols {
		vm := cloneVolumeMemory(mem.Volumes[v.VolumeID])
		before := len(vm.Replacements)
		views[i] = buildViews(v, &vm)
		endReplacements(&vm, views[i])
		replacing -= before - len(vm.Replacements)
		next.Volumes[v.VolumeID] = vm
	}
	var opened, closed []events.Event
	observed := map[string]bool{}
	for i, v := range vols {
		observed[v.VolumeID] = true
		vm := next.Volumes[v.VolumeID]
		prev, known := mem.Volumes[v.VolumeID]
		d := volumeDecision{obs: v, cfg: cfg, now: now, mem: &vm, known: known, views: views[i], replacing: &replacing}
		acts, evs := d.run()
		actions = append(actions, acts...)
		volEvents = append(volEvents, evs...)
		o, c := decideSessions(v.VolumeID, views[i], !known || prev.SessionsTracked, cfg.NodeID, now)
		opened, closed = append(opened, o...), append(closed, c...)
		vm.SessionsTracked = true
		syncViews(&vm, views[i])
		next.Volumes[v.VolumeID] = vm
		for _, rv := range views[i] {
			if v.Staged && rv.expected() {
				hostReplicas = append(hostReplicas, hostReplica{storageNode: rv.storageNode, id: rv.id, live: rv.link == linkLive})
			}
		}
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
	return actions, evs, next
}

// decideSessions turns the replicas' live controllers into Session events
// (audit): SessionEstablished when a controller is live that was not live at
// the last cycle (the first connect at stage, and every reconnect, by the
// kernel or by the healer), SessionClosed when a controller that was live is
// not any more (reconnecting, being deleted, or gone). A session is one
// controller of one replica, keyed by controller name; a controller that
// comes back live under the same name is a new session. With announce unset
// (a volume remembered from before sessions were tracked) live sessions are
// recorded without events. Each view's memory gets a new Sessions map: the
// input memory is never written.
func decideSessions(volumeID string, views []*replicaView, announce bool, node string, now time.Time) (opened, closed []events.Event) {
	for _, rv := range views {
		prev := rv.mem.Sessions
		var cur map[string]SessionMemory
		ctrls := slices.Clone(rv.ctrls)
		sort.Slice(ctrls, func(i, j int) bool { return ctrls[i].Name < ctrls[j].Name })
		for _, c := range ctrls {
			if c.State != host.StateLive || c.Name == "" {
				continue
			}
			if cur == nil {
				cur = map[string]SessionMemory{}
			}
			s, ok := prev[c.Name]
			if ok && (s.TrAddr != c.TrAddr || s.TrSvcID != c.TrSvcID) {
				// Same name, another target: the old session ended.
				closed = append(closed, sessionClosed(volumeID, rv.id, rv.storageNode, c.Name, s, string(c.State), node, now))
				ok = false
			}
			if !ok {
				s = SessionMemory{TrAddr: c.TrAddr, TrSvcID: c.TrSvcID, Since: now}
				if announce {
					opened = append(opened, sessionEstablished(volumeID, rv.id, rv.storageNode, c.Name, s, node, now))
				}
			}
			cur[c.Name] = s
		}
		for _, name := range sortedKeys(prev) {
			if _, ok := cur[name]; ok {
				continue
			}
			state := "gone"
			for _, c := range ctrls {
				if c.Name == name {
					state = string(c.State)
				}
			}
			closed = append(closed, sessionClosed(volumeID, rv.id, rv.storageNode, name, prev[name], state, node, now))
		}
		rv.mem.Sessions = cur
	}
	return opened, closed
}

// closeVolumeSessions closes the remembered sessions of a volume that is no
// longer staged here (NodeUnstage disconnected its replicas).
func closeVolumeSessions(volumeID string, vm VolumeMemory, node string, now time.Time) []events.Event {
	var out []events.Event
	for _, id := range sortedKeys(vm.Replicas) {
		rm := vm.Replicas[id]
		for _, name := range sortedKeys(rm.Sessions) {
			out = append(out, sessionClosed(volumeID, id, rm.StorageNode, name, rm.Sessions[name], "volume unstaged", node, now))
		}
	}
	return out
}

func sessionEstablished(volumeID, replica, storageNode, ctrl string, s SessionMemory, node string, now time.Time) events.Event {
	return events.Event{Time: now.UTC(), Type: events.SessionEstablished, Volume: volumeID, Node: node,
		Replica: replica, Replicas: []string{replica}, StorageNode: storageNode,
		Message: fmt.Sprintf("NVMe-oF session established: host %s to replica %s of volume %s on storage node %s (controller %s, target %s)",
			node, replica, volumeID, orUnknown(storageNode), ctrl, targetAddr(s))}
}

func sessionClosed(volumeID, replica, storageNode, ctrl string, s SessionMemory, state, node string, now time.Time) events.Event {
	return events.Event{Time: now.UTC(), Type: events.SessionClosed, Volume: volumeID, Node: node,
		Replica: replica, Replicas: []string{replica}, StorageNode: storageNode,
		Message: fmt.Sprintf("NVMe-oF session closed: host %s to replica %s of volume %s on storage node %s (controller %s, target %s) after %s; controller %s",
			node, replica, volumeID, orUnknown(storageNode), ctrl, targetAddr(s), now.Sub(s.Since).Round(time.Second), state)}
}

func targetAddr(s SessionMemory) string {
	switch {
	case s.TrAddr == "":
		return "address unknown"
	case s.TrSvcID == "":
		return s.TrAddr
	}
	return net.JoinHostPort(s.TrAddr, s.TrSvcID)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// link is the state of a replica's NVMe-oF connection.
type link int

const (
	// linkGone: no controller (never connected, or deleted after
	// ctrl_loss_tmo), or only controllers being deleted.
	linkGone link = iota
	// linkReconnecting: the kernel is reconnecting (new, resetting,
	// connecting); I/O is queued or failing.
	linkReconnecting
	linkLive
)

func (l link) String() string {
	return [...]string{"gone", "reconnecting", "live"}[l]
}

// replicaView is everything known about one replica this cycle.
type replicaView struct {
	id, nqn, nsUUID, storageNode string
	endpoints                    []volume.Endpoint
	// state is the provisioner's state; "" when unknown (no config).
	state volume.ReplicaState
	// staged: recorded in the staging state (NodeStage or the healer
	// connected it), so its connection is expected.
	staged bool
	// replacement: the new replica of a replacement in progress; while it
	// is not serving the volume stays degraded, but it is not "missing".
	replacement bool
	link        link
	ctrls       []ControllerObservation
	member      *MemberObservation
	mem         *ReplicaMemory
}

// active reports whether the replica belongs to the mirror: active in the
// configuration, or, without a configuration, not known to be out of it.
func (r *replicaView) active() bool {
	if r.mem.ReplacedBy != "" || r.mem.Removed {
		return false
	}
	switch r.state {
	case volume.ReplicaActive:
		return true
	case "":
		return r.mem.LastState == "" || r.mem.LastState == volume.ReplicaActive
	}
	return false
}

// serving: an in-sync member md reads and writes through a live controller.
func (r *replicaView) serving() bool {
	return r.member != nil && r.member.InSync && !r.member.Faulty && r.link == linkLive
}

// syncing: a member md is bringing up to date (spare, recovering).
func (r *replicaView) syncing() bool {
	return r.member != nil && !r.member.InSync && !r.member.Faulty && r.link == linkLive
}

func (r *replicaView) down() bool { return r.active() && !r.serving() && !r.syncing() }

// expected: this node holds (or should hold) a connection to the replica.
func (r *replicaView) expected() bool { return r.active() && r.staged && r.storageNode != "" }

func (r *replicaView) replica() volume.Replica {
	return volume.Replica{ID: r.id, StorageNode: r.storageNode, NQN: r.nqn, NamespaceUUID: r.nsUUID,
		Endpoints: r.endpoints, State: r.state}
}

// buildViews joins the configuration, the staging state, the controllers,
// the md members and memory into one view per replica, and refreshes the
// replica memories (dropping those of replicas no longer known).
func buildViews(v VolumeObservation, vm *VolumeMemory) []*replicaView {
	byID := map[string]*replicaView{}
	var order []string
	get := func(id string) *replicaView {
		if rv, ok := byID[id]; ok {
			return rv
		}
		rv := &replicaView{id: id}
		byID[id] = rv
		order = append(order, id)
		return rv
	}
	if v.Record != nil {
		for _, r := range v.Record.Replicas {
			rv := get(r.ID)
			rv.nqn, rv.nsUUID, rv.storageNode, rv.state = r.NQN, r.NamespaceUUID, r.StorageNode, r.State
			rv.endpoints = r.Endpoints
		}
	}
	for _, s := range v.StagedReplicas {
		rv := get(s.ID)
		rv.staged = true
		if rv.nqn == "" {
			rv.nqn = s.NQN
		}
		if rv.nsUUID == "" {
			rv.nsUUID = s.NamespaceUUID
		}
	}
	// A replacement this healer obtained is part of the mirror even when the
	// configuration at hand predates it (provisioner outage after a
	// restart) and before it is recorded in the staging state.
	for _, r := range vm.Replacements {
		if _, ok := byID[r.New]; !ok {
			get(r.New)
		}
		byID[r.New].replacement = true
	}
	sort.Strings(order)
	views := make([]*replicaView, 0, len(order))
	newMem := map[string]ReplicaMemory{}
	for _, id := range order {
		rv := byID[id]
		if rv.nsUUID == "" {
			rv.nsUUID = nvmeof.NamespaceUUID(id)
		}
		m := vm.Replicas[id]
		if rv.storageNode == "" {
			rv.storageNode = m.StorageNode
		}
		m.StorageNode = rv.storageNode
		if rv.state != "" {
			m.LastState = rv.state
		}
		newMem[id] = m
		rv.ctrls = v.Controllers[rv.nqn]
		rv.link = linkOf(rv.ctrls)
		views = append(views, rv)
	}
	vm.Replicas = newMem
	for _, rv := range views {
		// Each view works on its own copy; syncViews writes them back.
		m := vm.Replicas[rv.id]
		rv.mem = &m
	}
	if v.Array != nil {
		mapMembers(v.Array.Members, views)
	}
	for _, rv := range views {
		if rv.member != nil {
			rv.mem.Member = rv.member.Device
		}
	}
	syncViews(vm, views)
	return views
}

// syncViews writes the views' memories back into the volume memory.
func syncViews(vm *VolumeMemory, views []*replicaView) {
	for _, rv := range views {
		vm.Replicas[rv.id] = *rv.mem
	}
}

func linkOf(cs []ControllerObservation) link {
	l := linkGone
	for _, c := range cs {
		switch c.State {
		case host.StateLive:
			return linkLive
		case host.StateNew, host.StateResetting, host.StateConnecting:
			l = linkReconnecting
		}
	}
	return l
}

// normalizeID reduces a UUID or NGUID to lower-case hex digits.
func normalizeID(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "uuid."), "eui.")
	return strings.ReplaceAll(s, "-", "")
}

// mapMembers attaches md members to replicas: by the namespace identity the
// device reports, then (for members whose device is gone) by the device
// name remembered for the replica, then, when exactly one member and one
// replica remain unexplained and the replica has no live controller, to
// each other.
func mapMembers(members []MemberObservation, views []*replicaView) {
	var unmatched []int
	for i := range members {
		m := &members[i]
		matched := false
		for _, id := range m.Identities {
			want := normalizeID(id)
			if want == "" {
				continue
			}
			for _, rv := range views {
				if rv.member == nil && normalizeID(rv.nsUUID) == want {
					rv.member, matched = m, true
					break
				}
			}
			if matched {
				break
			}
		}
		if !matched && len(m.Identities) == 0 {
			unmatched = append(unmatched, i)
		}
	}
	var still []int
	for _, i := range unmatched {
		m := &members[i]
		matched := false
		for _, rv := range views {
			if rv.member == nil && rv.mem.Member == m.Device {
				rv.member, matched = m, true
				break
			}
		}
		if !matched {
			still = append(still, i)
		}
	}
	if len(still) != 1 {
		return
	}
	var cand []*replicaView
	for _, rv := range views {
		if rv.member == nil && rv.active() && rv.link != linkLive {
			cand = append(cand, rv)
		}
	}
	if len(cand) == 1 {
		cand[0].member = &members[still[0]]
	}
}

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
		if !rv.active() {
			continue
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

	// A lost leg md still counts in sync: fail it (local, no provisioner
	// needed, never the last serving member).
	for _, rv := range d.views {
		if d.cfg.FailGoneMembers && rv.member != nil && rv.member.InSync && !rv.member.Faulty &&
			rv.link == linkGone && servesElsewhere(rv) {
			act(ActFail, rv, nil)
		}
	}

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
		act(ActRetire, rv, func(x *Action) {
			x.Mark = deleted
			if deleted {
				x.Slots = d.activeCount()
			}
		})
	}

	if !fresh {
		return // joins and replacements wait for the provisioner
	}
	activeCount := d.activeCount()
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
		if rv.link == linkLive {
			if due(rv) {
				act(ActJoin, rv, nil)
			}
			continue
		}
		overdue := maxDown > 0 && d.now.Sub(rv.mem.DownSince) >= maxDown
		if overdue && activeCount < 4 && servesElsewhere(rv) && replacingHere == 0 &&
			*d.replacing < d.cfg.MaxConcurrentReplacements && !d.now.Before(rv.mem.NextReplace) {
			act(ActReplace, rv, nil)
			*d.replacing++
			replacingHere++
			continue
		}
		if rv.link == linkGone && len(rv.endpoints) > 0 && due(rv) {
			// The kernel gave up on it: try to connect again (paced).
			act(ActJoin, rv, func(x *Action) { x.Connect = true })
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

func (d *volumeDecision) activeCount() int {
	n := 0
	for _, rv := range d.views {
		if rv.active() {
			n++
		}
	}
	return n
}

func hasController(cs []ControllerObservation) bool {
	for _, c := range cs {
		if c.State != host.StateDeleting && c.State != host.StateDeletingNoIO && c.State != host.StateDead {
			return true
		}
	}
	return false
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

type hostReplica struct {
	storageNode, id string
	live            bool
}

// decideHosts turns the connections to each storage node into Host events:
// the connection is down when none of the expected replicas on that node has
// a live controller. A storage node no replica is expected on any more is
// forgotten.
func decideHosts(rs []hostReplica, prev, next map[string]HostMemory, node string, now time.Time) (down, up []events.Event) {
	byNode := map[string][]hostReplica{}
	for _, r := range rs {
		byNode[r.storageNode] = append(byNode[r.storageNode], r)
	}
	names := make([]string, 0, len(byNode))
	for n := range byNode {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		live := false
		var ids []string
		for _, r := range byNode[n] {
			live = live || r.live
			ids = append(ids, r.id)
		}
		sort.Strings(ids)
		h, known := prev[n]
		switch {
		case !live && (!known || !h.Down):
			h = HostMemory{Down: true, Since: now}
			down = append(down, events.Event{Time: now.UTC(), Type: events.HostDisconnected, Node: node, StorageNode: n,
				Replicas: ids, Message: fmt.Sprintf("Host %s lost its NVMe-oF connections to storage node %s (replicas %s)", node, n, strings.Join(ids, ", "))})
		case live && known && h.Down:
			up = append(up, events.Event{Time: now.UTC(), Type: events.HostReconnected, Node: node, StorageNode: n,
				Replicas: ids, Message: fmt.Sprintf("Host %s reconnected to storage node %s after %s", node, n, now.Sub(h.Since).Round(time.Second))})
			h = HostMemory{Down: false, Since: now}
		case !known:
			h = HostMemory{Since: now}
		}
		next[n] = h
	}
	return down, up
}

// EventID is an event's unique, deterministic ID: a hash of its type,
// volume, node, storage nodes, replicas and time (not of its ID, nor of its
// message except for Session events, whose message names the controller and
// target: a replica connected through two controllers has two sessions that
// open and close in the same cycle). The same transition always yields the
// same ID, so the provisioner stores a resent event once.
func EventID(e events.Event) string {
	h := sha256.New()
	reps := slices.Clone(e.Replicas)
	sort.Strings(reps)
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00%s\x00%d", e.Type, e.Volume, e.Node, e.StorageNode, e.Replica,
		strings.Join(reps, ","), e.Time.UnixNano())
	if e.Type == events.SessionEstablished || e.Type == events.SessionClosed {
		fmt.Fprintf(h, "\x00%s", e.Message)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// StorageNodes splits an event's StorageNode field: events naming replicas
// on several storage nodes list them comma-separated.
func StorageNodes(e events.Event) []string {
	if e.StorageNode == "" {
		return nil
	}
	return strings.Split(e.StorageNode, ",")
}

func viewIDs(vs []*replicaView) []string {
	ids := make([]string, 0, len(vs))
	for _, v := range vs {
		ids = append(ids, v.id)
	}
	sort.Strings(ids)
	return ids
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

// RecordOutcomes folds what acting did into memory: a replica joined starts
// its sync report, a failed attempt backs off, a replacement is remembered
// so the old replica never rejoins and the new one counts against the
// bound, a completed deletion is not repeated. Pure, like Decide.
func RecordOutcomes(mem Memory, outs []Outcome, cfg Config, now time.Time) Memory {
	next := Memory{Version: MemoryVersion, Volumes: make(map[string]VolumeMemory, len(mem.Volumes)), Hosts: make(map[string]HostMemory, len(mem.Hosts))}
	for k, v := range mem.Hosts {
		next.Hosts[k] = v
	}
	for k, v := range mem.Volumes {
		next.Volumes[k] = cloneVolumeMemory(v)
	}
	for _, o := range outs {
		vm, ok := next.Volumes[o.Action.VolumeID]
		if !ok {
			continue
		}
		id := o.Action.Replica.ID
		rm := vm.Replicas[id]
		switch o.Action.Kind {
		case ActJoin:
			if o.Err == nil && o.Joined {
				rm.JoinedAt, rm.Attempts, rm.NextAttempt = now, 0, time.Time{}
			} else if o.Err != nil {
				rm.Attempts++
				rm.NextAttempt = now.Add(backoff(cfg, rm.Attempts))
			}
		case ActRetire:
			if o.Err == nil {
				rm.Attempts, rm.NextAttempt = 0, time.Time{}
				if o.Action.Mark {
					rm.Removed = true
				}
			} else {
				rm.Attempts++
				rm.NextAttempt = now.Add(backoff(cfg, rm.Attempts))
			}
		case ActReplace:
			if o.NewReplica != nil {
				rm.ReplacedBy = o.NewReplica.ID
				nm := vm.Replicas[o.NewReplica.ID]
				nm.StorageNode = o.NewReplica.StorageNode
				nm.LastState = volume.ReplicaActive
				if o.Joined {
					nm.JoinedAt = now
				}
				vm.Replicas[o.NewReplica.ID] = nm
				vm.Replacements = append(vm.Replacements, Replacement{Missing: id, New: o.NewReplica.ID, Started: now})
			} else if o.Err != nil {
				rm.NextReplace = now.Add(cfg.ReplaceRetry)
			}
		}
		vm.Replicas[id] = rm
		next.Volumes[o.Action.VolumeID] = vm
	}
	return next
}

func backoff(cfg Config, attempts int) time.Duration {
	d := cfg.RetryBase
	for i := 1; i < attempts && d < cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, cfg.RetryMax)
}
