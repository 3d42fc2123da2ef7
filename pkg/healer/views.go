package healer

import (
	"sort"
	"strings"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

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
	// recordedInSync: the provisioner's record says the replica holds
	// every write (false when it says otherwise or has no record of it).
	recordedInSync bool
	// diverged: the provisioner's record says a promotion gave the replica
	// up; it is never connected or joined again, only replaced.
	diverged bool
	// moveTarget: the new replica of a live move; the replica it moves
	// serves until it is in sync, so it is never counted missing.
	moveTarget bool
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

// inSyncMember: md holds the replica as an in-sync member, whatever its
// link: md fails it (and it starts missing writes) only on an error.
func (r *replicaView) inSyncMember() bool {
	return r.member != nil && r.member.InSync && !r.member.Faulty
}

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
			rv.recordedInSync, rv.diverged, rv.moveTarget = r.InSync(), r.Diverged(), r.Move
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

func hasController(cs []ControllerObservation) bool {
	for _, c := range cs {
		if c.State != host.StateDeleting && c.State != host.StateDeletingNoIO && c.State != host.StateDead {
			return true
		}
	}
	return false
}

func viewIDs(vs []*replicaView) []string {
	ids := make([]string, 0, len(vs))
	for _, v := range vs {
		ids = append(ids, v.id)
	}
	sort.Strings(ids)
	return ids
}
