// Package nodecmd is the CSI node's end of the provisioner's command
// channel (Provisioner.NodeCommands): the node dials the provisioner and
// keeps the stream open (nothing dials the node), executes each command it
// receives, and answers with ReportCommandResult.
//
// The commands are the freeze and thaw of a snapshot. A freeze holds new
// writes to the md arrays of volumes staged here once every write in
// flight has reached every member (mdraid.Manager.SuspendWrites), so that
// the copies the provisioner then cuts of each replica hold the same bytes,
// and several volumes frozen together hold one point in time. While a
// volume is frozen its node operation lock is held: NodeStage, NodeUnstage
// and NodeExpand on it return Aborted, the healer leaves it alone. Writes
// are never held for long: a freeze ends at its thaw, or by itself at
// thaw_after (capped by Config.MaxHold), whichever comes first, and a node
// plugin restarted while an array was held releases it at the latest
// MaxHold after its start.
package nodecmd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/provisionerapi"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
)

// Arrays is the part of *mdraid.Manager a freeze uses.
type Arrays interface {
	SuspendWrites(name string) error
	ResumeWrites(name string) error
	WritesSuspended(name string) (bool, error)
	ReadArray(name string) (mdraid.Array, error)
}

var _ Arrays = (*mdraid.Manager)(nil)

// Defaults of Config.
const (
	DefaultMaxHold   = 30 * time.Second
	DefaultRetryBase = time.Second
	DefaultRetryMax  = 30 * time.Second
)

// Config wires the loop to the node plugin.
type Config struct {
	// NodeID is this node's CSI node ID, HostNQN its host NQN.
	NodeID, HostNQN string
	Client          provisionerapi.ProvisionerClient
	// Staged lists the volumes staged on this node (the staging state).
	Staged func() ([]stagestate.Volume, error)
	// Lock takes a volume's node operation lock without waiting
	// (driver.Driver.TryLockVolume).
	Lock   func(volumeID string) (unlock func(), ok bool)
	Arrays Arrays
	// InSync maps the in-sync members of a staged volume's array to its
	// replica IDs (driver.Driver.StagedInSyncReplicas).
	InSync func(v stagestate.Volume, a mdraid.Array) []string
	// MaxHold caps how long a freeze holds writes, whatever thaw_after it
	// asks for (0 asks for this); default DefaultMaxHold.
	MaxHold time.Duration
	// RetryBase and RetryMax bound the wait before reconnecting the
	// stream, doubling from base to max (defaults 1 s and 30 s).
	RetryBase, RetryMax time.Duration
}

// Loop keeps the command stream open and executes the commands.
type Loop struct {
	cfg Config

	mu sync.Mutex
	// freezes: every freeze by command ID, kept a while after it ended so
	// a repeated freeze gets its result again and a thaw of it succeeds.
	freezes map[string]*freeze
	// wg counts running freezes, so Run returns after they released.
	wg sync.WaitGroup
}

// freeze is one FreezeVolumes command.
type freeze struct {
	id       string
	deadline time.Time
	// release is closed (once) by a thaw, the deadline or the end of Run.
	release     chan struct{}
	releaseOnce sync.Once
	// done is closed when nothing the freeze held is held any more.
	done chan struct{}
	// result is the freeze's answer once known (nil before).
	result *provisionerapi.CommandResult
	ended  time.Time
}

func (f *freeze) stop() { f.releaseOnce.Do(func() { close(f.release) }) }

