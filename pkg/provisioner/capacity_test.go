package provisioner_test

import (
	"testing"

	"github.com/nvmirror/nvmirror/pkg/provisioner"
)

func TestGetCapacity(t *testing.T) {
	e := newEnv(t, []node{{"sn-1", "", "r1", 10}, {"sn-2", "", "r2", 20}, {"sn-3", "", "r3", 30}})
	c, err := e.svc.GetCapacity(e.ctx, map[string]string{"numReplicas": "2", "storageNodes": "sn-2,sn-3"})
	if err != nil || c.AvailableBytes != 20*gib || c.TotalBytes != 50*gib {
		t.Errorf("GetCapacity = %+v, %v; want 20 GiB available of 50", c, err)
	}
	e.cluster.SetDown("sn-3", true)
	c, err = e.svc.GetCapacity(e.ctx, nil)
	if err != nil || c.AvailableBytes != 10*gib || c.TotalBytes != 30*gib {
		t.Errorf("GetCapacity with sn-3 down = %+v, %v", c, err)
	}
	_, err = e.svc.GetCapacity(e.ctx, map[string]string{"numReplica": "2"})
	wantCode(t, err, provisioner.ErrInvalidArgument, "numReplica")
	nodes, err := e.svc.ListStorageNodes(e.ctx)
	if err != nil || len(nodes) != 3 || nodes[2].ID != "sn-3" || nodes[2].Reachable || nodes[2].Err == nil || !nodes[0].Reachable || nodes[0].TotalBytes != 10*gib || nodes[0].Rack != "r1" {
		t.Errorf("ListStorageNodes = %+v, %v", nodes, err)
	}
}

func TestMaxVolumeSize(t *testing.T) {
	e := newEnv(t, []node{{"sn-1", "", "r1", 10}, {"sn-2", "", "r2", 20}, {"sn-3", "", "r3", 30}})
	for _, tc := range []struct {
		params map[string]string
		want   int64
	}{
		{map[string]string{"numReplicas": "1"}, 30 * gib},
		{map[string]string{"numReplicas": "2"}, 20 * gib},
		{map[string]string{"numReplicas": "3"}, 10 * gib},
		{map[string]string{"numReplicas": "2", "storageNodes": "sn-1,sn-3"}, 10 * gib},
	} {
		got, err := e.svc.MaxVolumeSize(e.ctx, tc.params)
		if err != nil || got != tc.want {
			t.Errorf("MaxVolumeSize(%v) = %d GiB, %v; want %d GiB", tc.params, got/gib, err, tc.want/gib)
		}
	}
}
