package provisionerapi

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nvmirror/nvmirror/pkg/events"
)

// Hand-written next to the generated code: the one translation between the
// wire Event and pkg/events.Event, shared by the provisioner's server and
// its Go client so the two cannot drift.

// Attribute keys of Event.attributes the provisioner understands.
const (
	AttrOperation = "operation" // the CSI method of an audit record
	AttrOutcome   = "outcome"
	AttrNode      = "node"    // used when Event.node is empty
	AttrMessage   = "message" // used when Event.message is empty
)

// storageNodeSeparator joins several storage nodes into events.Event's
// single StorageNode field (and the syslog SD-PARAM); node names are DNS
// labels, which never contain a comma.
const storageNodeSeparator = ","

// EventFromProto converts a reported event. The severity is not read: it
// follows from the type (events.Type.Level), so a reporter cannot file a
// VolumeDegraded as Info. Unknown attributes are ignored, so an older
// provisioner accepts a newer node's events instead of rejecting them
// forever from its queue.
func EventFromProto(p *Event) events.Event {
	e := events.Event{
		ID:          p.GetId(),
		Type:        events.Type(p.GetType()),
		Volume:      p.GetVolumeId(),
		Node:        p.GetNode(),
		StorageNode: strings.Join(p.GetStorageNodes(), storageNodeSeparator),
		Message:     p.GetMessage(),
		Method:      p.GetAttributes()[AttrOperation],
		Outcome:     p.GetAttributes()[AttrOutcome],
	}
	if p.GetTime() != nil {
		e.Time = p.GetTime().AsTime()
	}
	if e.Node == "" {
		e.Node = p.GetAttributes()[AttrNode]
	}
	if e.Message == "" {
		e.Message = p.GetAttributes()[AttrMessage]
	}
	switch ids := p.GetReplicaIds(); len(ids) {
	case 0:
	case 1:
		e.Replica = ids[0]
	default:
		e.Replicas = append([]string(nil), ids...)
	}
	return e
}

// EventToProto converts a stored event for ListEvents.
func EventToProto(e events.Event) *Event {
	p := &Event{
		Id:       e.ID,
		Type:     string(e.Type),
		Severity: SeverityOf(e.Type.Level()),
		VolumeId: e.Volume,
		Node:     e.Node,
		Message:  e.Message,
		Seq:      e.Seq,
	}
	if !e.Time.IsZero() {
		p.Time = timestamppb.New(e.Time)
	}
	// Replica and Replicas may overlap (a one-replica Degraded event sets
	// both); each replica is named once.
	for _, id := range append([]string{e.Replica}, e.Replicas...) {
		if id != "" && !slices.Contains(p.ReplicaIds, id) {
			p.ReplicaIds = append(p.ReplicaIds, id)
		}
	}
	if e.StorageNode != "" {
		p.StorageNodes = strings.Split(e.StorageNode, storageNodeSeparator)
	}
	if e.Method != "" || e.Outcome != "" {
		p.Attributes = map[string]string{}
		if e.Method != "" {
			p.Attributes[AttrOperation] = e.Method
		}
		if e.Outcome != "" {
			p.Attributes[AttrOutcome] = e.Outcome
		}
	}
	return p
}

// SeverityOf maps an event level to the wire severity.
func SeverityOf(l events.Level) Severity {
	switch l {
	case events.Fatal:
		return Severity_SEVERITY_FATAL
	case events.Warning:
		return Severity_SEVERITY_WARNING
	}
	return Severity_SEVERITY_INFO
}
