package provisioner

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/nvmirror/nvmirror/pkg/grpcerr"
	"github.com/nvmirror/nvmirror/pkg/provisioner/placement"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// Sentinel errors of the service. Operations wrap them with a message for
// the user; Code maps them to gRPC codes in one place. Where a lower
// package already defines the sentinel, it is reused, so errors.Is works
// across layers without translation.
var (
	ErrInvalidArgument   = storageclass.ErrInvalidArgument
	ErrNotFound          = store.ErrNotFound
	ErrAlreadyExists     = store.ErrAlreadyExists
	ErrResourceExhausted = placement.ErrResourceExhausted
	// ErrFailedPrecondition: the request conflicts with the volume's state
	// (published to another host, four replicas already, ...).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrUnavailable: a storage node or the store could not be reached, or
	// the operation must wait (cleanup or replacement in progress); retry.
	ErrUnavailable = errors.New("unavailable")
	// ErrAborted: another operation on the same volume is in progress.
	ErrAborted = errors.New("aborted")
	// ErrNodeNotConnected: a CSI node has no command stream open to this
	// provisioner (NodeHub), or it closed before the node answered; retry.
	// It is an ErrUnavailable.
	ErrNodeNotConnected = fmt.Errorf("node not connected: %w", ErrUnavailable)
	// ErrOutOfRange: a requested size is above the largest volume
	// (layout.MaxVolumeSize).
	ErrOutOfRange = errors.New("out of range")
)

// statusCodes maps the service's sentinels, and the store's, to codes.
var statusCodes = grpcerr.Codes{
	// placement.ErrInvalidRequest: placement refused the request's values
	// (replica count, size), which come from the caller.
	grpcerr.To(codes.InvalidArgument, ErrInvalidArgument, placement.ErrInvalidRequest),
	grpcerr.To(codes.NotFound, ErrNotFound),
	grpcerr.To(codes.AlreadyExists, ErrAlreadyExists),
	grpcerr.To(codes.ResourceExhausted, ErrResourceExhausted),
	grpcerr.To(codes.FailedPrecondition, ErrFailedPrecondition),
	grpcerr.To(codes.OutOfRange, ErrOutOfRange),
	grpcerr.To(codes.Unavailable, ErrUnavailable, store.ErrNotLeader, ErrNodeNotConnected),
	grpcerr.To(codes.Aborted, ErrAborted, store.ErrConflict),
	// A scope check a handler makes itself (a stream's request).
	grpcerr.To(codes.PermissionDenied, rpcauth.ErrPermissionDenied),
	grpcerr.To(codes.DeadlineExceeded, context.DeadlineExceeded),
	grpcerr.To(codes.Canceled, context.Canceled),
}

// Code returns the gRPC code for err.
func Code(err error) codes.Code { return statusCodes.Code(err) }

// Status converts err to a gRPC status error carrying its message.
func Status(err error) error { return statusCodes.Status(err) }
