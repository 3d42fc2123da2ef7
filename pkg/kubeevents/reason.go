package kubeevents

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/nvmirror/nvmirror/pkg/events"
)

// MaxMessageLength bounds a Kubernetes event's message: the API server
// refuses longer ones on events.k8s.io (note, 1 KiB), and kubectl shows
// them on one line.
const MaxMessageLength = 1024

// kubeType is the Kubernetes event type of an nvmirror event, or "" when
// it does not go to Kubernetes. The reason is the event's type name, as in
// syslog (MSGID) and nvmirrorctl, so one name finds it everywhere.
//
// Warning is what needs someone's attention: a volume lost a replica, a
// storage node holding its replicas went away, an administrator promoted
// stale replicas (written data lost). Everything else about a volume is
// Normal, including a resync: it is the repair, not the trouble (the
// event table's Warning level for it predates Kubernetes events).
// Audit records of CSI commands stay out: the CSI sidecars already post
// their own events for provisioning, attaching and resizing. So do the
// registry's housekeeping events: CreateRolledBack is a volume whose
// CreateVolume never completed (there is no PV, and csi-provisioner
// reports the failed provisioning on the claim itself), and OrphanFound
// and OrphanReclaimed are about replicas no volume owns, whose PV and claim
// are gone or never were; they stay in syslog and nvmirrorctl events.
// A snapshot taken (Normal) or failed (Warning) goes on the source volume's
// claim, next to what csi-snapshotter posts on the VolumeSnapshot; a
// deletion does not (the claim is often gone by then).
func kubeType(e events.Event) string {
	switch e.Type {
	case events.VolumeDegraded, events.HostDisconnected:
		return corev1.EventTypeWarning
	case events.VolumeHealed, events.HostReconnected, events.SynchStarted, events.SynchEnded,
		events.SessionEstablished, events.SessionClosed, events.SnapshotTaken:
		return corev1.EventTypeNormal
	case events.SnapshotFailed:
		return corev1.EventTypeWarning
	case events.Audit:
		if e.Method == promoteMethod {
			return corev1.EventTypeWarning
		}
	}
	return ""
}

// promoteMethod is the audit record of PromoteReplicas (marking stale
// replicas in sync: data loss accepted by an administrator). Spelled here
// rather than imported so this package does not link the provisioner.
const promoteMethod = "PromoteReplicas"

// reason is the event's Kubernetes reason: its type name, and for the one
// audit record that goes to Kubernetes, its method.
func reason(e events.Event) string {
	if e.Type == events.Audit {
		return e.Method
	}
	return string(e.Type)
}

// message is the event's Kubernetes message: its title, what it names
// (volume, replicas, storage node, compute node) and the reporter's text,
// with control characters escaped, cut to MaxMessageLength.
func message(e events.Event) string {
	var b strings.Builder
	b.WriteString(e.Type.Title())
	if e.Type == events.Audit {
		fmt.Fprintf(&b, " %s %s", e.Method, e.Outcome)
	}
	fmt.Fprintf(&b, ": volume %s", e.Volume)
	if reps := replicas(e); len(reps) > 0 {
		word := "replica"
		if len(reps) > 1 {
			word = "replicas"
		}
		fmt.Fprintf(&b, ", %s %s", word, strings.Join(reps, ","))
	}
	if e.StorageNode != "" {
		fmt.Fprintf(&b, ", storage node %s", e.StorageNode)
	}
	if e.Node != "" {
		fmt.Fprintf(&b, ", node %s", e.Node)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return events.Truncate(events.EscapeControl(b.String()), MaxMessageLength)
}

// replicas lists the replicas an event names: Replicas, with Replica first
// when it is not among them.
func replicas(e events.Event) []string {
	out := append([]string(nil), e.Replicas...)
	if e.Replica != "" && !slices.Contains(out, e.Replica) {
		out = append([]string{e.Replica}, out...)
	}
	return out
}
