package repair

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
)

// Fabric is the part of the NVMe-oF initiator a repair uses.
type Fabric interface {
	Connect(ctx context.Context, o host.ConnectOptions) (host.Controller, error)
	WaitForDevice(ctx context.Context, nqn, nsUUID string) (host.Device, error)
	ControllersFor(nqn string) ([]host.Controller, error)
	Disconnect(ctx context.Context, name string) error
}

// Raid is the part of md a repair uses (mdraid.Manager).
type Raid interface {
	FindByUUID(uuid string) (mdraid.Array, error)
	ReadArray(name string) (mdraid.Array, error)
	Examine(ctx context.Context, member string) (mdraid.Superblock, error)
	NextFreeDevice() (string, error)
	Assemble(ctx context.Context, device, uuid string, devices []string) error
	Add(ctx context.Context, device, member string) error
	ReAdd(ctx context.Context, device, member string) error
	SetRaidDevices(ctx context.Context, device string, n int) error
	Stop(ctx context.Context, device string) error
	SetSyncSpeedMax(name string, kib uint64) error
}

// Disk reads what a repair needs of a block device beyond md and NVMe.
type Disk interface {
	// WrittenBytes is the device's write counter (/sys/block/X/stat).
	WrittenBytes(name string) (uint64, error)
	// Blank reports whether the device holds nothing a repair may not
	// overwrite: its first and last MiB are zeros (where filesystems,
	// partition tables, LVM and md keep their signatures).
	Blank(path string, size uint64) (bool, error)
}

// Config is what a Runner needs besides its dependencies.
type Config struct {
	// Template carries the host identity (HostNQN, HostID) and timeouts of
	// every connection a repair makes.
	Template host.ConnectOptions
	// PollInterval is how often a running repair reads md's progress
	// (default 1 s).
	PollInterval time.Duration
	// DeviceWait bounds the wait for a connected namespace's block device
	// (default 30 s).
	DeviceWait time.Duration
	// CommandTimeout bounds each mdadm call (default 2 min).
	CommandTimeout time.Duration
	// JournalFile keeps the running repairs, so that the next start
	// undoes what a crash left (Recover); "" keeps none.
	JournalFile string
}

// Runner runs the repairs of one storage node, at most one per volume.
type Runner struct {
	fabric Fabric
	raid   Raid
	disk   Disk
	clock  clock.WithTicker
	cfg    Config

	journal  *journal
	mu       sync.Mutex
	jobs     map[string]*job   // by repair ID
	byVolume map[string]string // volume → running repair ID
	stopped  map[string]bool   // repair IDs stopped before they ran
}

type job struct {
	req      Request
	cancel   context.CancelFunc
	done     chan struct{}
	leaseEnd time.Time
	status   Status
}

// NewRunner returns a Runner.
func NewRunner(f Fabric, r Raid, d Disk, clk clock.WithTicker, cfg Config) *Runner {
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.DeviceWait <= 0 {
		cfg.DeviceWait = 30 * time.Second
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = 2 * time.Minute
	}
	return &Runner{fabric: f, raid: r, disk: d, clock: clk, cfg: cfg, journal: &journal{path: cfg.JournalFile},
		jobs: map[string]*job{}, byVolume: map[string]string{}, stopped: map[string]bool{}}
}

// HostNQN is the identity this runner connects with.
func (r *Runner) HostNQN() string { return r.cfg.Template.HostNQN }

