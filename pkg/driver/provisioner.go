package driver

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
	// ListVolumes returns up to max volumes (0 = no limit) after the opaque
	// startToken, and the token of the next page ("" at the end). A token it
	// did not issue gives ErrInvalidArgument.
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
	// GetHostCredentials returns the NVMe in-band authentication secrets
	// between hostNQN and every storage node that demands them (none: an
	// empty list). The node uses them for every replica on those storage
	// nodes: the kernel target keeps secrets per host, not per replica.
	GetHostCredentials(ctx context.Context, hostNQN string) ([]Credentials, error)
}

// Credentials are the DH-HMAC-CHAP secrets between this node's host and one
// storage node, in the NVMe "DHHC-1:" form. Never log them.
type Credentials struct {
	StorageNode string
	// Secret is the host's key; CtrlSecret the storage node's, used only
	// by volumes with bidirectional authentication.
	Secret, CtrlSecret string
	Generation         int64
}

// Authentication modes of the StorageClass parameter ParamAuthentication.
const (
	AuthNone          = "none"
	AuthHost          = "host"
	AuthBidirectional = "bidirectional"
)

// ConnectSecrets returns the secrets a connection to storageNode uses, for a
// volume of authentication mode auth: the pair's host secret whenever the
// pair has one, whatever the mode (the kernel target keeps secrets per host,
// so it demands them from this host for every replica on that storage
// node), and the controller secret (the host checks the storage node) only
// for bidirectional volumes. ok is false when the pair has no secrets; a
// volume requiring authentication must then not connect at all. NodeStage
// and the healer's reconnects both use it.
func ConnectSecrets(creds []Credentials, storageNode, auth string) (secret, ctrlSecret string, ok bool) {
	for _, c := range creds {
		if c.StorageNode != storageNode || c.Secret == "" {
			continue
		}
		if auth == AuthBidirectional {
			return c.Secret, c.CtrlSecret, true
		}
		return c.Secret, "", true
	}
	return "", "", false
}

// Authentication is the volume's authentication mode; none when unset.
func (v *Volume) Authentication() string {
	if a := v.Parameters[ParamAuthentication]; a != "" {
		return a
	}
	return AuthNone
}

// CreateVolumeRequest is what the controller asks the provisioner for.
type CreateVolumeRequest struct {
	// Name is the CO's volume name; creation is idempotent by it.
	Name string
	// SizeBytes is already rounded to 1 MiB and within the CO's range.
	SizeBytes int64
	// Parameters are the StorageClass parameters (plus the
	// VolumeAttributesClass's mutable ones), unvalidated by the driver.
	Parameters map[string]string
	// Block is true when every requested capability is raw block.
	Block bool
	// AccessMode is the CSI access mode name of the first capability,
	// e.g. "SINGLE_NODE_WRITER", kept for audit and display.
	AccessMode string
}

// Volume is the registry record of one volume.
type Volume struct {
	ID         string
	Name       string
	SizeBytes  int64
	Parameters map[string]string
	// MDUUID identifies the volume's md array (any UUID form mdadm reads);
	// MDName is stored in the superblock. Empty MDUUID is only valid for a
	// single-replica volume, which is served without md.
	MDUUID, MDName string
	// PublishedHost is the host NQN the replicas admit ("" when
	// unpublished); PublishedNode is the CSI node ID it was published for.
	PublishedHost, PublishedNode string
	Replicas                     []Replica
	// DegradedSince is when the volume lost a replica (zero when whole), as
	// the node's healer reported it.
	DegradedSince time.Time
}

// Replica is one leg of the mirror: an NVMe-oF namespace on a storage node.
type Replica struct {
	ID          string
	StorageNode string
	NQN         string
	// NamespaceUUID is the namespace's UUID; empty means the one
	// nvmeof.NamespaceUUID derives from ID.
	NamespaceUUID string
	Endpoints     []Endpoint
	// State: active, deleting, deleted or removed (see the Replica*
	// constants). Only active replicas are connected.
	State string
}

// Endpoint is one NVMe/TCP address a replica is exported on.
type Endpoint struct {
	Address, Port string
}

// AuditRecord is one executed CSI call, as reported to the provisioner.
type AuditRecord struct {
	Time      time.Time
	Operation string // CSI method name, e.g. "NodeStageVolume"
	VolumeID  string
	Node      string // CSI node ID concerned, if any
	Outcome   string // AuditSuccess or AuditFailure
	Message   string // error text or gRPC code on failure
}
