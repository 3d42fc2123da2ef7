package agent

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/mdraid/superblock"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
)

func snapshotToProto(sn *Snapshot) *agentapi.Snapshot {
	if sn == nil {
		return nil
	}
	return &agentapi.Snapshot{
		SnapshotId:       sn.ID,
		SizeBytes:        sn.SizeBytes,
		AllocatedBytes:   sn.AllocatedBytes,
		SourceReplicaId:  sn.SourceReplicaID,
		VolumeId:         sn.VolumeID,
		Reflinked:        sn.Reflinked,
		CreatedUnixNanos: sn.Created.UnixNano(),
	}
}

func superblockToProto(sb *superblock.Superblock) *agentapi.Superblock {
	if sb == nil {
		return &agentapi.Superblock{}
	}
	roles := make([]uint32, len(sb.DevRoles))
	for i, r := range sb.DevRoles {
		roles[i] = uint32(r)
	}
	return &agentapi.Superblock{
		Present:               true,
		ArrayUuid:             sb.ArrayUUID,
		Events:                sb.Events,
		DevNumber:             sb.DevNumber,
		DevRoles:              roles,
		DataOffsetSectors:     sb.DataOffsetSectors,
		Recovering:            sb.Recovering(),
		RecoveryOffsetSectors: sb.RecoveryOffsetSectors,
		Clean:                 sb.Clean(),
	}
}

func sourceFromProto(src *agentapi.SnapshotSource) *SnapshotSource {
	if src == nil {
		return nil
	}
	return &SnapshotSource{SnapshotID: src.GetSnapshotId(), SourceOffset: src.GetSourceOffset(), Length: src.GetLength(), TargetOffset: src.GetTargetOffset()}
}

// CreateSnapshot implements agentapi.TargetServer.
func (s *Server) CreateSnapshot(ctx context.Context, req *agentapi.CreateSnapshotRequest) (*agentapi.CreateSnapshotResponse, error) {
	sn, sb, err := s.svc.CreateSnapshot(ctx, req.GetSnapshotId(), req.GetReplicaId())
	if err != nil {
		return nil, grpcError(err)
	}
	return &agentapi.CreateSnapshotResponse{Snapshot: snapshotToProto(sn), Superblock: superblockToProto(sb)}, nil
}

// DeleteSnapshot implements agentapi.TargetServer.
func (s *Server) DeleteSnapshot(ctx context.Context, req *agentapi.DeleteSnapshotRequest) (*agentapi.DeleteSnapshotResponse, error) {
	if err := s.svc.DeleteSnapshot(ctx, req.GetSnapshotId()); err != nil {
		return nil, grpcError(err)
	}
	return &agentapi.DeleteSnapshotResponse{}, nil
}

// GetSnapshot implements agentapi.TargetServer.
func (s *Server) GetSnapshot(_ context.Context, req *agentapi.GetSnapshotRequest) (*agentapi.GetSnapshotResponse, error) {
	sn, err := s.svc.GetSnapshot(req.GetSnapshotId())
	if err != nil {
		return nil, grpcError(err)
	}
	return &agentapi.GetSnapshotResponse{Snapshot: snapshotToProto(sn)}, nil
}

// ListSnapshots implements agentapi.TargetServer.
func (s *Server) ListSnapshots(context.Context, *agentapi.ListSnapshotsRequest) (*agentapi.ListSnapshotsResponse, error) {
	sns, err := s.svc.ListSnapshots()
	if err != nil {
		return nil, grpcError(err)
	}
	out := &agentapi.ListSnapshotsResponse{}
	for _, sn := range sns {
		out.Snapshots = append(out.Snapshots, snapshotToProto(sn))
	}
	return out, nil
}

// ReadSuperblock implements agentapi.TargetServer.
func (s *Server) ReadSuperblock(_ context.Context, req *agentapi.ReadSuperblockRequest) (*agentapi.ReadSuperblockResponse, error) {
	sb, err := s.svc.ReadSuperblock(req.GetReplicaId())
	if err != nil {
		return nil, grpcError(err)
	}
	return &agentapi.ReadSuperblockResponse{Superblock: superblockToProto(sb)}, nil
}