// New checks cfg and returns the loop.
func New(cfg Config) (*Loop, error) {
	if cfg.NodeID == "" || cfg.Client == nil || cfg.Staged == nil || cfg.Lock == nil || cfg.Arrays == nil || cfg.InSync == nil {
		return nil, errors.New("nodecmd: NodeID, Client, Staged, Lock, Arrays and InSync are required")
	}
	if cfg.MaxHold <= 0 {
		cfg.MaxHold = DefaultMaxHold
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.RetryMax < cfg.RetryBase {
		cfg.RetryMax = max(DefaultRetryMax, cfg.RetryBase)
	}
	return &Loop{cfg: cfg, freezes: map[string]*freeze{}}, nil
}

// Run releases what a previous process may have left held, then keeps the
// stream open until ctx ends, reconnecting with backoff. When it returns,
// every freeze it made has been released.
func (l *Loop) Run(ctx context.Context) error {
	l.releaseLeftovers(ctx)
	delay := l.cfg.RetryBase
	for {
		start := time.Now()
		err := l.session(ctx)
		if ctx.Err() != nil {
			break
		}
		if time.Since(start) > l.cfg.RetryMax {
			delay = l.cfg.RetryBase // it was up a while: a new outage
		}
		klog.ErrorS(err, "Provisioner command stream lost; reconnecting", "nodeID", l.cfg.NodeID, "in", delay)
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		if ctx.Err() != nil {
			break
		}
		delay = min(2*delay, l.cfg.RetryMax)
	}
	l.mu.Lock()
	for _, f := range l.freezes {
		f.stop()
	}
	l.mu.Unlock()
	l.wg.Wait()
	return nil
}

// session opens the stream and executes what it brings until it breaks.
func (l *Loop) session(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := l.cfg.Client.NodeCommands(sctx, &provisionerapi.NodeCommandsRequest{NodeId: l.cfg.NodeID, HostNqn: l.cfg.HostNQN})
	if err != nil {
		return err
	}
	klog.V(2).InfoS("Provisioner command stream open", "nodeID", l.cfg.NodeID)
	for {
		cmd, err := stream.Recv()
		if err != nil {
			return err
		}
		l.handle(ctx, cmd)
	}
}

// handle starts a command. It runs on the receiving goroutine, so a freeze
// is registered before any later command (its thaw) is looked at.
func (l *Loop) handle(ctx context.Context, cmd *provisionerapi.NodeCommand) {
	id := cmd.GetCommandId()
	switch {
	case id == "":
		klog.ErrorS(nil, "Provisioner sent a command without an ID; ignored")
	case cmd.GetFreeze() != nil:
		l.startFreeze(ctx, id, cmd.GetFreeze())
	case cmd.GetThaw() != nil:
		go l.thaw(ctx, id, cmd.GetThaw().GetFreezeCommandId())
	default:
		klog.ErrorS(nil, "Provisioner sent a command this node does not know; answering with an error", "commandID", id)
		go l.report(ctx, &provisionerapi.CommandResult{CommandId: id, Error: "unknown command: this node plugin is older than the provisioner"}, time.Now().Add(time.Minute))
	}
}

// hold returns how long a freeze asking for thaw_after ms holds at most.
func (l *Loop) hold(thawAfterMs uint32) time.Duration {
	d := time.Duration(thawAfterMs) * time.Millisecond
	if d <= 0 || d > l.cfg.MaxHold {
		return l.cfg.MaxHold
	}
	return d
}

func (l *Loop) startFreeze(ctx context.Context, id string, cmd *provisionerapi.FreezeVolumes) {
	l.mu.Lock()
	l.prune()
	if f, ok := l.freezes[id]; ok {
		res := f.result
		l.mu.Unlock()
		if res != nil { // a repeat: the same answer (in progress: it comes)
			go l.report(ctx, res, f.deadline)
		}
		return
	}
	if asked := time.Duration(cmd.GetThawAfterMs()) * time.Millisecond; asked > l.cfg.MaxHold {
		// Never hold less than asked without saying so: the provisioner
		// trusts copies cut within its thaw_after to be one point in time.
		l.mu.Unlock()
		msg := fmt.Sprintf("the freeze asks for writes held up to %v; this node holds them at most %v (--freeze-max-hold): raise it, or lower the provisioner's --freeze-timeout", asked, l.cfg.MaxHold)
		klog.ErrorS(nil, "Refusing a freeze longer than this node holds writes", "commandID", id, "asked", asked, "maxHold", l.cfg.MaxHold)
		go l.report(ctx, &provisionerapi.CommandResult{CommandId: id, Error: msg}, time.Now().Add(time.Minute))
		return
	}
	f := &freeze{id: id, deadline: time.Now().Add(l.hold(cmd.GetThawAfterMs())), release: make(chan struct{}), done: make(chan struct{})}
	l.freezes[id] = f
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		l.runFreeze(ctx, f, cmd.GetVolumeIds())
	}()
}

// prune forgets freezes that ended more than MaxHold ago. l.mu is held.
func (l *Loop) prune() {
	for id, f := range l.freezes {
		if !f.ended.IsZero() && time.Since(f.ended) > l.cfg.MaxHold {
			delete(l.freezes, id)
		}
	}
}

// held is one volume a freeze holds.
type held struct {
	volumeID string
	array    string // "" for a volume without md
	unlock   func()
	// suspending: the store to suspend_hi has not returned yet; it is
	// released when it does.
	suspending chan error
	// suspended: the store returned success: md holds the array's writes.
	suspended bool
}

