package agent

import (
	"errors"
	"fmt"
)

// Sentinel errors of the agent. Every error a Service method returns wraps
// at most one of them; the gRPC layer turns them into status codes in one
// place (grpcError). An error wrapping none of them is an internal failure.
var (
	// ErrInvalidArgument: a request field is malformed. The message starts
	// with the field's API name (see fieldError).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: the replica does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a replica with this ID exists with other parameters.
	ErrAlreadyExists = errors.New("already exists")
	// ErrResourceExhausted: the pool has not enough free space.
	ErrResourceExhausted = errors.New("not enough space")
	// ErrFailedPrecondition: the replica is in a state that forbids the
	// call (e.g. AllowHost while a delete is in progress).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrInFlight: another call on the same replica is running.
	ErrInFlight = errors.New("operation in progress")
	// ErrRestoreIncomplete: Start could not restore some replicas (their
	// errors follow); the others are exported.
	ErrRestoreIncomplete = errors.New("some replicas could not be restored")
)

// fieldError returns ErrInvalidArgument with a message naming the request
// field as the API spells it, so a client can tell which input was wrong.
func fieldError(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidArgument, field, fmt.Sprintf(format, args...))
}
