package driver

import "time"

// DriverName is the CSI plugin name Kubernetes matches StorageClasses against.
const DriverName = "csi.nvmirror.io"

// StorageClass parameter keys. The provisioner is the authority on their
// values (it rejects unknown keys by name); the driver names them here because
// it reads a few (fsType, numReplicas) and passes mutable ones through
// ControllerModifyVolume. Names follow the reference product where the concept
// is the same.
const (
	ParamNumReplicas        = "numReplicas"
	ParamMaxReplicaDownTime = "maxReplicaDownTime"
	ParamSameRackAllowed    = "sameRackAllowed"
	ParamProvisioningType   = "provisioningType"
	ParamFSType             = "csi.storage.k8s.io/fstype"
	ParamZones              = "zones"
	ParamRacks              = "racks"
	ParamStorageNodes       = "storageNodes"
	ParamAuthentication     = "authentication"
)

// mutableParameters are the parameters a VolumeAttributesClass may set at
// creation or change later through ControllerModifyVolume. Only healing policy
// is mutable: the replica count, placement and provisioning type shape data
// that already exists.
var mutableParameters = map[string]bool{
	ParamMaxReplicaDownTime: true,
}

// Volume context keys, returned by CreateVolume and handed back by the CO to
// NodeStage/NodePublish. They are informative only: NodeStage re-fetches the
// replica set from the provisioner, because healing can change it after the
// PV was created.
const (
	// VolumeContextFSType is the filesystem the volume was created for.
	VolumeContextFSType = "fsType"
	// VolumeContextNumReplicas is the configured number of replicas.
	VolumeContextNumReplicas = "numReplicas"
	// VolumeContextMDUUID is the md array UUID the provisioner assigned.
	VolumeContextMDUUID = "mdUUID"
)

// PublishContextHostNQN is set by ControllerPublishVolume to the host NQN
// that the replicas now admit; NodeStage checks it against its own identity so
// a mis-routed stage fails before connecting anything.
const PublishContextHostNQN = "hostNQN"

// Replica states as the provisioner reports them.
const (
	ReplicaActive   = "active"
	ReplicaDeleting = "deleting"
	ReplicaDeleted  = "deleted"
	ReplicaRemoved  = "removed"
)

// Filesystems nvmirror formats.
const (
	FSExt4        = "ext4"
	FSXFS         = "xfs"
	DefaultFSType = FSExt4
)

// DefaultNumReplicas mirrors the provisioner's default (2): a volume whose
// parameters do not say otherwise is mirrored.
const DefaultNumReplicas = 2

// Sizes.
const (
	// sizeGranularity: every volume size is a multiple of 1 MiB, the unit
	// storage nodes allocate and md aligns its data offset to.
	sizeGranularity int64 = 1 << 20
	// MinVolumeSizeBytes leaves room for the md superblock, its internal
	// bitmap and data offset (a few MiB) and a usable ext4.
	MinVolumeSizeBytes int64 = 16 << 20
	// DefaultVolumeSizeBytes is used when CreateVolume names no capacity.
	DefaultVolumeSizeBytes int64 = 1 << 30
)

// NVMe-oF connection defaults (seconds), see Options for the reasoning.
const (
	DefaultCtrlLossTmo    = 300
	DefaultReconnectDelay = 2
	DefaultFastIOFailTmo  = 1
	DefaultKeepAliveTmo   = 5
)

// Timeouts.
const (
	// DefaultDeviceWaitTimeout bounds how long NodeStage waits for the
	// block devices of connected replicas to appear.
	DefaultDeviceWaitTimeout = 30 * time.Second
	// auditTimeout bounds one audit report; audit is best effort.
	auditTimeout = 5 * time.Second
)

// maxNodeIDLength is Kubernetes' limit on a CSI node ID (CSINode validation).
const maxNodeIDLength = 192

// Audit outcomes.
const (
	AuditSuccess = "success"
	AuditFailure = "failure"
)
