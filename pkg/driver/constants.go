package driver

import (
	"time"

	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// DriverName is the CSI plugin name Kubernetes matches StorageClasses against.
const DriverName = storageclass.DriverName

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

// Sizes.
const (
	// sizeGranularity: every volume size is a multiple of 1 MiB, the unit
	// storage nodes allocate and md aligns its data offset to.
	sizeGranularity = layout.Alignment
	// MinVolumeSizeBytes leaves room for the md superblock, its internal
	// bitmap and data offset (a few MiB) and a usable ext4.
	MinVolumeSizeBytes int64 = 16 << 20
	// MinXFSVolumeSizeBytes is the smallest xfs volume: mkfs.xfs (xfsprogs
	// 5.19 and newer) refuses a filesystem below 300 MiB, so a smaller xfs
	// volume would be created and then fail every NodeStage.
	MinXFSVolumeSizeBytes int64 = 300 << 20
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
