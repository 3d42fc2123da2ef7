package adminctl

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/nvmirror/nvmirror/pkg/events"
	api "github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// Rendering is kept apart from the calls so that what an admin reads is
// tested on its own.

// esc escapes the control characters of a value from the registry (names,
// messages: written by nodes and claims): a newline or tab would forge a
// table row or column, an escape sequence would drive the admin's terminal.
// Every string printed in a table goes through it.
func esc(s string) string { return events.EscapeControl(s) }

func replicaState(s api.ReplicaState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "REPLICA_STATE_"))
}

// replicaCounts returns the active replicas and the size of the
// configuration (active, plus deleting/deleted still to leave it).
func replicaCounts(v *api.Volume) (active, total int) {
	for _, r := range v.GetReplicas() {
		switch r.GetState() {
		case api.ReplicaState_REPLICA_STATE_ACTIVE:
			active++
			total++
		case api.ReplicaState_REPLICA_STATE_DELETING, api.ReplicaState_REPLICA_STATE_DELETED:
			total++
		}
	}
	return active, total
}

func since(ts interface{ AsTime() time.Time }, isSet bool, now time.Time) string {
	if !isSet {
		return "-"
	}
	t := ts.AsTime()
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), now.Sub(t).Round(time.Second))
}

// offlineRepair describes the storage node's repair of a volume no host
// has staged, "-" when none runs.
func offlineRepair(r *api.OfflineRepair, now time.Time) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%s on %s for %s, since %s", r.GetRepairId(), r.GetStorageNode(), strings.Join(r.GetReplicaIds(), ","),
		since(r.GetStarted(), r.GetStarted() != nil, now))
}

// syncState is whether the registry holds the replica to have every
// acknowledged write. Only active replicas serve the volume; for the others
// it would read as a claim about a copy that is on its way out, so it is
// not shown.
func syncState(r *api.Replica) string {
	if r.GetState() != api.ReplicaState_REPLICA_STATE_ACTIVE {
		return "-"
	}
	if r.GetOutOfSyncSince() == nil {
		return "in sync"
	}
	if d := r.GetDivergedSince(); d != nil {
		return fmt.Sprintf("diverged since %s (given up by a promotion)", d.AsTime().UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("out of sync since %s (md events %d)", r.GetOutOfSyncSince().AsTime().UTC().Format(time.RFC3339), r.GetOutOfSyncAtEvents())
}

// pvcOf is the claim as NAMESPACE/NAME, from the metadata the CSI
// external-provisioner passed at creation; "-" without it.
func pvcOf(v *api.Volume) string {
	md := v.GetMetadata()
	if md[storageclass.KeyPVCName] == "" {
		return "-"
	}
	return md[storageclass.KeyPVCNamespace] + "/" + md[storageclass.KeyPVCName]
}

// pvOf is the volume's PV name, from the same metadata; "-" without it.
func pvOf(v *api.Volume) string { return orDash(v.GetMetadata()[storageclass.KeyPVName]) }

func host(v *api.Volume) string {
	if v.GetPublishedNodeId() != "" {
		return v.GetPublishedNodeId()
	}
	if v.GetPublishedHostNqn() != "" {
		return v.GetPublishedHostNqn()
	}
	return "-"
}

func renderVolumes(w io.Writer, vols []*api.Volume, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VOLUME\tPVC\tPV\tSIZE\tREPLICAS\tSTATE\tDEGRADED SINCE\tHOST")
	for _, v := range vols {
		active, total := replicaCounts(v)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", esc(v.GetId()), esc(pvcOf(v)), esc(pvOf(v)), size(v.GetSizeBytes()), active, total,
			esc(orDash(v.GetState())), since(v.GetDegradedSince(), v.GetDegradedSince() != nil, now), esc(host(v)))
	}
	tw.Flush()
}

func renderVolume(w io.Writer, v *api.Volume, nodes map[string]*api.StorageNode, evs []*api.Event, now time.Time) {
	active, total := replicaCounts(v)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Volume:\t%s\n", esc(v.GetId()))
	fmt.Fprintf(tw, "Name:\t%s\n", esc(v.GetName()))
	fmt.Fprintf(tw, "PVC:\t%s\n", esc(pvcOf(v)))
	fmt.Fprintf(tw, "PV:\t%s\n", esc(pvOf(v)))
	fmt.Fprintf(tw, "Size:\t%s\n", size(v.GetSizeBytes()))
	fmt.Fprintf(tw, "State:\t%s\n", esc(orDash(v.GetState())))
	fmt.Fprintf(tw, "Replicas:\t%d active of %d\n", active, total)
	fmt.Fprintf(tw, "Degraded since:\t%s\n", since(v.GetDegradedSince(), v.GetDegradedSince() != nil, now))
	fmt.Fprintf(tw, "Published to:\t%s\n", esc(host(v)))
	fmt.Fprintf(tw, "Offline repair:\t%s\n", esc(offlineRepair(v.GetRepair(), now)))
	fmt.Fprintf(tw, "md array:\t%s (uuid %s)\n", esc(orDash(v.GetMdName())), esc(orDash(v.GetMdUuid())))
	keys := make([]string, 0, len(v.GetParameters()))
	for k := range v.GetParameters() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var params []string
	for _, k := range keys {
		params = append(params, k+"="+v.GetParameters()[k])
	}
	fmt.Fprintf(tw, "Parameters:\t%s\n", esc(strings.Join(params, " ")))
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPLICA\tSTORAGE NODE\tZONE\tRACK\tSTATE\tSYNC\tENDPOINT")
	for _, r := range v.GetReplicas() {
		zone, rack := r.GetZone(), r.GetRack()
		if n := nodes[r.GetStorageNode()]; n != nil {
			if zone == "" {
				zone = n.GetZone()
			}
			if rack == "" {
				rack = n.GetRack()
			}
		}
		ep := "-"
		if eps := r.GetEndpoints(); len(eps) > 0 {
			ep = eps[0].GetAddress() + ":" + eps[0].GetPort()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", esc(r.GetId()), esc(r.GetStorageNode()), esc(orDash(zone)), esc(orDash(rack)), replicaState(r.GetState()), syncState(r), esc(ep))
	}
	tw.Flush()
	if len(evs) > 0 {
		fmt.Fprintln(w)
		renderEvents(w, evs)
	}
}

func renderEvents(w io.Writer, evs []*api.Event) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tTYPE\tSEVERITY\tVOLUME\tSTORAGE NODES\tMESSAGE")
	for _, e := range evs {
		msg := e.GetMessage()
		if a := e.GetAttributes(); a[api.AttrOperation] != "" {
			// An audit record: which CSI call, its outcome, from where.
			msg = strings.TrimSpace(fmt.Sprintf("%s %s %s %s", a[api.AttrOperation], a[api.AttrOutcome], e.GetNode(), msg))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.GetTime().AsTime().UTC().Format("15:04:05.000"), esc(e.GetType()),
			strings.ToLower(strings.TrimPrefix(e.GetSeverity().String(), "SEVERITY_")), esc(orDash(e.GetVolumeId())),
			esc(orDash(strings.Join(e.GetStorageNodes(), ","))), esc(msg))
	}
	tw.Flush()
}

func renderNodes(w io.Writer, nodes []*api.StorageNode) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STORAGE NODE\tAPI\tZONE\tRACK\tREACHABLE\tSCHEDULING\tAVAILABLE\tTOTAL\tREPLICAS")
	for _, n := range nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%s\t%s\t%s\t%d\n", esc(n.GetName()), esc(n.GetApiAddress()), esc(orDash(n.GetZone())), esc(orDash(n.GetRack())),
			n.GetReachable(), scheduling(n), size(n.GetAvailableBytes()), size(n.GetTotalBytes()), n.GetReplicaCount())
	}
	tw.Flush()
}

