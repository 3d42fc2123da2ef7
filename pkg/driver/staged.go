package driver

import (
	"errors"
	"fmt"
)

// What the node's healer needs from the staging state: which volumes are
// staged here (with their md array and the replicas NodeStage connected), a
// way to record a replica the healer connected so that NodeUnstage
// disconnects it too, and the per-volume lock the CSI calls take so that the
// healer never changes an array while NodeStage or NodeUnstage works on it.

// ErrNotStaged is returned by RecordStagedReplica for a volume that has no
// staging state (unstaged meanwhile).
var ErrNotStaged = errors.New("volume not staged on this node")

// StagedVolume is one volume recorded in the node state directory.
type StagedVolume struct {
	VolumeID string
	// Staged is false while NodeStage runs (or after it crashed halfway):
	// the healer leaves such volumes to NodeStage's retry.
	Staged bool
	// MDDevice ("/dev/mdN") and MDUUID (NormalizeUUID form) are empty for
	// single-replica volumes, which have no md array.
	MDDevice, MDUUID string
	HostNQN          string
	// Replicas are every replica subsystem recorded for the volume.
	Replicas []StagedReplica
}

// StagedReplica is one recorded replica subsystem.
type StagedReplica struct {
	ID, NQN, NamespaceUUID string
}

// ListStaged returns the volumes recorded in stateDir, ordered by ID. It
// reads only the state directory copies (the healer's view).
func ListStaged(stateDir string) ([]StagedVolume, error) {
	sts, err := newStateStore(stateDir).List()
	if err != nil {
		return nil, err
	}
	out := make([]StagedVolume, 0, len(sts))
	for _, st := range sts {
		if st.VolumeID == "" {
			continue
		}
		sv := StagedVolume{
			VolumeID: st.VolumeID,
			Staged:   st.Phase == phaseStaged,
			MDDevice: st.MDDevice,
			MDUUID:   st.MDUUID,
			HostNQN:  st.HostNQN,
		}
		for _, r := range st.Replicas {
			sv.Replicas = append(sv.Replicas, StagedReplica{ID: r.ID, NQN: r.NQN, NamespaceUUID: r.NamespaceUUID})
		}
		out = append(out, sv)
	}
	return out, nil
}

// RecordStagedReplica adds a replica the healer connected to the volume's
// staging state, so NodeUnstage disconnects it. A volume without state
// (unstaged meanwhile) gives ErrNotStaged and nothing is written: recreating
// the file would make an unstaged volume look staged. The caller holds the
// volume's lock (Driver.TryLockVolume) so this read-modify-write does not
// race NodeStage or NodeUnstage.
func RecordStagedReplica(stateDir, volumeID string, r StagedReplica) error {
	store := newStateStore(stateDir)
	st, err := store.Load(volumeID)
	if err != nil {
		return err
	}
	if st == nil {
		return fmt.Errorf("%w: %s", ErrNotStaged, volumeID)
	}
	for _, have := range st.Replicas {
		if have.NQN == r.NQN {
			return nil
		}
	}
	st.addReplicas([]stagedReplica{{ID: r.ID, NQN: r.NQN, NamespaceUUID: r.NamespaceUUID}})
	return store.Save(st)
}

// TryLockVolume takes the lock the CSI node calls take on a volume, without
// waiting: the healer skips a volume that NodeStage, NodeUnstage or
// NodeExpand is working on and looks again at its next cycle.
func (d *Driver) TryLockVolume(volumeID string) (unlock func(), ok bool) {
	if !d.inflight.Insert(volumeID) {
		return nil, false
	}
	return func() { d.inflight.Delete(volumeID) }, true
}
