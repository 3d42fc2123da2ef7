package provisioner

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/provisioner/placement"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
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
)

// Code returns the gRPC code for err.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	switch {
	case errors.Is(err, ErrInvalidArgument):
		return codes.InvalidArgument
	case errors.Is(err, ErrNotFound):
		return codes.NotFound
	case errors.Is(err, ErrAlreadyExists):
		return codes.AlreadyExists
	case errors.Is(err, ErrResourceExhausted):
		return codes.ResourceExhausted
	case errors.Is(err, ErrFailedPrecondition):
		return codes.FailedPrecondition
	case errors.Is(err, ErrUnavailable), errors.Is(err, store.ErrNotLeader):
		return codes.Unavailable
	case errors.Is(err, ErrAborted), errors.Is(err, store.ErrConflict):
		return codes.Aborted
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	return codes.Internal
}

// Status converts err to a gRPC status error carrying its message.
func Status(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(Code(err), err.Error())
}
