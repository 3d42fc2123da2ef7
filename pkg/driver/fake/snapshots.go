package fake

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/nvmirror/nvmirror/pkg/volume"
)

// snapshots are the fake registry's snapshots and groups (no data: the
// fake's volumes hold none either).
type snapshots struct {
	byID   map[string]*volume.Snapshot
	byName map[string]string
	groups map[string]*volume.SnapshotGroup
	gnames map[string]string
	next   int
}

func (s *snapshots) init() {
	if s.byID == nil {
		s.byID, s.byName = map[string]*volume.Snapshot{}, map[string]string{}
		s.groups, s.gnames = map[string]*volume.SnapshotGroup{}, map[string]string{}
	}
}

func cloneSnapshot(s *volume.Snapshot) *volume.Snapshot {
	c := *s
	c.Copies = slices.Clone(s.Copies)
	return &c
}

// checkSource refuses a volume content source the registry cannot serve.
// Called with p.mu held.
func (p *Provisioner) checkSource(req volume.CreateVolumeRequest) error {
	p.snapshots.init()
	switch {
	case req.SourceSnapshotID != "" && req.SourceVolumeID != "":
		return fmt.Errorf("%w: volume_content_source: a snapshot or a volume, not both", volume.ErrInvalidArgument)
	case req.SourceSnapshotID != "":
		snap, ok := p.snapshots.byID[req.SourceSnapshotID]
		if !ok {
			return fmt.Errorf("source snapshot %s: %w", req.SourceSnapshotID, volume.ErrNotFound)
		}
		if req.SizeBytes < snap.SizeBytes {
			return fmt.Errorf("%w: capacity_range: %d bytes is smaller than snapshot %s (%d bytes)", volume.ErrOutOfRange, req.SizeBytes, snap.ID, snap.SizeBytes)
		}
	case req.SourceVolumeID != "":
		src, ok := p.vols[req.SourceVolumeID]
		if !ok {
			return fmt.Errorf("source volume %s: %w", req.SourceVolumeID, volume.ErrNotFound)
		}
		if req.SizeBytes < src.SizeBytes {
			return fmt.Errorf("%w: capacity_range: %d bytes is smaller than volume %s (%d bytes)", volume.ErrOutOfRange, req.SizeBytes, src.ID, src.SizeBytes)
		}
	}
	return nil
}

func (p *Provisioner) newSnapshot(name string, v *volume.Volume, group string) *volume.Snapshot {
	p.snapshots.next++
	snap := &volume.Snapshot{ID: fmt.Sprintf("snap-%04d", p.snapshots.next), Name: name, SourceVolumeID: v.ID, SizeBytes: v.SizeBytes,
		CreatedAt: time.Now().UTC(), ReadyToUse: true, GroupID: group}
	for _, r := range v.Replicas {
		snap.Copies = append(snap.Copies, r.StorageNode)
	}
	p.snapshots.byID[snap.ID], p.snapshots.byName[name] = snap, snap.ID
	return snap
}

func (p *Provisioner) CreateSnapshot(_ context.Context, name, sourceVolumeID string, _ map[string]string) (*volume.Snapshot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return nil, p.Err
	}
	p.snapshots.init()
	if id, ok := p.snapshots.byName[name]; ok {
		snap := p.snapshots.byID[id]
		if snap.SourceVolumeID != sourceVolumeID {
			return nil, fmt.Errorf("snapshot %s exists of volume %s: %w", name, snap.SourceVolumeID, volume.ErrAlreadyExists)
		}
		return cloneSnapshot(snap), nil
	}
	v, ok := p.vols[sourceVolumeID]
	if !ok {
		return nil, fmt.Errorf("source volume %s: %w", sourceVolumeID, volume.ErrNotFound)
	}
	return cloneSnapshot(p.newSnapshot(name, v, "")), nil
}

func (p *Provisioner) DeleteSnapshot(_ context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return p.Err
	}
	p.snapshots.init()
	if snap, ok := p.snapshots.byID[id]; ok {
		delete(p.snapshots.byName, snap.Name)
		delete(p.snapshots.byID, id)
	}
	return nil
}

func (p *Provisioner) GetSnapshot(_ context.Context, id string) (*volume.Snapshot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return nil, p.Err
	}
	p.snapshots.init()
	snap, ok := p.snapshots.byID[id]
	if !ok {
		return nil, fmt.Errorf("snapshot %s: %w", id, volume.ErrNotFound)
	}
	return cloneSnapshot(snap), nil
}

