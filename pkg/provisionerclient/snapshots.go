package provisionerclient

import (
	"context"

	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

func (c *Client) CreateSnapshot(ctx context.Context, name, sourceVolumeID string, params map[string]string) (*volume.Snapshot, error) {
	resp, err := c.api.CreateSnapshot(ctx, &provisionerapi.CreateSnapshotRequest{Name: name, SourceVolumeId: sourceVolumeID, Parameters: params})
	if err != nil {
		return nil, mapErr(err)
	}
	return SnapshotFromProto(resp), nil
}

func (c *Client) DeleteSnapshot(ctx context.Context, id string) error {
	_, err := c.api.DeleteSnapshot(ctx, &provisionerapi.DeleteSnapshotRequest{SnapshotId: id})
	return mapErr(err)
}

func (c *Client) GetSnapshot(ctx context.Context, id string) (*volume.Snapshot, error) {
	resp, err := c.api.GetSnapshot(ctx, &provisionerapi.GetSnapshotRequest{SnapshotId: id})
	if err != nil {
		return nil, mapErr(err)
	}
	return SnapshotFromProto(resp), nil
}

func (c *Client) ListSnapshots(ctx context.Context, snapshotID, sourceVolumeID, startToken string, max int) ([]*volume.Snapshot, string, error) {
	resp, err := c.api.ListSnapshots(ctx, &provisionerapi.ListSnapshotsRequest{SnapshotId: snapshotID, SourceVolumeId: sourceVolumeID,
		StartingToken: startToken, MaxEntries: int32(max)})
	if err != nil {
		return nil, "", mapErr(err)
	}
	out := make([]*volume.Snapshot, 0, len(resp.GetSnapshots()))
	for _, s := range resp.GetSnapshots() {
		out = append(out, SnapshotFromProto(s))
	}
	return out, resp.GetNextToken(), nil
}

func (c *Client) CreateSnapshotGroup(ctx context.Context, name string, volumeIDs []string, params map[string]string) (*volume.SnapshotGroup, error) {
	resp, err := c.api.CreateSnapshotGroup(ctx, &provisionerapi.CreateSnapshotGroupRequest{Name: name, SourceVolumeIds: volumeIDs, Parameters: params})
	if err != nil {
		return nil, mapErr(err)
	}
	return groupFromProto(resp), nil
}

func (c *Client) DeleteSnapshotGroup(ctx context.Context, id string) error {
	_, err := c.api.DeleteSnapshotGroup(ctx, &provisionerapi.DeleteSnapshotGroupRequest{GroupId: id})
	return mapErr(err)
}

func (c *Client) GetSnapshotGroup(ctx context.Context, id string) (*volume.SnapshotGroup, error) {
	resp, err := c.api.GetSnapshotGroup(ctx, &provisionerapi.GetSnapshotGroupRequest{GroupId: id})
	if err != nil {
		return nil, mapErr(err)
	}
	return groupFromProto(resp), nil
}

func (c *Client) SnapshotRanges(ctx context.Context, snapshotID, base string, start int64, max int) ([]volume.ByteRange, int64, int64, error) {
	resp, err := c.api.GetSnapshotRanges(ctx, &provisionerapi.GetSnapshotRangesRequest{SnapshotId: snapshotID, BaseSnapshotId: base, StartingOffset: start, MaxResults: int32(max)})
	if err != nil {
		return nil, 0, 0, mapErr(err)
	}
	out := make([]volume.ByteRange, 0, len(resp.GetRanges()))
	for _, r := range resp.GetRanges() {
		out = append(out, volume.ByteRange{Offset: r.GetOffset(), Length: r.GetLength()})
	}
	return out, resp.GetVolumeSizeBytes(), resp.GetNextOffset(), nil
}

// SnapshotFromProto converts the wire form.
func SnapshotFromProto(p *provisionerapi.Snapshot) *volume.Snapshot {
	s := &volume.Snapshot{ID: p.GetId(), Name: p.GetName(), SourceVolumeID: p.GetSourceVolumeId(), SizeBytes: p.GetSizeBytes(),
		ReadyToUse: p.GetReadyToUse(), GroupID: p.GetGroupId()}
	if p.GetCreated() != nil {
		s.CreatedAt = p.GetCreated().AsTime()
	}
	for _, c := range p.GetCopies() {
		if c.GetState() == "ready" {
			s.Copies = append(s.Copies, c.GetStorageNode())
		}
	}
	return s
}

func groupFromProto(p *provisionerapi.SnapshotGroup) *volume.SnapshotGroup {
	g := &volume.SnapshotGroup{ID: p.GetId(), Name: p.GetName(), ReadyToUse: p.GetReadyToUse(), MemberIDs: p.GetMemberSnapshotIds()}
	if p.GetCreated() != nil {
		g.CreatedAt = p.GetCreated().AsTime()
	}
	for _, s := range p.GetSnapshots() {
		g.Snapshots = append(g.Snapshots, SnapshotFromProto(s))
	}
	return g
}
