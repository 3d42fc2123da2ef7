package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/repair"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// Repairs runs offline repairs on this storage node (repair.Runner).
type Repairs interface {
	HostNQN() string
	Start(req repair.Request) (repair.Status, error)
	Get(id string) (repair.Status, error)
	Stop(ctx context.Context, id string) error
}

func (s *Server) repairHostNQN() string {
	if s.repairs == nil {
		return ""
	}
	return s.repairs.HostNQN()
}

var errRepairDisabled = fmt.Errorf("%w: offline repair is disabled on this storage node (nvmirror-target --offline-repair)", ErrFailedPrecondition)

// StartRepair implements agentapi.TargetServer.
func (s *Server) StartRepair(ctx context.Context, req *agentapi.StartRepairRequest) (*agentapi.StartRepairResponse, error) {
	if s.repairs == nil {
		return nil, grpcError(errRepairDisabled)
	}
	r := repair.Request{
		ID: req.GetRepairId(), VolumeID: req.GetVolumeId(), MDUUID: req.GetMdUuid(),
		MaxRebuildKiBps: req.GetMaxRebuildKibps(), Lease: time.Duration(req.GetLeaseSeconds()) * time.Second,
	}
	for _, m := range req.GetMembers() {
		rep := volume.Replica{ID: m.GetReplicaId(), StorageNode: m.GetStorageNode(), NQN: m.GetNqn(), NamespaceUUID: m.GetNamespaceUuid(), State: volume.ReplicaActive}
		for _, ep := range m.GetEndpoints() {
			rep.Endpoints = append(rep.Endpoints, volume.Endpoint{Address: ep.GetAddress(), Port: ep.GetServiceId()})
		}
		r.Members = append(r.Members, repair.Member{Replica: rep, InSync: m.GetInSync(), Secret: m.GetDhchapSecret(), CtrlSecret: m.GetDhchapCtrlSecret()})
	}
	st, err := s.repairs.Start(r)
	if err != nil {
		return nil, grpcError(err)
	}
	return &agentapi.StartRepairResponse{Repair: repairToProto(st)}, nil
}

// GetRepair implements agentapi.TargetServer.
func (s *Server) GetRepair(ctx context.Context, req *agentapi.GetRepairRequest) (*agentapi.GetRepairResponse, error) {
	if s.repairs == nil {
		return nil, grpcError(errRepairDisabled)
	}
	st, err := s.repairs.Get(req.GetRepairId())
	if err != nil {
		return nil, grpcError(err)
	}
	return &agentapi.GetRepairResponse{Repair: repairToProto(st)}, nil
}

// StopRepair implements agentapi.TargetServer.
func (s *Server) StopRepair(ctx context.Context, req *agentapi.StopRepairRequest) (*agentapi.StopRepairResponse, error) {
	if s.repairs == nil {
		return &agentapi.StopRepairResponse{}, nil // nothing can run here
	}
	if req.GetRepairId() == "" {
		return nil, grpcError(fieldError("repair_id", "is empty"))
	}
	if err := s.repairs.Stop(ctx, req.GetRepairId()); err != nil {
		return nil, grpcError(err)
	}
	return &agentapi.StopRepairResponse{}, nil
}

func repairToProto(st repair.Status) *agentapi.Repair {
	state := map[repair.State]agentapi.RepairState{
		repair.Running:   agentapi.RepairState_REPAIR_STATE_RUNNING,
		repair.Succeeded: agentapi.RepairState_REPAIR_STATE_SUCCEEDED,
		repair.Failed:    agentapi.RepairState_REPAIR_STATE_FAILED,
		repair.Stopped:   agentapi.RepairState_REPAIR_STATE_STOPPED,
	}[st.State]
	return &agentapi.Repair{
		RepairId: st.ID, VolumeId: st.VolumeID, State: state, Message: st.Message,
		SyncDoneBytes: st.SyncDoneBytes, SyncTotalBytes: st.SyncTotalBytes, BytesWritten: st.BytesWritten,
		SyncedReplicaIds: st.Synced, BitmapReadd: st.BitmapReAdd,
	}
}
