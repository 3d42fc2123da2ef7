//go:build vmguest

package kernel

import (
	"fmt"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
)

// testRebuildPacing: a volume with rebuildBandwidthLimit 2 MiB/s loses a
// replica while 48 MiB are written; when it returns, md's bitmap recovery
// runs at the limit (the rate measured as the bytes written to B's device
// over several seconds, as a ratio of the limit: md's progress counter also
// counts the clean regions a bitmap recovery skips); lifting the limit through
// ControllerModifyVolume lets it finish at full speed. Data and mirrors are
// verified at the end.
func testRebuildPacing(t *testing.T, s *stack, c csiClients, p *provisionerclient.Client, md *mdraid.Manager, tgt *nvmet.Target, ini *host.Initiator) {
	const limitMiB = 2
	vol := provisionVolume(t, c, "paced", 128<<20, map[string]string{"numReplicas": "2", "maxReplicaDownTime": "600",
		"rebuildBandwidthLimit": fmt.Sprint(limitMiB)})
	v := mustVolume(t, p, vol.id)
	arrName := mdOf(t, md, v).Name
	waitFor(t, 30*time.Second, "the healer to set the volume's rebuild limit", func() (bool, string) {
		a, err := md.ReadArray(arrName)
		if err != nil {
			return false, err.Error()
		}
		return a.SyncSpeedMax == mdraid.SyncSpeedLimit{KiB: limitMiB * 1024}, fmt.Sprintf("%+v", a.SyncSpeedMax)
	})
	before := writeFiles(t, vol.target, "before", 2, 1<<20)
	b := v.ActiveReplicas()[1]
	nodeB := agentNamed(t, s, b.StorageNode)
	if err := tgt.UnlinkSubsystem(nodeB.portID, b.NQN); err != nil {
		t.Fatal(err)
	}
	during := writeFiles(t, vol.target, "during", 48, 1<<20)
	waitFor(t, 60*time.Second, "md to run without B", func() (bool, string) {
		a, err := md.ReadArray(arrName)
		if err != nil {
			return false, err.Error()
		}
		return a.Degraded > 0, describe(a)
	})
	if err := tgt.LinkSubsystem(nodeB.portID, b.NQN); err != nil {
		t.Fatal(err)
	}
	// Skip md's first seconds (it measures its rate over a window), then
	// take the rate of writes onto B's device over at least 6 s.
	var startAt time.Time
	var startSectors uint64
	var devB string
	waitFor(t, 2*time.Minute, "the recovery onto B to be under way", func() (bool, string) {
		a, err := md.ReadArray(arrName)
		if err != nil {
			return false, err.Error()
		}
		if a.SyncAction != "recover" || a.SyncCompleted.State != "progress" {
			startAt = time.Time{}
			return false, describe(a)
		}
		if startAt.IsZero() {
			startAt = time.Now()
			return false, "recovery started"
		}
		if time.Since(startAt) < 2*time.Second {
			return false, "settling"
		}
		dev, err := ini.FindDevice(b.NQN, b.NamespaceID())
		if err != nil {
			return false, err.Error()
		}
		devB, startSectors, startAt = dev.Name, writeSectors(t, dev.Name), time.Now()
		return true, ""
	})
	var end mdraid.Array
	var endAt time.Time
	var endSectors uint64
	waitFor(t, time.Minute, "6 s of paced recovery", func() (bool, string) {
		a, err := md.ReadArray(arrName)
		if err != nil {
			return false, err.Error()
		}
		if a.SyncAction != "recover" {
			return false, "recovery ended early: " + describe(a)
		}
		end, endAt, endSectors = a, time.Now(), writeSectors(t, devB)
		return endAt.Sub(startAt) >= 6*time.Second, describe(a)
	})
	rate := float64(endSectors-startSectors) * 512 / endAt.Sub(startAt).Seconds()
	ratio := rate / float64(limitMiB<<20)
	t.Logf("PACING: recovery at %.2f MiB/s under a %d MiB/s limit (ratio %.2f; md reports %d KiB/s); %.0f of %.0f MiB left",
		rate/(1<<20), limitMiB, ratio, end.SyncSpeedKiB, float64(end.SyncCompleted.Total-end.SyncCompleted.Done)/2048, float64(end.SyncCompleted.Total)/2048)
	if ratio < 0.4 || ratio > 1.5 {
		t.Errorf("recovery ran at %.2f of the limit, want 0.4-1.5", ratio)
	}

	liftedAt := time.Now()
	if _, err := c.ctrl.ControllerModifyVolume(ctxTimeout(t, time.Minute), &csi.ControllerModifyVolumeRequest{VolumeId: vol.id,
		MutableParameters: map[string]string{"rebuildBandwidthLimit": "0"}}); err != nil {
		t.Fatalf("lift the limit: %v", err)
	}
	waitFor(t, 2*time.Minute, "the recovery to finish once the limit is lifted", func() (bool, string) {
		a, err := md.ReadArray(arrName)
		if err != nil {
			return false, err.Error()
		}
		return a.SyncAction == "idle" && a.Degraded == 0 && a.SyncSpeedMax.System, fmt.Sprintf("%s limit %+v", describe(a), a.SyncSpeedMax)
	})
	t.Logf("PACING: limit lifted, recovery finished %v later", time.Since(liftedAt).Round(100*time.Millisecond))
	checkMirrors(t, md, arrName)
	dropCaches(t)
	verifyFiles(t, mergeSums(before, during))
}
