package provisioner

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/inflight"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// Server implements provisionerapi.ProvisionerServer over a Service: it
// converts wire types, refuses a second call on a volume while one is in
// flight (Aborted), and turns every error into a status with Status. It
// holds no state of its own beyond the in-flight set.
type Server struct {
	provisionerapi.UnimplementedProvisionerServer
	svc *Service
	// inflight holds the volumes (by ID, or by name while being created)
	// with a mutating call running. Concurrent calls on one volume (a
	// sidecar's retry racing its first attempt, the healer's
	// ReplaceReplica racing a publish) are safe in the service thanks to
	// compare-and-swap updates, but the second would mostly wait on the
	// same agents for the same result; Aborted tells its caller to retry.
	inflight inflight.Set
}

var _ provisionerapi.ProvisionerServer = (*Server)(nil)

// NewServer returns the gRPC server of svc.
func NewServer(svc *Service) *Server {
	return &Server{svc: svc}
}

// guard runs fn unless another call holds key.
func guard[T any](s *Server, key string, fn func() (T, error)) (T, error) {
	var zero T
	if !s.inflight.Insert(key) {
		return zero, status.Error(Code(ErrAborted), fmt.Sprintf("an operation on %s is already in progress; retry", key))
	}
	defer s.inflight.Delete(key)
	v, err := fn()
	if err != nil {
		return zero, Status(err)
	}
	return v, nil
}

func required(field, v string) error {
	if v == "" {
		return Status(fmt.Errorf("%w: %s is empty", ErrInvalidArgument, field))
	}
	return nil
}

func volumeKey(id string) string { return "volume " + id }

func (s *Server) CreateVolume(ctx context.Context, req *provisionerapi.CreateVolumeRequest) (*provisionerapi.VolumeResponse, error) {
	if err := required("name", req.GetName()); err != nil {
		return nil, err
	}
	return guard(s, "volume name "+req.GetName(), func() (*provisionerapi.VolumeResponse, error) {
		v, err := s.svc.CreateVolume(ctx, CreateRequest{Name: req.GetName(), SizeBytes: req.GetSizeBytes(), Parameters: req.GetParameters(), Block: req.GetBlock(),
			SourceSnapshotID: req.GetSourceSnapshotId(), SourceVolumeID: req.GetSourceVolumeId()})
		return volumeResponse(v, err)
	})
}

func (s *Server) DeleteVolume(ctx context.Context, req *provisionerapi.DeleteVolumeRequest) (*provisionerapi.DeleteVolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	return guard(s, volumeKey(req.GetVolumeId()), func() (*provisionerapi.DeleteVolumeResponse, error) {
		return &provisionerapi.DeleteVolumeResponse{}, s.svc.DeleteVolume(ctx, req.GetVolumeId())
	})
}

// GetVolume is not guarded: reading while an operation runs is what the
// node and nvmirrorctl do, and the record is always consistent.
func (s *Server) GetVolume(ctx context.Context, req *provisionerapi.GetVolumeRequest) (*provisionerapi.VolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	v, err := s.svc.GetVolume(ctx, req.GetVolumeId())
	resp, err := volumeResponse(v, err)
	return resp, Status(err)
}

func (s *Server) ListVolumes(ctx context.Context, req *provisionerapi.ListVolumesRequest) (*provisionerapi.ListVolumesResponse, error) {
	vols, next, err := s.svc.ListVolumes(ctx, req.GetStartingToken(), int(req.GetMaxEntries()))
	if err != nil {
		return nil, Status(err)
	}
	resp := &provisionerapi.ListVolumesResponse{NextToken: next}
	for _, v := range vols {
		resp.Volumes = append(resp.Volumes, VolumeToProto(v))
	}
	return resp, nil
}

func (s *Server) PublishVolume(ctx context.Context, req *provisionerapi.PublishVolumeRequest) (*provisionerapi.VolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := required("host_nqn", req.GetHostNqn()); err != nil {
		return nil, err
	}
	return guard(s, volumeKey(req.GetVolumeId()), func() (*provisionerapi.VolumeResponse, error) {
		return volumeResponse(s.svc.PublishVolume(ctx, req.GetVolumeId(), req.GetHostNqn(), req.GetNodeId()))
	})
}

