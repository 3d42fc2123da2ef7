package provisionerclient

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

func TestMapErr(t *testing.T) {
	tests := []struct {
		code codes.Code
		want error // nil: stays a status error with the same code
	}{
		{codes.NotFound, volume.ErrNotFound},
		{codes.AlreadyExists, volume.ErrAlreadyExists},
		{codes.InvalidArgument, volume.ErrInvalidArgument},
		{codes.FailedPrecondition, volume.ErrFailedPrecondition},
		{codes.ResourceExhausted, volume.ErrResourceExhausted},
		{codes.Unavailable, volume.ErrUnavailable},
		{codes.DeadlineExceeded, volume.ErrUnavailable},
		{codes.Aborted, volume.ErrAborted},
		{codes.OutOfRange, volume.ErrOutOfRange},
		{codes.Internal, nil},
		{codes.Unauthenticated, nil},
		{codes.Canceled, nil},
	}
	for _, tc := range tests {
		in := status.Error(tc.code, "volume vol-1: the detail")
		got := mapErr(in)
		if tc.want == nil {
			if status.Code(got) != tc.code {
				t.Errorf("%v: got %v, want the status kept", tc.code, got)
			}
			continue
		}
		if !errors.Is(got, tc.want) || !strings.Contains(got.Error(), "volume vol-1: the detail") {
			t.Errorf("%v: got %v, want %v with the message", tc.code, got, tc.want)
		}
	}
	if mapErr(nil) != nil {
		t.Error("mapErr(nil) != nil")
	}
	plain := errors.New("not a status")
	if mapErr(plain) != plain {
		t.Error("a non-status error is not kept as is")
	}
}

func TestAuditID(t *testing.T) {
	rec := volume.AuditRecord{Operation: "CreateVolume", VolumeID: "v", Outcome: volume.AuditSuccess}
	if AuditID(rec) != AuditID(rec) {
		t.Error("AuditID not stable")
	}
	other := rec
	other.Outcome = volume.AuditFailure
	if AuditID(rec) == AuditID(other) {
		t.Error("different records share an ID")
	}
	if len(AuditID(rec)) > 128 {
		t.Error("AuditID longer than the events limit")
	}
}

func TestVolumeFromProto(t *testing.T) {
	v := VolumeFromProto(&provisionerapi.Volume{Id: "v", Replicas: []*provisionerapi.Replica{
		{Id: "r1", State: provisionerapi.ReplicaState_REPLICA_STATE_DELETED, Endpoints: []*provisionerapi.Endpoint{{Address: "10.0.0.1", Port: "4420"}}},
	}})
	if v.Parameters == nil || len(v.Replicas) != 1 || v.Replicas[0].State != volume.ReplicaDeleted || v.Replicas[0].Endpoints[0] != (volume.Endpoint{Address: "10.0.0.1", Port: "4420"}) || !v.DegradedSince.IsZero() {
		t.Errorf("VolumeFromProto = %+v", v)
	}
}
