package healer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/connector"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/stagestate"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// RaidOps is the part of *mdraid.Manager acting uses. None of its methods
// passes --force.
type RaidOps interface {
	ReadArray(name string) (mdraid.Array, error)
	Add(ctx context.Context, device, member string) error
	ReAdd(ctx context.Context, device, member string) error
	Fail(ctx context.Context, device, member string) error
	Remove(ctx context.Context, device, member string) error
	Examine(ctx context.Context, member string) (mdraid.Superblock, error)
	SetRaidDevices(ctx context.Context, device string, n int) error
	SetSyncSpeedMax(name string, kib uint64) error
}

// FabricOps is the part of *host.Initiator acting uses. Connect returns
// the existing controller when there is one and DisconnectNQN of a
// subsystem without controllers succeeds, so both may be retried.
type FabricOps interface {
	Connect(ctx context.Context, o host.ConnectOptions) (host.Controller, error)
	WaitForDevice(ctx context.Context, nqn, nsUUID string) (host.Device, error)
	DisconnectNQN(ctx context.Context, nqn string) error
}

// ProvisionerOps is the provisioner as the healer needs it;
// *provisionerclient.Client satisfies it (it maps NotFound to
// volume.ErrNotFound and outages to volume.ErrUnavailable). Both mutating
// calls are idempotent.
type ProvisionerOps interface {
	ConfigSource
	// ReplaceReplica allocates (or, on a retry, returns the same) new
	// replica for missingID and marks missingID removed.
	ReplaceReplica(ctx context.Context, volumeID, missingID string) (*volume.Volume, *volume.Replica, error)
	// ReportReplicaSync records that a replica stopped or resumed holding
	// every write (see volume.Provisioner).
	ReportReplicaSync(ctx context.Context, volumeID, replicaID string, inSync bool, observedAt time.Time, arrayEvents uint64, nodeID string) (*volume.Volume, error)
	// MarkReplicaRemoved completes a deletion.
	MarkReplicaRemoved(ctx context.Context, volumeID, replicaID string) (*volume.Volume, error)
}

var (
	_ RaidOps   = (*mdraid.Manager)(nil)
	_ FabricOps = (*host.Initiator)(nil)
)

// Errors of acting, for errors.Is.
var (
	// ErrIdentity: the array, device or superblock is not the volume's; the
	// action stopped before changing anything.
	ErrIdentity = errors.New("identity check failed")
	// ErrUnsafe: the action would take out the last in-sync member.
	ErrUnsafe = errors.New("would remove the last in-sync member")
	// ErrNewerData: the returning replica holds writes the running array
	// lacks; it is never added (that would resync them away).
	ErrNewerData = mdraid.ErrNewerMember
)

// Actor runs actions.
type Actor struct {
	Raid        RaidOps
	Fabric      FabricOps
	Provisioner ProvisionerOps
	// Record adds a replica the healer connected to the volume's staging
	// state (stagestate.RecordReplica), so NodeUnstage disconnects it.
	Record func(volumeID string, r stagestate.Replica) error
	// Connect carries the host identity and timeouts (HostNQN, HostID,
	// CtrlLossTmo...) of every connection; target fields are filled per
	// endpoint. The same options as NodeStage's.
	Connect host.ConnectOptions
	// Credentials, when set, gives the DH-HMAC-CHAP secrets of the host
	// (Connect.HostNQN) per storage node for reconnects.
	Credentials CredentialSource
	// DeviceWait bounds the wait for a connected replica's block device.
	DeviceWait time.Duration
	// Timeout bounds one action (0: none beyond ctx).
	Timeout time.Duration
	// NodeID names this node in the sync records it makes.
	NodeID string
	// Now is the clock of sync records (time.Now when nil).
	Now func() time.Time
}

// Do runs one action and reports what happened.
func (a *Actor) Do(ctx context.Context, act Action) Outcome {
	if a.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.Timeout)
		defer cancel()
	}
	var out Outcome
	switch act.Kind {
	case ActFail:
		out = a.fail(ctx, act)
	case ActJoin:
		out = a.join(ctx, act)
	case ActRetire:
		out = a.retire(ctx, act)
	case ActReplace:
		out = a.replace(ctx, act)
	case ActRecordSync:
		out = a.recordSync(ctx, act)
	case ActSetRebuildRate:
		out = a.setRebuildRate(act)
	case ActSetSlots:
		out = Outcome{Err: a.setSlots(ctx, act)}
	default:
		out = Outcome{Err: fmt.Errorf("unknown action %q", act.Kind)}
	}
	out.Action = act
	log := []any{"action", act.Kind, "volumeID", act.VolumeID, "replica", act.Replica.ID, "storageNode", act.Replica.StorageNode, "array", act.MDDevice}
	if out.Err != nil {
		klog.ErrorS(out.Err, "Healer action failed", log...)
	} else {
		klog.InfoS("Healer action done", append(log, "joined", out.Joined, "reAdded", out.ReAdded)...)
	}
	return out
}

