package provisioner

import (
	"context"
	"encoding/base64"
	"fmt"
	"sort"
	"strings"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// listTokenPrefix marks the paging tokens this provisioner issues, so a
// token from elsewhere (or mangled) is refused rather than misread.
const listTokenPrefix = "v1:"

// ListVolumes returns up to max volumes (0: all) in volume ID order,
// starting after the volume named by startToken, and the token of the next
// page ("" after the last). The token is the base64 of the last ID
// returned: it stays valid when that volume is deleted meanwhile (the next
// page starts after where it was) and needs no server-side state, so it
// survives a provisioner restart or failover. A token not issued here is
// ErrInvalidArgument.
func (s *Service) ListVolumes(ctx context.Context, startToken string, max int) ([]*store.Volume, string, error) {
	if max < 0 {
		return nil, "", fmt.Errorf("%w: max entries %d must not be negative", ErrInvalidArgument, max)
	}
	after := ""
	if startToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(startToken)
		id, ok := strings.CutPrefix(string(b), listTokenPrefix)
		if err != nil || !ok || id == "" {
			return nil, "", fmt.Errorf("%w: starting token %q was not issued by this provisioner", ErrInvalidArgument, startToken)
		}
		after = id
	}
	all, err := s.o.Store.ListVolumes(ctx)
	if err != nil {
		return nil, "", err
	}
	i := sort.Search(len(all), func(i int) bool { return all[i].ID > after })
	page := all[i:]
	if max > 0 && len(page) > max {
		page = page[:max]
		return page, base64.RawURLEncoding.EncodeToString([]byte(listTokenPrefix + page[len(page)-1].ID)), nil
	}
	return page, "", nil
}
