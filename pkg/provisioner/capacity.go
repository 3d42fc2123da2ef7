package provisioner

import (
	"context"
	"slices"
	"sort"
	"time"

	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/provisioner/placement"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// CapacityReport is what GetCapacity reports for a set of StorageClass
// parameters.
type CapacityReport struct {
	// AvailableBytes is the largest volume (whole MiB) placement could
	// create now: what CSI GetCapacity means by available capacity.
	AvailableBytes int64
	// TotalBytes is the pool size of the reachable storage nodes the
	// parameters' selectors allow (raw replica space, not volume space:
	// a volume of N replicas takes N times its size).
	TotalBytes int64
}

// GetCapacity surveys the storage nodes once and reports, for these
// parameters, the largest creatable volume and the total pool size.
func (s *Service) GetCapacity(ctx context.Context, parameters map[string]string) (CapacityReport, error) {
	p, err := storageclass.Parse(parameters)
	if err != nil {
		return CapacityReport{}, err
	}
	_, nodes, err := s.survey(ctx)
	if err != nil {
		return CapacityReport{}, err
	}
	c := CapacityReport{AvailableBytes: s.maxVolumeSize(nodes, p)}
	for _, n := range nodes {
		if n.Healthy && !n.Cordoned && selected(p, n) {
			c.TotalBytes += n.TotalBytes
		}
	}
	return c, nil
}

// selected applies the placement selectors (zones, racks, storage nodes).
func selected(p storageclass.Parameters, n placement.Node) bool {
	in := func(list []string, v string) bool { return len(list) == 0 || slices.Contains(list, v) }
	return in(p.Zones, n.Zone) && in(p.Racks, n.Rack) && in(p.StorageNodes, n.ID)
}

// MaxVolumeSize returns GetCapacity's AvailableBytes.
func (s *Service) MaxVolumeSize(ctx context.Context, parameters map[string]string) (int64, error) {
	c, err := s.GetCapacity(ctx, parameters)
	return c.AvailableBytes, err
}

// maxVolumeSize is the largest volume (whole MiB) that placement could
// create on nodes with parameters p. Found by bisection over placement
// itself, so it is exact under the same rules (racks, selectors,
// overcommit) rather than a sum of free space no volume could use.
func (s *Service) maxVolumeSize(nodes []placement.Node, p storageclass.Parameters) int64 {
	fits := func(units int64) bool {
		_, err := placement.Choose(nodes, placement.Request{SizeBytes: units * layout.Alignment, Count: p.NumReplicas, Params: p, ThinOvercommit: s.o.ThinOvercommit})
		return err == nil
	}
	var hi int64
	for _, n := range nodes {
		hi = max(hi, n.AvailableBytes/layout.Alignment)
	}
	hi = min(hi, layout.MaxVolumeSize/layout.Alignment)
	lo := int64(0) // fits(lo) holds trivially for 0
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if fits(mid) {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo * layout.Alignment
}

// StorageNodeStatus is a registered storage node with what its agent
// reported just now.
type StorageNodeStatus struct {
	ID, Address, Zone, Rack                      string
	TotalBytes, AvailableBytes, ProvisionedBytes int64
	Replicas                                     int
	// Reachable: the agent answered the survey; Err says why not.
	Reachable bool
	Err       error
	LastSeen  time.Time
	Cordoned  bool
	Draining  bool
}

// ListStorageNodes surveys every registered storage node (in parallel,
// each bounded by AgentTimeout) and returns them sorted by ID.
func (s *Service) ListStorageNodes(ctx context.Context) ([]StorageNodeStatus, error) {
	surveyed, _, err := s.survey(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]StorageNodeStatus, 0, len(surveyed))
	for _, sn := range surveyed {
		out = append(out, statusOf(sn.record, sn.node, sn.err))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func statusOf(r *store.StorageNode, n placement.Node, err error) StorageNodeStatus {
	return StorageNodeStatus{
		ID: r.ID, Address: r.Address, Zone: n.Zone, Rack: n.Rack,
		TotalBytes: n.TotalBytes, AvailableBytes: n.AvailableBytes, ProvisionedBytes: n.ProvisionedBytes,
		Replicas: n.Replicas, Reachable: n.Healthy, Err: err, LastSeen: r.LastSeen, Cordoned: r.Cordoned, Draining: r.Draining,
	}
}
