package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// EnvRequireSnapshots makes a snapshot step the driver does not advertise
// a failure instead of a skip (for CI once the driver offers them all).
const EnvRequireSnapshots = "NVMIRROR_REQUIRE_SNAPSHOTS"

// The objects of the snapshot steps: deploy/examples/snapshots' classes,
// and claims small enough that all of them fit the VM's tmpfs pools thick.
const (
	snapshotClass      = "nvmirror-snapshots"
	groupSnapshotClass = "nvmirror-group-snapshots"
	snapClaimBytes     = e2eClaimBytes / 2
	groupLabel         = "e2e.nvmirror.io/group"
)

// snapshotSidecars starts what snapshots need beside the driver, when it
// offers them (the CRDs are installed already): the cluster's snapshot-controller (the
// component's Deployment as a process) and the csi-snapshotter sidecar with
// the controller Deployment's args, as its ServiceAccount. csi-snapshotter
// exits at start when the driver lacks CREATE_DELETE_SNAPSHOT, so without
// it none of them runs and the snapshot steps skip (snapshotSteps).
func snapshotSidecars(t *testing.T, e *Env, cp *ControlPlane, repo, socket, kubeconfig string, args []string) DriverCapabilities {
	t.Helper()
	caps, err := SnapshotCapabilities(socket)
	if err != nil {
		t.Fatalf("nvmirror-csi's capabilities: %v", err)
	}
	t.Logf("nvmirror-csi offers snapshots %v, clones %v, group snapshots %v", caps.Snapshots, caps.Clones, caps.GroupSnapshots)
	if !caps.Snapshots {
		return caps
	}
	cp.StartSnapshotController(repo)
	p := cp.StartCSISnapshotter(socket, kubeconfig, args)
	e.FailOnLog(p, RBACRefusal, "the API server refused it something: deploy/'s RBAC lacks a permission")
	return caps
}

