package volume

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// CheckStartable decides whether a node may start the volume's array from
// the replicas it reached (by ID: those whose device carries the volume's md
// superblock). At least one of them must be in sync as the registry records
// it: md starts an array from the freshest members it is given, so an array
// started from out-of-sync members alone would silently serve the volume as
// it was before they dropped out, and a later re-add would resync the newer
// data away. With one in-sync member present, md itself ranks the others by
// their superblock event counts and brings the stale ones up to date.
//
// The error wraps ErrFailedPrecondition and says which replicas are stale
// and since when, where the in-sync ones are, and what an admin can do.
func (v *Volume) CheckStartable(reached []string) error {
	var stale []Replica
	for _, r := range v.ActiveReplicas() {
		if !slices.Contains(reached, r.ID) {
			continue
		}
		if r.InSync() {
			return nil
		}
		stale = append(stale, r)
	}
	if len(stale) == 0 {
		return nil // nothing reached: the caller reports unavailability
	}
	var inSync, nodes []string
	for _, r := range v.ActiveReplicas() {
		if r.InSync() {
			inSync = append(inSync, r.ID)
			nodes = append(nodes, r.StorageNode)
		}
	}
	// The suggestion names the stale replica that dropped out last: it
	// lost the fewest writes.
	staleIDs := make([]string, 0, len(stale))
	since, freshest := stale[0].OutOfSyncSince, stale[0]
	for _, r := range stale {
		staleIDs = append(staleIDs, r.ID)
		if r.OutOfSyncSince.Before(since) {
			since = r.OutOfSyncSince
		}
		if r.OutOfSyncSince.After(freshest.OutOfSyncSince) {
			freshest = r
		}
	}
	where := "and no replica is recorded in sync"
	if len(inSync) > 0 {
		where = fmt.Sprintf("and the in-sync replicas %s on storage nodes %s are unreachable; bring those storage nodes back, or",
			strings.Join(inSync, ", "), strings.Join(nodes, ", "))
	} else {
		where += ";"
	}
	return Errorf(ErrFailedPrecondition, "volume %s: replicas %s are out of sync since %s %s accept data loss with 'nvmirrorctl promote %s %s --accept-data-loss'",
		v.ID, strings.Join(staleIDs, ", "), since.UTC().Format(time.RFC3339), where, v.ID, freshest.ID)
}
