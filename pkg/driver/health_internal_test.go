package driver

import (
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

type staticHealth map[string]volume.VolumeHealth

func (s staticHealth) VolumeHealth(id string) (volume.VolumeHealth, bool) {
	h, ok := s[id]
	return h, ok
}

// A source given in NodeDeps is used without SetHealthSource; an unfinished
// staging is reported as such before the source is asked.
func TestNodeDepsHealthSource(t *testing.T) {
	src := staticHealth{"v": {Abnormal: true, Message: "replicas not serving: r2 (sn-2, down since 2026-03-01T12:00:00Z)"}}
	d := &Driver{node: NodeDeps{Health: src}}
	d.health = d.node.Health // as NewDriver does
	h := d.nodeVolumeHealth(&stagestate.State{VolumeID: "v", Phase: stagestate.Staged, MDDevice: "/dev/md0"})
	if st := h.GetHealthStatuses(); len(st) != 1 || st[0].GetStatus() != csi.VolumeHealthErrorType_DEGRADED ||
		st[0].GetReason() != reasonMirrorDegraded || st[0].GetMessage() != src["v"].Message {
		t.Fatalf("health %v", h)
	}
	h = d.nodeVolumeHealth(&stagestate.State{VolumeID: "v", Phase: stagestate.Staging})
	if st := h.GetHealthStatuses(); len(st) != 1 || st[0].GetReason() != reasonNotStaged {
		t.Fatalf("unfinished staging: %v", h)
	}
	src["s"] = volume.VolumeHealth{Abnormal: true, Inaccessible: true, Message: "the only replica is not connected"}
	h = d.nodeVolumeHealth(&stagestate.State{VolumeID: "s", Phase: stagestate.Staged})
	if st := h.GetHealthStatuses(); len(st) != 1 || st[0].GetStatus() != csi.VolumeHealthErrorType_INACCESSIBLE || st[0].GetReason() != reasonArrayNotRunning {
		t.Fatalf("inaccessible: %v", h)
	}
}