func (s *Server) UnpublishVolume(ctx context.Context, req *provisionerapi.UnpublishVolumeRequest) (*provisionerapi.UnpublishVolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	return guard(s, volumeKey(req.GetVolumeId()), func() (*provisionerapi.UnpublishVolumeResponse, error) {
		return &provisionerapi.UnpublishVolumeResponse{}, s.svc.UnpublishVolume(ctx, req.GetVolumeId(), req.GetHostNqn())
	})
}

func (s *Server) ExpandVolume(ctx context.Context, req *provisionerapi.ExpandVolumeRequest) (*provisionerapi.VolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	return guard(s, volumeKey(req.GetVolumeId()), func() (*provisionerapi.VolumeResponse, error) {
		return volumeResponse(s.svc.ExpandVolume(ctx, req.GetVolumeId(), req.GetSizeBytes()))
	})
}

func (s *Server) ModifyVolume(ctx context.Context, req *provisionerapi.ModifyVolumeRequest) (*provisionerapi.VolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	return guard(s, volumeKey(req.GetVolumeId()), func() (*provisionerapi.VolumeResponse, error) {
		return volumeResponse(s.svc.ModifyVolume(ctx, req.GetVolumeId(), req.GetMutableParameters()))
	})
}

func (s *Server) GetCapacity(ctx context.Context, req *provisionerapi.GetCapacityRequest) (*provisionerapi.GetCapacityResponse, error) {
	c, err := s.svc.GetCapacity(ctx, req.GetParameters())
	if err != nil {
		return nil, Status(err)
	}
	return &provisionerapi.GetCapacityResponse{AvailableBytes: c.AvailableBytes, TotalBytes: c.TotalBytes}, nil
}

func (s *Server) ReplaceReplica(ctx context.Context, req *provisionerapi.ReplaceReplicaRequest) (*provisionerapi.ReplaceReplicaResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := required("missing_replica_id", req.GetMissingReplicaId()); err != nil {
		return nil, err
	}
	return guard(s, volumeKey(req.GetVolumeId()), func() (*provisionerapi.ReplaceReplicaResponse, error) {
		r, err := s.svc.ReplaceReplica(ctx, req.GetVolumeId(), req.GetMissingReplicaId())
		return s.newReplicaResponse(ctx, req.GetVolumeId(), r, err)
	})
}

// newReplicaResponse answers a call that made replica r of the volume
// (a replacement, a move) with it and the volume as it is now.
func (s *Server) newReplicaResponse(ctx context.Context, volumeID string, r *store.Replica, err error) (*provisionerapi.ReplaceReplicaResponse, error) {
	if err != nil {
		return nil, err
	}
	v, err := s.svc.GetVolume(ctx, volumeID)
	if err != nil {
		return nil, err
	}
	return &provisionerapi.ReplaceReplicaResponse{Volume: VolumeToProto(v), NewReplica: ReplicaToProto(*r)}, nil
}

// MoveReplica implements provisionerapi.ProvisionerServer.
func (s *Server) MoveReplica(ctx context.Context, req *provisionerapi.MoveReplicaRequest) (*provisionerapi.ReplaceReplicaResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := required("replica_id", req.GetReplicaId()); err != nil {
		return nil, err
	}
	return guard(s, volumeKey(req.GetVolumeId()), func() (*provisionerapi.ReplaceReplicaResponse, error) {
		r, err := s.svc.MoveReplica(ctx, req.GetVolumeId(), req.GetReplicaId(), req.GetToStorageNode())
		return s.newReplicaResponse(ctx, req.GetVolumeId(), r, err)
	})
}

// CordonStorageNode implements provisionerapi.ProvisionerServer.
func (s *Server) CordonStorageNode(ctx context.Context, req *provisionerapi.CordonStorageNodeRequest) (*provisionerapi.StorageNode, error) {
	if err := required("storage_node", req.GetStorageNode()); err != nil {
		return nil, err
	}
	return guard(s, "storage node "+req.GetStorageNode(), func() (*provisionerapi.StorageNode, error) {
		n, err := s.svc.CordonStorageNode(ctx, req.GetStorageNode(), req.GetCordoned())
		if err != nil {
			return nil, err
		}
		return storageNodeToProto(n), nil
	})
}

