package agentclient

import (
	"context"
	"errors"
	"io"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
)

func heldSnapshot(s *agentapi.Snapshot) provisioner.HeldSnapshot {
	return provisioner.HeldSnapshot{ID: s.GetSnapshotId(), SizeBytes: s.GetSizeBytes(), AllocatedBytes: s.GetAllocatedBytes(),
		SourceReplicaID: s.GetSourceReplicaId(), VolumeID: s.GetVolumeId(), Reflinked: s.GetReflinked()}
}

func superblock(sb *agentapi.Superblock) provisioner.Superblock {
	out := provisioner.Superblock{Present: sb.GetPresent(), ArrayUUID: sb.GetArrayUuid(), Events: sb.GetEvents(),
		DevNumber: sb.GetDevNumber(), Recovering: sb.GetRecovering(), Clean: sb.GetClean()}
	for _, r := range sb.GetDevRoles() {
		out.DevRoles = append(out.DevRoles, uint16(r))
	}
	return out
}

func (c *Client) CreateSnapshot(ctx context.Context, snapshotID, replicaID string) (provisioner.HeldSnapshot, provisioner.Superblock, error) {
	resp, err := c.c.CreateSnapshot(ctx, &agentapi.CreateSnapshotRequest{SnapshotId: snapshotID, ReplicaId: replicaID})
	if err != nil {
		return provisioner.HeldSnapshot{}, provisioner.Superblock{}, mapErr(err)
	}
	return heldSnapshot(resp.GetSnapshot()), superblock(resp.GetSuperblock()), nil
}

func (c *Client) DeleteSnapshot(ctx context.Context, snapshotID string) error {
	_, err := c.c.DeleteSnapshot(ctx, &agentapi.DeleteSnapshotRequest{SnapshotId: snapshotID})
	return mapErr(err)
}

func (c *Client) GetSnapshot(ctx context.Context, snapshotID string) (provisioner.HeldSnapshot, error) {
	resp, err := c.c.GetSnapshot(ctx, &agentapi.GetSnapshotRequest{SnapshotId: snapshotID})
	if err != nil {
		return provisioner.HeldSnapshot{}, mapErr(err)
	}
	return heldSnapshot(resp.GetSnapshot()), nil
}

func (c *Client) ListSnapshots(ctx context.Context) ([]provisioner.HeldSnapshot, error) {
	resp, err := c.c.ListSnapshots(ctx, &agentapi.ListSnapshotsRequest{})
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]provisioner.HeldSnapshot, 0, len(resp.GetSnapshots()))
	for _, s := range resp.GetSnapshots() {
		out = append(out, heldSnapshot(s))
	}
	return out, nil
}

func (c *Client) ReadSuperblock(ctx context.Context, replicaID string) (provisioner.Superblock, error) {
	resp, err := c.c.ReadSuperblock(ctx, &agentapi.ReadSuperblockRequest{ReplicaId: replicaID})
	if err != nil {
		return provisioner.Superblock{}, mapErr(err)
	}
	return superblock(resp.GetSuperblock()), nil
}

func (c *Client) ReadData(ctx context.Context, src provisioner.DataRef, offset, length int64, fn func(int64, []byte) error) error {
	req := &agentapi.ReadDataRequest{Offset: offset, Length: length}
	if src.SnapshotID != "" {
		req.Source = &agentapi.ReadDataRequest_SnapshotId{SnapshotId: src.SnapshotID}
	} else {
		req.Source = &agentapi.ReadDataRequest_ReplicaId{ReplicaId: src.ReplicaID}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if fn fails
	stream, err := c.c.ReadData(ctx, req)
	if err != nil {
		return mapErr(err)
	}
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return mapErr(err)
		}
		if err := fn(chunk.GetOffset(), chunk.GetData()); err != nil {
			return err
		}
	}
}

func (c *Client) WriteData(ctx context.Context, dst provisioner.DataRef, produce func(send func(int64, []byte) error) error) (provisioner.HeldSnapshot, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // a failed producer abandons the stream: nothing is committed
	stream, err := c.c.WriteData(ctx)
	if err != nil {
		return provisioner.HeldSnapshot{}, mapErr(err)
	}
	h := &agentapi.WriteDataHeader{SizeBytes: dst.SizeBytes, VolumeId: dst.VolumeID}
	if dst.SnapshotID != "" {
		h.Target = &agentapi.WriteDataHeader_SnapshotId{SnapshotId: dst.SnapshotID}
	} else {
		h.Target = &agentapi.WriteDataHeader_ReplicaId{ReplicaId: dst.ReplicaID}
	}
	send := func(m *agentapi.WriteDataRequest) error {
		if err := stream.Send(m); err != nil {
			// The agent ended the stream: its status says why.
			if _, rerr := stream.CloseAndRecv(); rerr != nil {
				return mapErr(rerr)
			}
			return mapErr(err)
		}
		return nil
	}
	if err := send(&agentapi.WriteDataRequest{Message: &agentapi.WriteDataRequest_Header{Header: h}}); err != nil {
		return provisioner.HeldSnapshot{}, err
	}
	err = produce(func(offset int64, data []byte) error {
		return send(&agentapi.WriteDataRequest{Message: &agentapi.WriteDataRequest_Chunk{Chunk: &agentapi.DataChunk{Offset: offset, Data: data}}})
	})
	if err != nil {
		return provisioner.HeldSnapshot{}, err
	}
	if err := send(&agentapi.WriteDataRequest{Message: &agentapi.WriteDataRequest_Commit{Commit: true}}); err != nil {
		return provisioner.HeldSnapshot{}, err
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return provisioner.HeldSnapshot{}, mapErr(err)
	}
	return heldSnapshot(resp.GetSnapshot()), nil
}

func (c *Client) SnapshotRanges(ctx context.Context, snapshotID, base string, offset, length int64, max int) ([]provisioner.ByteRange, int64, error) {
	resp, err := c.c.SnapshotRanges(ctx, &agentapi.SnapshotRangesRequest{SnapshotId: snapshotID, BaseSnapshotId: base, Offset: offset, Length: length, MaxRanges: int32(max)})
	if err != nil {
		return nil, 0, mapErr(err)
	}
	out := make([]provisioner.ByteRange, 0, len(resp.GetRanges()))
	for _, r := range resp.GetRanges() {
		out = append(out, provisioner.ByteRange{Offset: r.GetOffset(), Length: r.GetLength()})
	}
	return out, resp.GetNextOffset(), nil
}
