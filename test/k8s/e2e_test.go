package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/agentapi"
	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/test/vm"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	driverName = "csi.nvmirror.io"
	// e2eNode plays the compute node: the Node and CSINode kubelet would
	// register, and the VolumeAttachment's target.
	e2eNode = "k8s-e2e-node-1"
	// e2eOtherNode is another compute node, holding a certificate of its
	// own and nothing published.
	e2eOtherNode = "k8s-e2e-node-2"
)

// TestVolumeLifecycle drives one volume through its whole life from the
// Kubernetes side, with every component real: kube-apiserver, the PV
// controllers of kube-controller-manager, csi-provisioner, csi-attacher,
// csi-resizer and (when the driver offers snapshots) csi-snapshotter with
// the snapshot-controller calling nvmirror-csi's controller, the
// provisioner, and three storage node agents exporting replicas through the
// kernel NVMe target in a VM. The objects are deploy/'s own CSIDriver,
// example StorageClass and PVC, and its snapshot classes.
//
// Each step is checked where it lands, not only in Kubernetes: the replicas
// on the storage nodes (their allowed hosts and sizes, read from the agents'
// API) and the provisioner's record (read with nvmirrorctl).
func TestVolumeLifecycle(t *testing.T) {
	tools := FindTools(t)
	repo, err := vm.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	e := NewEnv(t)
	start := time.Now()
	bins := buildNvmirror(t, repo, e.Dir)
	creds := newCredentials(t, e.Dir, []string{e2eNode, e2eOtherNode}, storageNodeCount)
	t.Logf("built nvmirror commands in %v", time.Since(start).Round(time.Millisecond))

	// The API server starts while the VM boots (tens of seconds under
	// TCG).
	cp := LaunchControlPlane(e, tools)
	storage := bootStorageNodes(t, creds)
	cp.WaitReady()
	t.Logf("timing: control plane ready (etcd, kube-apiserver /readyz) in %v", cp.Ready.Round(time.Millisecond))
	nodes := storage.wait(t, e, creds)
	t.Logf("timing: storage VM serving (3 agents) %v after the test started", time.Since(start).Round(time.Millisecond))

	// The snapshot CRDs, a prerequisite of deploy/ (docs/install.md): its
	// snapshot examples are of their kinds.
	t.Logf("timing: snapshot CRDs established in %v", cp.InstallSnapshotCRDs(repo).Round(time.Millisecond))
	// deploy/'s objects, created for real: the CSIDriver, the example
	// StorageClass, and the controller's ServiceAccount with its RBAC.
	d := pickDeployObjects(t, cp, repo)
	numReplicas := d.fitStorageClass(t, len(nodes))
	if q, err := ParseBytes(d.requestedStorage()); err != nil || q > e2eClaimBytes {
		t.Logf("PVC %s: asking for %s instead of %q: the VM's pools are tmpfs, and a thick replica takes its size in guest memory",
			d.PVC.Name(), FormatBytes(e2eClaimBytes), d.requestedStorage())
		d.setRequestedStorage(FormatBytes(e2eClaimBytes))
	}
	ctl := d.Controller
	cp.Apply(ListJSON(ctl.RBAC))
	cp.Apply(ListJSON([]Object{d.CSIDriver, d.StorageClass}))

	// The provisioner records volume events on claims as deploy/'s
	// provisioner ServiceAccount, so deploy/'s RBAC is what allows it.
	// The sweeper and the offline repairer every 5 s, not 30: the replica
	// count step waits on both.
	prov := startProvisioner(t, e, bins, creds, nodes, "--kube-events=true", "--sweep-interval=5s", "--repair-interval=5s",
		"--kubeconfig="+cp.ServiceAccountKubeconfig(ctl.Namespace, provisionerServiceAccount))
	e.FailOnLog(prov.Process, RBACRefusal, "the API server refused the provisioner something: deploy/'s RBAC lacks a permission")
	socket := startCSIController(t, e, bins, prov)
	ag := dialAgents(t, nodes, creds)
	pc := prov.client(t, creds.Admin)
	// The compute node's plugin, as the provisioner sees it: its own
	// certificate; and another node's, which must not reach its secrets.
	nodePlugin := prov.client(t, creds.ComputeNodes[e2eNode])
	otherNode := prov.client(t, creds.ComputeNodes[e2eOtherNode])

	// The sidecars run with the controller Deployment's args and as its
	// ServiceAccount, so deploy/'s RBAC is what allows them anything.
	args := map[string][]string{}
	for _, name := range sidecarNames {
		a, ok := ctl.SidecarArgs[name]
		if !ok {
			t.Fatalf("%s: the controller Deployment has no %s container", ctl.Source, name)
		}
		a = append([]string{}, a...)
		if slices.ContainsFunc(a, func(s string) bool {
			return strings.HasPrefix(s, "--leader-election") && s != "--leader-election=false"
		}) {
			// In a pod the Lease goes to the pod's namespace; out of
			// cluster it would go to "default", where the Role does
			// not reach.
			a = append(a, "--leader-election-namespace="+ctl.Namespace)
		}
		args[name] = append(a, "--v=5")
	}
	// The PVC's name and namespace and the PV's name must reach
	// CreateVolume as parameters: the provisioner keeps them, which is how
	// nvmirrorctl shows the claim a volume belongs to.
	if !slices.Contains(args["csi-provisioner"], "--extra-create-metadata") {
		t.Errorf("%s: csi-provisioner runs without --extra-create-metadata: nvmirrorctl will not show claims", ctl.Source)
		args["csi-provisioner"] = append(args["csi-provisioner"], "--extra-create-metadata")
	}
	sidecars := cp.StartCSISidecars(socket, SidecarOptions{
		Kubeconfig: cp.ServiceAccountKubeconfig(ctl.Namespace, ctl.ServiceAccount),
		Args:       args,
	})
	// csi-snapshotter and the snapshot-controller, when the driver offers
	// snapshots.
	caps := snapshotSidecars(t, e, cp, repo, socket, cp.ServiceAccountKubeconfig(ctl.Namespace, ctl.ServiceAccount), args["csi-snapshotter"])
	for _, p := range []*Process{sidecars.Provisioner, sidecars.Attacher, sidecars.Resizer} {
		// A Forbidden is a permission deploy/'s RBAC lacks, which a real
		// cluster would refuse the same way, often only as a retried error
		// in a log.
		e.FailOnLog(p, RBACRefusal, "the API server refused it something: deploy/'s RBAC lacks a permission")
	}

	ns := d.PVC.Namespace()
	if ns == "" {
		ns = "default"
	}
	pvcName := d.PVC.Name()
	requested, err := ParseBytes(d.requestedStorage())
	if err != nil {
		t.Fatalf("%s: %v", d.PVCSource, err)
	}
	t.Logf("deploy/ objects: CSIDriver %s (%s), StorageClass %s (%s), PVC %s/%s of %s (%s), sidecars as %s/%s (%s)",
		d.CSIDriver.Name(), d.CSIDriverSource, d.StorageClass.Name(), d.StorageClassSource,
		ns, pvcName, FormatBytes(requested), d.PVCSource, ctl.Namespace, ctl.ServiceAccount, ctl.Source)

	// Kubelet's part, done by hand: the Node, and the CSINode carrying the
	// driver's node ID (<node name>/<host NQN>, what NodeGetInfo returns).
	hostNQN := newHostNQN(t)
	nodeID := e2eNode + "/" + hostNQN
	cp.Apply(fmt.Sprintf(`{"apiVersion":"v1","kind":"Node","metadata":{"name":%q}}`, e2eNode))
	cp.Apply(fmt.Sprintf(`{"apiVersion":"storage.k8s.io/v1","kind":"CSINode","metadata":{"name":%q},
		"spec":{"drivers":[{"name":%q,"nodeID":%q}]}}`, e2eNode, driverName, nodeID))

	// 1. Provision: PVC bound to a PV of the requested size and the class's
	// attributes, whose volume has numReplicas replicas on distinct
	// storage nodes, admitting no host yet.
	t0 := time.Now()
	if err := cp.EnsureNamespace(ns); err != nil {
		t.Fatal(err)
	}
	if d.volumeBindingMode() == "WaitForFirstConsumer" {
		// The scheduler's part: provisioning waits for a pod to be
		// scheduled, which kube-scheduler records on the claim.
		md := d.PVC.metadata()
		ann, _ := md["annotations"].(map[string]any)
		if ann == nil {
			ann = map[string]any{}
			md["annotations"] = ann
		}
		ann["volume.kubernetes.io/selected-node"] = e2eNode
	}
	cp.Apply(d.PVC.JSON())
	cp.WaitJSONPath(3*time.Minute, ns, "pvc", pvcName, "{.status.phase}", "PVC "+pvcName+" Bound", func(v string) bool { return v == "Bound" })
	tBound := time.Since(t0)
	pvName := strings.TrimSpace(cp.mustJSONPath(ns, "pvc", pvcName, "{.spec.volumeName}"))
	var pv struct {
		Spec struct {
			Capacity map[string]string `json:"capacity"`
			CSI      struct {
				Driver           string            `json:"driver"`
				VolumeHandle     string            `json:"volumeHandle"`
				FSType           string            `json:"fsType"`
				VolumeAttributes map[string]string `json:"volumeAttributes"`
			} `json:"csi"`
			StorageClassName              string `json:"storageClassName"`
			PersistentVolumeReclaimPolicy string `json:"persistentVolumeReclaimPolicy"`
		} `json:"spec"`
	}
	if err := json.Unmarshal([]byte(cp.MustKubectl("get", "pv", pvName, "-o", "json")), &pv); err != nil {
		t.Fatal(err)
	}
	volID := pv.Spec.CSI.VolumeHandle
	t.Logf("timing: PVC %s bound to PV %s (volume %s) in %v", pvcName, pvName, volID, tBound.Round(time.Millisecond))
	if pv.Spec.CSI.Driver != driverName {
		t.Errorf("PV driver %q, want %q", pv.Spec.CSI.Driver, driverName)
	}
	if pv.Spec.StorageClassName != d.StorageClass.Name() {
		t.Errorf("PV storage class %q, want %q", pv.Spec.StorageClassName, d.StorageClass.Name())
	}
	if got, err := ParseBytes(pv.Spec.Capacity["storage"]); err != nil || got != requested {
		t.Errorf("PV capacity %q (%v), want the requested %s", pv.Spec.Capacity["storage"], err, FormatBytes(requested))
	}
	if pv.Spec.CSI.FSType != d.fsType() {
		t.Errorf("PV fsType %q, want the class's %q", pv.Spec.CSI.FSType, d.fsType())
	}
	vol, err := getVolume(pc, volID)
	if err != nil || vol == nil {
		t.Fatalf("provisioner GetVolume(%s): %v %v", volID, vol, err)
	}
	wantAttrs := map[string]string{
		"fsType":      d.fsType(),
		"numReplicas": fmt.Sprint(numReplicas),
		"mdUUID":      vol.GetMdUuid(),
	}
	for k, want := range wantAttrs {
		if got := pv.Spec.CSI.VolumeAttributes[k]; got != want || want == "" {
			t.Errorf("PV volumeAttributes[%s] = %q, want %q (all: %v)", k, got, want, pv.Spec.CSI.VolumeAttributes)
		}
	}
	if vol.GetSizeBytes() != requested {
		t.Errorf("provisioner volume size %d, want %d", vol.GetSizeBytes(), requested)
	}
	reps := checkReplicas(t, ag, vol, numReplicas, requested, "")

	// 2. Attach: a VolumeAttachment as the attach/detach controller would
	// create it for a pod on the node. Every replica must admit the node's
	// host NQN, which the driver parses out of the node ID in CSINode.
	vaName := "e2e-" + pvName
	t0 = time.Now()
	cp.Apply(fmt.Sprintf(`{"apiVersion":"storage.k8s.io/v1","kind":"VolumeAttachment","metadata":{"name":%q},
		"spec":{"attacher":%q,"nodeName":%q,"source":{"persistentVolumeName":%q}}}`, vaName, driverName, e2eNode, pvName))
	cp.WaitJSONPath(2*time.Minute, "", "volumeattachment", vaName, "{.status.attached}", "VolumeAttachment attached", func(v string) bool { return v == "true" })
	tAttach := time.Since(t0)
	t.Logf("timing: VolumeAttachment attached in %v", tAttach.Round(time.Millisecond))
	if got := cp.mustJSONPath("", "volumeattachment", vaName, "{.status.attachmentMetadata.hostNQN}"); got != hostNQN {
		t.Errorf("VolumeAttachment attachmentMetadata.hostNQN = %q, want %q", got, hostNQN)
	}
	checkReplicas(t, ag, vol, numReplicas, requested, hostNQN)
	if v, err := getVolume(pc, volID); err != nil || v.GetPublishedHostNqn() != hostNQN || v.GetPublishedNodeId() != nodeID {
		t.Errorf("provisioner: published to %q (node %q), want %q (%q); err %v", v.GetPublishedHostNqn(), v.GetPublishedNodeId(), hostNQN, nodeID, err)
	}

	// 3. Expand while attached (the driver offers online expansion): the
	// PV grows, so does every replica, and the claim waits for the node
	// to grow the filesystem (node expansion, kubelet's part).
	newSize := 2 * requested
	t0 = time.Now()
	cp.MustKubectl("patch", "pvc", pvcName, "-n", ns, "--type=merge",
		"-p", fmt.Sprintf(`{"spec":{"resources":{"requests":{"storage":%q}}}}`, FormatBytes(newSize)))
	cp.WaitJSONPath(2*time.Minute, "", "pv", pvName, "{.spec.capacity.storage}", "PV capacity "+FormatBytes(newSize), func(v string) bool {
		n, err := ParseBytes(v)
		return err == nil && n == newSize
	})
	tResize := time.Since(t0)
	t.Logf("timing: PV %s expanded to %s in %v", pvName, FormatBytes(newSize), tResize.Round(time.Millisecond))
	cp.WaitJSONPath(30*time.Second, ns, "pvc", pvcName, "{.status.conditions[*].type}", "PVC condition FileSystemResizePending",
		func(v string) bool { return slices.Contains(strings.Fields(v), "FileSystemResizePending") })
	vol, err = getVolume(pc, volID)
	if err != nil || vol.GetSizeBytes() != newSize {
		t.Errorf("provisioner volume size after expansion %d (%v), want %d", vol.GetSizeBytes(), err, newSize)
	}
	checkReplicas(t, ag, vol, numReplicas, newSize, hostNQN)
	if t.Failed() {
		t.FailNow()
	}

	// 4. The admin's view: nvmirrorctl names the claim the volume serves.
	found := false
	for _, v := range prov.volumesJSON(t, bins) {
		if v.GetId() != volID {
			continue
		}
		found = true
		md := v.GetMetadata()
		for k, want := range map[string]string{
			"csi.storage.k8s.io/pvc/name":      pvcName,
			"csi.storage.k8s.io/pvc/namespace": ns,
			"csi.storage.k8s.io/pv/name":       pvName,
		} {
			if md[k] != want {
				t.Errorf("nvmirrorctl volumes: %s metadata %s = %q, want %q (all: %v)", volID, k, md[k], want, md)
			}
		}
	}
	if !found {
		t.Errorf("nvmirrorctl volumes -o json does not list %s", volID)
	}
	table := prov.nvmirrorctl(t, bins, "volumes")
	row := slices.IndexFunc(strings.Split(table, "\n"), func(l string) bool {
		f := strings.Fields(l)
		return len(f) > 1 && f[0] == volID && f[1] == ns+"/"+pvcName
	})
	if row < 0 {
		t.Errorf("nvmirrorctl volumes: no row for %s with PVC %s/%s:\n%s", volID, ns, pvcName, table)
	}
	t.Logf("$ nvmirrorctl volumes\n%s", table)

	// 5. Volume trouble where Kubernetes users look: a node reports the
	// volume degraded, then healed, as its healer does; the claim gets a
	// Warning naming the replica and storage node, then a Normal.
	claimEvents(t, e, cp, nodePlugin, otherNode, vol, ns, pvcName, pvName)
	// kubectl nvmirror names the volume by its claim, through the API
	// server, with the credentials of deploy/'s Secrets.
	pluginResolvesClaim(t, cp, bins, prov, ctl.Namespace, ns, pvcName, volID)

	// 6. Detach: the host loses access.
	t0 = time.Now()
	cp.MustKubectl("delete", "volumeattachment", vaName, "--wait=false")
	cp.WaitGone(2*time.Minute, "", "volumeattachment", vaName)
	tDetach := time.Since(t0)
	t.Logf("timing: VolumeAttachment detached and gone in %v", tDetach.Round(time.Millisecond))
	checkReplicas(t, ag, vol, numReplicas, newSize, "")

	// 7. The replica count of the live volume through VolumeAttributesClasses
	// (csi-resizer's ModifyVolume): down to 2, up to 3, down to 2 again.
	// The claim is detached, so an offline repair on a storage node fills
	// the new replica.
	tReplicas := changeReplicaCount(t, e, cp, ag, pc, ns, pvcName, pvName, volID, newSize, []int{2, 3, 2})
	reps, _ = ag.replicasOf(volID)

	// 8. Delete the claim: the PV (reclaim policy Delete) and every
	// replica go.
	if pv.Spec.PersistentVolumeReclaimPolicy != "Delete" {
		t.Fatalf("PV reclaim policy %q: the example StorageClass should delete volumes with their claims", pv.Spec.PersistentVolumeReclaimPolicy)
	}
	t0 = time.Now()
	cp.MustKubectl("delete", "pvc", pvcName, "-n", ns, "--wait=false")
	cp.WaitGone(2*time.Minute, "", "pv", pvName)
	e.WaitFor(time.Minute, "every replica of "+volID+" deleted on the storage nodes", func() (bool, string) {
		left, err := ag.replicasOf(volID)
		if err != nil {
			return false, err.Error()
		}
		return len(left) == 0, fmt.Sprintf("replicas left: %v", replicaIDs(left))
	})
	tDelete := time.Since(t0)
	t.Logf("timing: PVC deleted -> PV and %d replicas gone in %v", len(reps), tDelete.Round(time.Millisecond))
	if v, err := getVolume(pc, volID); err != nil || v != nil {
		t.Errorf("provisioner still has volume %s after the PV was deleted: %v (state %q)", volID, err, v.GetState())
	}
	authenticatedVolume(t, e, cp, pc, nodePlugin, otherNode, repo, ns, hostNQN)

	// 9. Snapshots, restores, clones and group snapshots of claims of the
	// same class (each part skipped while the driver does not offer it).
	snapshotSteps(t, e, cp, pc, d, caps, repo, ns)

	t.Logf("timings: control plane %v, PVC bound %v, attach %v, resize %v, detach %v, numReplicas %d→2→3→2 %v, delete %v; whole test %v",
		cp.Ready.Round(time.Millisecond), tBound.Round(time.Millisecond), tAttach.Round(time.Millisecond),
		tResize.Round(time.Millisecond), tDetach.Round(time.Millisecond), numReplicas, tReplicas, tDelete.Round(time.Millisecond),
		time.Since(start).Round(time.Millisecond))
}