// recordSync records the replica's sync state at the provisioner, with the
// array's md event count (the write generation an out-of-sync replica
// misses everything after) when an in-sync member's superblock can be read.
func (a *Actor) recordSync(ctx context.Context, act Action) Outcome {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	at := now()
	var events uint64
	if !act.InSync {
		if arr, err := a.array(act); err == nil {
			events, _ = a.arrayEvents(ctx, arr, act.Member)
		}
	}
	rec, err := a.Provisioner.ReportReplicaSync(ctx, act.VolumeID, act.Replica.ID, act.InSync, at, events, a.NodeID)
	if err != nil {
		return Outcome{Err: err}
	}
	return Outcome{Record: rec}
}

// setRebuildRate sets the array's rebuild rate limit, after checking the
// array is still the volume's.
func (a *Actor) setRebuildRate(act Action) Outcome {
	arr, err := a.array(act)
	if err != nil {
		return Outcome{Err: err}
	}
	return Outcome{Err: a.Raid.SetSyncSpeedMax(arr.Name, act.RebuildKiBps)}
}

// arrayEvents is the running array's md event count, read from the
// superblock of an in-sync member other than except; ok is false when none
// can be read.
func (a *Actor) arrayEvents(ctx context.Context, arr mdraid.Array, except string) (events uint64, ok bool) {
	for _, m := range arr.Members {
		if !m.State.InSync || m.State.Faulty || m.Device == except {
			continue
		}
		if sb, err := a.Raid.Examine(ctx, "/dev/"+m.Device); err == nil {
			return sb.Events, true
		}
	}
	return 0, false
}

// array re-reads the action's array and checks it is still the volume's.
func (a *Actor) array(act Action) (mdraid.Array, error) {
	want, err := mdraid.NormalizeUUID(act.MDUUID)
	if err != nil {
		return mdraid.Array{}, fmt.Errorf("%w: volume md UUID %q: %w", ErrIdentity, act.MDUUID, err)
	}
	arr, err := a.Raid.ReadArray(filepath.Base(act.MDDevice))
	if err != nil {
		return mdraid.Array{}, err
	}
	if arr.UUID != want {
		return mdraid.Array{}, fmt.Errorf("%w: %s runs array %q, not the volume's %s", ErrIdentity, act.MDDevice, arr.UUID, want)
	}
	return arr, nil
}

// takeOut fails (when still in sync) and removes member from the array, if
// it holds it; never the last in-sync member.
func (a *Actor) takeOut(ctx context.Context, arr mdraid.Array, member string) error {
	m, ok := arr.Member(member)
	if !ok {
		return nil
	}
	if m.State.InSync && !m.State.Faulty {
		others := 0
		for _, o := range arr.Members {
			if o.Device != m.Device && o.State.InSync && !o.State.Faulty {
				others++
			}
		}
		if others == 0 {
			return fmt.Errorf("%w: %s of %s", ErrUnsafe, member, arr.Device)
		}
		if err := a.Raid.Fail(ctx, arr.Device, m.Device); err != nil && !errors.Is(err, mdraid.ErrNotFound) {
			return err
		}
	}
	if err := a.Raid.Remove(ctx, arr.Device, m.Device); err != nil && !errors.Is(err, mdraid.ErrNotFound) {
		return err
	}
	return nil
}

func (a *Actor) fail(ctx context.Context, act Action) Outcome {
	arr, err := a.array(act)
	if err != nil {
		return Outcome{Err: err}
	}
	m, ok := arr.Member(act.Member)
	if !ok || m.State.Faulty {
		return Outcome{}
	}
	others := 0
	for _, o := range arr.Members {
		if o.Device != m.Device && o.State.InSync && !o.State.Faulty {
			others++
		}
	}
	if others == 0 {
		return Outcome{Err: fmt.Errorf("%w: %s of %s", ErrUnsafe, m.Device, arr.Device)}
	}
	return Outcome{Err: a.Raid.Fail(ctx, arr.Device, m.Device)}
}

