package driver

import (
	"context"

	"google.golang.org/grpc/codes"

	"github.com/nvmirror/nvmirror/pkg/grpcerr"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// statusCodes maps the node side's sentinels (pkg/volume) and the data
// path's (nvmeof, mdraid) to the code a CO acts on. grpcError, through it, is
// the only place where the driver's errors become codes; the message keeps
// the whole error chain, which names the volume, replica or device.
var statusCodes = grpcerr.Codes{
	grpcerr.To(codes.DeadlineExceeded, context.DeadlineExceeded),
	grpcerr.To(codes.Canceled, context.Canceled),
	grpcerr.To(codes.NotFound, volume.ErrNotFound),
	grpcerr.To(codes.AlreadyExists, volume.ErrAlreadyExists),
	grpcerr.To(codes.InvalidArgument, volume.ErrInvalidArgument),
	grpcerr.To(codes.FailedPrecondition, volume.ErrFailedPrecondition),
	grpcerr.To(codes.Aborted, volume.ErrAborted),
	grpcerr.To(codes.ResourceExhausted, volume.ErrResourceExhausted),
	grpcerr.To(codes.OutOfRange, volume.ErrOutOfRange),
	grpcerr.To(codes.Unavailable, volume.ErrUnavailable,
		// The data path: an unreachable or refusing replica, or too few
		// members to start the array, may heal by itself, so the CO
		// should retry.
		nvmeof.ErrConnectRefused, mdraid.ErrNotEnoughMembers,
		// md cannot resize while it resyncs or recovers (after a re-add,
		// a replacement): the CO's retry succeeds once the sync is done.
		mdraid.ErrSyncInProgress),
	// A device with another identity, a member held by another array, an
	// array running elsewhere: a human has to look, retrying will not help.
	grpcerr.To(codes.FailedPrecondition, nvmeof.ErrIdentityMismatch, mdraid.ErrBusy, mdraid.ErrAssembledElsewhere, nvmeof.ErrBusy),
}

// grpcError maps an error to a gRPC status error (see statusCodes).
func grpcError(err error) error { return statusCodes.Status(err) }
