package healer

import (
	"reflect"
	"slices"
)

// settledVolume is a volume whose last decision was a fixed point: no
// action, no event, its memory unchanged and holding no clock (see
// settledMemory). Observed exactly alike at the next cycle, deciding it
// again would give the same (Decide is pure and nothing in its memory waits
// for a time), so the cycle carries its memory over and decides only the
// volumes that changed. hosts is its part of the storage node connections
// (Host events are decided across volumes).
type settledVolume struct {
	obs   VolumeObservation
	hosts []hostReplica
}

// settledMemory reports whether a volume's memory holds nothing that time
// alone could act on: no down clock (maxReplicaDownTime), no backoff
// (NextAttempt, NextReplace), no replacement or sync under way, no degraded
// episode. A volume with any of them is decided every cycle, whether or not
// its observation changed.
func settledMemory(vm VolumeMemory) bool {
	if !vm.DegradedSince.IsZero() || len(vm.Named) > 0 || vm.Sync.Active || len(vm.Replacements) > 0 {
		return false
	}
	for _, rm := range vm.Replicas {
		if !rm.DownSince.IsZero() || !rm.JoinedAt.IsZero() || rm.Attempts != 0 || !rm.NextAttempt.IsZero() || !rm.NextReplace.IsZero() {
			return false
		}
	}
	return true
}

// sameObservation reports whether two observations of a volume are equal in
// everything Decide reads. Field by field rather than reflect.DeepEqual,
// which would cost as much as deciding; the provisioner's record, re-read
// at most every ConfigMaxAge, is compared deeply only when it is not the
// same copy.
func sameObservation(a, b VolumeObservation) bool {
	if a.VolumeID != b.VolumeID || a.Staged != b.Staged || a.MDUUID != b.MDUUID || a.RecordFresh != b.RecordFresh ||
		!slices.Equal(a.StagedReplicas, b.StagedReplicas) || !sameArray(a.Array, b.Array) || len(a.Controllers) != len(b.Controllers) {
		return false
	}
	for nqn, cs := range a.Controllers {
		if !slices.Equal(cs, b.Controllers[nqn]) {
			return false
		}
	}
	return a.Record == b.Record || reflect.DeepEqual(a.Record, b.Record)
}

func sameArray(a, b *ArrayObservation) bool {
	if a == b {
		return true // the observer shares an unchanged array's observation
	}
	if a == nil || b == nil {
		return a == b
	}
	return a.Name == b.Name && a.Device == b.Device && a.UUID == b.UUID && a.State == b.State && a.RaidDisks == b.RaidDisks &&
		a.Degraded == b.Degraded && a.SyncAction == b.SyncAction && a.SyncDone == b.SyncDone && a.SyncTotal == b.SyncTotal &&
		a.SyncSpeedKiB == b.SyncSpeedKiB && a.SyncSpeedMaxKiB == b.SyncSpeedMaxKiB && a.SyncSpeedMaxSystem == b.SyncSpeedMaxSystem &&
		slices.EqualFunc(a.Members, b.Members, sameMember)
}

func sameMember(m, n MemberObservation) bool {
	return m.Device == n.Device && m.Slot == n.Slot && m.InSync == n.InSync && m.Faulty == n.Faulty && m.Spare == n.Spare &&
		slices.Equal(m.Identities, n.Identities)
}
