package healer

// Rebuild pacing. Every copy md makes onto a replica (a bitmap re-add, a
// replacement's full sync, a resync after a crash) is capped at the
// volume's rebuildBandwidthLimit, and, while several arrays of this node
// copy at once, at an equal share of the node's --max-rebuild-bandwidth: a
// storage node that comes back or dies touches many volumes at once, and
// their rebuilds must not starve the applications or the network (a
// rebuild storm). md enforces the cap itself (md/sync_speed_max), so the
// healer only keeps each array's limit right; it is a pure function of the
// observation and the settings, and a changed limit (a
// VolumeAttributesClass) applies at the next cycle, during a rebuild too.

// rebuilding: md is copying onto a member (resync or recovery).
func rebuilding(a *ArrayObservation) bool {
	return a != nil && (a.SyncAction == "resync" || a.SyncAction == "recover")
}

// decideRebuildRates returns the limit changes for the staged volumes'
// arrays: wanted = the volume's limit, and while the array rebuilds, at most
// the node's cap shared by the arrays rebuilding now. 0 means md's system
// limit.
func decideRebuildRates(vols []VolumeObservation, cfg Config) []Action {
	copying := 0
	for _, v := range vols {
		if v.Staged && rebuilding(v.Array) {
			copying++
		}
	}
	var out []Action
	for _, v := range vols {
		if !v.Staged || v.Array == nil || v.Record == nil || v.MDUUID == "" {
			continue
		}
		want := uint64(v.Record.Policy.RebuildBandwidthMiBps) * 1024
		if cfg.MaxRebuildBandwidthMiBps > 0 && rebuilding(v.Array) {
			share := uint64(cfg.MaxRebuildBandwidthMiBps) * 1024 / uint64(copying)
			if share == 0 {
				share = 1
			}
			if want == 0 || share < want {
				want = share
			}
		}
		have := v.Array.SyncSpeedMaxKiB
		if v.Array.SyncSpeedMaxSystem {
			have = 0
		}
		if want != have {
			out = append(out, Action{Kind: ActSetRebuildRate, VolumeID: v.VolumeID, MDDevice: v.Array.Device, MDUUID: v.MDUUID,
				RebuildKiBps: want})
		}
	}
	return out
}