func (p *Provisioner) ListSnapshots(_ context.Context, snapshotID, sourceVolumeID, startToken string, max int) ([]*volume.Snapshot, string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return nil, "", p.Err
	}
	p.snapshots.init()
	var all []*volume.Snapshot
	for _, snap := range p.snapshots.byID {
		if (snapshotID == "" || snap.ID == snapshotID) && (sourceVolumeID == "" || snap.SourceVolumeID == sourceVolumeID) {
			all = append(all, snap)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	start := 0
	if startToken != "" {
		n, err := strconv.Atoi(startToken)
		if err != nil || n < 0 || n > len(all) {
			return nil, "", fmt.Errorf("token %q: %w", startToken, volume.ErrInvalidArgument)
		}
		start = n
	}
	end := len(all)
	if max > 0 && start+max < end {
		end = start + max
	}
	out := make([]*volume.Snapshot, 0, end-start)
	for _, snap := range all[start:end] {
		out = append(out, cloneSnapshot(snap))
	}
	next := ""
	if end < len(all) {
		next = strconv.Itoa(end)
	}
	return out, next, nil
}

func (p *Provisioner) CreateSnapshotGroup(_ context.Context, name string, volumeIDs []string, _ map[string]string) (*volume.SnapshotGroup, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return nil, p.Err
	}
	p.snapshots.init()
	ids := slices.Sorted(slices.Values(volumeIDs))
	if id, ok := p.snapshots.gnames[name]; ok {
		g := p.snapshots.groups[id]
		var have []string
		for _, snap := range g.Snapshots {
			have = append(have, snap.SourceVolumeID)
		}
		if !slices.Equal(slices.Sorted(slices.Values(have)), ids) {
			return nil, fmt.Errorf("group snapshot %s exists of other volumes: %w", name, volume.ErrAlreadyExists)
		}
		return p.groupCopy(g), nil
	}
	p.snapshots.next++
	g := &volume.SnapshotGroup{ID: fmt.Sprintf("group-%04d", p.snapshots.next), Name: name, CreatedAt: time.Now().UTC(), ReadyToUse: true}
	for _, id := range ids {
		v, ok := p.vols[id]
		if !ok {
			return nil, fmt.Errorf("source volume %s: %w", id, volume.ErrNotFound)
		}
		g.Snapshots = append(g.Snapshots, p.newSnapshot(name+"-"+id, v, g.ID))
		g.MemberIDs = append(g.MemberIDs, g.Snapshots[len(g.Snapshots)-1].ID)
	}
	p.snapshots.groups[g.ID], p.snapshots.gnames[name] = g, g.ID
	return p.groupCopy(g), nil
}

func (p *Provisioner) groupCopy(g *volume.SnapshotGroup) *volume.SnapshotGroup {
	c := *g
	c.MemberIDs = slices.Clone(g.MemberIDs)
	c.Snapshots = nil
	for _, snap := range g.Snapshots {
		if cur, ok := p.snapshots.byID[snap.ID]; ok {
			c.Snapshots = append(c.Snapshots, cloneSnapshot(cur))
		}
	}
	return &c
}

func (p *Provisioner) DeleteSnapshotGroup(_ context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return p.Err
	}
	p.snapshots.init()
	g, ok := p.snapshots.groups[id]
	if !ok {
		return nil
	}
	for _, snap := range g.Snapshots {
		delete(p.snapshots.byName, snap.Name)
		delete(p.snapshots.byID, snap.ID)
	}
	delete(p.snapshots.gnames, g.Name)
	delete(p.snapshots.groups, id)
	return nil
}

func (p *Provisioner) GetSnapshotGroup(_ context.Context, id string) (*volume.SnapshotGroup, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return nil, p.Err
	}
	p.snapshots.init()
	g, ok := p.snapshots.groups[id]
	if !ok {
		return nil, fmt.Errorf("group snapshot %s: %w", id, volume.ErrNotFound)
	}
	return p.groupCopy(g), nil
}

// SnapshotRanges answers from p.Ranges when set (a test's ranges of the
// snapshot's volume), else with nothing allocated: the fake holds no data.
// Pages are max ranges long, like the provisioner's.
func (p *Provisioner) SnapshotRanges(_ context.Context, snapshotID, base string, start int64, max int) ([]volume.ByteRange, int64, int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return nil, 0, 0, p.Err
	}
	p.snapshots.init()
	snap, ok := p.snapshots.byID[snapshotID]
	if !ok {
		return nil, 0, 0, fmt.Errorf("snapshot %s: %w", snapshotID, volume.ErrNotFound)
	}
	if base != "" {
		if _, ok := p.snapshots.byID[base]; !ok {
			return nil, 0, 0, fmt.Errorf("snapshot %s: %w", base, volume.ErrNotFound)
		}
	}
	var out []volume.ByteRange
	for i, r := range p.Ranges {
		if r.Offset+r.Length <= start {
			continue
		}
		if max > 0 && len(out) == max {
			return out, snap.SizeBytes, p.Ranges[i].Offset, nil
		}
		out = append(out, r)
	}
	return out, snap.SizeBytes, 0, nil
}
