package provisioner_test

import (
	"encoding/base64"
	"fmt"
	"reflect"
	"sort"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/provisioner"
)

func TestListVolumesPaging(t *testing.T) {
	e := newEnv(t, threeRacks())
	var want []string
	for i := range 5 {
		want = append(want, e.create(t, fmt.Sprintf("pvc-%d", i), gib, map[string]string{"numReplicas": "1"}).ID)
	}
	sort.Strings(want)
	for _, max := range []int{0, 1, 2, 5, 6} {
		var got []string
		token := ""
		for pages := 0; ; pages++ {
			vols, next, err := e.svc.ListVolumes(e.ctx, token, max)
			if err != nil {
				t.Fatalf("max %d: %v", max, err)
			}
			if max > 0 && len(vols) > max {
				t.Fatalf("max %d: page of %d", max, len(vols))
			}
			for _, v := range vols {
				got = append(got, v.ID)
			}
			if next == "" {
				break
			}
			if pages > 10 {
				t.Fatal("paging does not end")
			}
			token = next
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("max %d: got %v, want %v", max, got, want)
		}
	}
	// A token stays valid when its volume is deleted meanwhile.
	_, next, err := e.svc.ListVolumes(e.ctx, "", 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteVolume(e.ctx, want[1]); err != nil {
		t.Fatal(err)
	}
	vols, _, err := e.svc.ListVolumes(e.ctx, next, 1)
	if err != nil || len(vols) != 1 || vols[0].ID != want[2] {
		t.Errorf("after deleting the token's volume: %v, %v", vols, err)
	}
	for _, tc := range []struct {
		token string
		max   int
		msg   string
	}{
		{"not base64!", 0, "starting token"},
		{base64.RawURLEncoding.EncodeToString([]byte("vol-1")), 0, "starting token"},
		{"", -1, "max entries"},
	} {
		_, _, err := e.svc.ListVolumes(e.ctx, tc.token, tc.max)
		wantCode(t, err, provisioner.ErrInvalidArgument, tc.msg)
	}
}
