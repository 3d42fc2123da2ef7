// Package stagestate is the node's record of the volumes staged on it.
//
// NodeUnstage receives only the volume ID and staging path,
// and a restarted plugin (or the healer) must know what is staged where: which
// md array, which replica subsystems are connected, which publish targets
// exist. So NodeStage records it, before touching the system (phase
// "staging": enough for NodeUnstage to undo a crashed stage) and again when
// done ("staged"). Two copies: one in the node state directory (on the host,
// the healer's view) and one beside the staging path (it travels with
// kubelet's own per-volume directory, and is the fallback when the state
// directory was lost). Both are written atomically.
//
// The healer reads the same record (ListVolumes) and adds the replicas it
// connects (RecordReplica), so NodeUnstage disconnects them too.
package stagestate

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/nvmirror/nvmirror/pkg/atomicfile"
)

// Phase is where a volume is in its staging.
type Phase string

const (
	// Staging: NodeStage is bringing the volume up (or crashed doing so);
	// the record is enough for NodeUnstage to undo it.
	Staging Phase = "staging"
	// Staged: the volume is up and mounted (or exposed as a device).
	Staged Phase = "staged"
	// Unstaging: NodeUnstage is tearing the volume down; the healer
	// leaves it alone.
	Unstaging Phase = "unstaging"
)

const (
	stateVersion = 1
	// sidecarSuffix names the copy beside the staging path: kubelet's
	// staging path is <dir>/globalmount, so the copy is
	// <dir>/globalmount.nvmirror.json, outside the mount.
	sidecarSuffix = ".nvmirror.json"
)

// State is one staged volume.
type State struct {
	Version     int    `json:"version"`
	VolumeID    string `json:"volumeID"`
	Phase       Phase  `json:"phase"`
	StagingPath string `json:"stagingPath"`
	Block       bool   `json:"block"`
	FSType      string `json:"fsType,omitempty"`
	HostNQN     string `json:"hostNQN"`
	// StageStarted is when the NodeStage that created this state began:
	// what anyone learned of the volume before it (a record the healer
	// cached before an unstage and this stage) may be out of date. Zero in
	// states written before the field.
	StageStarted time.Time `json:"stageStarted,omitzero"`
	// MDDevice/MDUUID are the array ("" for single-replica volumes).
	MDDevice string `json:"mdDevice,omitempty"`
	MDUUID   string `json:"mdUUID,omitempty"`
	// Device is what is mounted or exposed: the md device, or the NVMe
	// namespace device of a single-replica volume.
	Device string `json:"device,omitempty"`
	// Replicas are every replica subsystem this node may have connected for
	// the volume; NodeUnstage disconnects all of them. The healer adds the
	// ones it connects.
	Replicas []Replica `json:"replicas"`
	// Targets are the NodePublish targets, for the single-writer check.
	Targets map[string]PublishTarget `json:"targets,omitempty"`
	// DegradedSince is maintained by the healer; kept across restarts.
	DegradedSince time.Time `json:"degradedSince,omitzero"`
	UpdatedAt     time.Time `json:"updatedAt"`
}

type Replica struct {
	ID            string `json:"id"`
	NQN           string `json:"nqn"`
	NamespaceUUID string `json:"namespaceUUID"`
}

type PublishTarget struct {
	ReadOnly   bool   `json:"readOnly"`
	AccessMode string `json:"accessMode"`
}

// AddReplicas merges replicas into the state, keeping every NQN ever seen.
func (s *State) AddReplicas(rs []Replica) {
	seen := map[string]bool{}
	for _, r := range s.Replicas {
		seen[r.NQN] = true
	}
	for _, r := range rs {
		if !seen[r.NQN] {
			s.Replicas = append(s.Replicas, r)
			seen[r.NQN] = true
		}
	}
}

type Store struct{ dir string }

func New(dir string) *Store { return &Store{dir: dir} }

var safeFileName = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$`)

// fileFor returns the state file of a volume. IDs are the provisioner's;
// any that is not a plain file name is hex-encoded so it can never escape
// the directory.
func (s *Store) fileFor(volumeID string) string {
	name := volumeID
	if !safeFileName.MatchString(name) {
		name = "x-" + hex.EncodeToString([]byte(volumeID))
	}
	return filepath.Join(s.dir, name+".json")
}

// Load returns the volume's state, nil when it is not staged here.
func (s *Store) Load(volumeID string) (*State, error) {
	return readState(s.fileFor(volumeID), volumeID)
}

// LoadSidecar returns the copy beside stagingPath, nil when absent.
func (s *Store) LoadSidecar(volumeID, stagingPath string) (*State, error) {
	return readState(strings.TrimRight(stagingPath, "/")+sidecarSuffix, volumeID)
}

func readState(path, volumeID string) (*State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("staging state %s: %w", path, err)
	}
	if st.VolumeID != volumeID {
		return nil, fmt.Errorf("staging state %s belongs to volume %q, not %q", path, st.VolumeID, volumeID)
	}
	return &st, nil
}

// Save writes both copies. The state directory copy is written first: it
// is the one the healer reads.
func (s *Store) Save(st *State) error {
	st.Version = stateVersion
	st.UpdatedAt = time.Now().UTC()
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.fileFor(st.VolumeID)), 0o700); err != nil {
		return err
	}
	if err := atomicfile.Write(s.fileFor(st.VolumeID), b, 0o600); err != nil {
		return fmt.Errorf("save staging state of %s: %w", st.VolumeID, err)
	}
	if st.StagingPath != "" {
		sidecar := strings.TrimRight(st.StagingPath, "/") + sidecarSuffix
		if err := os.MkdirAll(filepath.Dir(sidecar), 0o750); err != nil {
			return err
		}
		if err := atomicfile.Write(sidecar, b, 0o600); err != nil {
			return fmt.Errorf("save staging state of %s beside %s: %w", st.VolumeID, st.StagingPath, err)
		}
	}
	return nil
}

// Delete removes both copies; missing ones are fine. The sidecar goes first
// so that a crash in between leaves the state directory copy, which the next
// NodeUnstage retry (or the healer) finds.
func (s *Store) Delete(volumeID, stagingPath string) error {
	if stagingPath != "" {
		if err := os.Remove(strings.TrimRight(stagingPath, "/") + sidecarSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := os.Remove(s.fileFor(volumeID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// List returns every recorded volume, ordered by ID (for the healer and for
// recovery after a restart).
func (s *Store) List() ([]*State, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*State
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		st, err := readListed(filepath.Join(s.dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VolumeID < out[j].VolumeID })
	return out, nil
}

// readListed reads one state file found by listing the directory.
func readListed(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("staging state %s: %w", filepath.Base(path), err)
	}
	return &st, nil
}
