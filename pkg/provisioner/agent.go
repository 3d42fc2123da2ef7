package provisioner

import (
	"context"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/repair"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// AgentClient is how the provisioner talks to one storage node's agent
// (nvmirror-target). It is deliberately small and free of generated types,
// so the service is tested against a fake and the gRPC adapter is the only
// code that knows the wire API.
//
// Error contract (the adapter maps gRPC codes to these):
//   - errors wrapping ErrNotFound: the replica does not exist;
//   - errors wrapping ErrResourceExhausted: the pool is too small;
//   - errors wrapping ErrUnavailable: the agent could not be reached.
//
// CreateReplica is idempotent by replica ID (a retry returns the existing
// replica), DeleteReplica succeeds for a replica that is already gone, and
// AllowHost / RevokeHost are idempotent.
type AgentClient interface {
	CreateReplica(ctx context.Context, r ReplicaSpec) (AgentReplica, error)
	DeleteReplica(ctx context.Context, replicaID string) error
	// ListReplicas returns every replica the storage node holds;
	// GetReplica one of them (ErrNotFound when it holds none of that ID).
	// The orphan scan compares them with the registry.
	ListReplicas(ctx context.Context) ([]HeldReplica, error)
	GetReplica(ctx context.Context, replicaID string) (HeldReplica, error)
	ExpandReplica(ctx context.Context, replicaID string, sizeBytes int64) error
	AllowHost(ctx context.Context, replicaID, hostNQN string) error
	RevokeHost(ctx context.Context, replicaID, hostNQN string) error
	// SetHostAuth sets the DH-HMAC-CHAP secrets the storage node demands
	// from hostNQN (on all its replicas); idempotent.
	SetHostAuth(ctx context.Context, hostNQN string, s HostSecrets) error
	GetCapacity(ctx context.Context) (Capacity, error)
	NodeInfo(ctx context.Context) (NodeInfo, error)
	// StartRepair, GetRepair and StopRepair drive an offline repair on
	// the storage node (see the agent API).
	StartRepair(ctx context.Context, r repair.Request) (repair.Status, error)
	GetRepair(ctx context.Context, id string) (repair.Status, error)
	StopRepair(ctx context.Context, id string) error

	SnapshotAgent
}

// Agents resolves a storage node's agent client (connections are cached by
// the implementation).
type Agents interface {
	Agent(ctx context.Context, node *store.StorageNode) (AgentClient, error)
}

// ReplicaSpec is what the provisioner asks an agent to create.
type ReplicaSpec struct {
	ReplicaID        string
	VolumeID         string
	SizeBytes        int64
	ProvisioningType storageclass.ProvisioningType
	AllowedHosts     []string
	// Source (optional): the new replica starts as a copy of a range of a
	// snapshot the same storage node holds.
	Source *SnapshotSource
}

// SnapshotSource is the part of a local snapshot a new replica starts
// with: [SourceOffset, SourceOffset+Length) of the snapshot's file at
// TargetOffset of the replica's.
type SnapshotSource struct {
	SnapshotID                         string
	SourceOffset, Length, TargetOffset int64
}

// AgentReplica is what an agent reports about a replica it holds.
type AgentReplica struct {
	NQN       string
	Endpoints []store.Endpoint
}

// HeldReplica is a replica as the agent holding it reports it.
type HeldReplica struct {
	ID string
	// VolumeID is the volume the replica was created for (the agent
	// records it at creation).
	VolumeID  string
	SizeBytes int64
}

// Capacity is an agent's pool usage.
type Capacity struct {
	TotalBytes, AvailableBytes, ProvisionedBytes int64
	ReplicaCount                                 int
	SnapshotCount                                int
	SnapshotAllocatedBytes                       int64
}

// NodeInfo is an agent's identity and failure domain.
type NodeInfo struct {
	Name, Zone, Rack string
	// RepairHostNQN is the host identity of the node's offline repairs; ""
	// when the node does not repair.
	RepairHostNQN string
}
