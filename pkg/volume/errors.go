package volume

import (
	"errors"
	"fmt"

	"github.com/nvmirror/nvmirror/pkg/storageclass"
)

// Sentinel errors of the node side's backends. The provisioner client maps
// the provisioner's gRPC codes onto these, fakes return them directly, and
// the CSI driver turns them into status codes in one place (pkg/grpcerr).
var (
	// ErrNotFound: the volume (or node) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a volume with this name exists with another size or
	// other parameters.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidArgument: a parameter or value was refused; the message
	// names it. The StorageClass vocabulary's own, so a parameter refused
	// by storageclass.Parse needs no translation.
	ErrInvalidArgument = storageclass.ErrInvalidArgument
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

// Errorf wraps a sentinel with a formatted message: Errorf(ErrNotFound,
// "volume %s", id) reads "volume x: not found".
func Errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), sentinel)
}
