package agentclient

import (
	"context"
	"time"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/repair"
)

// StartRepair implements provisioner.AgentClient.
func (c *Client) StartRepair(ctx context.Context, r repair.Request) (repair.Status, error) {
	req := &agentapi.StartRepairRequest{RepairId: r.ID, VolumeId: r.VolumeID, MdUuid: r.MDUUID,
		MaxRebuildKibps: r.MaxRebuildKiBps, LeaseSeconds: uint32((r.Lease + time.Second - 1) / time.Second)}
	for _, m := range r.Members {
		pm := &agentapi.RepairMember{ReplicaId: m.ID, StorageNode: m.StorageNode, Nqn: m.NQN, NamespaceUuid: m.NamespaceID(),
			InSync: m.InSync, DhchapSecret: m.Secret, DhchapCtrlSecret: m.CtrlSecret}
		for _, ep := range m.Endpoints {
			pm.Endpoints = append(pm.Endpoints, &agentapi.Endpoint{Transport: "tcp", Address: ep.Address, ServiceId: ep.Port})
		}
		req.Members = append(req.Members, pm)
	}
	resp, err := c.c.StartRepair(ctx, req)
	if err != nil {
		return repair.Status{}, mapErr(err)
	}
	return repairFromProto(resp.GetRepair()), nil
}

// GetRepair implements provisioner.AgentClient.
func (c *Client) GetRepair(ctx context.Context, id string) (repair.Status, error) {
	resp, err := c.c.GetRepair(ctx, &agentapi.GetRepairRequest{RepairId: id})
	if err != nil {
		return repair.Status{}, mapErr(err)
	}
	return repairFromProto(resp.GetRepair()), nil
}

// StopRepair implements provisioner.AgentClient.
func (c *Client) StopRepair(ctx context.Context, id string) error {
	_, err := c.c.StopRepair(ctx, &agentapi.StopRepairRequest{RepairId: id})
	return mapErr(err)
}

func repairFromProto(p *agentapi.Repair) repair.Status {
	state := map[agentapi.RepairState]repair.State{
		agentapi.RepairState_REPAIR_STATE_RUNNING:   repair.Running,
		agentapi.RepairState_REPAIR_STATE_SUCCEEDED: repair.Succeeded,
		agentapi.RepairState_REPAIR_STATE_FAILED:    repair.Failed,
		agentapi.RepairState_REPAIR_STATE_STOPPED:   repair.Stopped,
	}[p.GetState()]
	if state == "" {
		state = repair.Failed // an agent newer than this provisioner: do not act on it
	}
	return repair.Status{ID: p.GetRepairId(), VolumeID: p.GetVolumeId(), State: state, Message: p.GetMessage(),
		SyncDoneBytes: p.GetSyncDoneBytes(), SyncTotalBytes: p.GetSyncTotalBytes(), BytesWritten: p.GetBytesWritten(),
		Synced: p.GetSyncedReplicaIds(), BitmapReAdd: p.GetBitmapReadd()}
}
