package driver

import (
	"context"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
)

// Initiator is the part of *host.Initiator the node service uses.
// Connect returns the existing controller when one exists (so a retried
// NodeStage does not stack connections) and DisconnectNQN of a subsystem
// without controllers succeeds: both are idempotent, which NodeStage and
// NodeUnstage rely on.
type Initiator interface {
	Connect(ctx context.Context, o host.ConnectOptions) (host.Controller, error)
	WaitForDevice(ctx context.Context, nqn, nsUUID string) (host.Device, error)
	FindDevice(nqn, nsUUID string) (host.Device, error)
	ControllersFor(nqn string) ([]host.Controller, error)
	DisconnectNQN(ctx context.Context, nqn string) error
	SupportedOptions() ([]string, error)
}

// RaidManager is the part of *mdraid.Manager the node service uses. The
// healer needs more (Add, ReAdd, Fail, Remove); the CSI calls only bring an
// array up, grow it and take it down.
type RaidManager interface {
	Create(ctx context.Context, o mdraid.CreateOptions) error
	Assemble(ctx context.Context, device, uuid string, devices []string) error
	Stop(ctx context.Context, device string) error
	GrowSize(ctx context.Context, device string) error
	Examine(ctx context.Context, member string) (mdraid.Superblock, error)
	ReadArray(name string) (mdraid.Array, error)
	FindByUUID(uuid string) (mdraid.Array, error)
	ArrayHolding(device string) (mdraid.Array, error)
	NextFreeDevice() (string, error)
}

var (
	_ Initiator   = (*host.Initiator)(nil)
	_ RaidManager = (*mdraid.Manager)(nil)
)
