package provisioner

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/provisioner/placement"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

func TestCode(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{fmt.Errorf("parameter numReplicas: %w", ErrInvalidArgument), codes.InvalidArgument},
		{fmt.Errorf("volume v: %w", store.ErrNotFound), codes.NotFound},
		{fmt.Errorf("x: %w", ErrAlreadyExists), codes.AlreadyExists},
		{fmt.Errorf("x: %w", ErrResourceExhausted), codes.ResourceExhausted},
		{fmt.Errorf("x: %w", ErrFailedPrecondition), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", ErrUnavailable), codes.Unavailable},
		{store.ErrNotLeader, codes.Unavailable},
		{fmt.Errorf("x: %w", store.ErrConflict), codes.Aborted},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{status.Error(codes.PermissionDenied, "no"), codes.PermissionDenied},
		{errors.New("disk on fire"), codes.Internal},
		// Placement refusing the request's values is the caller's input,
		// not an internal failure.
		{fmt.Errorf("volume x: %w: count 0", placement.ErrInvalidRequest), codes.InvalidArgument},
		{fmt.Errorf("volume x: %w", placement.ErrResourceExhausted), codes.ResourceExhausted},
	}
	for _, tc := range tests {
		if got := Code(tc.err); got != tc.want {
			t.Errorf("Code(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	st, _ := status.FromError(Status(fmt.Errorf("parameter zones: %w", ErrInvalidArgument)))
	if st.Code() != codes.InvalidArgument || st.Message() != "parameter zones: invalid argument" {
		t.Errorf("Status = %v", st)
	}
}
