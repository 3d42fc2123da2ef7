package driver_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// fakeHealth is a HealthSource (the healer in production).
type fakeHealth struct {
	mu    sync.Mutex
	views map[string]volume.VolumeHealth
	asked []string
}

func (f *fakeHealth) VolumeHealth(id string) (volume.VolumeHealth, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, id)
	h, ok := f.views[id]
	return h, ok
}

func (f *fakeHealth) set(id string, h *volume.VolumeHealth) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if h == nil {
		delete(f.views, id)
		return
	}
	f.views[id] = *h
}

func (e *env) health(id string) []*csi.VolumeHealth_VolumeHealthEntry {
	e.t.Helper()
	h, err := e.node.NodeGetVolumeHealth(context.Background(), &csi.NodeGetVolumeHealthRequest{VolumeId: id})
	must(e.t, err)
	if h.GetVolumeHealth().GetVolumeId() != id {
		e.t.Fatalf("health of %q", h.GetVolumeHealth().GetVolumeId())
	}
	return h.GetVolumeHealth().GetHealthStatuses()
}

func wantHealth(t *testing.T, got []*csi.VolumeHealth_VolumeHealthEntry, status csi.VolumeHealthErrorType, reason, msg string) {
	t.Helper()
	if len(got) != 1 || got[0].GetStatus() != status || got[0].GetReason() != reason || !strings.Contains(got[0].GetMessage(), msg) {
		t.Fatalf("health %v, want one %s/%s entry containing %q", got, status, reason, msg)
	}
}

// NodeGetVolumeHealth asks the health source (the healer) first and reads md
// itself when there is none or it has no current view of the volume.
func TestNodeVolumeHealthSource(t *testing.T) {
	e := newEnv(t)
	id := e.create("v", "3")
	e.publish(id)
	must(t, e.stage(id, mountCap))
	must(t, e.unstage(id))
	e.fabric.SetDown(e.volume(id).Replicas[2].NQN, true)
	must(t, e.stage(id, mountCap)) // assembled with 2 of 3

	// No source: md's view.
	wantHealth(t, e.health(id), csi.VolumeHealthErrorType_DEGRADED, "ArrayDegraded", "2 of 3 slots in sync")

	src := &fakeHealth{views: map[string]volume.VolumeHealth{}}
	e.drv.SetHealthSource(src)
	// The source has not seen the volume yet: md's view still.
	wantHealth(t, e.health(id), csi.VolumeHealthErrorType_DEGRADED, "ArrayDegraded", "2 of 3 slots in sync")
	if len(src.asked) != 1 || src.asked[0] != id {
		t.Fatalf("source asked %v", src.asked)
	}

	// The source's view wins: degraded with its reason and message...
	msg := "volume degraded: replicas not serving: r3 (sn-3, down since 2026-03-01T12:00:00Z); degraded since 2026-03-01T12:00:00Z (5m0s)"
	src.set(id, &volume.VolumeHealth{Abnormal: true, Reason: "MirrorDegraded", Message: msg})
	wantHealth(t, e.health(id), csi.VolumeHealthErrorType_DEGRADED, "MirrorDegraded", msg)
	// ... the default reason when it gives none ...
	src.set(id, &volume.VolumeHealth{Abnormal: true, Message: "resync 42.0% done"})
	wantHealth(t, e.health(id), csi.VolumeHealthErrorType_DEGRADED, "MirrorDegraded", "resync 42.0% done")
	// ... inaccessible ...
	src.set(id, &volume.VolumeHealth{Abnormal: true, Inaccessible: true, Reason: "VolumeUnavailable", Message: "volume unavailable"})
	wantHealth(t, e.health(id), csi.VolumeHealthErrorType_INACCESSIBLE, "VolumeUnavailable", "volume unavailable")
	// ... and healthy (it also counts controllers md has not noticed).
	src.set(id, &volume.VolumeHealth{Message: "volume healthy"})
	if got := e.health(id); len(got) != 0 {
		t.Fatalf("healthy per source: %v", got)
	}

	// Cleared: md again.
	e.drv.SetHealthSource(nil)
	wantHealth(t, e.health(id), csi.VolumeHealthErrorType_DEGRADED, "ArrayDegraded", "2 of 3 slots in sync")

	// A volume that is not staged stays NotFound, whatever the source says.
	e.drv.SetHealthSource(src)
	src.set("nope", &volume.VolumeHealth{})
	if _, err := e.node.NodeGetVolumeHealth(context.Background(), &csi.NodeGetVolumeHealthRequest{VolumeId: "nope"}); err == nil {
		t.Fatal("health of an unstaged volume")
	}
}
