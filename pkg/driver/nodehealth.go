package driver

import (
	"cmp"
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
)

// NodeGetVolumeHealth reports the mirror's health on this node: the health
// source's (the healer's) view when it has a current one, which also counts
// replicas whose controller is not live, else md's array state, degraded
// slots and members, or the connection of a single replica. A volume not
// staged here is NotFound.
func (d *Driver) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	st, err := d.state.Load(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, status.Errorf(codes.NotFound, "volume %s is not staged on this node", req.GetVolumeId())
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: d.nodeVolumeHealth(st)}, nil
}

func (d *Driver) nodeVolumeHealth(st *stagestate.State) *csi.VolumeHealth {
	h := &csi.VolumeHealth{VolumeId: st.VolumeID}
	add := func(s csi.VolumeHealthErrorType, reason, msg string) {
		h.HealthStatuses = append(h.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{Status: s, Reason: reason, Message: msg})
	}
	if st.Phase != stagestate.Staged {
		add(csi.VolumeHealthErrorType_INACCESSIBLE, reasonNotStaged, "staging did not complete")
		return h
	}
	if src := d.healthSource(); src != nil {
		if vh, ok := src.VolumeHealth(st.VolumeID); ok {
			switch {
			case vh.Inaccessible:
				add(csi.VolumeHealthErrorType_INACCESSIBLE, cmp.Or(vh.Reason, reasonArrayNotRunning), vh.Message)
			case vh.Abnormal:
				add(csi.VolumeHealthErrorType_DEGRADED, cmp.Or(vh.Reason, reasonMirrorDegraded), vh.Message)
			}
			return h
		}
	}
	if st.MDDevice == "" {
		for _, r := range st.Replicas {
			if d.hasLiveController(r.NQN) {
				return h
			}
		}
		add(csi.VolumeHealthErrorType_INACCESSIBLE, reasonReplicaOffline, "the only replica's controller is not live")
		return h
	}
	a, err := d.node.Raid.ReadArray(filepath.Base(st.MDDevice))
	if err != nil {
		add(csi.VolumeHealthErrorType_INACCESSIBLE, reasonArrayNotRunning, fmt.Sprintf("md array %s: %v", st.MDDevice, err))
		return h
	}
	if a.UUID != st.MDUUID {
		add(csi.VolumeHealthErrorType_INACCESSIBLE, reasonArrayNotRunning, fmt.Sprintf("%s now runs array %q, not %q", st.MDDevice, a.UUID, st.MDUUID))
		return h
	}
	h.HealthStatuses = append(h.HealthStatuses, arrayHealth(a)...)
	return h
}

func (d *Driver) hasLiveController(nqn string) bool {
	ctrls, err := d.node.Initiator.ControllersFor(nqn)
	if err != nil {
		return false
	}
	for _, c := range ctrls {
		if c.State.IsLive() {
			return true
		}
	}
	return false
}

// arrayHealth turns md state into health entries: inaccessible when the
// array is broken or not running, degraded when a slot lacks an in-sync
// member. Messages carry the members' states and any sync progress.
func arrayHealth(a mdraid.Array) []*csi.VolumeHealth_VolumeHealthEntry {
	var members []string
	inSync := 0
	for _, m := range a.Members {
		members = append(members, m.Device+"="+m.State.Raw)
		if m.State.InSync && !m.State.Faulty {
			inSync++
		}
	}
	msg := fmt.Sprintf("%s %s: %d of %d slots in sync [%s]", a.Name, a.ArrayState, inSync, a.RaidDisks, strings.Join(members, " "))
	if a.SyncAction != "" && a.SyncAction != "idle" {
		msg += " sync_action=" + a.SyncAction
		if a.SyncCompleted.State == "progress" && a.SyncCompleted.Total > 0 {
			msg += fmt.Sprintf(" %.1f%%", 100*float64(a.SyncCompleted.Done)/float64(a.SyncCompleted.Total))
		}
	}
	entry := func(s csi.VolumeHealthErrorType, reason string) []*csi.VolumeHealth_VolumeHealthEntry {
		return []*csi.VolumeHealth_VolumeHealthEntry{{Status: s, Reason: reason, Message: msg}}
	}
	switch a.ArrayState {
	case "broken":
		return entry(csi.VolumeHealthErrorType_INACCESSIBLE, reasonArrayBroken)
	case "inactive", "clear", "suspended":
		return entry(csi.VolumeHealthErrorType_INACCESSIBLE, reasonArrayNotRunning)
	}
	if a.IsDegraded() {
		return entry(csi.VolumeHealthErrorType_DEGRADED, reasonArrayDegraded)
	}
	return nil
}