// DrainStorageNode implements provisionerapi.ProvisionerServer.
func (s *Server) DrainStorageNode(ctx context.Context, req *provisionerapi.DrainStorageNodeRequest) (*provisionerapi.DrainStatus, error) {
	if err := required("storage_node", req.GetStorageNode()); err != nil {
		return nil, err
	}
	return guard(s, "storage node "+req.GetStorageNode(), func() (*provisionerapi.DrainStatus, error) {
		st, err := s.svc.DrainStorageNode(ctx, req.GetStorageNode(), req.GetDrain())
		if err != nil {
			return nil, err
		}
		return &provisionerapi.DrainStatus{Node: storageNodeToProto(st.Node), ReplicasLeft: int32(st.ReplicasLeft), BytesLeft: st.BytesLeft,
			MovesInFlight: int32(st.MovesInFlight), Stuck: st.Stuck}, nil
	})
}

// storageNodeToProto is a storage node's record (no survey figures).
func storageNodeToProto(n *store.StorageNode) *provisionerapi.StorageNode {
	return &provisionerapi.StorageNode{Name: n.ID, ApiAddress: n.Address, Cordoned: n.Cordoned, Draining: n.Draining, LastSeen: ts(n.LastSeen)}
}

func (s *Server) MarkReplicaRemoved(ctx context.Context, req *provisionerapi.MarkReplicaRemovedRequest) (*provisionerapi.VolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := required("replica_id", req.GetReplicaId()); err != nil {
		return nil, err
	}
	return guard(s, volumeKey(req.GetVolumeId()), func() (*provisionerapi.VolumeResponse, error) {
		if err := s.svc.MarkReplicaRemoved(ctx, req.GetVolumeId(), req.GetReplicaId()); err != nil {
			return nil, err
		}
		return volumeResponse(s.svc.GetVolume(ctx, req.GetVolumeId()))
	})
}

func (s *Server) DeleteReplica(ctx context.Context, req *provisionerapi.DeleteReplicaRequest) (*provisionerapi.VolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := required("replica_id", req.GetReplicaId()); err != nil {
		return nil, err
	}
	return guard(s, volumeKey(req.GetVolumeId()), func() (*provisionerapi.VolumeResponse, error) {
		return volumeResponse(s.svc.DeleteReplica(ctx, req.GetVolumeId(), req.GetReplicaId()))
	})
}

// ReportReplicaSync implements provisionerapi.ProvisionerServer.
func (s *Server) ReportReplicaSync(ctx context.Context, req *provisionerapi.ReportReplicaSyncRequest) (*provisionerapi.VolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := required("replica_id", req.GetReplicaId()); err != nil {
		return nil, err
	}
	r := SyncReport{VolumeID: req.GetVolumeId(), ReplicaID: req.GetReplicaId(), InSync: req.GetInSync(),
		ArrayEvents: req.GetArrayEvents(), NodeID: req.GetNodeId()}
	if req.GetObservedAt() != nil {
		r.ObservedAt = req.GetObservedAt().AsTime()
	}
	return guard(s, volumeKey(req.GetVolumeId()), func() (*provisionerapi.VolumeResponse, error) {
		return volumeResponse(s.svc.ReportReplicaSync(ctx, r))
	})
}

// PromoteReplicas implements provisionerapi.ProvisionerServer.
func (s *Server) PromoteReplicas(ctx context.Context, req *provisionerapi.PromoteReplicasRequest) (*provisionerapi.VolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	return guard(s, volumeKey(req.GetVolumeId()), func() (*provisionerapi.VolumeResponse, error) {
		return volumeResponse(s.svc.PromoteReplicas(ctx, req.GetVolumeId(), req.GetReplicaIds(), req.GetAcceptDataLoss(), req.GetReason()))
	})
}

