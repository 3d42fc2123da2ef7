// Package placement chooses the storage nodes that hold a volume's replicas.
//
// Choose is a pure, deterministic function of the nodes' observed state and
// the request, so every rule can be tested with a table and two provisioner
// replicas given the same input agree.
//
// Rules, in order:
//   - Hard: a node holds at most one replica of a volume; nodes that already
//     hold one (Request.Existing, Request.Exclude) are never chosen.
//   - Hard: the node is healthy (agent reachable and ready), matches the
//     zone/rack/storage-node selectors, and has room (see Fits).
//   - Hard unless SameRackAllowed: no two replicas in one rack. With it, a
//     rack is reused only when no unused rack has an eligible node.
//   - Preference: maximise distinct zones, then distinct racks, counting the
//     racks and zones of the replicas the volume keeps (replacement).
//   - Tie-break: least used first (provisioned/total), then fewer replicas,
//     then node id, so the result never depends on input order.
//
// Greedy selection with that ordering is optimal for the distinct-zone and
// distinct-rack counts, because racks nest in zones: taking a node from an
// unused zone always also takes an unused rack, and each pick reduces the
// unused racks or zones by exactly one whichever node in them is taken.
//
// Failure domains: a rack is identified by (zone, rack) so that rack "r1" in
// two zones is two racks. A node without a rack label is its own rack: a
// cluster that labels nothing still spreads replicas across nodes without
// needing sameRackAllowed, and loses nothing it had declared.
package placement

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// ErrResourceExhausted is wrapped when not enough nodes qualify; the message
// says what was missing.
var ErrResourceExhausted = errors.New("resource exhausted")

// ErrInvalidRequest is wrapped for a malformed request (a programming error
// in the caller, not a capacity problem).
var ErrInvalidRequest = errors.New("invalid placement request")

// DefaultThinOvercommit is the thin overcommit ratio used when Request leaves
// it 0: 1.0, i.e. thin volumes never promise more than the pool holds. A full
// pool fails writes on that leg; if every leg of a mirror is overcommitted
// they all fail together, which is the one failure a mirror cannot absorb.
// Operators who accept that risk raise the ratio (provisioner flag).
const DefaultThinOvercommit = 1.0

// Node is a storage node as placement sees it.
type Node struct {
	ID   string
	Zone string
	Rack string
	// TotalBytes is the pool size; AvailableBytes its free space (statfs);
	// ProvisionedBytes the sum of its replicas' sizes, thin ones included.
	TotalBytes       int64
	AvailableBytes   int64
	ProvisionedBytes int64
	Replicas         int
	// Healthy: the agent answered recently and reports itself ready.
	Healthy bool
	// Cordoned: an admin keeps new replicas off the node.
	Cordoned bool
}

// Location is where an existing replica of the volume lives.
type Location struct {
	NodeID, Zone, Rack string
}

// Request describes what to place.
type Request struct {
	SizeBytes int64
	// Count is how many new replicas to place.
	Count  int
	Params storageclass.Parameters
	// Existing are the replicas the volume keeps; their nodes are excluded
	// and their zones and racks count as already used.
	Existing []Location
	// Exclude are further nodes never to use (e.g. the node of the replica
	// being replaced, which may come back and must not get a second copy).
	Exclude []string
	// ThinOvercommit is the allowed provisioned/total ratio for thin
	// volumes; 0 means DefaultThinOvercommit.
	ThinOvercommit float64
}

