package grpcerr

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMap(t *testing.T) {
	errNotFound := errors.New("not found")
	s := Sentinels{codes.NotFound: errNotFound}
	if s.Map(nil, "x") != nil {
		t.Fatal("nil error mapped to an error")
	}
	got := s.Map(status.Error(codes.NotFound, "volume vol-1"), "provisioner")
	if !errors.Is(got, errNotFound) || got.Error() != "provisioner: volume vol-1: not found" {
		t.Fatalf("mapped %v", got)
	}
	internal := status.Error(codes.Internal, "boom")
	if got := s.Map(internal, "provisioner"); got != internal {
		t.Fatalf("a code without a sentinel changed: %v", got)
	}
	plain := errors.New("dial failed")
	if got := s.Map(plain, "provisioner"); got != plain {
		t.Fatalf("a non-status error changed: %v", got)
	}
}

func TestCodes(t *testing.T) {
	errA, errB := errors.New("a"), errors.New("b")
	c := Codes{To(codes.NotFound, errA), To(codes.Aborted, errB, context.Canceled)}
	if c.Code(nil) != codes.OK || c.Status(nil) != nil {
		t.Fatal("nil is not OK")
	}
	both := fmt.Errorf("x: %w: %w", errB, errA)
	for err, want := range map[error]codes.Code{
		fmt.Errorf("volume v: %w", errA):      codes.NotFound,
		both:                                  codes.NotFound, // the first rule wins
		fmt.Errorf("w: %w", context.Canceled): codes.Aborted,
		errors.New("other"):                   codes.Internal,
		status.Error(codes.Unavailable, "s"):  codes.Unavailable,
	} {
		if got := c.Code(err); got != want {
			t.Errorf("Code(%v) = %v, want %v", err, got, want)
		}
		st := status.Convert(c.Status(err))
		if st.Code() != want || !strings.Contains(st.Message(), strings.TrimPrefix(err.Error(), "rpc error: code = Unavailable desc = ")) {
			t.Errorf("Status(%v) = %v", err, st)
		}
	}
}
