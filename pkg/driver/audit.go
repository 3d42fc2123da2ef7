package driver

import (
	"context"
	"path"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// auditedMethods are the mutating CSI calls reported as audit records.
var auditedMethods = map[string]bool{
	"CreateVolume": true, "DeleteVolume": true,
	"ControllerPublishVolume": true, "ControllerUnpublishVolume": true,
	"ControllerExpandVolume": true, "ControllerModifyVolume": true,
	"NodeStageVolume": true, "NodeUnstageVolume": true,
	"NodePublishVolume": true, "NodeUnpublishVolume": true,
	"NodeExpandVolume": true,
}

// auditQueueLen bounds the records waiting for the provisioner when the
// driver has no durable event queue (controller mode). Audit is best effort
// there: a full queue drops (and logs) rather than slowing CSI calls.
const auditQueueLen = 1024

// EventQueue is the node's durable outbox of events (*healer.EventQueue):
// Enqueue returns once the events are fsynced, and its sender delivers them
// to the provisioner, retrying through outages and restarts.
type EventQueue interface {
	Enqueue(evs []events.Event) error
}

// auditor reports audit records. With the node's durable event queue
// (SetEventQueue) a record is on disk before the CSI call returns, and is
// delivered with the node's other events: an unreachable provisioner or a
// restart loses none, and a slow provisioner never delays a CSI call.
// Without one (controller mode: no state directory) records go from an
// in-memory queue, once and best effort, from one goroutine.
type auditor struct {
	prov   volume.Provisioner
	q      chan volume.AuditRecord
	events atomic.Pointer[EventQueue]
}

func newAuditor(p volume.Provisioner) *auditor {
	return &auditor{prov: p, q: make(chan volume.AuditRecord, auditQueueLen)}
}

// SetEventQueue sends the driver's audit records through q, the node's
// durable event queue, from now on (may be called while serving).
func (d *Driver) SetEventQueue(q EventQueue) { d.audit.events.Store(&q) }

// auditEvent is rec as an Audit event, as the provisioner records it.
func auditEvent(rec volume.AuditRecord) events.Event {
	return events.Event{Time: rec.Time, Type: events.Audit, Volume: rec.VolumeID, Node: rec.Node,
		Method: rec.Operation, Outcome: string(rec.Outcome), Message: rec.Message}
}

type volumeIDGetter interface{ GetVolumeId() string }
type nodeIDGetter interface{ GetNodeId() string }

// record queues an audit record for a mutating call. Calls refused before
// doing anything (InvalidArgument from validation, Aborted by in-flight
// tracking) are recorded too: an admin tracing a volume wants to see them.
func (a *auditor) record(fullMethod string, req any, localNode string, err error) {
	op := path.Base(fullMethod)
	if !auditedMethods[op] {
		return
	}
	rec := volume.AuditRecord{Time: time.Now(), Operation: op, Node: localNode, Outcome: volume.AuditSuccess}
	if g, ok := req.(volumeIDGetter); ok {
		rec.VolumeID = g.GetVolumeId()
	}
	if g, ok := req.(nodeIDGetter); ok && g.GetNodeId() != "" {
		rec.Node = g.GetNodeId()
	}
	if err != nil {
		rec.Outcome = volume.AuditFailure
		// An error's text can be long (a tool's output): cut to what the
		// provisioner's intake accepts, or the record would be refused.
		rec.Message = events.Truncate(status.Convert(err).Code().String()+": "+status.Convert(err).Message(), events.MaxMessageLength)
	}
	if q := a.events.Load(); q != nil {
		if err := (*q).Enqueue([]events.Event{auditEvent(rec)}); err != nil {
			klog.ErrorS(err, "Could not queue audit record", "operation", rec.Operation, "volumeID", rec.VolumeID, "outcome", rec.Outcome)
		}
		return
	}
	select {
	case a.q <- rec:
	default:
		klog.ErrorS(nil, "Audit queue full, dropping record", "operation", rec.Operation, "volumeID", rec.VolumeID, "outcome", rec.Outcome)
	}
}

// run delivers queued records until ctx ends, then tries what is left once.
func (a *auditor) run(ctx context.Context) {
	for {
		select {
		case rec := <-a.q:
			a.send(ctx, rec)
		case <-ctx.Done():
			for {
				select {
				case rec := <-a.q:
					a.send(context.Background(), rec)
				default:
					return
				}
			}
		}
	}
}

func (a *auditor) send(ctx context.Context, rec volume.AuditRecord) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if err := a.prov.ReportAudit(ctx, rec); err != nil {
		klog.ErrorS(err, "Could not report audit record", "operation", rec.Operation, "volumeID", rec.VolumeID, "outcome", rec.Outcome)
	}
}