// Start starts req in the background and returns its status. The same ID
// again returns the existing repair's status (its lease renewed).
func (r *Runner) Start(req Request) (Status, error) {
	if err := req.Validate(); err != nil {
		return Status{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped[req.ID] {
		return Status{}, fmt.Errorf("%w: %s; the provisioner starts a new one", ErrStopped, req.ID)
	}
	if j, ok := r.jobs[req.ID]; ok {
		if j.req.VolumeID != req.VolumeID {
			return Status{}, fieldError("repair_id", "%s is a repair of volume %s, not %s", req.ID, j.req.VolumeID, req.VolumeID)
		}
		j.leaseEnd = r.clock.Now().Add(j.req.Lease)
		return j.snapshot(), nil
	}
	if other, ok := r.byVolume[req.VolumeID]; ok {
		return Status{}, fmt.Errorf("%w: volume %s is being repaired by %s", ErrBusy, req.VolumeID, other)
	}
	if err := r.journal.add(req); err != nil {
		return Status{}, fmt.Errorf("record repair %s before starting it: %w", req.ID, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	j := &job{req: req, cancel: cancel, done: make(chan struct{}), leaseEnd: r.clock.Now().Add(req.Lease),
		status: Status{ID: req.ID, VolumeID: req.VolumeID, State: Running, Message: "connecting", BitmapReAdd: map[string]bool{}}}
	r.jobs[req.ID] = j
	r.byVolume[req.VolumeID] = req.ID
	klog.InfoS("Offline repair starting", "repair", req.ID, "volume", req.VolumeID, "members", len(req.Members))
	go r.run(ctx, j)
	return j.snapshot(), nil
}

// Get returns the repair's status and renews its lease.
func (r *Runner) Get(id string) (Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	j, ok := r.jobs[id]
	if !ok {
		return Status{}, fmt.Errorf("%w: repair %s", ErrNotFound, id)
	}
	if j.status.State == Running {
		j.leaseEnd = r.clock.Now().Add(j.req.Lease)
	}
	return j.snapshot(), nil
}

// Stop stops the repair and returns when nothing of it runs; the ID is
// never started afterwards. Unknown IDs are success.
func (r *Runner) Stop(ctx context.Context, id string) error {
	r.mu.Lock()
	r.stopped[id] = true
	j, ok := r.jobs[id]
	r.mu.Unlock()
	if !ok {
		return nil
	}
	j.cancel()
	select {
	case <-j.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for repair %s to stop: %w", id, ctx.Err())
	}
}

// Close stops every running repair (the agent is shutting down).
func (r *Runner) Close(ctx context.Context) error {
	r.mu.Lock()
	ids := slices.Collect(maps.Keys(r.jobs))
	r.mu.Unlock()
	var errs []error
	for _, id := range ids {
		errs = append(errs, r.Stop(ctx, id))
	}
	return errors.Join(errs...)
}

func (j *job) snapshot() Status {
	s := j.status
	s.Synced = slices.Clone(s.Synced)
	s.BitmapReAdd = maps.Clone(s.BitmapReAdd)
	return s
}

// update changes a job's status under the runner's lock.
func (r *Runner) update(j *job, fn func(*Status)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(&j.status)
}

// leaseExpired reports whether the provisioner stopped asking.
func (r *Runner) leaseExpired(j *job) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.clock.Now().After(j.leaseEnd)
}

// run executes one repair and records its outcome. Whatever happens, the
// array it assembled is stopped and its connections are closed before the
// outcome is visible: a repair that reports an end has nothing left running.
func (r *Runner) run(ctx context.Context, j *job) {
	defer close(j.done)
	w := &work{r: r, j: j}
	synced, err := w.repair(ctx)
	cctx, cancel := context.WithTimeout(context.Background(), r.cfg.CommandTimeout)
	defer cancel()
	cleanupErr := w.cleanup(cctx)
	if cleanupErr == nil {
		// Kept otherwise: the next start of the agent retries the cleanup.
		cleanupErr = r.journal.remove(j.req.ID)
	}

	state, msg := Succeeded, fmt.Sprintf("%d member(s) brought in sync", len(synced))
	switch {
	case errors.Is(err, errLeaseExpired):
		state, msg = Stopped, "lease expired: the provisioner stopped asking; stopped so that another host can take the volume over"
	case ctx.Err() != nil:
		state, msg = Stopped, "stopped on request"
	case err != nil:
		state, msg = Failed, err.Error()
	case cleanupErr != nil:
		// The members are in sync, but something of the repair may still
		// hold them: not a success the provisioner may act on.
		state, msg = Failed, "in sync, but cleaning up failed: "+cleanupErr.Error()
	}
	if cleanupErr != nil && state != Failed {
		msg += "; cleaning up failed: " + cleanupErr.Error()
	}
	r.mu.Lock()
	j.status.State, j.status.Message = state, msg
	if state == Succeeded {
		j.status.Synced = synced
	}
	delete(r.byVolume, j.req.VolumeID)
	r.mu.Unlock()
	log := []any{"repair", j.req.ID, "volume", j.req.VolumeID, "state", state, "bytesWritten", j.status.BytesWritten}
	if state == Succeeded {
		klog.InfoS("Offline repair finished", append(log, "synced", synced)...)
	} else {
		klog.ErrorS(err, "Offline repair ended without success", append(log, "message", msg)...)
	}
}

var errLeaseExpired = errors.New("lease expired")

func fieldError(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidArgument, field, fmt.Sprintf(format, args...))
}