// connect connects r exactly as NodeStage does (pkg/connector: every
// endpoint, the same template, the same secrets rule), with this host's
// secrets fetched now: a reconnect after a rotation must use the new ones.
func (a *Actor) connect(ctx context.Context, r volume.Replica, auth storageclass.Authentication) error {
	creds, err := a.credentials(ctx, auth)
	if err != nil {
		return fmt.Errorf("connect replica %s: %w", r.ID, err)
	}
	c := connector.Connector{Fabric: a.Fabric, Template: a.Connect}
	return c.Connect(ctx, r, creds, auth)
}

// credentials returns this host's secrets per storage node. Without a
// source there are none, which only a volume without authentication
// accepts: never connect an authenticated volume unauthenticated.
func (a *Actor) credentials(ctx context.Context, auth storageclass.Authentication) ([]volume.Credentials, error) {
	if a.Credentials == nil {
		if auth.Required() {
			return nil, fmt.Errorf("volume requires %s authentication but the healer has no credential source", auth)
		}
		return nil, nil
	}
	list, err := a.Credentials.GetHostCredentials(ctx, a.Connect.HostNQN)
	if err != nil {
		return nil, fmt.Errorf("get authentication secrets: %w", err)
	}
	return list, nil
}

// device waits for the replica's namespace and checks its identity.
func (a *Actor) device(ctx context.Context, r volume.Replica) (host.Device, error) {
	ns := r.NamespaceID()
	wctx := ctx
	if a.DeviceWait > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, a.DeviceWait)
		defer cancel()
	}
	dev, err := a.Fabric.WaitForDevice(wctx, r.NQN, ns)
	if err != nil {
		return host.Device{}, err
	}
	want := normalizeID(ns)
	for _, id := range []string{dev.UUID, dev.NGUID, dev.WWID} {
		if normalizeID(id) == want {
			return dev, nil
		}
	}
	return host.Device{}, fmt.Errorf("%w: %s of %s has uuid %q nguid %q, want %s", ErrIdentity, dev.Name, r.NQN, dev.UUID, dev.NGUID, ns)
}