// snapshotSteps takes claims of the test's StorageClass through the
// snapshot life, each step checked in Kubernetes and in the provisioner's
// registry: a VolumeSnapshot of a bound claim becomes ready (restoreSize the
// volume's size, its content's snapshotHandle a snapshot of that volume in
// the registry); a claim restored from it is bound to a volume whose source
// is that snapshot; a clone of the claim is bound to a volume whose source
// is the claim's volume; deleting the VolumeSnapshot (class deletionPolicy
// Delete) deletes the snapshot in the registry, the restored volume
// staying; a VolumeGroupSnapshot of two claims (by label) becomes ready
// with one VolumeSnapshot per claim, one group in the registry, and a claim
// restored from one of those is bound to a volume whose source is it.
//
// Each part runs when the driver offers it (DriverCapabilities) and is a
// skipped subtest saying so otherwise.
func snapshotSteps(t *testing.T, e *Env, cp *ControlPlane, pc provisionerapi.ProvisionerClient, d deployObjects, caps DriverCapabilities, repo, ns string) {
	t.Helper()
	skip := func(name, why string) {
		t.Run(name, func(t *testing.T) {
			msg := fmt.Sprintf("nvmirror-csi does not advertise %s: the %s step waits for the driver's support (issue #15)", why, name)
			if os.Getenv(EnvRequireSnapshots) != "" {
				t.Fatalf("%s (%s is set, so this is a failure, not a skip)", msg, EnvRequireSnapshots)
			}
			t.Skip(msg)
		})
	}
	if !caps.Snapshots {
		skip("VolumeSnapshot", "CREATE_DELETE_SNAPSHOT in ControllerGetCapabilities")
	}
	if !caps.Clones {
		skip("Clone", "CLONE_VOLUME in ControllerGetCapabilities")
	}
	if !caps.Snapshots || !caps.GroupSnapshots {
		skip("VolumeGroupSnapshot", "CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT in GroupControllerGetCapabilities (and snapshots)")
	}
	if !caps.Snapshots && !caps.Clones {
		return
	}
	start := time.Now()
	var claims []string
	claim := func(name string, size int64, labels map[string]string, dataSource map[string]string) string {
		md := map[string]any{"name": name, "namespace": ns}
		if len(labels) > 0 {
			md["labels"] = labels
		}
		if d.volumeBindingMode() == "WaitForFirstConsumer" {
			md["annotations"] = map[string]string{"volume.kubernetes.io/selected-node": e2eNode}
		}
		sp := map[string]any{
			"storageClassName": d.StorageClass.Name(),
			"accessModes":      []string{"ReadWriteOnce"},
			"resources":        map[string]any{"requests": map[string]string{"storage": FormatBytes(size)}},
		}
		if dataSource != nil {
			sp["dataSource"] = dataSource
		}
		b, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": md, "spec": sp})
		cp.Apply(string(b))
		claims = append(claims, name)
		return name
	}
	// bound waits for a claim and returns its PV and volume.
	bound := func(name string) (string, *provisionerapi.Volume) {
		cp.WaitJSONPath(3*time.Minute, ns, "pvc", name, "{.status.phase}", "PVC "+name+" Bound", func(v string) bool { return v == "Bound" })
		pv := strings.TrimSpace(cp.mustJSONPath(ns, "pvc", name, "{.spec.volumeName}"))
		volID := strings.TrimSpace(cp.mustJSONPath("", "pv", pv, "{.spec.csi.volumeHandle}"))
		vol, err := getVolume(pc, volID)
		if err != nil || vol == nil {
			t.Fatalf("PVC %s: provisioner GetVolume(%s): %v %v", name, volID, vol, err)
		}
		return pv, vol
	}

	src := claim("e2e-snap-source", snapClaimBytes, nil, nil)
	_, srcVol := bound(src)
	var tSnap, tRestore, tClone, tSnapDelete, tGroup time.Duration

	if caps.Snapshots {
		cp.MustKubectl("apply", "-f", repo+"/deploy/examples/snapshots/volumesnapshotclass.yaml")
		const snap = "e2e-snap"
		t0 := time.Now()
		cp.Apply(fmt.Sprintf(`{"apiVersion":"snapshot.storage.k8s.io/v1","kind":"VolumeSnapshot","metadata":{"name":%q,"namespace":%q},
			"spec":{"volumeSnapshotClassName":%q,"source":{"persistentVolumeClaimName":%q}}}`, snap, ns, snapshotClass, src))
		cp.WaitJSONPath(3*time.Minute, ns, "volumesnapshot", snap, "{.status.readyToUse}", "VolumeSnapshot "+snap+" readyToUse", func(v string) bool { return v == "true" })
		tSnap = time.Since(t0)
		t.Logf("timing: VolumeSnapshot %s ready in %v", snap, tSnap.Round(time.Millisecond))
		if rs, err := ParseBytes(cp.mustJSONPath(ns, "volumesnapshot", snap, "{.status.restoreSize}")); err != nil || rs != snapClaimBytes {
			t.Errorf("VolumeSnapshot %s restoreSize %d (%v), want the volume's %d", snap, rs, err, int64(snapClaimBytes))
		}
		content := strings.TrimSpace(cp.mustJSONPath(ns, "volumesnapshot", snap, "{.status.boundVolumeSnapshotContentName}"))
		handle := strings.TrimSpace(cp.mustJSONPath("", "volumesnapshotcontent", content, "{.status.snapshotHandle}"))
		if got := cp.mustJSONPath("", "volumesnapshotcontent", content, "{.spec.driver}"); got != driverName {
			t.Errorf("VolumeSnapshotContent %s driver %q, want %q", content, got, driverName)
		}
		if got := cp.mustJSONPath("", "volumesnapshotcontent", content, "{.status.restoreSize}"); got != fmt.Sprint(int64(snapClaimBytes)) {
			t.Errorf("VolumeSnapshotContent %s restoreSize %q, want %d", content, got, int64(snapClaimBytes))
		}
		s := mustGetSnapshot(t, pc, handle)
		if s.GetSourceVolumeId() != srcVol.GetId() || !s.GetReadyToUse() || s.GetSizeBytes() != snapClaimBytes {
			t.Errorf("registry snapshot %s: source %q ready %v size %d, want %q true %d",
				handle, s.GetSourceVolumeId(), s.GetReadyToUse(), s.GetSizeBytes(), srcVol.GetId(), int64(snapClaimBytes))
		}
		if !slices.Contains(listSnapshots(t, pc, srcVol.GetId()), handle) {
			t.Errorf("the registry's ListSnapshots of volume %s does not list %s", srcVol.GetId(), handle)
		}

		// A restore: a new volume whose source is the snapshot.
		t0 = time.Now()
		restored := claim("e2e-snap-restored", snapClaimBytes, nil, map[string]string{"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snap})
		pv, vol := bound(restored)
		tRestore = time.Since(t0)
		t.Logf("timing: PVC %s restored from %s and bound in %v", restored, snap, tRestore.Round(time.Millisecond))
		if got := vol.GetSource().GetSnapshotId(); got != handle {
			t.Errorf("restored volume %s has source snapshot %q, want %q (source %v)", vol.GetId(), got, handle, vol.GetSource())
		}
		if c, err := ParseBytes(cp.mustJSONPath("", "pv", pv, "{.spec.capacity.storage}")); err != nil || c < snapClaimBytes {
			t.Errorf("PV %s capacity %d (%v), want at least the snapshot's restoreSize %d", pv, c, err, int64(snapClaimBytes))
		}
		if vol.GetId() == srcVol.GetId() {
			t.Errorf("the restored claim is bound to the source's volume %s", vol.GetId())
		}

		// Deleting the VolumeSnapshot (deletionPolicy Delete) deletes the
		// snapshot; the volume restored from it stays.
		t0 = time.Now()
		cp.MustKubectl("delete", "volumesnapshot", snap, "-n", ns, "--wait=false")
		cp.WaitGone(2*time.Minute, ns, "volumesnapshot", snap)
		cp.WaitGone(2*time.Minute, "", "volumesnapshotcontent", content)
		e.WaitFor(time.Minute, "registry snapshot "+handle+" deleted", func() (bool, string) {
			s, err := getSnapshot(pc, handle)
			if err != nil {
				return false, err.Error()
			}
			return s == nil && !slices.Contains(listSnapshots(t, pc, srcVol.GetId()), handle), fmt.Sprintf("still there: %v", s)
		})
		tSnapDelete = time.Since(t0)
		t.Logf("timing: VolumeSnapshot deleted -> registry snapshot gone in %v", tSnapDelete.Round(time.Millisecond))
		if v, err := getVolume(pc, vol.GetId()); err != nil || v == nil {
			t.Errorf("restored volume %s gone with its snapshot: %v %v", vol.GetId(), v, err)
		}
	}

	if caps.Clones {
		t0 := time.Now()
		clone := claim("e2e-snap-clone", snapClaimBytes, nil, map[string]string{"kind": "PersistentVolumeClaim", "name": src})
		_, vol := bound(clone)
		tClone = time.Since(t0)
		t.Logf("timing: PVC %s cloned from %s and bound in %v", clone, src, tClone.Round(time.Millisecond))
		if got := vol.GetSource().GetVolumeId(); got != srcVol.GetId() || vol.GetId() == srcVol.GetId() {
			t.Errorf("clone volume %s has source volume %q, want %q (source %v)", vol.GetId(), got, srcVol.GetId(), vol.GetSource())
		}
	}

	if caps.Snapshots && caps.GroupSnapshots {
		cp.MustKubectl("apply", "-f", repo+"/deploy/examples/snapshots/volumegroupsnapshotclass.yaml")
		members := map[string]string{} // volume ID -> claim
		for _, name := range []string{"e2e-group-a", "e2e-group-b"} {
			claim(name, snapClaimBytes, map[string]string{groupLabel: "g1"}, nil)
		}
		for _, name := range []string{"e2e-group-a", "e2e-group-b"} {
			_, vol := bound(name)
			members[vol.GetId()] = name
		}
		const group = "e2e-group"
		t0 := time.Now()
		cp.Apply(fmt.Sprintf(`{"apiVersion":"groupsnapshot.storage.k8s.io/v1","kind":"VolumeGroupSnapshot","metadata":{"name":%q,"namespace":%q},
			"spec":{"volumeGroupSnapshotClassName":%q,"source":{"selector":{"matchLabels":{%q:"g1"}}}}}`, group, ns, groupSnapshotClass, groupLabel))
		cp.WaitJSONPath(3*time.Minute, ns, "volumegroupsnapshot", group, "{.status.readyToUse}", "VolumeGroupSnapshot "+group+" readyToUse", func(v string) bool { return v == "true" })
		tGroup = time.Since(t0)
		t.Logf("timing: VolumeGroupSnapshot %s ready in %v", group, tGroup.Round(time.Millisecond))
		content := strings.TrimSpace(cp.mustJSONPath(ns, "volumegroupsnapshot", group, "{.status.boundVolumeGroupSnapshotContentName}"))
		var vgsc struct {
			Status struct {
				Handle string `json:"volumeGroupSnapshotHandle"`
				Infos  []struct {
					VolumeHandle   string `json:"volumeHandle"`
					SnapshotHandle string `json:"snapshotHandle"`
				} `json:"volumeSnapshotInfoList"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(cp.MustKubectl("get", "volumegroupsnapshotcontent", content, "-o", "json")), &vgsc); err != nil {
			t.Fatal(err)
		}
		snapOf := map[string]string{} // volume ID -> snapshot handle
		for _, in := range vgsc.Status.Infos {
			snapOf[in.VolumeHandle] = in.SnapshotHandle
		}
		for id, name := range members {
			if snapOf[id] == "" {
				t.Errorf("VolumeGroupSnapshotContent %s has no snapshot of %s (claim %s): %+v", content, id, name, vgsc.Status.Infos)
			}
		}
		if len(snapOf) != len(members) {
			t.Errorf("VolumeGroupSnapshotContent %s holds %d snapshots, want %d: %+v", content, len(snapOf), len(members), vgsc.Status.Infos)
		}
		// One ready VolumeSnapshot per claim, owned by the group: the
		// snapshot-controller fills in the members' status after the
		// group's, so wait for it.
		var memberSnaps []string
		e.WaitFor(2*time.Minute, "the VolumeSnapshots of group "+group+" ready", func() (bool, string) {
			var list struct {
				Items []struct {
					Metadata struct {
						Name            string `json:"name"`
						OwnerReferences []struct {
							Kind, Name string
						} `json:"ownerReferences"`
					} `json:"metadata"`
					Status struct {
						ReadyToUse bool `json:"readyToUse"`
					} `json:"status"`
				} `json:"items"`
			}
			if err := json.Unmarshal([]byte(cp.MustKubectl("get", "volumesnapshots", "-n", ns, "-o", "json")), &list); err != nil {
				t.Fatal(err)
			}
			owned, ready := 0, 0
			memberSnaps = memberSnaps[:0]
			for _, it := range list.Items {
				if slices.ContainsFunc(it.Metadata.OwnerReferences, func(r struct{ Kind, Name string }) bool {
					return r.Kind == "VolumeGroupSnapshot" && r.Name == group
				}) {
					owned++
					memberSnaps = append(memberSnaps, it.Metadata.Name)
					if it.Status.ReadyToUse {
						ready++
					}
				}
			}
			if owned > 2 {
				t.Fatalf("group %s owns %d VolumeSnapshots, want 2", group, owned)
			}
			return owned == 2 && ready == 2, fmt.Sprintf("%d owned, %d ready", owned, ready)
		})
		g := mustGetSnapshotGroup(t, pc, vgsc.Status.Handle)
		var sources []string
		for _, s := range g.GetSnapshots() {
			sources = append(sources, s.GetSourceVolumeId())
			if snapOf[s.GetSourceVolumeId()] != s.GetId() || s.GetGroupId() != g.GetId() {
				t.Errorf("registry group %s: snapshot %s of %s (group %q), the content says %q", g.GetId(), s.GetId(), s.GetSourceVolumeId(), s.GetGroupId(), snapOf[s.GetSourceVolumeId()])
			}
		}
		if !g.GetReadyToUse() || len(sources) != 2 {
			t.Errorf("registry group %s: ready %v, snapshots of %v, want ready and both claims' volumes", g.GetId(), g.GetReadyToUse(), sources)
		}
		// A claim restored from a member of the group: a new volume whose
		// source is that member's snapshot, at the member's restoreSize.
		member := memberSnaps[0]
		memberContent := strings.TrimSpace(cp.mustJSONPath(ns, "volumesnapshot", member, "{.status.boundVolumeSnapshotContentName}"))
		memberHandle := strings.TrimSpace(cp.mustJSONPath("", "volumesnapshotcontent", memberContent, "{.status.snapshotHandle}"))
		rs, err := ParseBytes(cp.mustJSONPath(ns, "volumesnapshot", member, "{.status.restoreSize}"))
		if err != nil || rs != snapClaimBytes {
			t.Errorf("group member VolumeSnapshot %s restoreSize %d (%v), want its volume's %d", member, rs, err, int64(snapClaimBytes))
		}
		t0 = time.Now()
		memberRestored := claim("e2e-group-restored", snapClaimBytes, nil, map[string]string{"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": member})
		_, mvol := bound(memberRestored)
		t.Logf("timing: PVC %s restored from group member %s and bound in %v", memberRestored, member, time.Since(t0).Round(time.Millisecond))
		if got := mvol.GetSource().GetSnapshotId(); got != memberHandle || !slices.Contains(slices.Collect(maps.Values(snapOf)), got) {
			t.Errorf("volume %s restored from group member %s has source snapshot %q, want the member's %q, one of the group's %v", mvol.GetId(), member, got, memberHandle, snapOf)
		}
		cp.MustKubectl("delete", "volumegroupsnapshot", group, "-n", ns, "--wait=false")
		cp.WaitGone(2*time.Minute, ns, "volumegroupsnapshot", group)
		e.WaitFor(2*time.Minute, "registry group snapshot "+g.GetId()+" deleted", func() (bool, string) {
			g, err := getSnapshotGroup(pc, g.GetId())
			if err != nil {
				return false, err.Error()
			}
			return g == nil, fmt.Sprintf("still there: %v", g)
		})
	}

	// Every claim of these steps goes, and with it its volume.
	for _, c := range claims {
		cp.MustKubectl("delete", "pvc", c, "-n", ns, "--wait=false")
	}
	for _, c := range claims {
		cp.WaitGone(2*time.Minute, ns, "pvc", c)
	}
	e.WaitFor(2*time.Minute, "the snapshot steps' PVs deleted", func() (bool, string) {
		out, err := cp.Kubectl("get", "pv", "-o", "jsonpath={range .items[*]}{.spec.claimRef.name} {end}")
		if err != nil {
			return false, err.Error()
		}
		left := slices.DeleteFunc(strings.Fields(out), func(n string) bool { return !slices.Contains(claims, n) })
		return len(left) == 0, fmt.Sprintf("PVs of %v left", left)
	})
	t.Logf("timings: snapshot %v, restore %v, clone %v, snapshot delete %v, group snapshot %v; snapshot steps %v",
		tSnap.Round(time.Millisecond), tRestore.Round(time.Millisecond), tClone.Round(time.Millisecond),
		tSnapDelete.Round(time.Millisecond), tGroup.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// getSnapshot asks the provisioner for a snapshot; NotFound is (nil, nil).
func getSnapshot(c provisionerapi.ProvisionerClient, id string) (*provisionerapi.Snapshot, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.GetSnapshot(ctx, &provisionerapi.GetSnapshotRequest{SnapshotId: id})
	if status.Code(err) == codes.NotFound {
		return nil, nil
	}
	return s, err
}

func mustGetSnapshot(t *testing.T, c provisionerapi.ProvisionerClient, id string) *provisionerapi.Snapshot {
	t.Helper()
	s, err := getSnapshot(c, id)
	if err != nil || s == nil {
		t.Fatalf("provisioner GetSnapshot(%s) (the VolumeSnapshotContent's snapshotHandle): %v %v", id, s, err)
	}
	return s
}

// listSnapshots lists the IDs of a volume's snapshots, every page.
func listSnapshots(t *testing.T, c provisionerapi.ProvisionerClient, volID string) []string {
	t.Helper()
	var ids []string
	token := ""
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := c.ListSnapshots(ctx, &provisionerapi.ListSnapshotsRequest{SourceVolumeId: volID, StartingToken: token})
		cancel()
		if err != nil {
			t.Fatalf("provisioner ListSnapshots(%s): %v", volID, err)
		}
		for _, s := range resp.GetSnapshots() {
			ids = append(ids, s.GetId())
		}
		if token = resp.GetNextToken(); token == "" {
			return ids
		}
	}
}

// getSnapshotGroup asks the provisioner for a group snapshot; NotFound is
// (nil, nil).
func getSnapshotGroup(c provisionerapi.ProvisionerClient, id string) (*provisionerapi.SnapshotGroup, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := c.GetSnapshotGroup(ctx, &provisionerapi.GetSnapshotGroupRequest{GroupId: id})
	if status.Code(err) == codes.NotFound {
		return nil, nil
	}
	return g, err
}

func mustGetSnapshotGroup(t *testing.T, c provisionerapi.ProvisionerClient, id string) *provisionerapi.SnapshotGroup {
	t.Helper()
	g, err := getSnapshotGroup(c, id)
	if err != nil || g == nil {
		t.Fatalf("provisioner GetSnapshotGroup(%s) (the VolumeGroupSnapshotContent's handle): %v %v", id, g, err)
	}
	return g
}
