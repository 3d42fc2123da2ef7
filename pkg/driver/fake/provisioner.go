package fake

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// Provisioner is an in-memory volume registry. Replicas are exported on
// Fabric, and publishing admits the host there, so the fake initiator sees
// the same fence the kernel target enforces.
type Provisioner struct {
	mu       sync.Mutex
	fabric   *Fabric
	capacity int64 // bytes of replica space across all storage nodes
	used     int64
	vols     map[string]*volume.Volume
	byName   map[string]string
	nextID   int
	audits   []volume.AuditRecord
	// PingErr is returned by Ping.
	PingErr error
	// creds are GetHostCredentials' answers by host NQN.
	creds map[string][]volume.Credentials
	// Err, when set, is returned by every volume call (an unreachable
	// provisioner).
	Err         error
	syncReports []SyncReport
	// ReportSyncErr, when set, fails ReportReplicaSync only.
	ReportSyncErr error
	snapshots     snapshots
	// Ranges are what SnapshotRanges reports for any snapshot, ascending.
	Ranges []volume.ByteRange
}

// NewProvisioner returns a registry with capacity bytes of replica space.
func NewProvisioner(fabric *Fabric, capacity int64) *Provisioner {
	return &Provisioner{fabric: fabric, capacity: capacity, vols: map[string]*volume.Volume{}, byName: map[string]string{}}
}

func clone(v *volume.Volume) *volume.Volume {
	c := *v
	c.Parameters = maps.Clone(v.Parameters)
	c.Replicas = make([]volume.Replica, len(v.Replicas))
	for i, r := range v.Replicas {
		r.Endpoints = append([]volume.Endpoint(nil), r.Endpoints...)
		c.Replicas[i] = r
	}
	return &c
}

func randomUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (p *Provisioner) CreateVolume(_ context.Context, req volume.CreateVolumeRequest) (*volume.Volume, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return nil, p.Err
	}
	params, err := storageclass.Parse(req.Parameters)
	if err != nil {
		return nil, err
	}
	n := params.NumReplicas
	if id, ok := p.byName[req.Name]; ok {
		v := p.vols[id]
		if v.SizeBytes != req.SizeBytes || !maps.Equal(v.Parameters, req.Parameters) ||
			v.SourceSnapshotID != req.SourceSnapshotID || v.SourceVolumeID != req.SourceVolumeID {
			return nil, fmt.Errorf("volume %q exists with %d bytes, parameters %v and another source: %w", req.Name, v.SizeBytes, v.Parameters, volume.ErrAlreadyExists)
		}
		return clone(v), nil
	}
	if err := p.checkSource(req); err != nil {
		return nil, err
	}
	if p.used+req.SizeBytes*int64(n) > p.capacity {
		return nil, fmt.Errorf("%d replicas of %d bytes do not fit: %w", n, req.SizeBytes, volume.ErrResourceExhausted)
	}
	p.nextID++
	id := fmt.Sprintf("vol-%04d", p.nextID)
	v := &volume.Volume{ID: id, Name: req.Name, SizeBytes: req.SizeBytes, Parameters: maps.Clone(req.Parameters), Policy: params.Policy(),
		SourceSnapshotID: req.SourceSnapshotID, SourceVolumeID: req.SourceVolumeID}
	if v.Parameters == nil {
		v.Parameters = map[string]string{}
	}
	if n > 1 {
		v.MDUUID, v.MDName = randomUUID(), id
	}
	for i := range n {
		rid := fmt.Sprintf("%s-r%d", id, i)
		r := volume.Replica{
			ID:            rid,
			StorageNode:   fmt.Sprintf("sn%d", i+1),
			NQN:           "nqn.2024-01.io.nvmirror:replica:" + rid,
			NamespaceUUID: nvmeof.NamespaceUUID(rid),
			Endpoints:     []volume.Endpoint{{Address: fmt.Sprintf("127.0.0.%d", i+2), Port: "4420"}},
			State:         volume.ReplicaActive,
		}
		p.fabric.Export(r.NQN, r.NamespaceUUID, req.SizeBytes)
		v.Replicas = append(v.Replicas, r)
	}
	p.used += req.SizeBytes * int64(n)
	p.vols[id], p.byName[req.Name] = v, id
	return clone(v), nil
}

