package healer

import (
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
)

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
