package stagestate

import (
	"errors"
	"fmt"
	"time"
)

// What the node's healer needs from the staging state: which volumes are
// staged here (with their md array and the replicas NodeStage connected), a
// way to record a replica the healer connected so that NodeUnstage
// disconnects it too, and the per-volume lock the CSI calls take so that the
// healer never changes an array while NodeStage or NodeUnstage works on it.

// ErrNotStaged is returned by RecordReplica for a volume that has no
// staging state (unstaged meanwhile).
var ErrNotStaged = errors.New("volume not staged on this node")

// Volume is one volume recorded in the node state directory.
type Volume struct {
	VolumeID string
	// Staged is false while NodeStage runs (or after it crashed halfway):
	// the healer leaves such volumes to NodeStage's retry.
	Staged bool
	// MDDevice ("/dev/mdN") and MDUUID (NormalizeUUID form) are empty for
	// single-replica volumes, which have no md array.
	MDDevice, MDUUID string
	HostNQN          string
	// StageStarted is when the current stage of the volume began (zero:
	// unknown, a state from before the field).
	StageStarted time.Time
	// Replicas are every replica subsystem recorded for the volume.
	Replicas []Replica
}

// ListVolumes returns the volumes recorded in stateDir, ordered by ID. It
// reads only the state directory copies (the healer's view).
func ListVolumes(stateDir string) ([]Volume, error) {
	sts, err := New(stateDir).List()
	if err != nil {
		return nil, err
	}
	out := make([]Volume, 0, len(sts))
	for _, st := range sts {
		if st.VolumeID == "" {
			continue
		}
		out = append(out, volumeOf(st))
	}
	return out, nil
}

// volumeOf is the healer's view of a state.
func volumeOf(st *State) Volume {
	sv := Volume{
		VolumeID: st.VolumeID,
		Staged:   st.Phase == Staged,
		MDDevice: st.MDDevice,
		MDUUID:   st.MDUUID,
		HostNQN:  st.HostNQN,

		StageStarted: st.StageStarted,
	}
	sv.Replicas = append(sv.Replicas, st.Replicas...)
	return sv
}

// RecordReplica adds a replica the healer connected to the volume's
// staging state, so NodeUnstage disconnects it. A volume without state
// (unstaged meanwhile) gives ErrNotStaged and nothing is written: recreating
// the file would make an unstaged volume look staged. The caller holds the
// volume's lock (Driver.TryLockVolume) so this read-modify-write does not
// race NodeStage or NodeUnstage.
func RecordReplica(stateDir, volumeID string, r Replica) error {
	store := New(stateDir)
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
	st.AddReplicas([]Replica{r})
	return store.Save(st)
}