// scheduling says whether new replicas may go to the node.
func scheduling(n *api.StorageNode) string {
	switch {
	case n.GetDraining():
		return "draining"
	case n.GetCordoned():
		return "cordoned"
	}
	return "yes"
}

// renderJSON prints protobuf messages in their canonical JSON form.
func renderRotation(w io.Writer, volumeID string, r *api.RotateCredentialsResponse) {
	fmt.Fprintf(w, "volume %s, host %s:\n", esc(volumeID), esc(r.GetHostNqn()))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STORAGE NODE\tGENERATION\tRESULT")
	for _, n := range r.GetStorageNodes() {
		res := "rotated"
		if n.GetError() != "" {
			res = "PENDING: " + n.GetError()
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", esc(n.GetStorageNode()), n.GetGeneration(), esc(res))
	}
	tw.Flush()
}

func failedRotations(r *api.RotateCredentialsResponse) []string {
	var out []string
	for _, n := range r.GetStorageNodes() {
		if n.GetError() != "" {
			out = append(out, n.GetStorageNode())
		}
	}
	return out
}

func renderJSON(w io.Writer, msgs ...proto.Message) error {
	out := make([]json.RawMessage, 0, len(msgs))
	for _, m := range msgs {
		b, err := protojson.Marshal(m)
		if err != nil {
			return err
		}
		out = append(out, b)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if len(out) == 1 {
		return enc.Encode(out[0])
	}
	return enc.Encode(out)
}

func size(b int64) string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%dGi", b>>30)
	case b >= 1<<20:
		return fmt.Sprintf("%dMi", b>>20)
	default:
		return fmt.Sprintf("%d", b)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
