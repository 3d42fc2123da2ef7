package driver

import (
	"context"
	"path"
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

// auditQueueLen bounds the records waiting for the provisioner. Audit is best
// effort here: a full queue drops (and logs) rather than slowing CSI calls.
// Durable delivery is the events package's job.
const auditQueueLen = 1024

// auditor sends audit records to the provisioner from one goroutine, so a
// slow or unreachable provisioner never delays or fails a CSI call.
type auditor struct {
	prov volume.Provisioner
	q    chan volume.AuditRecord
}

func newAuditor(p volume.Provisioner) *auditor {
	return &auditor{prov: p, q: make(chan volume.AuditRecord, auditQueueLen)}
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