// ReportEvents is not guarded: events are idempotent by ID and a node's
// queue must never be told to back off because a controller is busy with
// the same volume.
func (s *Server) ReportEvents(ctx context.Context, req *provisionerapi.ReportEventsRequest) (*provisionerapi.ReportEventsResponse, error) {
	es := make([]events.Event, 0, len(req.GetEvents()))
	for _, p := range req.GetEvents() {
		es = append(es, provisionerapi.EventFromProto(p))
	}
	if _, err := s.svc.RecordEvents(ctx, es...); err != nil {
		return nil, Status(err)
	}
	return &provisionerapi.ReportEventsResponse{}, nil
}

// DefaultEventListLimit bounds ListEvents when the request sets no limit:
// the store may hold 100000 events, more than one response should carry.
const DefaultEventListLimit = 1000

func (s *Server) ListEvents(ctx context.Context, req *provisionerapi.ListEventsRequest) (*provisionerapi.ListEventsResponse, error) {
	f := events.Filter{Volume: req.GetVolumeId(), Node: req.GetNode(), AfterSeq: req.GetAfterSeq(), Limit: int(req.GetLimit())}
	switch {
	case f.Limit < 0:
		return nil, Status(fmt.Errorf("%w: limit %d must not be negative", ErrInvalidArgument, f.Limit))
	case f.Limit == 0:
		f.Limit = DefaultEventListLimit
	}
	if t := req.GetType(); t != "" {
		if !events.Type(t).Known() {
			return nil, Status(fmt.Errorf("%w: unknown event type %q", ErrInvalidArgument, t))
		}
		f.Types = []events.Type{events.Type(t)}
	}
	if req.GetSince() != nil {
		f.Since = req.GetSince().AsTime()
	}
	es, err := s.svc.ListEvents(ctx, f)
	if err != nil {
		return nil, Status(err)
	}
	resp := &provisionerapi.ListEventsResponse{}
	for _, e := range es {
		resp.Events = append(resp.Events, provisionerapi.EventToProto(e))
	}
	return resp, nil
}

func (s *Server) ListStorageNodes(ctx context.Context, _ *provisionerapi.ListStorageNodesRequest) (*provisionerapi.ListStorageNodesResponse, error) {
	nodes, err := s.svc.ListStorageNodes(ctx)
	if err != nil {
		return nil, Status(err)
	}
	resp := &provisionerapi.ListStorageNodesResponse{}
	for _, n := range nodes {
		resp.Nodes = append(resp.Nodes, &provisionerapi.StorageNode{
			Name: n.ID, ApiAddress: n.Address, Zone: n.Zone, Rack: n.Rack,
			TotalBytes: n.TotalBytes, AvailableBytes: n.AvailableBytes, ReplicaCount: int32(n.Replicas),
			Reachable: n.Reachable, LastSeen: ts(n.LastSeen), Cordoned: n.Cordoned, Draining: n.Draining,
		})
	}
	return resp, nil
}

// ListOrphans implements provisionerapi.ProvisionerServer.
func (s *Server) ListOrphans(ctx context.Context, _ *provisionerapi.ListOrphansRequest) (*provisionerapi.ListOrphansResponse, error) {
	rep, err := s.svc.ListOrphans(ctx)
	if err != nil {
		return nil, Status(err)
	}
	resp := &provisionerapi.ListOrphansResponse{ScannedAt: ts(rep.ScannedAt), UnreachableStorageNodes: rep.Unreachable}
	for _, o := range rep.Orphans {
		resp.Orphans = append(resp.Orphans, orphanToProto(o, rep.ReclaimAfter(o)))
	}
	return resp, nil
}

// ReclaimOrphan implements provisionerapi.ProvisionerServer. The service
// serialises reclaims and scans itself (Aborted).
func (s *Server) ReclaimOrphan(ctx context.Context, req *provisionerapi.ReclaimOrphanRequest) (*provisionerapi.ReclaimOrphanResponse, error) {
	if err := required("replica_id", req.GetReplicaId()); err != nil {
		return nil, err
	}
	o, err := s.svc.ReclaimOrphan(ctx, req.GetReplicaId())
	if err != nil {
		return nil, Status(err)
	}
	return &provisionerapi.ReclaimOrphanResponse{Orphan: orphanToProto(o, time.Time{})}, nil
}

