package driver

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
)

// Sentinel errors the driver expects from its backends. The provisioner
// client adapter maps the provisioner's gRPC codes onto these, fakes return
// them directly, and grpcError turns them into CSI status codes in one place.
var (
	// ErrNotFound: the volume (or node) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a volume with this name exists with another size or
	// other parameters.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidArgument: a parameter or value was refused; the message
	// names it.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrFailedPrecondition: the volume's state forbids the call (published
	// to another host, not staged, holding unexpected data...).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrAborted: another operation on the same object is in progress, or a
	// paging token is no longer valid.
	ErrAborted = errors.New("aborted")
	// ErrResourceExhausted: no storage nodes with enough capacity.
	ErrResourceExhausted = errors.New("resource exhausted")
	// ErrOutOfRange: a requested size cannot be satisfied.
	ErrOutOfRange = errors.New("out of range")
	// ErrUnavailable: a backend (provisioner, replicas) cannot be reached
	// now; retrying later may succeed.
	ErrUnavailable = errors.New("unavailable")
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
	case errors.Is(err, ErrNotFound):
		return codes.NotFound
	case errors.Is(err, ErrAlreadyExists):
		return codes.AlreadyExists
	case errors.Is(err, ErrInvalidArgument):
		return codes.InvalidArgument
	case errors.Is(err, ErrFailedPrecondition):
		return codes.FailedPrecondition
	case errors.Is(err, ErrAborted):
		return codes.Aborted
	case errors.Is(err, ErrResourceExhausted):
		return codes.ResourceExhausted
	case errors.Is(err, ErrOutOfRange):
		return codes.OutOfRange
	case errors.Is(err, ErrUnavailable):
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

// errorf wraps a sentinel with a formatted message: errorf(ErrNotFound,
// "volume %s", id) reads "volume x: not found".
func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), sentinel)
}