// addDevice puts dev into the array: nothing when it is already an active
// member; a faulty binding of it is removed first; its superblock must be
// the volume's (re-add, bitmap) or absent (add, full sync).
func (a *Actor) addDevice(ctx context.Context, act Action, dev host.Device) (reAdded, already bool, err error) {
	arr, err := a.array(act)
	if err != nil {
		return false, false, err
	}
	if m, ok := arr.Member(dev.Name); ok {
		if !m.State.Faulty {
			return false, true, nil
		}
		if err := a.Raid.Remove(ctx, arr.Device, m.Device); err != nil {
			return false, false, err
		}
	}
	reAdded, err = mdraid.Join(ctx, a.Raid, arr, dev.Path, act.Slots, func() (uint64, bool) { return a.arrayEvents(ctx, arr, dev.Name) })
	if errors.Is(err, mdraid.ErrForeignMember) {
		return false, false, fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	return reAdded, false, err
}

// join brings a replica (back) into the array.
func (a *Actor) join(ctx context.Context, act Action) Outcome {
	r := act.Replica
	if _, err := a.array(act); err != nil {
		return Outcome{Err: err}
	}
	if act.Connect {
		if err := a.connect(ctx, r, act.Auth); err != nil {
			return Outcome{Err: err}
		}
	}
	a.record(act.VolumeID, r)
	dev, err := a.device(ctx, r)
	if err != nil {
		return Outcome{Err: err}
	}
	if act.Member != "" && act.Member != dev.Name {
		// md still holds the replica under the device name it had before
		// the reconnect: out with that stale member first.
		arr, err := a.array(act)
		if err != nil {
			return Outcome{Err: err}
		}
		if err := a.takeOut(ctx, arr, act.Member); err != nil {
			return Outcome{Err: err}
		}
	}
	reAdded, already, err := a.addDevice(ctx, act, dev)
	if err != nil {
		return Outcome{Err: err}
	}
	return Outcome{Joined: !already, ReAdded: reAdded}
}

// retire takes a replica out of the configuration's way.
func (a *Actor) retire(ctx context.Context, act Action) Outcome {
	if act.Member != "" {
		arr, err := a.array(act)
		if err != nil {
			return Outcome{Err: err}
		}
		if err := a.takeOut(ctx, arr, act.Member); err != nil {
			return Outcome{Err: err}
		}
	}
	if err := a.dropSlot(ctx, act); err != nil {
		return Outcome{Err: err}
	}
	// "Try to disconnect": a storage node that is gone cannot be told, and
	// that must not keep the deletion from completing.
	if err := a.Fabric.DisconnectNQN(ctx, act.Replica.NQN); err != nil {
		klog.InfoS("Could not disconnect a retired replica; continuing", "volumeID", act.VolumeID, "replica", act.Replica.ID, "err", err)
	}
	if act.Mark {
		if _, err := a.Provisioner.MarkReplicaRemoved(ctx, act.VolumeID, act.Replica.ID); err != nil {
			return Outcome{Err: fmt.Errorf("mark replica %s removed: %w", act.Replica.ID, err)}
		}
	}
	return Outcome{}
}

// dropSlot shrinks the array's slot count to the replicas the volume keeps
// after a deletion. It only ever goes down to act.Slots (never below two,
// where mdadm wants --force, and never below the members md holds), so a
// retry changes nothing and a replica that is merely away keeps its slot.
func (a *Actor) dropSlot(ctx context.Context, act Action) error {
	if act.Slots < 2 {
		return nil
	}
	arr, err := a.array(act)
	if err != nil {
		return err
	}
	if arr.RaidDisks <= act.Slots {
		return nil
	}
	if len(arr.Members) > act.Slots {
		klog.InfoS("Keeping md's slots: it holds more members than the volume keeps replicas", "volumeID", act.VolumeID,
			"device", arr.Device, "members", len(arr.Members), "replicas", act.Slots)
		return nil
	}
	return a.Raid.SetRaidDevices(ctx, arr.Device, act.Slots)
}

// setSlots grows or shrinks md's slot count to act.Slots.
func (a *Actor) setSlots(ctx context.Context, act Action) error {
	arr, err := a.array(act)
	if err != nil {
		return err
	}
	if arr.RaidDisks < act.Slots {
		return mdraid.GrowSlots(ctx, a.Raid, arr, act.Slots)
	}
	return a.dropSlot(ctx, act)
}

// replace obtains a new replica for the missing one, takes the missing one
// out of md and joins the new one. Once ReplaceReplica answered, the
// outcome carries the new replica even if a later step fails: the old one
// is out of the configuration for good, and the next cycles join the new
// one like any replica that is down.
func (a *Actor) replace(ctx context.Context, act Action) Outcome {
	if _, err := a.array(act); err != nil {
		return Outcome{Err: err}
	}
	_, nrp, err := a.Provisioner.ReplaceReplica(ctx, act.VolumeID, act.Replica.ID)
	if err == nil && nrp == nil {
		err = errors.New("provisioner returned no replica")
	}
	if err != nil {
		return Outcome{Err: fmt.Errorf("replace replica %s: %w", act.Replica.ID, err)}
	}
	nr := *nrp
	out := Outcome{NewReplica: &nr}
	klog.InfoS("Replica replaced", "volumeID", act.VolumeID, "missing", act.Replica.ID, "new", nr.ID, "storageNode", nr.StorageNode)
	a.record(act.VolumeID, nr)
	if act.Member != "" {
		arr, err := a.array(act)
		if err != nil {
			out.Err = err
			return out
		}
		if err := a.takeOut(ctx, arr, act.Member); err != nil {
			out.Err = err
			return out
		}
	}
	if err := a.Fabric.DisconnectNQN(ctx, act.Replica.NQN); err != nil {
		klog.InfoS("Could not disconnect the replaced replica; continuing", "volumeID", act.VolumeID, "replica", act.Replica.ID, "err", err)
	}
	if err := a.connect(ctx, nr, act.Auth); err != nil {
		out.Err = err
		return out
	}
	dev, err := a.device(ctx, nr)
	if err != nil {
		out.Err = err
		return out
	}
	_, already, err := a.addDevice(ctx, act, dev)
	out.Err, out.Joined = err, err == nil && !already
	return out
}

func (a *Actor) record(volumeID string, r volume.Replica) {
	if a.Record == nil {
		return
	}
	ns := r.NamespaceID()
	if err := a.Record(volumeID, stagestate.Replica{ID: r.ID, NQN: r.NQN, NamespaceUUID: ns}); err != nil {
		klog.ErrorS(err, "Could not record the replica in the staging state; NodeUnstage finds it through the provisioner", "volumeID", volumeID, "replica", r.ID)
	}
}
