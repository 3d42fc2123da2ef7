package provisioner_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"reflect"
	"sort"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/provisioner"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
	"github.com/nvmirror/nvmirror/pkg/provisioner/store/boltstore"
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

// pagedStore serves a large registry from memory and counts reads: a page
// must be a range read of about its size, never the whole registry.
type pagedStore struct {
	store.Store
	vols       []*store.Volume
	fullReads  int
	rangeReads []int // volumes returned by each range read
}

func (p *pagedStore) ListVolumes(context.Context) ([]*store.Volume, error) {
	p.fullReads++
	return p.vols, nil
}

func (p *pagedStore) ListVolumesAfter(_ context.Context, after string, limit int) ([]*store.Volume, error) {
	i := sort.Search(len(p.vols), func(i int) bool { return p.vols[i].ID > after })
	page := p.vols[i:min(len(p.vols), i+limit)]
	p.rangeReads = append(p.rangeReads, len(page))
	return page, nil
}

// ListVolumes with no page size (or a larger one) returns at most
// MaxListVolumesPage volumes and a token, and each page reads only its own
// range of the registry.
func TestListVolumesPageCapAndRangeReads(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "r.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const n = 2*provisioner.MaxListVolumesPage + 10
	ps := &pagedStore{Store: st}
	for i := range n {
		ps.vols = append(ps.vols, &store.Volume{ID: fmt.Sprintf("vol-%06d", i)})
	}
	e := newEnvWithStore(t, ps, nil, provisioner.Options{})
	for _, max := range []int{0, provisioner.MaxListVolumesPage + 1} {
		ps.fullReads, ps.rangeReads = 0, nil
		token, total, pages := "", 0, 0
		for {
			vols, next, err := e.svc.ListVolumes(e.ctx, token, max)
			if err != nil {
				t.Fatal(err)
			}
			if len(vols) > provisioner.MaxListVolumesPage {
				t.Fatalf("max %d: a page of %d volumes, cap %d", max, len(vols), provisioner.MaxListVolumesPage)
			}
			total += len(vols)
			pages++
			if next == "" {
				break
			}
			token = next
		}
		if total != n || pages != 3 {
			t.Errorf("max %d: %d volumes in %d pages, want %d in 3", max, total, pages, n)
		}
		if ps.fullReads != 0 {
			t.Errorf("max %d: the whole registry read %d times", max, ps.fullReads)
		}
		for _, r := range ps.rangeReads {
			if r > provisioner.MaxListVolumesPage+1 {
				t.Errorf("max %d: a range read of %d volumes", max, r)
			}
		}
	}
}
