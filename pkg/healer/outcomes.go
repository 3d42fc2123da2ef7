package healer

import (
	"time"

	"github.com/nvmirror/nvmirror/pkg/volume"
)

// RecordOutcomes folds what acting did into memory: a replica joined starts
// its sync report, a failed attempt backs off, a replacement is remembered
// so the old replica never rejoins and the new one counts against the
// bound, a completed deletion is not repeated. Pure, like Decide.
func RecordOutcomes(mem Memory, outs []Outcome, cfg Config, now time.Time) Memory {
	next := Memory{Version: MemoryVersion, Volumes: make(map[string]VolumeMemory, len(mem.Volumes)), Hosts: make(map[string]HostMemory, len(mem.Hosts))}
	for k, v := range mem.Hosts {
		next.Hosts[k] = v
	}
	for k, v := range mem.Volumes {
		next.Volumes[k] = cloneVolumeMemory(v)
	}
	for _, o := range outs {
		vm, ok := next.Volumes[o.Action.VolumeID]
		if !ok {
			continue
		}
		id := o.Action.Replica.ID
		rm := vm.Replicas[id]
		switch o.Action.Kind {
		case ActJoin:
			if o.Err == nil && o.Joined {
				rm.JoinedAt, rm.Attempts, rm.NextAttempt = now, 0, time.Time{}
			} else if o.Err != nil {
				rm.Attempts++
				rm.NextAttempt = now.Add(backoff(cfg, rm.Attempts))
			}
		case ActRetire:
			if o.Err == nil {
				rm.Attempts, rm.NextAttempt = 0, time.Time{}
				if o.Action.Mark {
					rm.Removed = true
				}
			} else {
				rm.Attempts++
				rm.NextAttempt = now.Add(backoff(cfg, rm.Attempts))
			}
		case ActReplace:
			if o.NewReplica != nil {
				rm.ReplacedBy = o.NewReplica.ID
				nm := vm.Replicas[o.NewReplica.ID]
				nm.StorageNode = o.NewReplica.StorageNode
				nm.LastState = volume.ReplicaActive
				if o.Joined {
					nm.JoinedAt = now
				}
				vm.Replicas[o.NewReplica.ID] = nm
				vm.Replacements = append(vm.Replacements, Replacement{Missing: id, New: o.NewReplica.ID, Started: now})
			} else if o.Err != nil {
				rm.NextReplace = now.Add(cfg.ReplaceRetry)
			}
		}
		vm.Replicas[id] = rm
		next.Volumes[o.Action.VolumeID] = vm
	}
	return next
}

func backoff(cfg Config, attempts int) time.Duration {
	d := cfg.RetryBase
	for i := 1; i < attempts && d < cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, cfg.RetryMax)
}
