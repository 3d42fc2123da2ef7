package agentclient

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/repair"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

func (a *agent) StartRepair(ctx context.Context, r *agentapi.StartRepairRequest) (*agentapi.StartRepairResponse, error) {
	a.lastRepair = r
	return &agentapi.StartRepairResponse{Repair: &agentapi.Repair{RepairId: r.GetRepairId(), State: agentapi.RepairState_REPAIR_STATE_RUNNING}}, nil
}

func (a *agent) GetRepair(ctx context.Context, r *agentapi.GetRepairRequest) (*agentapi.GetRepairResponse, error) {
	switch r.GetRepairId() {
	case "rpr-done":
		return &agentapi.GetRepairResponse{Repair: &agentapi.Repair{RepairId: "rpr-done", State: agentapi.RepairState_REPAIR_STATE_SUCCEEDED,
			BytesWritten: 7, SyncedReplicaIds: []string{"b"}, BitmapReadd: map[string]bool{"b": true}}}, nil
	case "rpr-future":
		return &agentapi.GetRepairResponse{Repair: &agentapi.Repair{RepairId: "rpr-future", State: agentapi.RepairState(99)}}, nil
	}
	return nil, status.Errorf(codes.NotFound, "repair %s", r.GetRepairId())
}

func TestRepairCalls(t *testing.T) {
	a := &agent{}
	c, ctx, _, _ := dial(t, a)
	req := repair.Request{ID: "rpr-1", VolumeID: "vol-1", MDUUID: "u", Lease: 90500 * time.Millisecond, MaxRebuildKiBps: 512, Members: []repair.Member{
		{Replica: volume.Replica{ID: "a", StorageNode: "sn-1", NQN: "nqn.x:a", Endpoints: []volume.Endpoint{{Address: "10.0.0.1", Port: "4420"}}}, InSync: true, Secret: "s", CtrlSecret: "c"},
		{Replica: volume.Replica{ID: "b", StorageNode: "sn-2", NQN: "nqn.x:b", Endpoints: []volume.Endpoint{{Address: "10.0.0.2", Port: "4421"}}}},
	}}
	st, err := c.StartRepair(ctx, req)
	if err != nil || st.State != repair.Running {
		t.Fatalf("StartRepair = %+v, %v", st, err)
	}
	sent := a.lastRepair
	if sent.GetLeaseSeconds() != 91 || sent.GetMaxRebuildKibps() != 512 || len(sent.GetMembers()) != 2 {
		t.Fatalf("sent %v (the lease rounds up to whole seconds)", sent)
	}
	ma, mb := sent.GetMembers()[0], sent.GetMembers()[1]
	if !ma.GetInSync() || mb.GetInSync() || ma.GetDhchapSecret() != "s" || ma.GetDhchapCtrlSecret() != "c" ||
		ma.GetNamespaceUuid() != req.Members[0].NamespaceID() || mb.GetEndpoints()[0].GetServiceId() != "4421" {
		t.Errorf("members sent: %v / %v", ma, mb)
	}
	got, err := c.GetRepair(ctx, "rpr-done")
	if err != nil || got.State != repair.Succeeded || got.BytesWritten != 7 || !got.BitmapReAdd["b"] || len(got.Synced) != 1 {
		t.Errorf("GetRepair = %+v, %v", got, err)
	}
	if got, err := c.GetRepair(ctx, "rpr-future"); err != nil || got.State != repair.Failed {
		t.Errorf("a state this provisioner does not know: %+v, %v; want Failed (never acted on as success)", got, err)
	}
	if _, err := c.GetRepair(ctx, "rpr-x"); !errors.Is(err, provisioner.ErrNotFound) {
		t.Errorf("unknown repair: %v", err)
	}
}