func (p *Provisioner) DeleteVolume(_ context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return p.Err
	}
	v, ok := p.vols[id]
	if !ok {
		return nil
	}
	if v.PublishedHost != "" {
		return fmt.Errorf("volume %s is published to %s: %w", id, v.PublishedNode, volume.ErrFailedPrecondition)
	}
	for _, r := range v.Replicas {
		p.fabric.Unexport(r.NQN)
	}
	p.used -= v.SizeBytes * int64(len(v.Replicas))
	delete(p.vols, id)
	delete(p.byName, v.Name)
	return nil
}

func (p *Provisioner) GetVolume(_ context.Context, id string) (*volume.Volume, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return nil, p.Err
	}
	v, ok := p.vols[id]
	if !ok {
		return nil, fmt.Errorf("volume %s: %w", id, volume.ErrNotFound)
	}
	return clone(v), nil
}

// ListVolumes pages by volume ID; the token is the hex of the last ID
// returned, so deleting that volume does not invalidate it.
func (p *Provisioner) ListVolumes(_ context.Context, startToken string, max int) ([]*volume.Volume, string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return nil, "", p.Err
	}
	after := ""
	if startToken != "" {
		b, err := hex.DecodeString(startToken)
		if err != nil || len(b) == 0 {
			return nil, "", fmt.Errorf("token %q: %w", startToken, volume.ErrInvalidArgument)
		}
		after = string(b)
	}
	ids := make([]string, 0, len(p.vols))
	for id := range p.vols {
		if id > after {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	next := ""
	if max > 0 && len(ids) > max {
		ids = ids[:max]
		next = hex.EncodeToString([]byte(ids[max-1]))
	}
	out := make([]*volume.Volume, 0, len(ids))
	for _, id := range ids {
		out = append(out, clone(p.vols[id]))
	}
	return out, next, nil
}

func (p *Provisioner) PublishVolume(_ context.Context, id, hostNQN, nodeID string) (*volume.Volume, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return nil, p.Err
	}
	v, ok := p.vols[id]
	if !ok {
		return nil, fmt.Errorf("volume %s: %w", id, volume.ErrNotFound)
	}
	if v.PublishedHost != "" && v.PublishedHost != hostNQN {
		return nil, fmt.Errorf("volume %s is published to %s: %w", id, v.PublishedNode, volume.ErrFailedPrecondition)
	}
	v.PublishedHost, v.PublishedNode = hostNQN, nodeID
	for _, r := range v.Replicas {
		p.fabric.Allow(r.NQN, hostNQN)
	}
	return clone(v), nil
}

func (p *Provisioner) UnpublishVolume(_ context.Context, id, hostNQN string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return p.Err
	}
	v, ok := p.vols[id]
	if !ok || v.PublishedHost == "" || (hostNQN != "" && v.PublishedHost != hostNQN) {
		return nil
	}
	for _, r := range v.Replicas {
		p.fabric.Allow(r.NQN, "")
	}
	v.PublishedHost, v.PublishedNode = "", ""
	return nil
}

func (p *Provisioner) ExpandVolume(_ context.Context, id string, size int64) (*volume.Volume, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return nil, p.Err
	}
	v, ok := p.vols[id]
	if !ok {
		return nil, fmt.Errorf("volume %s: %w", id, volume.ErrNotFound)
	}
	if size <= v.SizeBytes {
		return clone(v), nil
	}
	extra := (size - v.SizeBytes) * int64(len(v.Replicas))
	if p.used+extra > p.capacity {
		return nil, fmt.Errorf("growing %s to %d bytes: %w", id, size, volume.ErrResourceExhausted)
	}
	p.used += extra
	v.SizeBytes = size
	for _, r := range v.Replicas {
		p.fabric.Resize(r.NQN, size)
	}
	return clone(v), nil
}

func (p *Provisioner) ModifyVolume(_ context.Context, id string, mutable map[string]string) (*volume.Volume, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return nil, p.Err
	}
	v, ok := p.vols[id]
	if !ok {
		return nil, fmt.Errorf("volume %s: %w", id, volume.ErrNotFound)
	}
	params, err := storageclass.Parse(v.Parameters)
	if err != nil {
		return nil, err
	}
	if params, err = params.WithMutable(mutable); err != nil {
		return nil, err
	}
	maps.Copy(v.Parameters, mutable)
	v.Policy = params.Policy()
	return clone(v), nil
}

