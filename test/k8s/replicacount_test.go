package k8s

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
)

// replicaCountClass names the test's VolumeAttributesClass that sets
// numReplicas to n.
func replicaCountClass(n int) string { return fmt.Sprintf("e2e-%d-replicas", n) }

// changeReplicaCount moves a detached claim's volume through the replica
// counts given, each by pointing the claim at a VolumeAttributesClass:
// csi-resizer calls ControllerModifyVolume, the provisioner adds or removes
// replicas (placed, or chosen, by the class's rules), an offline repair on a
// storage node fills a new replica, and the removed one is deleted on its
// node. Each step is checked in Kubernetes (the claim's current class, the
// PV's class), in the provisioner's record (that many active replicas, all
// in sync), and on the storage nodes (exactly those replicas, admitting no
// host). It returns how long each step took.
func changeReplicaCount(t *testing.T, e *Env, cp *ControlPlane, ag agents, pc provisionerapi.ProvisionerClient,
	ns, pvcName, pvName, volID string, size int64, counts []int) []time.Duration {
	t.Helper()
	for _, n := range slices.Compact(slices.Sorted(slices.Values(counts))) {
		cp.Apply(fmt.Sprintf(`{"apiVersion":"storage.k8s.io/v1","kind":"VolumeAttributesClass","metadata":{"name":%q},
			"driverName":%q,"parameters":{"numReplicas":%q}}`, replicaCountClass(n), driverName, strconv.Itoa(n)))
	}
	var took []time.Duration
	for _, n := range counts {
		class := replicaCountClass(n)
		before := activeReplicas(mustGetVolume(t, pc, volID))
		t0 := time.Now()
		cp.MustKubectl("patch", "pvc", pvcName, "-n", ns, "--type=merge",
			"-p", fmt.Sprintf(`{"spec":{"volumeAttributesClassName":%q}}`, class))
		cp.WaitJSONPath(3*time.Minute, ns, "pvc", pvcName, "{.status.currentVolumeAttributesClassName}",
			"PVC "+pvcName+" current VolumeAttributesClass "+class, func(v string) bool { return v == class })
		if got := cp.mustJSONPath("", "pv", pvName, "{.spec.volumeAttributesClassName}"); got != class {
			t.Errorf("PV %s volumeAttributesClassName %q, want %q", pvName, got, class)
		}
		var vol *provisionerapi.Volume
		e.WaitFor(4*time.Minute, fmt.Sprintf("volume %s: %d active replicas, all in sync, exactly those on the storage nodes admitting no host", volID, n), func() (bool, string) {
			v, err := getVolume(pc, volID)
			if err != nil || v == nil {
				return false, fmt.Sprintf("GetVolume: %v %v", v, err)
			}
			vol = v
			active, outOfSync := activeReplicas(v), []string{}
			for _, r := range v.GetReplicas() {
				if active[r.GetId()] != "" && r.GetOutOfSyncSince() != nil {
					outOfSync = append(outOfSync, r.GetId())
				}
			}
			if len(active) != n || len(outOfSync) > 0 {
				return false, fmt.Sprintf("provisioner: active replicas %v, out of sync %v", active, outOfSync)
			}
			onNodes, err := ag.replicasOf(volID)
			if err != nil {
				return false, err.Error()
			}
			for node, reps := range onNodes {
				for _, r := range reps {
					if active[r.GetReplicaId()] != node || len(r.GetAllowedHosts()) > 0 {
						return false, fmt.Sprintf("storage nodes hold %v (replica %s on %s admits %q); the provisioner records %v",
							replicaIDs(onNodes), r.GetReplicaId(), node, r.GetAllowedHosts(), active)
					}
				}
			}
			return len(onNodes) == n, fmt.Sprintf("storage nodes hold %v; the provisioner records %v", replicaIDs(onNodes), active)
		})
		checkReplicas(t, ag, vol, n, size, "")
		after := activeReplicas(vol)
		// Growing keeps every replica and adds; shrinking only removes.
		kept := 0
		for id := range after {
			if before[id] != "" {
				kept++
			}
		}
		if want := min(len(before), n); kept != want {
			t.Errorf("numReplicas %d -> %d: %d of the replicas before (%v) kept, want %d (now %v)",
				len(before), n, kept, slices.Sorted(maps.Keys(before)), want, after)
		}
		took = append(took, time.Since(t0))
		t.Logf("timing: numReplicas %d -> %d through VolumeAttributesClass %s in %v (replicas %v)",
			len(before), n, class, took[len(took)-1].Round(time.Millisecond), after)
		if t.Failed() {
			t.FailNow()
		}
	}
	return took
}

// activeReplicas maps the volume's active replicas to their storage nodes,
// per the provisioner's record.
func activeReplicas(v *provisionerapi.Volume) map[string]string {
	out := map[string]string{}
	for _, r := range v.GetReplicas() {
		if r.GetState() == provisionerapi.ReplicaState_REPLICA_STATE_ACTIVE {
			out[r.GetId()] = r.GetStorageNode()
		}
	}
	return out
}

// mustGetVolume is getVolume that fails the test when the volume is not
// there.
func mustGetVolume(t *testing.T, pc provisionerapi.ProvisionerClient, volID string) *provisionerapi.Volume {
	t.Helper()
	v, err := getVolume(pc, volID)
	if err != nil || v == nil {
		t.Fatalf("GetVolume(%s): %v %v", volID, v, err)
	}
	return v
}
