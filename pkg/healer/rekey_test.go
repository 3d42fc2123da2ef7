package healer

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

func authVolume(id string, auth storageclass.Authentication) VolumeObservation {
	cfg := &volume.Volume{ID: id, Policy: storageclass.Policy{Authentication: auth}}
	ctrls := map[string][]ControllerObservation{}
	for i, sn := range []string{"sn-1", "sn-2"} {
		nqn := "nqn.2026-11.io.nvmirror:replica:" + id + "-" + sn
		cfg.Replicas = append(cfg.Replicas, volume.Replica{ID: id + "-" + sn, StorageNode: sn, NQN: nqn, State: volume.ReplicaActive})
		ctrls[nqn] = []ControllerObservation{{Name: id + "-c" + string(rune('0'+i)), State: host.StateLive}}
	}
	whole := &ArrayObservation{Name: "md-" + id, RaidDisks: 2, SyncAction: "idle",
		Members: []MemberObservation{{InSync: true}, {InSync: true}}}
	return VolumeObservation{VolumeID: id, Staged: true, Record: cfg, RecordFresh: true, Controllers: ctrls, Array: whole}
}

func TestDecideRekeys(t *testing.T) {
	creds := map[string]volume.Credentials{
		"sn-1": {StorageNode: "sn-1", Secret: "new-1", CtrlSecret: "ctrl-1", Generation: 2},
		"sn-2": {StorageNode: "sn-2", Secret: "old-2", CtrlSecret: "ctrl-2", Generation: 1},
	}
	hostOnly := authVolume("va", storageclass.AuthHost)
	bidi := authVolume("vb", storageclass.AuthBidirectional)
	current := map[string]ControllerSecretsView{
		"va-c0": {Secret: "old-1"},                         // rotated on sn-1: re-key
		"va-c1": {Secret: "old-2"},                         // up to date
		"vb-c0": {Secret: "new-1", CtrlSecret: "ctrl-1"},   // up to date
		"vb-c1": {Secret: "old-2", CtrlSecret: "ctrl-old"}, // bidirectional, controller secret rotated: re-key
	}
	got := DecideRekeys([]VolumeObservation{bidi, hostOnly}, creds, current)
	if len(got) != 2 {
		t.Fatalf("rekeys %+v, want 2", got)
	}
	if got[0].VolumeID != "va" || got[0].Controller != "va-c0" || got[0].Secret != "new-1" || got[0].CtrlSecret != "" || got[0].Generation != 2 {
		t.Errorf("first rekey %+v: want va-c0 with sn-1's host secret only", got[0])
	}
	if got[1].Controller != "vb-c1" || got[1].Secret != "old-2" || got[1].CtrlSecret != "ctrl-2" || !got[1].Reconnect {
		t.Errorf("second rekey %+v: want vb-c1 reconnected with both of sn-2's secrets", got[1])
	}
	if got[0].Reconnect {
		t.Error("a host-only controller must be re-keyed live, not reconnected")
	}
	// Bidirectional: one leg per volume at a time, and only from a whole,
	// idle mirror.
	both := map[string]ControllerSecretsView{"vb-c0": {Secret: "x", CtrlSecret: "y"}, "vb-c1": {Secret: "x", CtrlSecret: "y"}}
	if r := DecideRekeys([]VolumeObservation{bidi}, creds, both); len(r) != 1 || !r[0].Reconnect {
		t.Errorf("rekeys %+v: want exactly one reconnect", r)
	}
	for name, mutate := range map[string]func(*ArrayObservation){
		"degraded": func(a *ArrayObservation) { a.Degraded = 1 },
		"syncing":  func(a *ArrayObservation) { a.SyncAction = "recover" },
		"member out of sync": func(a *ArrayObservation) {
			a.Members = []MemberObservation{{InSync: true}, {InSync: false}}
		},
	} {
		v := authVolume("vb", storageclass.AuthBidirectional)
		mutate(v.Array)
		if r := DecideRekeys([]VolumeObservation{v}, creds, both); len(r) != 0 {
			t.Errorf("%s array: reconnect re-key %+v must wait", name, r)
		}
	}
	single := authVolume("vb", storageclass.AuthBidirectional)
	single.Array = nil
	if r := DecideRekeys([]VolumeObservation{single}, creds, both); len(r) != 0 {
		t.Errorf("a volume without a mirror was reconnected: %+v", r)
	}

	// Never towards no secret, never a controller not live, never an
	// unstaged volume, never an unreadable controller.
	noPair := map[string]volume.Credentials{"sn-2": creds["sn-2"]}
	if r := DecideRekeys([]VolumeObservation{hostOnly}, noPair, map[string]ControllerSecretsView{"va-c0": {Secret: "x"}}); len(r) != 0 {
		t.Errorf("re-keyed a controller whose storage node has no secrets: %+v", r)
	}
	down := authVolume("va", storageclass.AuthHost)
	for nqn := range down.Controllers {
		down.Controllers[nqn][0].State = host.StateConnecting
	}
	if r := DecideRekeys([]VolumeObservation{down}, creds, current); len(r) != 0 {
		t.Errorf("re-keyed a reconnecting controller: %+v", r)
	}
	unstaged := authVolume("va", storageclass.AuthHost)
	unstaged.Staged = false
	if r := DecideRekeys([]VolumeObservation{unstaged}, creds, current); len(r) != 0 {
		t.Errorf("re-keyed a volume still being staged: %+v", r)
	}
	if r := DecideRekeys([]VolumeObservation{hostOnly}, creds, map[string]ControllerSecretsView{}); len(r) != 0 {
		t.Errorf("re-keyed controllers whose secrets could not be read: %+v", r)
	}
	// A controller connected without secrets cannot be given some live;
	// one without a controller secret gets the host secret only.
	plain := map[string]ControllerSecretsView{"vb-c0": {}, "vb-c1": {Secret: "older-2"}}
	r := DecideRekeys([]VolumeObservation{authVolume("vb", storageclass.AuthBidirectional)}, creds, plain)
	if len(r) != 1 || r[0].Controller != "vb-c1" || r[0].CtrlSecret != "" {
		t.Errorf("rekeys %+v: want vb-c1's host secret only", r)
	}
}