// Fits reports whether n has room for a replica of size bytes, and if not,
// why. Thick replicas are allocated at creation, so they need the space
// available now. Thin replicas need the space available too (the agent
// refuses a replica larger than its free space) and, in addition, must keep
// the node's provisioned total within TotalBytes × overcommit.
func Fits(n Node, size int64, typ storageclass.ProvisioningType, overcommit float64) (bool, string) {
	if n.AvailableBytes < size {
		return false, fmt.Sprintf("has only %s free", FormatBytes(n.AvailableBytes))
	}
	if typ == storageclass.Thin {
		if overcommit <= 0 {
			overcommit = DefaultThinOvercommit
		}
		limit := float64(n.TotalBytes) * overcommit
		if float64(n.ProvisionedBytes)+float64(size) > limit {
			return false, fmt.Sprintf("has %s provisioned of %s (overcommit %.2g)",
				FormatBytes(n.ProvisionedBytes), FormatBytes(int64(limit)), overcommit)
		}
	}
	return true, ""
}

// usage is the fraction of the pool promised to replicas.
func usage(n Node) float64 {
	if n.TotalBytes <= 0 {
		return 1
	}
	return float64(n.ProvisionedBytes) / float64(n.TotalBytes)
}

func rackKey(zone, rack, nodeID string) string {
	if rack == "" {
		return "\x00node/" + nodeID
	}
	return zone + "/" + rack
}

func rackName(zone, rack, nodeID string) string {
	if rack == "" {
		return "node " + nodeID
	}
	if zone == "" {
		return rack
	}
	return zone + "/" + rack
}

// Choose returns Count nodes for new replicas, in choice order, or an error
// wrapping ErrResourceExhausted that says what was missing.
func Choose(nodes []Node, req Request) ([]Node, error) {
	if req.Count <= 0 {
		return nil, fmt.Errorf("%w: count %d", ErrInvalidRequest, req.Count)
	}
	if req.SizeBytes <= 0 {
		return nil, fmt.Errorf("%w: size %d", ErrInvalidRequest, req.SizeBytes)
	}
	excluded := map[string]string{} // node id → reason
	usedZones := map[string]bool{}
	usedRacks := map[string]bool{}
	for _, e := range req.Existing {
		excluded[e.NodeID] = "already holds a replica of the volume"
		usedZones[e.Zone] = true
		usedRacks[rackKey(e.Zone, e.Rack, e.NodeID)] = true
	}
	for _, id := range req.Exclude {
		if _, ok := excluded[id]; !ok {
			excluded[id] = "excluded (held a replica of the volume)"
		}
	}
	inSet := func(list []string, v string) bool {
		if len(list) == 0 {
			return true
		}
		for _, x := range list {
			if x == v {
				return true
			}
		}
		return false
	}

	// Sort a copy by the tie-break order so that everything below, the
	// error message included, is independent of the input order.
	sorted := append([]Node(nil), nodes...)
	sort.Slice(sorted, func(i, j int) bool { return less(sorted[i], sorted[j]) })

	var eligible []Node
	var rejected []string
	seen := map[string]bool{}
	for _, n := range sorted {
		if seen[n.ID] {
			continue // a duplicate report of one node must not count twice
		}
		seen[n.ID] = true
		why := ""
		switch {
		case excluded[n.ID] != "":
			why = excluded[n.ID]
		case !n.Healthy:
			why = "is not healthy"
		case n.Cordoned:
			why = "is cordoned"
		case !inSet(req.Params.StorageNodes, n.ID):
			why = "is not in storageNodes"
		case !inSet(req.Params.Zones, n.Zone):
			why = fmt.Sprintf("zone %q is not in zones", n.Zone)
		case !inSet(req.Params.Racks, n.Rack):
			why = fmt.Sprintf("rack %q is not in racks", n.Rack)
		default:
			if ok, r := Fits(n, req.SizeBytes, req.Params.ProvisioningType, req.ThinOvercommit); !ok {
				why = r
			}
		}
		if why != "" {
			rejected = append(rejected, fmt.Sprintf("node %s %s", n.ID, why))
			continue
		}
		eligible = append(eligible, n)
	}

	var chosen []Node
	taken := map[string]bool{}
	for len(chosen) < req.Count {
		best := -1
		var bestZoneNew, bestRackNew bool
		for i, n := range eligible {
			if taken[n.ID] {
				continue
			}
			rk := rackKey(n.Zone, n.Rack, n.ID)
			zoneNew, rackNew := !usedZones[n.Zone], !usedRacks[rk]
			if !rackNew && !req.Params.SameRackAllowed {
				continue
			}
			// eligible is in tie-break order, so the first candidate of the
			// best (zoneNew, rackNew) class wins.
			if best < 0 || better(zoneNew, rackNew, bestZoneNew, bestRackNew) {
				best, bestZoneNew, bestRackNew = i, zoneNew, rackNew
			}
		}
		if best < 0 {
			return nil, exhausted(req, eligible, rejected, len(chosen))
		}
		n := eligible[best]
		taken[n.ID] = true
		usedZones[n.Zone] = true
		usedRacks[rackKey(n.Zone, n.Rack, n.ID)] = true
		chosen = append(chosen, n)
	}
	return chosen, nil
}

