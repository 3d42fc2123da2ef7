package agent

import (
	"context"
	"strings"

	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/grpcerr"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
	"github.com/nvmirror/nvmirror/pkg/repair"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/version"
)

// Server is the gRPC face of a Service.
type Server struct {
	agentapi.UnimplementedTargetServer
	svc     *Service
	repairs Repairs // nil: offline repair disabled on this storage node
}

var _ agentapi.TargetServer = (*Server)(nil)

// ServerOption configures a Server.
type ServerOption func(*Server)

// WithRepairs enables offline repair (StartRepair, GetRepair, StopRepair)
// through r.
func WithRepairs(r Repairs) ServerOption { return func(s *Server) { s.repairs = r } }

// NewServer returns the gRPC server for svc.
func NewServer(svc *Service, opts ...ServerOption) *Server {
	s := &Server{svc: svc}
	for _, o := range opts {
		o(s)
	}
	return s
}

// statusCodes is the one place where agent errors become gRPC status
// codes (through grpcError).
var statusCodes = grpcerr.Codes{
	grpcerr.To(codes.Canceled, context.Canceled),
	grpcerr.To(codes.DeadlineExceeded, context.DeadlineExceeded),
	grpcerr.To(codes.InvalidArgument, ErrInvalidArgument),
	grpcerr.To(codes.NotFound, ErrNotFound),
	grpcerr.To(codes.AlreadyExists, ErrAlreadyExists),
	grpcerr.To(codes.ResourceExhausted, ErrResourceExhausted),
	grpcerr.To(codes.FailedPrecondition, ErrFailedPrecondition),
	grpcerr.To(codes.Aborted, ErrInFlight),
	grpcerr.To(codes.InvalidArgument, repair.ErrInvalidArgument),
	grpcerr.To(codes.NotFound, repair.ErrNotFound),
	grpcerr.To(codes.Aborted, repair.ErrBusy),
	grpcerr.To(codes.FailedPrecondition, repair.ErrStopped),
	grpcerr.To(codes.FailedPrecondition, repair.ErrIdentity),
	grpcerr.To(codes.FailedPrecondition, repair.ErrNewerData),
}

func grpcError(err error) error { return statusCodes.Status(err) }

// LoggingInterceptor logs each call's method at V(3) (NodeInfo and
// GetCapacity, which are polled, at V(5)) and every error with its code.
// SetHostAuth requests carry secrets: their fields are marked csi_secret and
// protosanitizer strips them (the token is metadata, never logged).
func LoggingInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	lvl := klog.Level(3)
	if strings.HasSuffix(info.FullMethod, "/NodeInfo") || strings.HasSuffix(info.FullMethod, "/GetCapacity") {
		lvl = 5
	}
	caller := rpcauth.Caller(ctx)
	klog.V(lvl).InfoS("gRPC call", "method", info.FullMethod, "caller", caller)
	klog.V(5).InfoS("gRPC request", "method", info.FullMethod, "request", protosanitizer.StripSecrets(req))
	resp, err := handler(ctx, req)
	if err != nil {
		klog.ErrorS(err, "gRPC call failed", "method", info.FullMethod, "caller", caller, "code", status.Code(err))
	}
	return resp, err
}

func provisioningFromProto(p agentapi.ProvisioningType) Provisioning {
	switch p {
	case agentapi.ProvisioningType_PROVISIONING_TYPE_THIN:
		return Thin
	case agentapi.ProvisioningType_PROVISIONING_TYPE_THICK:
		return Thick
	}
	return ""
}

func provisioningToProto(p Provisioning) agentapi.ProvisioningType {
	switch p {
	case Thin:
		return agentapi.ProvisioningType_PROVISIONING_TYPE_THIN
	case Thick:
		return agentapi.ProvisioningType_PROVISIONING_TYPE_THICK
	}
	return agentapi.ProvisioningType_PROVISIONING_TYPE_UNSPECIFIED
}

func stateToProto(s ReplicaState) agentapi.ReplicaState {
	switch s {
	case StateCreating:
		return agentapi.ReplicaState_REPLICA_STATE_CREATING
	case StateReady:
		return agentapi.ReplicaState_REPLICA_STATE_READY
	case StateDeleting:
		return agentapi.ReplicaState_REPLICA_STATE_DELETING
	}
	return agentapi.ReplicaState_REPLICA_STATE_UNSPECIFIED
}

func endpointsToProto(ports []nvmet.Port) []*agentapi.Endpoint {
	out := make([]*agentapi.Endpoint, 0, len(ports))
	for _, p := range ports {
		out = append(out, &agentapi.Endpoint{Transport: p.Transport, AddressFamily: p.AdrFam, Address: p.TrAddr, ServiceId: p.TrSvcID})
	}
	return out
}

func (s *Server) replicaToProto(r *Replica) *agentapi.Replica {
	if r == nil {
		return nil
	}
	return &agentapi.Replica{
		ReplicaId:        r.ID,
		VolumeId:         r.VolumeID,
		SizeBytes:        r.SizeBytes,
		ProvisioningType: provisioningToProto(r.Provisioning),
		State:            stateToProto(r.State),
		Nqn:              s.svc.NQN(r.ID),
		Nsid:             NSID,
		NamespaceUuid:    nvmeof.NamespaceUUID(r.ID),
		NamespaceNguid:   nvmeof.NamespaceNGUID(r.ID),
		Serial:           nvmeof.SerialFor(r.ID),
		AllowedHosts:     r.AllowedHosts,
		Endpoints:        endpointsToProto(s.svc.Endpoints()),
	}
}

