package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/repair"
)

// recordingRepairs is a Repairs that keeps what it was asked.
type recordingRepairs struct {
	started []repair.Request
	stopped []string
	err     error
}

func (r *recordingRepairs) HostNQN() string { return "nqn.2026-11.io.nvmirror:repair:node-1" }
func (r *recordingRepairs) Start(req repair.Request) (repair.Status, error) {
	if r.err != nil {
		return repair.Status{}, r.err
	}
	r.started = append(r.started, req)
	return repair.Status{ID: req.ID, VolumeID: req.VolumeID, State: repair.Running}, nil
}
func (r *recordingRepairs) Get(id string) (repair.Status, error) {
	if r.err != nil {
		return repair.Status{}, r.err
	}
	return repair.Status{ID: id, State: repair.Succeeded, Synced: []string{"b"}, BytesWritten: 42, BitmapReAdd: map[string]bool{"b": true}}, nil
}
func (r *recordingRepairs) Stop(ctx context.Context, id string) error {
	r.stopped = append(r.stopped, id)
	return nil
}

func TestRepairRPCs(t *testing.T) {
	e := newEnv(t)
	rr := &recordingRepairs{}
	c := serve(t, e.svc, true, WithRepairs(rr))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ni, err := c.NodeInfo(ctx, &agentapi.NodeInfoRequest{})
	if err != nil || ni.GetRepairHostNqn() != rr.HostNQN() {
		t.Fatalf("NodeInfo = %v, %v; want the repair host NQN", ni, err)
	}
	req := &agentapi.StartRepairRequest{RepairId: "rpr-1", VolumeId: "vol-1", MdUuid: "u", LeaseSeconds: 60, MaxRebuildKibps: 1024,
		Members: []*agentapi.RepairMember{
			{ReplicaId: "a", StorageNode: "sn-1", Nqn: "nqn.x:a", NamespaceUuid: "ns-a", InSync: true, DhchapSecret: "DHHC-1:00:secret:",
				Endpoints: []*agentapi.Endpoint{{Transport: "tcp", Address: "10.0.0.1", ServiceId: "4420"}}},
			{ReplicaId: "b", StorageNode: "sn-2", Nqn: "nqn.x:b", Endpoints: []*agentapi.Endpoint{{Address: "10.0.0.2", ServiceId: "4421"}}},
		}}
	resp, err := c.StartRepair(ctx, req)
	if err != nil || resp.GetRepair().GetState() != agentapi.RepairState_REPAIR_STATE_RUNNING {
		t.Fatalf("StartRepair = %v, %v", resp, err)
	}
	got := rr.started[0]
	if got.Lease != time.Minute || got.MaxRebuildKiBps != 1024 || len(got.Members) != 2 {
		t.Fatalf("request as received: %+v", got)
	}
	a, b := got.Members[0], got.Members[1]
	if !a.InSync || b.InSync || a.Secret != "DHHC-1:00:secret:" || a.NamespaceID() != "ns-a" || a.Endpoints[0].Address != "10.0.0.1" || b.Endpoints[0].Port != "4421" {
		t.Errorf("members as received: %+v / %+v", a, b)
	}
	gr, err := c.GetRepair(ctx, &agentapi.GetRepairRequest{RepairId: "rpr-1"})
	if err != nil || gr.GetRepair().GetState() != agentapi.RepairState_REPAIR_STATE_SUCCEEDED || gr.GetRepair().GetBytesWritten() != 42 ||
		!gr.GetRepair().GetBitmapReadd()["b"] || len(gr.GetRepair().GetSyncedReplicaIds()) != 1 {
		t.Errorf("GetRepair = %v, %v", gr, err)
	}
	if _, err := c.StopRepair(ctx, &agentapi.StopRepairRequest{RepairId: "rpr-1"}); err != nil || len(rr.stopped) != 1 {
		t.Errorf("StopRepair = %v, stopped %v", err, rr.stopped)
	}
	if _, err := c.StopRepair(ctx, &agentapi.StopRepairRequest{}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "repair_id") {
		t.Errorf("StopRepair without an ID: %v", err)
	}
	for sentinel, want := range map[error]codes.Code{
		repair.ErrBusy: codes.Aborted, repair.ErrStopped: codes.FailedPrecondition, repair.ErrNotFound: codes.NotFound,
		repair.ErrInvalidArgument: codes.InvalidArgument,
	} {
		rr.err = fmt.Errorf("x: %w", sentinel)
		if _, err := c.StartRepair(ctx, req); status.Code(err) != want {
			t.Errorf("StartRepair with %v: %v, want %v", sentinel, err, want)
		}
	}
}

func TestRepairRPCsWhenDisabled(t *testing.T) {
	e := newEnv(t)
	c := serve(t, e.svc, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ni, err := c.NodeInfo(ctx, &agentapi.NodeInfoRequest{}); err != nil || ni.GetRepairHostNqn() != "" {
		t.Fatalf("NodeInfo = %v, %v; want no repair host", ni, err)
	}
	_, err := c.StartRepair(ctx, &agentapi.StartRepairRequest{RepairId: "rpr-1"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "--offline-repair") {
		t.Errorf("StartRepair on a node without offline repair: %v", err)
	}
	if _, err := c.StopRepair(ctx, &agentapi.StopRepairRequest{RepairId: "rpr-1"}); err != nil {
		t.Errorf("StopRepair on a node without offline repair: %v (nothing runs: success)", err)
	}
}
