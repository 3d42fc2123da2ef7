package repair

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/atomicfile"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
)

// A repair leaves an md array running and NVMe connections open on the
// storage node until it ends. If the agent dies first (a crash, or a
// rolling update of its DaemonSet), nothing in memory says what to undo,
// and a leftover array of the volume would make every later repair of it
// on this node refuse to touch it. So each repair is written to a journal
// before it connects anything and removed after its cleanup; the next
// start of the agent undoes what the journal lists (Recover). Secrets are
// never written.

// journalEntry is what Recover needs to undo a repair.
type journalEntry struct {
	ID       string   `json:"id"`
	VolumeID string   `json:"volumeID"`
	MDUUID   string   `json:"mdUUID"`
	NQNs     []string `json:"nqns"`
}

// journal is the file of running repairs ("" path: none kept).
type journal struct {
	path string
	mu   sync.Mutex
}

func (j *journal) load() ([]journalEntry, error) {
	if j.path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(j.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []journalEntry
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("repair journal %s: %w", j.path, err)
	}
	return out, nil
}

func (j *journal) save(es []journalEntry) error {
	if j.path == "" {
		return nil
	}
	b, err := json.Marshal(es)
	if err != nil {
		return err
	}
	return atomicfile.Write(j.path, b, 0o600)
}

// add records a repair before it starts.
func (j *journal) add(req Request) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	es, err := j.load()
	if err != nil {
		return err
	}
	e := journalEntry{ID: req.ID, VolumeID: req.VolumeID, MDUUID: req.MDUUID}
	for _, m := range req.Members {
		e.NQNs = append(e.NQNs, m.NQN)
	}
	return j.save(append(slices.DeleteFunc(es, func(x journalEntry) bool { return x.ID == req.ID }), e))
}

// remove forgets a repair whose cleanup is done.
func (j *journal) remove(id string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	es, err := j.load()
	if err != nil {
		return err
	}
	return j.save(slices.DeleteFunc(es, func(x journalEntry) bool { return x.ID == id }))
}

// otherHostConnected returns a host NQN other than the runner's that has a
// controller to one of the subsystems ("" when none).
func (r *Runner) otherHostConnected(nqns []string) (string, error) {
	for _, nqn := range nqns {
		ctrls, err := r.fabric.ControllersFor(nqn)
		if err != nil {
			return "", err
		}
		for _, c := range ctrls {
			if c.HostNQN != r.cfg.Template.HostNQN {
				return c.HostNQN, nil
			}
		}
	}
	return "", nil
}

// Recover undoes the repairs an earlier run of the agent left in the
// journal: stops their arrays (when nothing but this machine's md can be
// using them) and closes their connections. Call it before serving.
func (r *Runner) Recover(ctx context.Context) error {
	es, err := r.journal.load()
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range es {
		w := &work{r: r, j: &job{req: Request{ID: e.ID, VolumeID: e.VolumeID, MDUUID: e.MDUUID}}, connected: e.NQNs}
		other, err := r.otherHostConnected(e.NQNs)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// A host on this machine connected to the replicas since (a
		// storage node that is also a compute node, the volume published
		// to it): the array is that host's now. Only the repair's
		// connections are closed.
		if arr, err := r.raid.FindByUUID(e.MDUUID); err == nil && other == "" {
			w.array = arr.Device
		} else if err != nil && !errors.Is(err, mdraid.ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		if err := w.cleanup(ctx); err != nil {
			errs = append(errs, fmt.Errorf("repair %s of volume %s: %w", e.ID, e.VolumeID, err))
			continue
		}
		klog.InfoS("Undid an offline repair cut short by the agent's restart", "repair", e.ID, "volume", e.VolumeID, "array", w.array)
		if err := r.journal.remove(e.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