// CreateReplica implements agentapi.TargetServer.
func (s *Server) CreateReplica(ctx context.Context, req *agentapi.CreateReplicaRequest) (*agentapi.CreateReplicaResponse, error) {
	r, err := s.svc.CreateReplica(ctx, CreateRequest{
		ReplicaID:    req.GetReplicaId(),
		VolumeID:     req.GetVolumeId(),
		SizeBytes:    req.GetSizeBytes(),
		Provisioning: provisioningFromProto(req.GetProvisioningType()),
		AllowedHosts: req.GetAllowedHosts(),
		Source:       sourceFromProto(req.GetSource()),
	})
	if err != nil {
		return nil, grpcError(err)
	}
	return &agentapi.CreateReplicaResponse{Replica: s.replicaToProto(r)}, nil
}

// DeleteReplica implements agentapi.TargetServer.
func (s *Server) DeleteReplica(ctx context.Context, req *agentapi.DeleteReplicaRequest) (*agentapi.DeleteReplicaResponse, error) {
	if err := s.svc.DeleteReplica(ctx, req.GetReplicaId()); err != nil {
		return nil, grpcError(err)
	}
	return &agentapi.DeleteReplicaResponse{}, nil
}

// ExpandReplica implements agentapi.TargetServer.
func (s *Server) ExpandReplica(ctx context.Context, req *agentapi.ExpandReplicaRequest) (*agentapi.ExpandReplicaResponse, error) {
	r, err := s.svc.ExpandReplica(ctx, req.GetReplicaId(), req.GetSizeBytes())
	if err != nil {
		return nil, grpcError(err)
	}
	return &agentapi.ExpandReplicaResponse{Replica: s.replicaToProto(r)}, nil
}

// GetReplica implements agentapi.TargetServer.
func (s *Server) GetReplica(_ context.Context, req *agentapi.GetReplicaRequest) (*agentapi.GetReplicaResponse, error) {
	r, err := s.svc.GetReplica(req.GetReplicaId())
	if err != nil {
		return nil, grpcError(err)
	}
	return &agentapi.GetReplicaResponse{Replica: s.replicaToProto(r)}, nil
}

// ListReplicas implements agentapi.TargetServer.
func (s *Server) ListReplicas(_ context.Context, req *agentapi.ListReplicasRequest) (*agentapi.ListReplicasResponse, error) {
	rs, err := s.svc.ListReplicas(req.GetVolumeId())
	if err != nil {
		return nil, grpcError(err)
	}
	out := &agentapi.ListReplicasResponse{}
	for _, r := range rs {
		out.Replicas = append(out.Replicas, s.replicaToProto(r))
	}
	return out, nil
}

// AllowHost implements agentapi.TargetServer.
func (s *Server) AllowHost(ctx context.Context, req *agentapi.AllowHostRequest) (*agentapi.AllowHostResponse, error) {
	r, err := s.svc.AllowHost(ctx, req.GetReplicaId(), req.GetHostNqn())
	if err != nil {
		return nil, grpcError(err)
	}
	return &agentapi.AllowHostResponse{Replica: s.replicaToProto(r)}, nil
}

// SetHostAuth implements agentapi.TargetServer.
func (s *Server) SetHostAuth(ctx context.Context, req *agentapi.SetHostAuthRequest) (*agentapi.SetHostAuthResponse, error) {
	if err := s.svc.SetHostAuth(ctx, req.GetHostNqn(), HostSecrets{Secret: req.GetDhchapKey(), CtrlSecret: req.GetDhchapCtrlKey()}); err != nil {
		return nil, grpcError(err)
	}
	return &agentapi.SetHostAuthResponse{}, nil
}

// RevokeHost implements agentapi.TargetServer. For an unknown replica the
// response has no replica.
func (s *Server) RevokeHost(ctx context.Context, req *agentapi.RevokeHostRequest) (*agentapi.RevokeHostResponse, error) {
	r, err := s.svc.RevokeHost(ctx, req.GetReplicaId(), req.GetHostNqn())
	if err != nil {
		return nil, grpcError(err)
	}
	return &agentapi.RevokeHostResponse{Replica: s.replicaToProto(r)}, nil
}

// GetCapacity implements agentapi.TargetServer.
func (s *Server) GetCapacity(context.Context, *agentapi.GetCapacityRequest) (*agentapi.GetCapacityResponse, error) {
	c, err := s.svc.GetCapacity()
	if err != nil {
		return nil, grpcError(err)
	}
	return &agentapi.GetCapacityResponse{
		TotalBytes:       c.TotalBytes,
		AvailableBytes:   c.AvailableBytes,
		ProvisionedBytes: c.ProvisionedBytes,
		ReplicaCount:     int64(c.ReplicaCount),

		SnapshotCount:          int64(c.SnapshotCount),
		SnapshotAllocatedBytes: c.SnapshotAllocatedBytes,
	}, nil
}

// NodeInfo implements agentapi.TargetServer.
func (s *Server) NodeInfo(context.Context, *agentapi.NodeInfoRequest) (*agentapi.NodeInfoResponse, error) {
	o := s.svc.Options()
	return &agentapi.NodeInfoResponse{
		NodeName:      o.NodeName,
		Zone:          o.Zone,
		Rack:          o.Rack,
		Endpoints:     endpointsToProto(s.svc.Endpoints()),
		Version:       version.Version,
		NqnPrefix:     o.NQNPrefix,
		RepairHostNqn: s.repairHostNQN(),
	}, nil
}
