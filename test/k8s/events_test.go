package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nvmirror/nvmirror/pkg/kubeplugin"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
)

// provisionerServiceAccount is deploy/base's account of the provisioner,
// which its RBAC lets record events.
const provisionerServiceAccount = "nvmirror-provisioner"

// kubeEvent is the part of a core/v1 Event the test reads.
type kubeEvent struct {
	Type, Reason, Message string
	Count                 int
	InvolvedObject        struct{ Kind, Name, UID string }
	Source                struct{ Component string }
}

// eventsOf lists the events recorded on the object kind/name in ns.
func eventsOf(cp *ControlPlane, ns, kind, name string) ([]kubeEvent, error) {
	out, err := cp.Kubectl("get", "events", "-n", ns, "-o", "json",
		"--field-selector", "involvedObject.kind="+kind+",involvedObject.name="+name)
	if err != nil {
		return nil, err
	}
	var l struct{ Items []kubeEvent }
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		return nil, fmt.Errorf("kubectl get events: %v\n%s", err, out)
	}
	return l.Items, nil
}

// waitEvent waits up to timeout for the event of reason on kind/name and
// returns it.
func waitEvent(e *Env, cp *ControlPlane, timeout time.Duration, ns, kind, name, reason string) kubeEvent {
	var found kubeEvent
	e.WaitFor(timeout, reason+" event on "+kind+" "+ns+"/"+name, func() (bool, string) {
		evs, err := eventsOf(cp, ns, kind, name)
		if err != nil {
			return false, err.Error()
		}
		for _, ev := range evs {
			if ev.Reason == reason {
				found = ev
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events, none %s", len(evs), reason)
	})
	return found
}

// claimEvents reports the volume degraded and then healed as a node's
// healer does (ReportEvents with the node plugin's certificate: the
// provisioner takes a node's events only about itself, so another node's
// report naming this node is refused), and checks what Kubernetes users see: a
// Warning on the claim naming the replica and its storage node, then a
// Normal, both on the claim's UID (what `kubectl describe pvc` selects) and
// on the PV.
func claimEvents(t *testing.T, e *Env, cp *ControlPlane, nodePlugin, otherNode provisionerapi.ProvisionerClient, vol *provisionerapi.Volume, ns, pvc, pv string) {
	t.Helper()
	rep := vol.GetReplicas()[0]
	pvcUID := strings.TrimSpace(cp.mustJSONPath(ns, "pvc", pvc, "{.metadata.uid}"))
	reportAs := func(c provisionerapi.ProvisionerClient, typ, msg string, at time.Time) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.ReportEvents(ctx, &provisionerapi.ReportEventsRequest{Events: []*provisionerapi.Event{{
			Id: "e2e-" + typ + "-" + vol.GetId(), Type: typ, Time: timestamppb.New(at), VolumeId: vol.GetId(),
			ReplicaIds: []string{rep.GetId()}, Node: e2eNode, StorageNodes: []string{rep.GetStorageNode()}, Message: msg,
		}}})
		return err
	}
	report := func(typ, msg string, at time.Time) {
		if err := reportAs(nodePlugin, typ, msg, at); err != nil {
			t.Fatalf("ReportEvents %s as %s: %v", typ, e2eNode, err)
		}
	}
	if err := reportAs(otherNode, "VolumeDegraded", "forged", time.Now().UTC()); status.Code(err) != codes.PermissionDenied {
		t.Errorf("ReportEvents naming %s with %s's certificate: %v, want PermissionDenied", e2eNode, e2eOtherNode, err)
	}
	t0 := time.Now()
	report("VolumeDegraded", fmt.Sprintf("1 of %d replicas missing: %s (%s, reconnecting)", len(vol.GetReplicas()), rep.GetId(), rep.GetStorageNode()), t0.UTC())
	ev := waitEvent(e, cp, 30*time.Second, ns, "PersistentVolumeClaim", pvc, "VolumeDegraded")
	t.Logf("timing: VolumeDegraded reported -> Warning event on PVC %s/%s in %v", ns, pvc, time.Since(t0).Round(time.Millisecond))
	if ev.Type != "Warning" || !strings.Contains(ev.Message, rep.GetId()) || !strings.Contains(ev.Message, "storage node "+rep.GetStorageNode()) ||
		ev.InvolvedObject.UID != pvcUID || ev.Source.Component != "nvmirror-provisioner" {
		t.Errorf("VolumeDegraded on the PVC: %+v; want a Warning from nvmirror-provisioner on UID %s naming %s and storage node %s", ev, pvcUID, rep.GetId(), rep.GetStorageNode())
	}
	if pvEv := waitEvent(e, cp, 30*time.Second, "default", "PersistentVolume", pv, "VolumeDegraded"); pvEv.Type != "Warning" {
		t.Errorf("VolumeDegraded on the PV: %+v", pvEv)
	}

	t1 := time.Now()
	report("VolumeHealed", "healed after 3s; replicas back or replaced: "+rep.GetId()+" ("+rep.GetStorageNode()+", live)", t1.UTC())
	ev = waitEvent(e, cp, 30*time.Second, ns, "PersistentVolumeClaim", pvc, "VolumeHealed")
	t.Logf("timing: VolumeHealed reported -> Normal event on PVC %s/%s in %v", ns, pvc, time.Since(t1).Round(time.Millisecond))
	if ev.Type != "Normal" || !strings.Contains(ev.Message, rep.GetId()) || ev.InvolvedObject.UID != pvcUID {
		t.Errorf("VolumeHealed on the PVC: %+v; want a Normal on UID %s naming %s", ev, pvcUID, rep.GetId())
	}
	describe := cp.MustKubectl("describe", "pvc", "-n", ns, pvc)
	for _, want := range []string{"Warning  VolumeDegraded", "Normal   VolumeHealed"} {
		if !strings.Contains(strings.Join(strings.Fields(describe), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("kubectl describe pvc lacks %q:\n%s", want, describe)
		}
	}
	t.Logf("$ kubectl describe pvc -n %s %s (events)\n%s", ns, pvc, describe[strings.Index(describe, "Events:"):])
}

// pluginResolvesClaim runs kubectl-nvmirror against the API server: it
// reads the CA and the administrator's client certificate from deploy/'s
// Secrets (created here from the test's credentials; no token, as deploy/
// uses none) and resolves the claim to its volume.
// There is no kubelet to port-forward through, so it dials the
// provisioner's address given with --provisioner.
func pluginResolvesClaim(t *testing.T, cp *ControlPlane, bins nvmirrorBins, prov *provisionerProc, nvmirrorNS, ns, pvc, volID string) {
	t.Helper()
	cp.MustKubectl("create", "secret", "generic", kubeplugin.CASecret, "-n", nvmirrorNS, "--from-file="+kubeplugin.CAKey+"="+prov.creds.CA)
	cp.MustKubectl("create", "secret", "tls", kubeplugin.AdminTLSSecret, "-n", nvmirrorNS, "--cert="+prov.creds.Admin.Cert, "--key="+prov.creds.Admin.Key)
	plugin := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		full := append([]string{"--kubeconfig=" + cp.Kubeconfig, "--provisioner=" + prov.Addr, "--server-name=127.0.0.1"}, args...)
		out, err := exec.CommandContext(ctx, bins.KubectlPlugin, full...).CombinedOutput()
		return string(out), err
	}
	// Flags after the command, as kubectl users write them.
	out, err := plugin("volume", pvc, "-n", ns, "-o", "json")
	if err != nil {
		t.Fatalf("kubectl-nvmirror volume %s -n %s: %v\n%s", pvc, ns, err, out)
	}
	var v provisionerapi.Volume
	if err := protojson.Unmarshal([]byte(out), &v); err != nil || v.GetId() != volID {
		t.Errorf("kubectl-nvmirror volume %s -n %s: volume %q (%v), want %s\n%s", pvc, ns, v.GetId(), err, volID, out)
	}
	table, err := plugin("volume", "-n", ns, pvc)
	if err != nil || !strings.Contains(table, volID) || !strings.Contains(table, "VolumeDegraded") {
		t.Errorf("kubectl-nvmirror volume table: %v\n%s", err, table)
	}
	t.Logf("$ kubectl nvmirror volume -n %s %s\n%s", ns, pvc, table)
	if out, err := plugin("volume", "-n", "kube-system", pvc); err == nil || !strings.Contains(out, "no PersistentVolumeClaim "+pvc+" in namespace kube-system") {
		t.Errorf("a claim in the wrong namespace: %v\n%s", err, out)
	}
}
