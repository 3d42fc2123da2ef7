//go:build vmguest

package kernel

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
)

// scaleVolumes is how many volumes testIdleDetectionAtScale stages: enough
// that the healer's cached readers (CachedNVMe, reused md readings) have
// many controllers and arrays to keep apart, small enough for qemu TCG.
const scaleVolumes = 20

// testIdleDetectionAtScale stages scaleVolumes small 2-replica volumes and
// cuts one replica of an idle one (nothing written since NodeStage, so md
// notices nothing): only the healer's NVMe poll can see it. The Degraded
// event must carry a detection time within 2 s of the cut. Done for the
// first volume staged and the last, each healed again before the next.
func testIdleDetectionAtScale(t *testing.T, s *stack, c csiClients, p *provisionerclient.Client, md *mdraid.Manager, tgt *nvmet.Target) {
	start := time.Now()
	vols := make([]csiVolume, 0, scaleVolumes)
	for i := range scaleVolumes {
		vols = append(vols, provisionVolume(t, c, fmt.Sprintf("scale-%02d", i), 16<<20,
			map[string]string{"numReplicas": "2", "maxReplicaDownTime": "600"}))
	}
	t.Logf("SCALE: %d volumes of 2 replicas staged in %v", scaleVolumes, time.Since(start).Round(time.Second))
	// The healer has seen every leg live (one SessionEstablished each).
	for _, vol := range vols {
		waitFor(t, 2*time.Minute, "the healer to see both legs of "+vol.id, func() (bool, string) {
			n := len(eventsOf(t, p, vol.id, events.SessionEstablished))
			return n >= 2, fmt.Sprintf("%d sessions", n)
		})
	}

	// Healthy volumes need nothing: the healer must not have acted on any
	// (a cache answering with a stale state would make it fail or re-add
	// members that serve).
	if acts := healerActions(t, vols); len(acts) > 0 {
		t.Errorf("the healer acted %d times on %d healthy volumes, want none: %s", len(acts), scaleVolumes, strings.Join(acts[:min(len(acts), 40)], "\n"))
	}

	for _, vol := range []csiVolume{vols[0], vols[len(vols)-1]} {
		v := mustVolume(t, p, vol.id)
		arr := mdOf(t, md, v)
		cut := v.ActiveReplicas()[1]
		node := agentNamed(t, s, cut.StorageNode)
		writesBefore := statWriteSectors(t, arr.Name)

		faultAt := time.Now()
		if err := tgt.UnlinkSubsystem(node.portID, cut.NQN); err != nil {
			t.Fatal(err)
		}
		degraded := waitEvent(t, p, vol.id, events.VolumeDegraded, 30*time.Second, faultAt.Add(-time.Second))
		arrived := time.Since(faultAt)
		detected := degraded.Time.Sub(faultAt)
		a, err := md.ReadArray(arr.Name)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("IDLE DETECTION (%d volumes staged): %s's replica %s on %s detected %v after the cut (event at the provisioner within %v); md then: %s, %d sectors written to the array meanwhile",
			scaleVolumes, vol.id, cut.ID, cut.StorageNode, detected.Round(time.Millisecond), arrived.Round(100*time.Millisecond),
			describe(a), statWriteSectors(t, arr.Name)-writesBefore)
		if detected > 2*time.Second {
			t.Errorf("an idle volume's lost replica was detected %v after the cut, want within 2 s", detected.Round(time.Millisecond))
		}
		if degraded.Replica != cut.ID && !slicesContains(degraded.Replicas, cut.ID) {
			t.Errorf("Degraded event %+v does not name the cut replica %s", degraded, cut.ID)
		}

		restoreAt := time.Now()
		if err := tgt.LinkSubsystem(node.portID, cut.NQN); err != nil {
			t.Fatal(err)
		}
		healed := waitEvent(t, p, vol.id, events.VolumeHealed, 2*time.Minute, restoreAt)
		t.Logf("IDLE DETECTION: %s healed %v after its replica came back", vol.id, healed.Time.Sub(restoreAt).Round(time.Millisecond))
	}
}

// healerActions returns the node plugin's log lines of the healer's
// actions on the volumes so far (the stack's log holds the earlier
// subtests' too).
func healerActions(t *testing.T, vols []csiVolume) []string {
	t.Helper()
	b, err := os.ReadFile("/run/nvmirror-test/csi.log")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, "Healer action") {
			continue
		}
		for _, v := range vols {
			if strings.Contains(l, `volumeID="`+v.id+`"`) {
				out = append(out, l)
				break
			}
		}
	}
	return out
}