// ReadData implements agentapi.TargetServer.
func (s *Server) ReadData(req *agentapi.ReadDataRequest, stream grpc.ServerStreamingServer[agentapi.DataChunk]) error {
	src := DataSource{SnapshotID: req.GetSnapshotId(), ReplicaID: req.GetReplicaId()}
	var sent int64
	var sendErr error
	err := s.svc.ReadData(stream.Context(), src, req.GetOffset(), req.GetLength(), func(off int64, data []byte) error {
		sent += int64(len(data))
		sendErr = stream.Send(&agentapi.DataChunk{Offset: off, Data: data})
		return sendErr
	})
	klog.V(3).InfoS("ReadData", "snapshot", src.SnapshotID, "replica", src.ReplicaID, "offset", req.GetOffset(), "length", req.GetLength(), "bytesSent", sent, "err", err)
	switch {
	case err == nil:
		return nil
	case sendErr != nil:
		return sendErr // the stream's own error
	}
	return grpcError(err)
}

// WriteData implements agentapi.TargetServer. The first message is the
// header, then chunks, then commit, then the end of the stream.
func (s *Server) WriteData(stream grpc.ClientStreamingServer[agentapi.WriteDataRequest, agentapi.WriteDataResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return grpcError(fieldError("header", "the stream ended before its header"))
		}
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return grpcError(fieldError("header", "the first message must be the header"))
	}
	w, err := s.svc.BeginWrite(WriteHeader{SnapshotID: h.GetSnapshotId(), ReplicaID: h.GetReplicaId(), SizeBytes: h.GetSizeBytes(), VolumeID: h.GetVolumeId()})
	if err != nil {
		return grpcError(err)
	}
	defer w.Close()
	var resp *agentapi.WriteDataResponse
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		switch msg := m.GetMessage().(type) {
		case *agentapi.WriteDataRequest_Chunk:
			if resp != nil {
				return grpcError(fieldError("chunk", "after commit"))
			}
			if err := w.Write(msg.Chunk.GetOffset(), msg.Chunk.GetData()); err != nil {
				return grpcError(err)
			}
		case *agentapi.WriteDataRequest_Commit:
			if !msg.Commit {
				return grpcError(fieldError("commit", "must be true"))
			}
			n, sn, err := w.Commit()
			if err != nil {
				return grpcError(err)
			}
			resp = &agentapi.WriteDataResponse{BytesWritten: n, Snapshot: snapshotToProto(sn)}
		default:
			return grpcError(fieldError("header", "only the first message is a header"))
		}
	}
	if resp == nil {
		return grpcError(fieldError("commit", "the stream ended without commit; nothing was made durable"))
	}
	return stream.SendAndClose(resp)
}

// SnapshotRanges implements agentapi.TargetServer.
func (s *Server) SnapshotRanges(ctx context.Context, req *agentapi.SnapshotRangesRequest) (*agentapi.SnapshotRangesResponse, error) {
	rs, next, err := s.svc.SnapshotRanges(ctx, RangesRequest{
		SnapshotID: req.GetSnapshotId(), BaseSnapshotID: req.GetBaseSnapshotId(),
		Offset: req.GetOffset(), Length: req.GetLength(), MaxRanges: int(req.GetMaxRanges()),
	})
	if err != nil {
		return nil, grpcError(err)
	}
	out := &agentapi.SnapshotRangesResponse{NextOffset: next}
	for _, r := range rs {
		out.Ranges = append(out.Ranges, &agentapi.ByteRange{Offset: r.Off, Length: r.Len})
	}
	return out, nil
}

// StreamLoggingInterceptor is LoggingInterceptor for the streaming calls
// (ReadData, WriteData).
func StreamLoggingInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	caller := rpcauth.Caller(ss.Context())
	klog.V(3).InfoS("gRPC stream", "method", info.FullMethod, "caller", caller)
	err := handler(srv, ss)
	if err != nil {
		klog.ErrorS(err, "gRPC stream failed", "method", info.FullMethod, "caller", caller, "code", status.Code(err))
	}
	return err
}
