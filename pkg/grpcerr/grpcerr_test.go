package grpcerr

import (
	"errors"
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