// runFreeze executes a freeze, reports it, holds until released, then
// releases. All or nothing: a failure on any volume releases every one.
func (l *Loop) runFreeze(ctx context.Context, f *freeze, volumeIDs []string) {
	timer := time.AfterFunc(time.Until(f.deadline), f.stop)
	defer timer.Stop()
	start := time.Now()
	hs, frozen, err := l.freezeAll(f, volumeIDs)
	res := &provisionerapi.CommandResult{NodeId: l.cfg.NodeID, CommandId: f.id}
	if err != nil {
		res.Error = err.Error()
		klog.ErrorS(err, "Freeze failed; nothing is held", "commandID", f.id, "volumes", volumeIDs)
	} else {
		res.Frozen = frozen
		klog.InfoS("Holding writes for a snapshot", "commandID", f.id, "volumes", volumeIDs, "took", time.Since(start), "thawBy", f.deadline)
	}
	l.mu.Lock()
	f.result = res
	l.mu.Unlock()
	// Answer at once: a failed freeze's holds are released below, which
	// may wait for a drain md has not finished; the provisioner cuts
	// nothing without a success, and the locks stay until all is released.
	go l.report(ctx, res, f.deadline)
	if err != nil {
		l.releaseAll(f, hs)
		return
	}
	select {
	case <-f.release:
	case <-ctx.Done():
	}
	why := "thawed"
	if ctx.Err() != nil {
		why = "node plugin stopping"
	} else if !time.Now().Before(f.deadline) {
		why = "thaw_after elapsed"
	}
	l.releaseAll(f, hs)
	klog.InfoS("Released writes held for a snapshot", "commandID", f.id, "volumes", volumeIDs, "reason", why, "heldFor", time.Since(start))
}

// freezeAll locks and suspends every volume. On error the holds so far are
// returned for releaseAll.
func (l *Loop) freezeAll(f *freeze, volumeIDs []string) ([]*held, []*provisionerapi.FrozenVolume, error) {
	if len(volumeIDs) == 0 {
		return nil, nil, errors.New("freeze names no volume")
	}
	staged, err := l.cfg.Staged()
	if err != nil {
		return nil, nil, fmt.Errorf("read the staging state: %w", err)
	}
	byID := map[string]stagestate.Volume{}
	for _, v := range staged {
		byID[v.VolumeID] = v
	}
	ids := slices.Clone(volumeIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var missing []string
	for _, id := range ids {
		if v, ok := byID[id]; !ok || !v.Staged {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return nil, nil, fmt.Errorf("volume %s not staged on node %s", strings.Join(missing, ", "), l.cfg.NodeID)
	}
	var hs []*held
	for _, id := range ids {
		unlock, ok := l.cfg.Lock(id)
		if !ok {
			return hs, nil, fmt.Errorf("volume %s is busy on node %s (a stage, unstage, expand, heal or another freeze runs on it); retry", id, l.cfg.NodeID)
		}
		hs = append(hs, &held{volumeID: id, unlock: unlock})
	}
	// Suspend each array, all started at once: the drains run in parallel
	// and the volumes' points in time are as close as they can be. Every
	// volume's writes are held by the time the last store returns, which
	// is the group's point in time.
	for _, h := range hs {
		v := byID[h.volumeID]
		if v.MDDevice == "" {
			continue
		}
		h.array = strings.TrimPrefix(v.MDDevice, "/dev/")
		a, err := l.cfg.Arrays.ReadArray(h.array)
		if err != nil {
			return hs, nil, fmt.Errorf("volume %s: %w", h.volumeID, err)
		}
		if err := copiesWouldDiffer(a); err != nil {
			return hs, nil, fmt.Errorf("volume %s: %w", h.volumeID, err)
		}
		h.suspending = make(chan error, 1)
		go func(name string, c chan<- error) { c <- l.cfg.Arrays.SuspendWrites(name) }(h.array, h.suspending)
	}
	var errs []error
	for _, h := range hs {
		if h.suspending == nil {
			continue
		}
		select {
		case err := <-h.suspending:
			h.suspending = nil
			if err != nil {
				errs = append(errs, fmt.Errorf("volume %s: hold writes of %s: %w", h.volumeID, h.array, err))
			} else {
				h.suspended = true
			}
		case <-f.release:
			errs = append(errs, fmt.Errorf("volume %s: md %s did not finish the writes in flight before the freeze had to end", h.volumeID, h.array))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return hs, nil, err
	}
	frozen := make([]*provisionerapi.FrozenVolume, 0, len(hs))
	for _, h := range hs {
		v := byID[h.volumeID]
		fv := &provisionerapi.FrozenVolume{VolumeId: h.volumeID}
		if h.array == "" {
			// One replica, no md: nothing to hold; the file is the volume.
			if len(v.Replicas) != 1 {
				return hs, nil, fmt.Errorf("volume %s has no md array but %d replicas recorded", h.volumeID, len(v.Replicas))
			}
			fv.InSyncReplicaIds = []string{v.Replicas[0].ID}
		} else {
			// Read after the drain: a member md failed on a write in
			// flight is out of sync by now.
			a, err := l.cfg.Arrays.ReadArray(h.array)
			if err != nil {
				return hs, nil, fmt.Errorf("volume %s: %w", h.volumeID, err)
			}
			if err := copiesWouldDiffer(a); err != nil {
				return hs, nil, fmt.Errorf("volume %s: %w", h.volumeID, err)
			}
			fv.WritesHeld = true
			fv.InSyncReplicaIds = l.cfg.InSync(v, a)
			if len(fv.InSyncReplicaIds) == 0 {
				return hs, nil, fmt.Errorf("volume %s: md %s holds no replica of it in sync", h.volumeID, h.array)
			}
		}
		frozen = append(frozen, fv)
	}
	return hs, frozen, nil
}

// copiesWouldDiffer refuses an array whose in-sync members md writes to
// whatever the suspended range: a resync or a repair.
func copiesWouldDiffer(a mdraid.Array) error {
	switch a.SyncAction {
	case "resync", "repair", "reshape":
		return fmt.Errorf("md %s runs a %s, which writes to its in-sync members while writes are held: the copies could differ; retry when it is done", a.Name, a.SyncAction)
	}
	return nil
}

// releaseAll resumes every array the freeze suspended (or is still
// suspending: released as soon as the store returns) and unlocks the
// volumes, each only after its array was released. done closes when all is
// released.
func (l *Loop) releaseAll(f *freeze, hs []*held) {
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer h.unlock()
			if h.suspending != nil {
				h.suspended = <-h.suspending == nil
			}
			if h.suspended {
				l.resume(h.volumeID, h.array)
			}
		}()
	}
	wg.Wait()
	l.mu.Lock()
	f.ended = time.Now()
	l.mu.Unlock()
	close(f.done)
}

// resume releases an array's writes, retrying: writes must never stay held.
func (l *Loop) resume(volumeID, array string) {
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		err := l.cfg.Arrays.ResumeWrites(array)
		if err == nil || errors.Is(err, mdraid.ErrNotFound) {
			return
		}
		klog.ErrorS(err, "Cannot release md writes; retrying", "volumeID", volumeID, "array", array)
		time.Sleep(delay)
	}
}