// better orders candidate classes: a new zone beats a new rack beats neither.
func better(zoneNew, rackNew, bestZoneNew, bestRackNew bool) bool {
	if zoneNew != bestZoneNew {
		return zoneNew
	}
	return rackNew && !bestRackNew
}

func less(a, b Node) bool {
	ua, ub := usage(a), usage(b)
	if ua != ub {
		return ua < ub
	}
	if a.Replicas != b.Replicas {
		return a.Replicas < b.Replicas
	}
	return a.ID < b.ID
}

// maxReasons bounds the per-node reasons in an error: the message ends up
// in a PVC event, where a thousand-node list helps nobody.
const maxReasons = 8

func exhausted(req Request, eligible []Node, rejected []string, placed int) error {
	var b strings.Builder
	need := req.Count
	fmt.Fprintf(&b, "need %d storage node", need)
	if need != 1 {
		b.WriteString("s")
	}
	if !req.Params.SameRackAllowed && (need > 1 || len(req.Existing) > 0) {
		b.WriteString(" in distinct racks")
	}
	if len(req.Existing) > 0 {
		fmt.Fprintf(&b, " (apart from the %d holding the volume)", len(req.Existing))
	}
	fmt.Fprintf(&b, " with %s free", FormatBytes(req.SizeBytes))
	fmt.Fprintf(&b, ", found %d", placed)

	racks := map[string]bool{}
	var rackNames []string
	for _, n := range eligible {
		k := rackKey(n.Zone, n.Rack, n.ID)
		if !racks[k] {
			racks[k] = true
			rackNames = append(rackNames, rackName(n.Zone, n.Rack, n.ID))
		}
	}
	sort.Strings(rackNames)
	switch {
	case len(eligible) == 0:
		b.WriteString(": no eligible node")
	case !req.Params.SameRackAllowed:
		fmt.Fprintf(&b, ": %d eligible node(s) in %d usable rack(s) (%s)", len(eligible), len(racks), strings.Join(rackNames, ", "))
		if len(req.Existing) > 0 {
			b.WriteString(", some already used by the volume")
		}
	default:
		fmt.Fprintf(&b, ": %d eligible node(s)", len(eligible))
	}
	if len(rejected) > 0 {
		b.WriteString("; ")
		shown := rejected
		if len(shown) > maxReasons {
			shown = shown[:maxReasons]
		}
		b.WriteString(strings.Join(shown, "; "))
		if len(rejected) > maxReasons {
			fmt.Fprintf(&b, "; and %d more", len(rejected)-maxReasons)
		}
	}
	if !req.Params.SameRackAllowed && len(eligible) > 0 {
		b.WriteString(" (sameRackAllowed=true would allow sharing racks)")
	}
	return fmt.Errorf("%w: %s", ErrResourceExhausted, b.String())
}

// FormatBytes renders a size in binary units for messages ("10 GiB",
// "1.5 TiB", "512 B").
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i := -1
	for (v >= unit || v <= -unit) && i < len(units)-1 {
		v /= unit
		i++
	}
	s := fmt.Sprintf("%.1f", v)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + units[i]
}
