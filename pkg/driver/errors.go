package driver

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// grpcError maps an error to a gRPC status error. It is the only place where
// backend errors become codes: status errors pass through unchanged, the
// driver's sentinels and the nvmeof/mdraid ones map to the code a CO acts on,
// and anything else is Internal. The message keeps the whole error chain,
// which names the volume, replica or device concerned.
func grpcError(err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	return status.Error(codeOf(err), err.Error())
}

func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, volume.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, volume.ErrAlreadyExists):
		return codes.AlreadyExists
	case errors.Is(err, volume.ErrInvalidArgument):
		return codes.InvalidArgument
	case errors.Is(err, volume.ErrFailedPrecondition):
		return codes.FailedPrecondition
	case errors.Is(err, volume.ErrAborted):
		return codes.Aborted
	case errors.Is(err, volume.ErrResourceExhausted):
		return codes.ResourceExhausted
	case errors.Is(err, volume.ErrOutOfRange):
		return codes.OutOfRange
	case errors.Is(err, volume.ErrUnavailable):
		return codes.Unavailable
	// The data path: an unreachable or refusing replica, or too few members
	// to start the array, may heal by itself, so the CO should retry.
	case errors.Is(err, nvmeof.ErrConnectRefused), errors.Is(err, mdraid.ErrNotEnoughMembers):
		return codes.Unavailable
	// md cannot resize while it resyncs or recovers (after a re-add, a
	// replacement): the CO's retry succeeds once the sync is done.
	case errors.Is(err, mdraid.ErrSyncInProgress):
		return codes.Unavailable
	// A device with another identity, a member held by another array, an
	// array running elsewhere: a human has to look, retrying will not help.
	case errors.Is(err, nvmeof.ErrIdentityMismatch), errors.Is(err, mdraid.ErrBusy),
		errors.Is(err, mdraid.ErrAssembledElsewhere), errors.Is(err, nvmeof.ErrBusy):
		return codes.FailedPrecondition
	}
	return codes.Internal
}
