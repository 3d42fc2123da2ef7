package provisioner_test

import (
	"testing"

	"github.com/nvmirror/nvmirror/pkg/mdraid/layout"
	"github.com/nvmirror/nvmirror/pkg/provisioner"
)

func TestExpandVolume(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, map[string]string{"numReplicas": "2"})
	got, err := e.svc.ExpandVolume(e.ctx, v.ID, 3*gib)
	if err != nil || got.SizeBytes != 3*gib {
		t.Fatalf("ExpandVolume = %+v, %v", got, err)
	}
	for _, r := range got.Replicas {
		if ar := e.cluster.Replica(r.StorageNode, r.ID); ar.SizeBytes != layout.ReplicaSize(3*gib) {
			t.Errorf("replica %s size %d", r.ID, ar.SizeBytes)
		}
	}
	if got, err := e.svc.ExpandVolume(e.ctx, v.ID, 2*gib); err != nil || got.SizeBytes != 3*gib {
		t.Errorf("shrink request: %v, %v; want a no-op", got.SizeBytes, err)
	}
	e.cluster.SetDown(v.Replicas[0].StorageNode, true)
	_, err = e.svc.ExpandVolume(e.ctx, v.ID, 4*gib)
	wantCode(t, err, provisioner.ErrUnavailable)
	if got, _ := e.store.GetVolume(e.ctx, v.ID); got.SizeBytes != 3*gib {
		t.Errorf("partial expansion recorded: %d", got.SizeBytes)
	}
}

func TestModifyVolume(t *testing.T) {
	e := newEnv(t, threeRacks())
	v := e.create(t, "pvc-1", gib, nil)
	for _, tc := range []struct {
		name    string
		mutable map[string]string
		want    int
		err     error
		msg     string
	}{
		{"set", map[string]string{"maxReplicaDownTime": "15"}, 15, nil, ""},
		{"same again (retry)", map[string]string{"maxReplicaDownTime": "15"}, 15, nil, ""},
		{"disable", map[string]string{"maxReplicaDownTime": "0"}, 0, nil, ""},
		{"nothing", map[string]string{}, 0, nil, ""},
		{"negative", map[string]string{"maxReplicaDownTime": "-1"}, 0, provisioner.ErrInvalidArgument, `maxReplicaDownTime="-1"`},
		{"not a number", map[string]string{"maxReplicaDownTime": "1h"}, 0, provisioner.ErrInvalidArgument, "maxReplicaDownTime"},
		{"immutable", map[string]string{"provisioningType": "thick"}, 0, provisioner.ErrInvalidArgument, `"provisioningType"`},
		{"unknown", map[string]string{"maxReplicaDownTime": "5", "bogus": "1"}, 0, provisioner.ErrInvalidArgument, `"bogus"`},
	} {
		got, err := e.svc.ModifyVolume(e.ctx, v.ID, tc.mutable)
		if tc.err != nil {
			wantCode(t, err, tc.err, tc.msg)
			continue
		}
		if err != nil || got.Parameters.MaxReplicaDownTimeMinutes != tc.want {
			t.Errorf("%s: %v, %v; want %d", tc.name, got, err, tc.want)
		}
	}
	if cur, _ := e.store.GetVolume(e.ctx, v.ID); cur.Parameters.MaxReplicaDownTimeMinutes != 0 || cur.Parameters.NumReplicas != 2 {
		t.Errorf("stored parameters %+v", cur.Parameters)
	}
	_, err := e.svc.ModifyVolume(e.ctx, "vol-unknown", map[string]string{"maxReplicaDownTime": "5"})
	wantCode(t, err, provisioner.ErrNotFound)
}