type fakeSecrets struct {
	mu      sync.Mutex
	current map[string]ControllerSecretsView
	state   map[string]host.ControllerState
	failOn  string
	writes  []string
}

func (f *fakeSecrets) ControllerSecrets(name string) (string, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.current[name]
	if !ok {
		return "", "", errors.New("no such controller")
	}
	return c.Secret, c.CtrlSecret, nil
}

func (f *fakeSecrets) SetControllerSecrets(name, s, cs string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes = append(f.writes, name)
	if name == f.failOn {
		f.state[name] = host.StateResetting // the kernel resets a controller whose re-authentication failed
		return nil
	}
	f.current[name] = ControllerSecretsView{Secret: s, CtrlSecret: cs}
	return nil
}

func (f *fakeSecrets) stateOf(name string) (host.ControllerState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.state[name]; ok {
		return s, nil
	}
	return host.StateLive, nil
}

type fakeCreds []volume.Credentials

func (c fakeCreds) GetHostCredentials(context.Context, string) ([]volume.Credentials, error) {
	return c, nil
}

func TestRekeyerRunsOneLegAtATimeAndReports(t *testing.T) {
	vols := []VolumeObservation{authVolume("va", storageclass.AuthHost)}
	creds := fakeCreds{{StorageNode: "sn-1", Secret: "new-1", Generation: 2}, {StorageNode: "sn-2", Secret: "new-2", Generation: 2}}
	sec := &fakeSecrets{current: map[string]ControllerSecretsView{"va-c0": {Secret: "old-1"}, "va-c1": {Secret: "old-2"}}, state: map[string]host.ControllerState{}}
	k := &Rekeyer{HostNQN: "nqn.host", NodeID: "worker-1", Credentials: creds, Secrets: sec, ControllerState: sec.stateOf,
		Settle: time.Second, Clock: func() time.Time { return time.Unix(1000, 0) }}
	evs, err := k.Run(context.Background(), vols, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || sec.current["va-c0"].Secret != "new-1" || sec.current["va-c1"].Secret != "new-2" {
		t.Fatalf("events %+v, controllers %+v", evs, sec.current)
	}
	for _, e := range evs {
		if e.Type != events.Audit || e.Method != "RotateCredentials" || e.Outcome != "OK" || e.Node != "worker-1" || e.Volume != "va" {
			t.Errorf("event %+v", e)
		}
		if strings.Contains(e.Message, "new-") {
			t.Errorf("event message carries a secret: %q", e.Message)
		}
		if err := e.Validate(); err != nil {
			t.Errorf("event invalid: %v", err)
		}
	}
	// Nothing left to do: no writes.
	sec.writes = nil
	if evs, _ := k.Run(context.Background(), vols, nil); len(evs) != 0 || len(sec.writes) != 0 {
		t.Errorf("second run re-keyed again: %v %v", evs, sec.writes)
	}

	// A failed re-authentication stops before the next leg.
	creds = fakeCreds{{StorageNode: "sn-1", Secret: "newer-1", Generation: 3}, {StorageNode: "sn-2", Secret: "newer-2", Generation: 3}}
	sec.failOn, sec.writes = "va-c0", nil
	k.Credentials = creds
	evs, _ = k.Run(context.Background(), vols, nil)
	if len(evs) != 1 || evs[0].Outcome != "Failed" || len(sec.writes) != 1 {
		t.Errorf("after a failed leg: events %+v, writes %v; want one failure and no second write", evs, sec.writes)
	}

	// A busy volume waits.
	sec.failOn, sec.writes = "", nil
	sec.state = map[string]host.ControllerState{}
	evs, _ = k.Run(context.Background(), vols, func(string) (func(), bool) { return nil, false })
	if len(evs) != 0 || len(sec.writes) != 0 {
		t.Errorf("re-keyed a locked volume: %v", sec.writes)
	}
}

// TestActorConnectSecrets: the healer's reconnects carry the pair's
// secrets by the same rule as NodeStage, and refuse to connect an
// authenticated volume without them.
func TestActorConnectSecrets(t *testing.T) {
	r := func(sn string) volume.Replica {
		return volume.Replica{ID: "r-" + sn, StorageNode: sn, NQN: "nqn.x:" + sn, Endpoints: []volume.Endpoint{{Address: "10.0.0.1", Port: "4420"}}}
	}
	fab := &recordingFabric{}
	a := &Actor{Fabric: fab, Credentials: fakeCreds{{StorageNode: "sn-1", Secret: "s1", CtrlSecret: "c1"}}}
	a.Connect.HostNQN = "nqn.host"
	ctx := context.Background()
	if err := a.connect(ctx, r("sn-1"), storageclass.AuthBidirectional); err != nil || fab.last.DHCHAPSecret != "s1" || fab.last.DHCHAPCtrlSecret != "c1" {
		t.Errorf("bidirectional: %+v %v", fab.last, err)
	}
	if err := a.connect(ctx, r("sn-1"), storageclass.AuthNone); err != nil || fab.last.DHCHAPSecret != "s1" || fab.last.DHCHAPCtrlSecret != "" {
		t.Errorf("none with pair secrets: %+v %v", fab.last, err)
	}
	n := len(fab.all)
	if err := a.connect(ctx, r("sn-2"), storageclass.AuthHost); err == nil || !strings.Contains(err.Error(), "sn-2") || len(fab.all) != n {
		t.Errorf("host auth without secrets must refuse to connect: %v (%d connects)", err, len(fab.all)-n)
	}
	if err := a.connect(ctx, r("sn-2"), ""); err != nil || fab.last.DHCHAPSecret != "" {
		t.Errorf("no auth, no secrets: %+v %v", fab.last, err)
	}
	a.Credentials = nil
	if err := a.connect(ctx, r("sn-1"), storageclass.AuthHost); err == nil || !strings.Contains(err.Error(), "no credential source") {
		t.Errorf("host auth without a credential source: %v", err)
	}
}

// recordingFabric accepts every connect and keeps the options.
type recordingFabric struct {
	last host.ConnectOptions
	all  []host.ConnectOptions
}

func (f *recordingFabric) Connect(_ context.Context, o host.ConnectOptions) (host.Controller, error) {
	f.last, f.all = o, append(f.all, o)
	return host.Controller{Name: "nvme1", State: host.StateLive}, nil
}

func (f *recordingFabric) WaitForDevice(context.Context, string, string) (host.Device, error) {
	return host.Device{}, nvmeof.ErrDeviceNotFound
}

func (f *recordingFabric) DisconnectNQN(context.Context, string) error { return nil }

func TestRekeyerReconnectsBidirectionalLeg(t *testing.T) {
	vols := []VolumeObservation{authVolume("vb", storageclass.AuthBidirectional)}
	creds := fakeCreds{{StorageNode: "sn-1", Secret: "new-1", CtrlSecret: "nc-1", Generation: 2}, {StorageNode: "sn-2", Secret: "new-2", CtrlSecret: "nc-2", Generation: 2}}
	sec := &fakeSecrets{current: map[string]ControllerSecretsView{"vb-c0": {Secret: "o1", CtrlSecret: "oc1"}, "vb-c1": {Secret: "o2", CtrlSecret: "oc2"}},
		state: map[string]host.ControllerState{}}
	var disconnected []string
	k := &Rekeyer{HostNQN: "nqn.host", NodeID: "worker-1", Credentials: creds, Secrets: sec, ControllerState: sec.stateOf,
		Disconnect: func(_ context.Context, name string) error { disconnected = append(disconnected, name); return nil }}
	evs, err := k.Run(context.Background(), vols, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(disconnected) != 1 || len(sec.writes) != 0 {
		t.Fatalf("disconnected %v, sysfs writes %v: want one leg reconnected and no live write", disconnected, sec.writes)
	}
	if len(evs) != 1 || evs[0].Outcome != "OK" || !strings.Contains(evs[0].Message, "reconnect") {
		t.Errorf("events %+v", evs)
	}
}