func orphanToProto(o Orphan, reclaimAfter time.Time) *provisionerapi.Orphan {
	return &provisionerapi.Orphan{StorageNode: o.StorageNode, ReplicaId: o.ReplicaID, VolumeId: o.VolumeID, SizeBytes: o.SizeBytes,
		Class: string(o.Class), Reason: o.Reason, FirstSeen: ts(o.FirstSeen), ReclaimAfter: ts(reclaimAfter)}
}

// GetHostCredentials implements provisionerapi.ProvisionerServer.
func (s *Server) GetHostCredentials(ctx context.Context, req *provisionerapi.GetHostCredentialsRequest) (*provisionerapi.GetHostCredentialsResponse, error) {
	creds, err := s.svc.GetHostCredentials(ctx, req.GetHostNqn())
	if err != nil {
		return nil, Status(err)
	}
	resp := &provisionerapi.GetHostCredentialsResponse{HostNqn: req.GetHostNqn()}
	for _, c := range creds {
		resp.Credentials = append(resp.Credentials, &provisionerapi.StorageNodeCredentials{
			StorageNode: c.StorageNode, DhchapSecret: c.Secret, DhchapCtrlSecret: c.CtrlSecret,
			Generation: c.Generation, Created: ts(c.CreatedAt),
		})
	}
	return resp, nil
}

// RotateCredentials implements provisionerapi.ProvisionerServer.
func (s *Server) RotateCredentials(ctx context.Context, req *provisionerapi.RotateCredentialsRequest) (*provisionerapi.RotateCredentialsResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, Status(fmt.Errorf("%w: volume_id is required", ErrInvalidArgument))
	}
	// Guarded like every mutating call on a volume: a rotation racing a
	// publish of the same volume would push secrets for a host that is
	// being replaced.
	return guard(s, volumeKey(req.GetVolumeId()), func() (*provisionerapi.RotateCredentialsResponse, error) {
		host, nodes, err := s.svc.RotateCredentials(ctx, req.GetVolumeId())
		if err != nil {
			return nil, Status(err)
		}
		resp := &provisionerapi.RotateCredentialsResponse{HostNqn: host}
		for _, n := range nodes {
			rn := &provisionerapi.RotatedStorageNode{StorageNode: n.StorageNode, Generation: n.Generation}
			if n.Err != nil {
				rn.Error = n.Err.Error()
			}
			resp.StorageNodes = append(resp.StorageNodes, rn)
		}
		return resp, nil
	})
}

func volumeResponse(v *store.Volume, err error) (*provisionerapi.VolumeResponse, error) {
	if err != nil {
		return nil, err
	}
	return &provisionerapi.VolumeResponse{Volume: VolumeToProto(v)}, nil
}

// ts converts a time; the zero time (never set) is no timestamp.
func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// VolumeToProto converts a registry record to the wire form.
func VolumeToProto(v *store.Volume) *provisionerapi.Volume {
	p := &provisionerapi.Volume{
		Id: v.ID, Name: v.Name, SizeBytes: v.SizeBytes, Parameters: v.Parameters.Map(), Policy: PolicyToProto(v.Parameters.Policy()),
		MdUuid: v.MDUUID, MdName: v.MDName,
		PublishedHostNqn: v.PublishedHostNQN, PublishedNodeId: v.PublishedNodeID,
		DegradedSince: ts(v.DegradedSince), Created: ts(v.CreatedAt), Updated: ts(v.UpdatedAt),
		Metadata: v.Metadata, State: string(v.State), Block: v.Block,
	}
	for _, r := range v.Replicas {
		p.Replicas = append(p.Replicas, ReplicaToProto(r))
	}
	if r := v.Repair; r != nil {
		p.Repair = &provisionerapi.OfflineRepair{RepairId: r.ID, StorageNode: r.StorageNode, ReplicaIds: r.Replicas,
			Started: ts(r.StartedAt), LeaseUntil: ts(r.LeaseUntil)}
	}
	if src := v.Source; src != nil {
		p.Source = &provisionerapi.ContentSource{SnapshotId: src.SnapshotID, VolumeId: src.VolumeID}
	}
	return p
}

