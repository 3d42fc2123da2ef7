package provisioner

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/nvmirror/nvmirror/pkg/provisioner/store"
)

// MaxListVolumesPage caps a page of ListVolumes: a request with no page
// size (CSI max_entries 0), or a larger one, gets at most this many volumes
// and a token for the rest (CSI lets a plugin return fewer entries than
// asked, and the CO must follow next_token). 1000 volumes are ~1 MB of
// response, within gRPC's default 4 MiB message limit.
const MaxListVolumesPage = 1000

// listTokenPrefix marks the paging tokens this provisioner issues, so a
// token from elsewhere (or mangled) is refused rather than misread.
const listTokenPrefix = "v1:"

// ListVolumes returns up to max volumes (0, or more than
// MaxListVolumesPage: MaxListVolumesPage) in volume ID order, starting after
// the volume named by startToken, and the token of the next page ("" after
// the last). Each page is one range read of the registry (max+1 records,
// the extra one telling whether a next page exists), never the whole of it.
// The token is the base64 of the last ID returned: it stays valid when that
// volume is deleted meanwhile (the next page starts after where it was) and
// needs no server-side state, so it survives a provisioner restart or
// failover. A token not issued here is ErrInvalidArgument.
func (s *Service) ListVolumes(ctx context.Context, startToken string, max int) ([]*store.Volume, string, error) {
	if max < 0 {
		return nil, "", fmt.Errorf("%w: max entries %d must not be negative", ErrInvalidArgument, max)
	}
	if max == 0 || max > MaxListVolumesPage {
		max = MaxListVolumesPage
	}
	after, err := pageAfter(startToken)
	if err != nil {
		return nil, "", err
	}
	page, err := s.o.Store.ListVolumesAfter(ctx, after, max+1)
	if err != nil {
		return nil, "", err
	}
	if len(page) > max {
		page = page[:max]
		return page, pageToken(page[len(page)-1].ID), nil
	}
	return page, "", nil
}

// pageToken is the token of the page after the record id (see ListVolumes).
func pageToken(id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(listTokenPrefix + id))
}

// pageAfter returns the ID a paging token starts after ("" for no token);
// a token not issued here is ErrInvalidArgument.
func pageAfter(token string) (string, error) {
	if token == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	id, ok := strings.CutPrefix(string(b), listTokenPrefix)
	if err != nil || !ok || id == "" {
		return "", fmt.Errorf("%w: starting token %q was not issued by this provisioner", ErrInvalidArgument, token)
	}
	return id, nil
}
