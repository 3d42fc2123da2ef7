package healer

import (
	"context"
	"fmt"
	"sort"
	"time"

	"k8s.io/klog/v2"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// Re-keying: after a rotation (nvmirrorctl rotate-keys) the storage node
// holds new DH-HMAC-CHAP secrets and GetHostCredentials returns them. The
// live controllers keep working (the target checks secrets only when a
// host authenticates), but their next reconnect would fail with the old
// secrets, so the healer writes the new ones into each controller's sysfs
// attributes, which makes the kernel re-authenticate the live controller:
// no disconnect, md never loses the leg. Controllers are re-keyed one at a
// time, each confirmed live before the next, so a failure costs at most one
// leg of a mirror.
//
// Bidirectional connections are the exception, seen on the 6.12 kernel:
// the host and controller secrets are separate sysfs writes, each starting
// a re-authentication, and the first one runs with one new and one old
// secret against a target that has both new ones: it fails, the kernel
// starts error recovery, I/O on the leg fails and md drops it. So a
// bidirectional controller is re-keyed by reconnecting it on purpose: only
// when its array is whole and idle, one leg per volume per cycle, by
// disconnecting it; the healer's join connects it again with the new
// secrets and md takes it back with a bitmap re-add. The volume keeps
// serving from the other legs meanwhile. A single-replica bidirectional
// volume (no mirror to serve from) is left to its next stage.

// SecretOps reads and re-keys live NVMe controllers (*host.Initiator).
type SecretOps interface {
	// ControllerSecrets returns the secrets a controller authenticates
	// with ("" when none).
	ControllerSecrets(name string) (secret, ctrlSecret string, err error)
	// SetControllerSecrets re-authenticates a live controller with new
	// secrets.
	SetControllerSecrets(name, secret, ctrlSecret string) error
}

// CredentialSource is the provisioner as re-keying needs it.
type CredentialSource interface {
	GetHostCredentials(ctx context.Context, hostNQN string) ([]volume.Credentials, error)
}

// Rekey is one controller to re-authenticate with new secrets.
type Rekey struct {
	VolumeID, ReplicaID, StorageNode string
	Controller                       string
	Secret, CtrlSecret               string
	Generation                       int64
	// Reconnect: disconnect the controller (the healer reconnects it with
	// the new secrets) instead of re-keying it live.
	Reconnect bool
}

// ControllerSecretsView is what a controller authenticates with now.
type ControllerSecretsView struct {
	Secret, CtrlSecret string
}

// DecideRekeys compares the secrets each live controller of a staged
// volume's active replicas uses with the ones the provisioner hands out for
// its storage node, and returns the controllers to re-key, ordered. A
// controller is never re-keyed to no secret (a missing pair is a registry
// problem, not a reason to drop authentication), and the controller secret
// is expected only for volumes with bidirectional authentication and only
// changed on controllers connected with one (the kernel cannot add one to a
// live controller).
func DecideRekeys(vols []VolumeObservation, creds map[string]volume.Credentials, current map[string]ControllerSecretsView) []Rekey {
	var out []Rekey
	for _, v := range vols {
		if !v.Staged || v.Record == nil {
			continue
		}
		reconnected := false
		bidi := v.Record.Authentication() == storageclass.AuthBidirectional
		for _, r := range v.Record.Replicas {
			if r.State != volume.ReplicaActive {
				continue
			}
			c, ok := creds[r.StorageNode]
			if !ok || c.Secret == "" {
				continue
			}
			want := ControllerSecretsView{Secret: c.Secret}
			if bidi {
				want.CtrlSecret = c.CtrlSecret
			}
			for _, ctrl := range v.Controllers[r.NQN] {
				if ctrl.State != host.StateLive {
					continue // re-keyed when live again (its reconnect uses the new secrets)
				}
				have, known := current[ctrl.Name]
				if !known {
					continue
				}
				w := want
				if have.CtrlSecret == "" {
					// The kernel cannot add a controller secret to a live
					// controller; only one it was connected with changes.
					w.CtrlSecret = ""
				}
				if have == w || have.Secret == "" {
					// Equal; or connected without authentication, which
					// only a reconnect could change (and the target would
					// have refused it).
					continue
				}
				rk := Rekey{VolumeID: v.VolumeID, ReplicaID: r.ID, StorageNode: r.StorageNode, Controller: ctrl.Name,
					Secret: w.Secret, CtrlSecret: w.CtrlSecret, Generation: c.Generation}
				if have.CtrlSecret != "" {
					if reconnected || !mirrorWholeAndIdle(v) {
						continue // one leg at a time, and never the last one
					}
					rk.Reconnect, reconnected = true, true
				}
				out = append(out, rk)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].VolumeID != out[j].VolumeID {
			return out[i].VolumeID < out[j].VolumeID
		}
		return out[i].Controller < out[j].Controller
	})
	return out
}

// mirrorWholeAndIdle reports whether the volume's array has every slot in
// sync and no sync running: only then may one leg be taken out to reconnect.
func mirrorWholeAndIdle(v VolumeObservation) bool {
	a := v.Array
	if a == nil || a.RaidDisks < 2 || a.Degraded != 0 || (a.SyncAction != "" && a.SyncAction != "idle") {
		return false
	}
	inSync := 0
	for _, m := range a.Members {
		if m.InSync {
			inSync++
		}
	}
	return inSync >= a.RaidDisks
}

// Rekeyer runs re-keying once per healer cycle.
type Rekeyer struct {
	HostNQN     string
	NodeID      string
	Credentials CredentialSource
	Secrets     SecretOps
	// ControllerState reads a controller's state, to confirm it is live
	// after re-authentication before the next one.
	ControllerState func(name string) (host.ControllerState, error)
	// Disconnect takes a controller down for a reconnect re-key.
	Disconnect func(ctx context.Context, name string) error
	// Settle bounds the wait for a re-keyed controller to be live again.
	Settle time.Duration
	Clock  func() time.Time
}

// Run re-keys what DecideRekeys finds and returns an Audit event per
// controller (outcome OK or the error), for the event queue.
// lock, when not nil, takes a volume's CSI lock without waiting; a busy
// volume is re-keyed at a later cycle.
func (k *Rekeyer) Run(ctx context.Context, vols []VolumeObservation, lock func(volumeID string) (func(), bool)) ([]events.Event, error) {
	authed := false
	for _, v := range vols {
		if v.Record != nil && v.Record.Authentication() != storageclass.AuthNone {
			authed = true
		}
	}
	list, err := k.Credentials.GetHostCredentials(ctx, k.HostNQN)
	if err != nil {
		if !authed {
			return nil, nil // nothing here authenticates by choice; try next cycle
		}
		return nil, fmt.Errorf("get host credentials: %w", err)
	}
	if len(list) == 0 {
		return nil, nil
	}
	creds := make(map[string]volume.Credentials, len(list))
	for _, c := range list {
		creds[c.StorageNode] = c
	}
	current := map[string]ControllerSecretsView{}
	for _, v := range vols {
		for _, ctrls := range v.Controllers {
			for _, c := range ctrls {
				s, cs, err := k.Secrets.ControllerSecrets(c.Name)
				if err != nil {
					klog.V(2).InfoS("Cannot read controller secrets", "controller", c.Name, "err", err)
					continue
				}
				current[c.Name] = ControllerSecretsView{Secret: s, CtrlSecret: cs}
			}
		}
	}
	var evs []events.Event
	for _, rk := range DecideRekeys(vols, creds, current) {
		unlock := func() {}
		if lock != nil {
			var ok bool
			if unlock, ok = lock(rk.VolumeID); !ok {
				klog.V(2).InfoS("Volume busy with a CSI call; re-keying waits for the next cycle", "volumeID", rk.VolumeID)
				continue
			}
		}
		err := k.rekey(ctx, rk)
		unlock()
		e := events.Event{Time: k.now(), Type: events.Audit, Volume: rk.VolumeID, Replica: rk.ReplicaID,
			Node: k.NodeID, StorageNode: rk.StorageNode, Method: "RotateCredentials", Outcome: "OK",
			Message: fmt.Sprintf("controller %s re-authenticated with generation %d secrets", rk.Controller, rk.Generation)}
		if rk.Reconnect {
			e.Message = fmt.Sprintf("controller %s disconnected to reconnect with generation %d secrets (bidirectional)", rk.Controller, rk.Generation)
		}
		if err != nil {
			e.Outcome = "Failed"
			e.Message = fmt.Sprintf("controller %s: re-authentication with generation %d secrets failed: %v", rk.Controller, rk.Generation, err)
			klog.ErrorS(err, "Re-keying failed", "volumeID", rk.VolumeID, "replica", rk.ReplicaID, "controller", rk.Controller, "generation", rk.Generation)
		} else {
			klog.InfoS("Controller re-keyed", "volumeID", rk.VolumeID, "replica", rk.ReplicaID, "storageNode", rk.StorageNode, "controller", rk.Controller, "generation", rk.Generation)
		}
		evs = append(evs, e)
		if err != nil {
			// One leg at a time: stop before touching another.
			break
		}
	}
	return evs, nil
}

func (k *Rekeyer) now() time.Time {
	if k.Clock != nil {
		return k.Clock()
	}
	return time.Now()
}

// rekey writes the secrets and waits until the controller is live with them,
// or, for a reconnect, disconnects it.
func (k *Rekeyer) rekey(ctx context.Context, rk Rekey) error {
	if rk.Reconnect {
		if k.Disconnect == nil {
			return fmt.Errorf("controller %s: reconnect re-key without a disconnect function", rk.Controller)
		}
		return k.Disconnect(ctx, rk.Controller)
	}
	if err := k.Secrets.SetControllerSecrets(rk.Controller, rk.Secret, rk.CtrlSecret); err != nil {
		return err
	}
	settle := k.Settle
	if settle <= 0 {
		settle = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, settle)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := k.ControllerState(rk.Controller)
		if err == nil && st == host.StateLive {
			s, cs, rerr := k.Secrets.ControllerSecrets(rk.Controller)
			if rerr == nil && s == rk.Secret && cs == rk.CtrlSecret {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("controller %s not live with the new secrets within %v (state %s, %v)", rk.Controller, settle, st, err)
		case <-tick.C:
		}
	}
}