// ReplicaToProto converts a replica. The namespace UUID is the one the
// agent derives from the replica ID (nvmeof.NamespaceUUID): the node checks
// it against the device before using it.
func ReplicaToProto(r store.Replica) *provisionerapi.Replica {
	p := &provisionerapi.Replica{
		Id: r.ID, StorageNode: r.StorageNode, Nqn: r.NQN, NamespaceUuid: nvmeof.NamespaceUUID(r.ID),
		State: replicaStateToProto(r.State), Replaces: r.Replaces,
		Created: ts(r.CreatedAt), Updated: ts(r.UpdatedAt),
		OutOfSyncSince: ts(r.OutOfSyncSince), OutOfSyncAtEvents: r.OutOfSyncAtEvents, DivergedSince: ts(r.DivergedSince), Move: r.Move,
	}
	for _, e := range r.Addresses {
		p.Endpoints = append(p.Endpoints, &provisionerapi.Endpoint{Address: e.Address, Port: e.ServiceID})
	}
	return p
}

func replicaStateToProto(s store.ReplicaState) provisionerapi.ReplicaState {
	switch s {
	case store.ReplicaActive:
		return provisionerapi.ReplicaState_REPLICA_STATE_ACTIVE
	case store.ReplicaDeleting:
		return provisionerapi.ReplicaState_REPLICA_STATE_DELETING
	case store.ReplicaDeleted:
		return provisionerapi.ReplicaState_REPLICA_STATE_DELETED
	case store.ReplicaRemoved:
		return provisionerapi.ReplicaState_REPLICA_STATE_REMOVED
	}
	return provisionerapi.ReplicaState_REPLICA_STATE_UNSPECIFIED
}

// LoggingInterceptor logs every call's method (V(3); health checks at
// V(5)), its request and response with secrets stripped (V(5)), and every
// error with its code.
func LoggingInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	lvl := klog.Level(3)
	if strings.HasPrefix(info.FullMethod, "/grpc.health.") {
		lvl = 5
	}
	caller := rpcauth.Caller(ctx)
	klog.V(lvl).InfoS("gRPC call", "method", info.FullMethod, "caller", caller)
	klog.V(5).InfoS("gRPC request", "method", info.FullMethod, "request", protosanitizer.StripSecrets(req))
	resp, err := handler(ctx, req)
	if err != nil {
		klog.ErrorS(err, "gRPC call failed", "method", info.FullMethod, "caller", caller, "code", status.Code(err))
	} else {
		klog.V(5).InfoS("gRPC response", "method", info.FullMethod, "response", protosanitizer.StripSecrets(resp))
	}
	return resp, err
}

// Health serves the standard gRPC health service for the provisioner:
// SERVING only while this process leads (etcd store; a bolt store always
// leads), so clients' Ping and load balancers reach the one that acts.
type Health struct {
	*health.Server
}

// NewHealth returns a health server reporting NOT_SERVING until told.
func NewHealth() *Health {
	h := &Health{Server: health.NewServer()}
	h.SetLeader(false)
	return h
}

// SetLeader sets the status of the overall service ("") and of the
// Provisioner service.
func (h *Health) SetLeader(leader bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if leader {
		st = healthpb.HealthCheckResponse_SERVING
	}
	h.SetServingStatus("", st)
	h.SetServingStatus(provisionerapi.Provisioner_ServiceDesc.ServiceName, st)
}

// Follow applies the leadership reports of store.Leader until the channel
// closes (the campaign ended), then reports NOT_SERVING.
func (h *Health) Follow(leader <-chan bool) {
	for l := range leader {
		klog.InfoS("Leadership changed", "leader", l)
		h.SetLeader(l)
	}
	h.SetLeader(false)
}

// PolicyToProto is the typed policy the node side reads instead of the
// parameter strings.
func PolicyToProto(p storageclass.Policy) *provisionerapi.VolumePolicy {
	return &provisionerapi.VolumePolicy{
		NumReplicas:               int32(p.NumReplicas),
		MaxReplicaDownTimeMinutes: int32(p.MaxReplicaDownTimeMinutes),
		FsType:                    p.FSType,
		Authentication:            string(p.Authentication),
		RebuildBandwidthMibps:     int32(p.RebuildBandwidthMiBps),
	}
}
