package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sort"

	"github.com/nvmirror/nvmirror/pkg/atomicfile"
	"k8s.io/klog/v2"
)

// ReplicaState is the lifecycle state persisted for a replica. Only states
// from which an interrupted operation must be completed are recorded; see
// the ordering comments in replicas.go, hosts.go and reconcile.go.
type ReplicaState string

const (
	// StateCreating: the record exists; the backing file and export may be
	// missing or incomplete. A repeated create or the next start completes it.
	StateCreating ReplicaState = "creating"
	// StateReady: backing file and export complete.
	StateReady ReplicaState = "ready"
	// StateDeleting: a delete started; the export and file may still
	// exist. A repeated delete or the next start completes it.
	StateDeleting ReplicaState = "deleting"
)

// Replica is what the agent persists about one replica.
type Replica struct {
	ID           string       `json:"id"`
	VolumeID     string       `json:"volumeID"`
	SizeBytes    int64        `json:"sizeBytes"`
	Provisioning Provisioning `json:"provisioning"`
	// AllowedHosts is sorted and without duplicates.
	AllowedHosts []string     `json:"allowedHosts,omitempty"`
	State        ReplicaState `json:"state"`
	// CutPending records that a host was revoked and the replica's live
	// sessions have not been cut yet. The kernel keeps sessions across an
	// agent crash, so this cannot be inferred from configfs after a
	// restart: without the flag a revoked host could keep its session.
	CutPending bool `json:"cutPending,omitempty"`
	// Source is the snapshot range the replica was created from (nil: it
	// started empty). While the replica is being created it says what the
	// backing file must be made of.
	Source *SnapshotSource `json:"source,omitempty"`
}

// SnapshotSource is a range of a local snapshot a new replica starts as:
// [SourceOffset, SourceOffset+Length) of the snapshot at TargetOffset.
type SnapshotSource struct {
	SnapshotID   string `json:"snapshotID"`
	SourceOffset int64  `json:"sourceOffset"`
	Length       int64  `json:"length"`
	TargetOffset int64  `json:"targetOffset"`
}

func (r *Replica) clone() *Replica {
	c := *r
	c.AllowedHosts = slices.Clone(r.AllowedHosts)
	if r.Source != nil {
		src := *r.Source
		c.Source = &src
	}
	return &c
}

// stateVersion is the format version of the state file.
const stateVersion = 1

// StateFileName is the state file's name inside the pool directory.
const StateFileName = "state.json"

type stateFile struct {
	Version  int        `json:"version"`
	Replicas []*Replica `json:"replicas"`
}

// Store persists replica records in one JSON file.
//
// Writes are atomic: the new content goes to a temporary file in the same
// directory, which is fsynced, renamed over the state file, and the
// directory is fsynced. A crash leaves either the old or the new state
// (and maybe a stray temporary file, removed by the next Load).
type Store struct {
	path string
}

// NewStore returns a store for the file at path.
func NewStore(path string) *Store { return &Store{path: path} }

// Path is the state file's path.
func (s *Store) Path() string { return s.path }

// Load reads the records. A missing file is an empty state (first start).
// A file that cannot be parsed is an error, never an empty state: starting
// empty would make the reconcile unexport every replica of this node.
func (s *Store) Load() (map[string]*Replica, error) {
	s.removeTemps()
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]*Replica{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("state file %s is corrupt (fix or restore it; the agent will not guess): %w", s.path, err)
	}
	if f.Version != stateVersion {
		return nil, fmt.Errorf("state file %s has version %d; this agent reads version %d", s.path, f.Version, stateVersion)
	}
	out := make(map[string]*Replica, len(f.Replicas))
	for _, r := range f.Replicas {
		if r == nil || validateReplicaID(r.ID) != nil {
			return nil, fmt.Errorf("state file %s holds an invalid replica record %+v", s.path, r)
		}
		if _, dup := out[r.ID]; dup {
			return nil, fmt.Errorf("state file %s holds replica %s twice", s.path, r.ID)
		}
		out[r.ID] = r
	}
	return out, nil
}

// Save replaces the state with recs, atomically and durably.
func (s *Store) Save(recs map[string]*Replica) error {
	f := stateFile{Version: stateVersion, Replicas: make([]*Replica, 0, len(recs))}
	for _, r := range recs {
		f.Replicas = append(f.Replicas, r)
	}
	sort.Slice(f.Replicas, func(i, j int) bool { return f.Replicas[i].ID < f.Replicas[j].ID })
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(s.path, append(b, '\n'), 0o600)
}

// removeTemps deletes temporary files a crash left behind.
func (s *Store) removeTemps() {
	if err := atomicfile.RemoveTemps(s.path); err != nil {
		klog.V(2).InfoS("Could not remove temporary state files", "path", s.path, "err", err)
	}
}
