package volume

import (
	"context"
	"time"
)

// Provisioner is the volume registry as the CSI driver needs it. The real
// implementation is an adapter over the provisioner's gRPC client that maps
// its status codes onto this package's sentinel errors (ErrNotFound,
// ErrAlreadyExists, ErrInvalidArgument, ErrFailedPrecondition,
// ErrResourceExhausted, ErrUnavailable); tests use fake.Provisioner.
//
// Every method is idempotent, which is what lets each CSI RPC be retried
// after a crash between any two of its steps.
type Provisioner interface {
	// CreateVolume creates the volume named req.Name, or returns it when it
	// exists with the same size and parameters; another size or other
	// parameters give ErrAlreadyExists. The provisioner assigns the md
	// UUID and name here, so every node assembles the same array.
	CreateVolume(ctx context.Context, req CreateVolumeRequest) (*Volume, error)
	// DeleteVolume deletes the volume and its replicas; an unknown ID is
	// not an error. A published volume gives ErrFailedPrecondition.
	DeleteVolume(ctx context.Context, id string) error
	// GetVolume returns the volume, or ErrNotFound.
	GetVolume(ctx context.Context, id string) (*Volume, error)
	// ListVolumes returns up to max volumes (0 = as many as the
	// provisioner's page cap) after the opaque startToken, and the token of
	// the next page ("" at the end). A token it did not issue gives
	// ErrInvalidArgument.
	ListVolumes(ctx context.Context, startToken string, max int) (vols []*Volume, next string, err error)
	// PublishVolume allows hostNQN (and only it) on every replica of the
	// volume and records nodeID. Publishing again to the same host is a
	// no-op; while another host is published it gives
	// ErrFailedPrecondition: that is the fence against two writers.
	PublishVolume(ctx context.Context, id, hostNQN, nodeID string) (*Volume, error)
	// UnpublishVolume revokes hostNQN on every replica and cuts its
	// sessions; "" revokes whichever host is published. A host that is not
	// published, or an unknown volume, is not an error.
	UnpublishVolume(ctx context.Context, id, hostNQN string) error
	// ExpandVolume grows every replica to at least sizeBytes and returns
	// the volume with its new size; a smaller size is a no-op.
	ExpandVolume(ctx context.Context, id string, sizeBytes int64) (*Volume, error)
	// ModifyVolume changes mutable parameters (maxReplicaDownTime); others
	// give ErrInvalidArgument.
	ModifyVolume(ctx context.Context, id string, mutable map[string]string) (*Volume, error)
	// GetCapacity returns the largest volume that could be created with
	// these parameters now.
	GetCapacity(ctx context.Context, params map[string]string) (int64, error)
	// ReportAudit records that a CSI call was executed.
	ReportAudit(ctx context.Context, rec AuditRecord) error
	// Ping succeeds when the provisioner is reachable and serving.
	Ping(ctx context.Context) error
	// ReportReplicaSync records that a replica stopped (inSync false) or
	// resumed (true) holding every acknowledged write, as the node saw md
	// at observedAt (arrayEvents: the array's md event count, 0 when
	// unknown). Recording out of sync keeps the earliest time; a report
	// that would leave no active replica in sync gives
	// ErrFailedPrecondition. It returns the volume as recorded.
	ReportReplicaSync(ctx context.Context, volumeID, replicaID string, inSync bool, observedAt time.Time, arrayEvents uint64, nodeID string) (*Volume, error)
	// GetHostCredentials returns the NVMe in-band authentication secrets
	// between hostNQN and every storage node that demands them (none: an
	// empty list). The node uses them for every replica on those storage
	// nodes: the kernel target keeps secrets per host, not per replica.
	GetHostCredentials(ctx context.Context, hostNQN string) ([]Credentials, error)

	SnapshotProvisioner
}