// thaw releases a freeze and answers once it is released. A freeze this
// node does not know (ended and forgotten, or never received) is thawed
// already: success.
func (l *Loop) thaw(ctx context.Context, id, freezeID string) {
	l.mu.Lock()
	f := l.freezes[freezeID]
	l.mu.Unlock()
	res := &provisionerapi.CommandResult{NodeId: l.cfg.NodeID, CommandId: id}
	if f != nil {
		f.stop()
		select {
		case <-f.done:
		case <-ctx.Done():
			return
		}
	}
	klog.V(2).InfoS("Thawed", "commandID", id, "freezeCommandID", freezeID, "known", f != nil)
	l.report(ctx, res, time.Now().Add(time.Minute))
}

// report sends a result, retrying until it is received or until; a result
// the provisioner no longer waits for is simply dropped there.
func (l *Loop) report(ctx context.Context, res *provisionerapi.CommandResult, until time.Time) {
	res.NodeId = l.cfg.NodeID
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := l.cfg.Client.ReportCommandResult(rctx, res)
		cancel()
		if err == nil {
			return
		}
		if ctx.Err() != nil || time.Now().Add(delay).After(until) {
			klog.ErrorS(err, "Cannot report a command's result; giving up", "commandID", res.GetCommandId())
			return
		}
		klog.V(2).InfoS("Cannot report a command's result; retrying", "commandID", res.GetCommandId(), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// releaseLeftovers releases arrays of staged volumes that hold writes when
// the loop starts: a previous process froze them and died. Their freeze
// promised to hold at most MaxHold from its start, which was before this
// process started, so each is released MaxHold from now, under the
// volume's lock meanwhile (a NodeUnstage must not unmount over held writes).
func (l *Loop) releaseLeftovers(ctx context.Context) {
	staged, err := l.cfg.Staged()
	if err != nil {
		klog.ErrorS(err, "Cannot read the staging state to release writes a previous process held")
		return
	}
	until := time.Now().Add(l.cfg.MaxHold)
	for _, v := range staged {
		if v.MDDevice == "" {
			continue
		}
		name := strings.TrimPrefix(v.MDDevice, "/dev/")
		held, err := l.cfg.Arrays.WritesSuspended(name)
		if err != nil || !held {
			continue
		}
		unlock, ok := l.cfg.Lock(v.VolumeID)
		if !ok {
			unlock = func() {}
		}
		klog.InfoS("md holds writes a previous node plugin left held; releasing them", "volumeID", v.VolumeID, "array", name, "at", until)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer unlock()
			select {
			case <-time.After(time.Until(until)):
			case <-ctx.Done():
			}
			l.resume(v.VolumeID, name)
		}()
	}
}
