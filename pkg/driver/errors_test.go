package driver

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

func TestGRPCError(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{volume.Errorf(volume.ErrNotFound, "volume v"), codes.NotFound},
		{fmt.Errorf("create: %w", volume.ErrAlreadyExists), codes.AlreadyExists},
		{volume.Errorf(volume.ErrInvalidArgument, "numReplicas"), codes.InvalidArgument},
		{volume.Errorf(volume.ErrFailedPrecondition, "published elsewhere"), codes.FailedPrecondition},
		{volume.Errorf(volume.ErrAborted, "busy"), codes.Aborted},
		{volume.Errorf(volume.ErrResourceExhausted, "full"), codes.ResourceExhausted},
		{volume.Errorf(volume.ErrOutOfRange, "too big"), codes.OutOfRange},
		{volume.Errorf(volume.ErrUnavailable, "provisioner"), codes.Unavailable},
		{fmt.Errorf("connect: %w", nvmeof.ErrConnectRefused), codes.Unavailable},
		{fmt.Errorf("assemble: %w", mdraid.ErrNotEnoughMembers), codes.Unavailable},
		{fmt.Errorf("grow: %w", mdraid.ErrSyncInProgress), codes.Unavailable},
		{fmt.Errorf("%w: %w", nvmeof.ErrDeviceNotFound, nvmeof.ErrIdentityMismatch), codes.FailedPrecondition},
		{fmt.Errorf("stop: %w", mdraid.ErrBusy), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", mdraid.ErrAssembledElsewhere), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{errors.New("disk on fire"), codes.Internal},
		{fmt.Errorf("x: %w", mdraid.ErrInvalidArgument), codes.Internal}, // our bug, not the user's
		{status.Error(codes.Aborted, "already a status"), codes.Aborted},
	}
	for _, tt := range tests {
		got := grpcError(tt.err)
		if status.Code(got) != tt.want {
			t.Errorf("grpcError(%v) = %v, want %v", tt.err, status.Code(got), tt.want)
		}
		if s, _ := status.FromError(got); s.Message() != tt.err.Error() && status.Code(tt.err) == codes.Unknown {
			t.Errorf("message %q lost the error text %q", s.Message(), tt.err.Error())
		}
	}
	if grpcError(nil) != nil {
		t.Error("grpcError(nil) != nil")
	}
}
