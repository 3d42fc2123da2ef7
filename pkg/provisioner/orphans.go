package provisioner

import (
	"fmt"
	"sort"
	"time"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// Orphans: replicas a storage node holds that no volume of the registry
// owns. They come from agent calls that landed after the provisioner gave
// up on them (a CreateReplica that timed out on the provisioner's side and
// completed later, after the create was rolled back or the replacement
// undone) and from a registry restored from a backup. The rule of what
// may be reclaimed without an administrator is here, as a pure function of
// what the agents reported, the registry and what earlier scans saw; the
// scan (orphanscan.go) only gathers those and acts on the decision.

// OrphanClass says what the registry knows of an orphan, which decides
// whether it may be reclaimed automatically.
type OrphanClass string

const (
	// OrphanReleased: the registry once owned the replica and let go of
	// it (its volume was deleted, or the volume records it removed or
	// deleted and gone from its storage node). Reclaimed after the grace.
	OrphanReleased OrphanClass = "released"
	// OrphanUnknown: the registry has no record of the replica: after a
	// registry restored from a backup it may hold the only copy of a
	// volume created since. Reported; reclaimed only by an administrator.
	OrphanUnknown OrphanClass = "unknown"
	// OrphanConflict: the registry records a replica of that ID for
	// another volume or storage node. Reported, never reclaimed.
	OrphanConflict OrphanClass = "conflict"
)

// OrphanClasses lists every class (metrics export each, 0 included).
var OrphanClasses = []OrphanClass{OrphanReleased, OrphanUnknown, OrphanConflict}

// Orphan is a replica on a storage node that no volume owns.
type Orphan struct {
	StorageNode string
	ReplicaID   string
	// VolumeID is the volume the agent says the replica was created for.
	VolumeID  string
	SizeBytes int64
	Class     OrphanClass
	// Reason says why, in words, for the event and the listing.
	Reason string
	// FirstSeen is when this leader's scan first saw it orphaned; the
	// grace runs from there.
	FirstSeen time.Time
}

// orphanKey identifies an orphan: a replica on one storage node.
type orphanKey struct{ node, replica string }

func (o Orphan) key() orphanKey { return orphanKey{o.StorageNode, o.ReplicaID} }

// recordedReplica is what the registry says of one replica ID.
type recordedReplica struct {
	volumeID, storageNode string
	// released: the registry let go of it (see OrphanReleased); else the
	// registry still needs it (owned).
	released bool
	why      string
}

// registryIndex maps replica IDs to what the registry records of them.
type registryIndex map[string]recordedReplica

// indexRegistry builds the index from the volumes and the tombstones. A
// replica of a volume being created is owned whatever its state (the
// create may be placing it now); a replica still pending deletion is the
// sweeper's, so owned too.
func indexRegistry(vols []*store.Volume, tombs []*store.Tombstone) registryIndex {
	idx := registryIndex{}
	for _, t := range tombs {
		for _, r := range t.Replicas {
			idx[r.ID] = recordedReplica{volumeID: t.VolumeID, storageNode: r.StorageNode, released: true,
				why: fmt.Sprintf("volume %s (%s) was deleted at %s", t.VolumeID, t.Name, t.DeletedAt.UTC().Format(time.RFC3339))}
		}
	}
	for _, v := range vols {
		for _, r := range v.Replicas {
			rec := recordedReplica{volumeID: v.ID, storageNode: r.StorageNode}
			if v.State != store.VolumeCreating && !r.PendingDelete && (r.State == store.ReplicaRemoved || r.State == store.ReplicaDeleted) {
				rec.released = true
				rec.why = fmt.Sprintf("volume %s records the replica %s and deleted from its storage node", v.ID, r.State)
			}
			idx[r.ID] = rec // a live record wins over a tombstone
		}
	}
	return idx
}

// classify says whether the replica h held by node is owned, and if not,
// which kind of orphan it is and why.
func (idx registryIndex) classify(node string, h HeldReplica) (owned bool, class OrphanClass, why string) {
	rec, ok := idx[h.ID]
	switch {
	case !ok:
		return false, OrphanUnknown, fmt.Sprintf("the registry has no record of replica %s nor of a volume %s that had it; a registry restored from a backup older than the volume would not", h.ID, h.VolumeID)
	case rec.volumeID != h.VolumeID || rec.storageNode != node:
		return false, OrphanConflict, fmt.Sprintf("the registry records replica %s for volume %s on storage node %s, the agent reports it for volume %s on %s", h.ID, rec.volumeID, rec.storageNode, h.VolumeID, node)
	case !rec.released:
		return true, "", ""
	}
	return false, OrphanReleased, rec.why
}

// orphanScan is one scan's input to decideOrphans.
type orphanScan struct {
	// held: what each storage node that answered holds. A node absent from
	// it did not answer: nothing is decided about its replicas.
	held map[string][]HeldReplica
	// index of the registry, read after the agents answered: a replica
	// an agent listed was recorded before it was created (intent first),
	// so a create running meanwhile is in the index.
	index registryIndex
	// prev: the orphans known before this scan (with their first sight).
	prev  map[orphanKey]Orphan
	now   time.Time
	grace time.Duration
}

// orphanDecision is what a scan does.
type orphanDecision struct {
	// known: every orphan known after the scan, those of nodes that did
	// not answer carried over unchanged.
	known map[orphanKey]Orphan
	// found: orphans seen for the first time (an event each).
	found []Orphan
	// reclaim: released orphans whose grace has passed.
	reclaim []Orphan
}

// decideOrphans is the orphan rule:
//   - a replica the registry owns is no orphan;
//   - an orphan seen for the first time is only recorded, never
//     reclaimed at first sight; its grace starts then;
//   - a released orphan is reclaimed once seen orphaned for the grace;
//   - an unknown or conflicting one is reported, never reclaimed here;
//   - a node that did not answer keeps what earlier scans knew of it, and
//     nothing of it is reclaimed.
func decideOrphans(in orphanScan) orphanDecision {
	out := orphanDecision{known: map[orphanKey]Orphan{}}
	for k, o := range in.prev {
		if _, answered := in.held[k.node]; !answered {
			out.known[k] = o
		}
	}
	for node, held := range in.held {
		for _, h := range held {
			owned, class, why := in.index.classify(node, h)
			if owned {
				continue
			}
			o := Orphan{StorageNode: node, ReplicaID: h.ID, VolumeID: h.VolumeID, SizeBytes: h.SizeBytes, Class: class, Reason: why, FirstSeen: in.now}
			if p, ok := in.prev[o.key()]; ok && p.VolumeID == o.VolumeID {
				o.FirstSeen = p.FirstSeen
			} else {
				out.found = append(out.found, o)
			}
			out.known[o.key()] = o
			if class == OrphanReleased && in.now.Sub(o.FirstSeen) >= in.grace {
				out.reclaim = append(out.reclaim, o)
			}
		}
	}
	sortOrphans(out.found)
	sortOrphans(out.reclaim)
	return out
}

func sortOrphans(os []Orphan) {
	sort.Slice(os, func(i, j int) bool {
		if os[i].StorageNode != os[j].StorageNode {
			return os[i].StorageNode < os[j].StorageNode
		}
		return os[i].ReplicaID < os[j].ReplicaID
	})
}