// authenticatedVolume takes a claim of deploy/'s authenticated example class
// through attach and delete: attaching must give every replica's storage
// node (the 6.12 kernel in the VM) the host's DH-HMAC-CHAP secrets, which
// the provisioner hands out only once the agent confirmed them.
//
// The secrets go to the compute node's plugin (its own certificate), and
// to no other: neither another node's plugin nor the administrator.
func authenticatedVolume(t *testing.T, e *Env, cp *ControlPlane, pc, nodePlugin, otherNode provisionerapi.ProvisionerClient, repo, ns, hostNQN string) {
	t.Helper()
	const class, claim = "nvmirror-authenticated", "e2e-authenticated"
	cp.MustKubectl("apply", "-f", filepath.Join(repo, "deploy", "examples", "storageclass-authenticated.yaml"))
	cp.Apply(fmt.Sprintf(`{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":%q,"namespace":%q,
		"annotations":{"volume.kubernetes.io/selected-node":%q}},
		"spec":{"storageClassName":%q,"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":%q}}}}`,
		claim, ns, e2eNode, class, FormatBytes(e2eClaimBytes)))
	cp.WaitJSONPath(3*time.Minute, ns, "pvc", claim, "{.status.phase}", "PVC "+claim+" Bound", func(v string) bool { return v == "Bound" })
	pvName := strings.TrimSpace(cp.mustJSONPath(ns, "pvc", claim, "{.spec.volumeName}"))
	volID := strings.TrimSpace(cp.mustJSONPath("", "pv", pvName, "{.spec.csi.volumeHandle}"))
	vaName := "e2e-" + pvName
	t0 := time.Now()
	cp.Apply(fmt.Sprintf(`{"apiVersion":"storage.k8s.io/v1","kind":"VolumeAttachment","metadata":{"name":%q},
		"spec":{"attacher":%q,"nodeName":%q,"source":{"persistentVolumeName":%q}}}`, vaName, driverName, e2eNode, pvName))
	cp.WaitJSONPath(2*time.Minute, "", "volumeattachment", vaName, "{.status.attached}", "authenticated VolumeAttachment attached", func(v string) bool { return v == "true" })
	t.Logf("timing: authenticated volume %s attached in %v", volID, time.Since(t0).Round(time.Millisecond))
	vol, err := getVolume(pc, volID)
	if err != nil || vol == nil {
		t.Fatalf("provisioner GetVolume(%s): %v", volID, err)
	}
	if got := vol.GetParameters()["authentication"]; got != "bidirectional" {
		t.Errorf("volume %s has authentication %q, want the class's bidirectional", volID, got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := otherNode.GetHostCredentials(ctx, &provisionerapi.GetHostCredentialsRequest{HostNqn: hostNQN}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("GetHostCredentials of %s's host with %s's certificate: %v, want PermissionDenied", e2eNode, e2eOtherNode, err)
	}
	if _, err := pc.GetHostCredentials(ctx, &provisionerapi.GetHostCredentialsRequest{HostNqn: hostNQN}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("GetHostCredentials with the administrator's certificate: %v, want PermissionDenied", err)
	}
	if _, err := nodePlugin.DeleteVolume(ctx, &provisionerapi.DeleteVolumeRequest{VolumeId: volID}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("DeleteVolume with a node plugin's certificate: %v, want PermissionDenied", err)
	}
	creds, err := nodePlugin.GetHostCredentials(ctx, &provisionerapi.GetHostCredentialsRequest{HostNqn: hostNQN})
	if err != nil {
		t.Fatalf("GetHostCredentials with %s's own certificate: %v", e2eNode, err)
	}
	held := map[string]bool{}
	for _, c := range creds.GetCredentials() {
		held[c.GetStorageNode()] = c.GetDhchapSecret() != "" && c.GetDhchapCtrlSecret() != "" && c.GetGeneration() >= 1
	}
	for _, r := range vol.GetReplicas() {
		if !held[r.GetStorageNode()] {
			t.Errorf("replica %s: storage node %s holds no confirmed secrets for %s", r.GetId(), r.GetStorageNode(), hostNQN)
		}
	}
	cp.MustKubectl("delete", "volumeattachment", vaName, "--wait=false")
	cp.WaitGone(2*time.Minute, "", "volumeattachment", vaName)
	cp.MustKubectl("delete", "pvc", claim, "-n", ns, "--wait=false")
	cp.WaitGone(2*time.Minute, "", "pv", pvName)
	e.WaitFor(time.Minute, "authenticated volume "+volID+" deleted", func() (bool, string) {
		v, err := getVolume(pc, volID)
		return err == nil && v == nil, fmt.Sprintf("%v %v", v.GetState(), err)
	})
}

// checkReplicas checks the volume's replicas on the storage nodes
// themselves: one on each of numReplicas distinct nodes, as the provisioner
// records them, each the replica size of a volume of size bytes, admitting
// exactly host (none when host is ""). It returns them by node.
func checkReplicas(t *testing.T, ag agents, vol *provisionerapi.Volume, numReplicas int, size int64, host string) map[string][]*agentapi.Replica {
	t.Helper()
	onNodes, err := ag.replicasOf(vol.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if len(onNodes) != numReplicas {
		t.Errorf("volume %s has replicas on %d storage nodes, want %d: %v", vol.GetId(), len(onNodes), numReplicas, replicaIDs(onNodes))
	}
	recorded := activeReplicas(vol) // replica ID -> storage node, per the provisioner
	for node, reps := range onNodes {
		if len(reps) != 1 {
			t.Errorf("storage node %s holds %d replicas of %s, want 1: %v", node, len(reps), vol.GetId(), replicaIDs(onNodes))
		}
		for _, r := range reps {
			if recorded[r.GetReplicaId()] != node {
				t.Errorf("replica %s on %s is not the provisioner's (it records %v)", r.GetReplicaId(), node, recorded)
			}
			// A replica holds the volume plus md's superblock and bitmap.
			if want := layout.ReplicaSize(size); r.GetSizeBytes() != want {
				t.Errorf("replica %s on %s is %d bytes, want %d (a %d-byte volume and md's reserve)", r.GetReplicaId(), node, r.GetSizeBytes(), want, size)
			}
			want := []string{}
			if host != "" {
				want = []string{host}
			}
			if got := r.GetAllowedHosts(); !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Errorf("replica %s on %s allows hosts %q, want %q", r.GetReplicaId(), node, got, want)
			}
		}
	}
	return onNodes
}

func replicaIDs(m map[string][]*agentapi.Replica) map[string][]string {
	out := map[string][]string{}
	for node, reps := range m {
		for _, r := range reps {
			out[node] = append(out[node], r.GetReplicaId())
		}
	}
	return out
}

// mustJSONPath is JSONPath failing the test on error.
func (cp *ControlPlane) mustJSONPath(namespace, kind, name, path string) string {
	cp.t.Helper()
	v, err := cp.JSONPath(namespace, kind, name, path)
	if err != nil {
		cp.t.Fatal(err)
	}
	return v
}