func (p *Provisioner) GetCapacity(_ context.Context, params map[string]string) (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return 0, p.Err
	}
	parsed, err := storageclass.Parse(params)
	if err != nil {
		return 0, err
	}
	return (p.capacity - p.used) / int64(parsed.NumReplicas), nil
}

// ReportReplicaSync follows the provisioner's rules (pkg/provisioner,
// ReportReplicaSync): only an active replica; out of sync keeps the
// earliest time and its events; in sync clears both, unless the report's
// md event count predates the failure; never the last in-sync active
// replica out of sync.
func (p *Provisioner) ReportReplicaSync(_ context.Context, volumeID, replicaID string, inSync bool, observedAt time.Time, arrayEvents uint64, nodeID string) (*volume.Volume, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return nil, p.Err
	}
	if p.ReportSyncErr != nil {
		return nil, p.ReportSyncErr
	}
	p.syncReports = append(p.syncReports, SyncReport{VolumeID: volumeID, ReplicaID: replicaID, InSync: inSync, NodeID: nodeID})
	if !inSync && observedAt.IsZero() {
		return nil, fmt.Errorf("observed_at is required when in_sync is false: %w", volume.ErrInvalidArgument)
	}
	v, ok := p.vols[volumeID]
	if !ok {
		return nil, fmt.Errorf("volume %s: %w", volumeID, volume.ErrNotFound)
	}
	i := slices.IndexFunc(v.Replicas, func(r volume.Replica) bool { return r.ID == replicaID })
	if i < 0 {
		return nil, fmt.Errorf("volume %s has no replica %s: %w", volumeID, replicaID, volume.ErrNotFound)
	}
	r := &v.Replicas[i]
	if r.State != volume.ReplicaActive {
		return nil, fmt.Errorf("replica %s of volume %s is %s, not active: %w", replicaID, volumeID, r.State, volume.ErrFailedPrecondition)
	}
	switch {
	case inSync:
		if r.InSync() || (arrayEvents != 0 && r.OutOfSyncAtEvents != 0 && arrayEvents < r.OutOfSyncAtEvents) {
			break
		}
		r.OutOfSyncSince, r.OutOfSyncAtEvents = time.Time{}, 0
	case r.InSync():
		others := slices.ContainsFunc(v.Replicas, func(o volume.Replica) bool {
			return o.ID != replicaID && o.State == volume.ReplicaActive && o.InSync()
		})
		if !others {
			return nil, fmt.Errorf("replica %s is the last in-sync active replica of volume %s (report from %q): %w", replicaID, volumeID, nodeID, volume.ErrFailedPrecondition)
		}
		r.OutOfSyncSince, r.OutOfSyncAtEvents = observedAt, arrayEvents
	case observedAt.Before(r.OutOfSyncSince):
		r.OutOfSyncSince, r.OutOfSyncAtEvents = observedAt, arrayEvents
	}
	return clone(v), nil
}

func (p *Provisioner) ReportAudit(_ context.Context, rec volume.AuditRecord) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.audits = append(p.audits, rec)
	return nil
}

func (p *Provisioner) Ping(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.PingErr
}

// Audits returns the audit records received so far.
func (p *Provisioner) Audits() []volume.AuditRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]volume.AuditRecord(nil), p.audits...)
}

// Update changes a volume in place (tests: replica states, degradation).
func (p *Provisioner) Update(id string, f func(v *volume.Volume)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v, ok := p.vols[id]; ok {
		f(v)
	}
}

// SetCredentials sets what GetHostCredentials returns for host.
func (p *Provisioner) SetCredentials(host string, creds []volume.Credentials) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.creds == nil {
		p.creds = map[string][]volume.Credentials{}
	}
	p.creds[host] = slices.Clone(creds)
}

// GetHostCredentials implements volume.Provisioner.
func (p *Provisioner) GetHostCredentials(_ context.Context, host string) ([]volume.Credentials, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return nil, p.Err
	}
	return slices.Clone(p.creds[host]), nil
}

var _ volume.Provisioner = (*Provisioner)(nil)

// SyncReport is one ReportReplicaSync call.
type SyncReport struct {
	VolumeID, ReplicaID, NodeID string
	InSync                      bool
}

// SyncReports returns the ReportReplicaSync calls so far.
func (p *Provisioner) SyncReports() []SyncReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.syncReports)
}
