//go:build vmguest

package kernel

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	utilexec "k8s.io/utils/exec"

	"github.com/nvmirror/nvmirror/pkg/dhchap"
	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/events"
	"github.com/nvmirror/nvmirror/pkg/mdraid"
	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/nvmet"
	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// TestAuthStack runs authenticated volumes through the whole product on the
// 6.12 kernel: the provisioner generates the secrets, the agents put them
// on the kernel target, the node connects with them; a stranger claiming
// the host's NQN is refused; nvmirrorctl rotate-keys under I/O re-keys
// every leg while the volumes keep serving, the data verifies, and the old
// secret no longer opens a connection.
//
// Both agents share this VM's kernel target, which keeps one entry per host
// NQN: the provisioner runs with --credential-scope=host so they agree on
// the host's secrets (separate storage nodes use per-node secrets, the
// default, covered by the unit tests).
func TestAuthStack(t *testing.T) {
	s := startStackWith(t, stackOptions{
		storageNodes: 2,
		provArgs:     []string{"--credential-scope=host"},
		// Re-keying runs once per healer cycle.
		csiArgs: []string{"--heal-interval=3s"},
	})
	c := dialCSI(t, s.csiSocket)
	p := dialProvisioner(t, s)
	md := mdraid.NewManager(utilexec.New(), "")
	ini := host.NewInitiator("")
	hostIdent, err := driver.LoadHostIdentity("/")
	if err != nil {
		t.Fatal(err)
	}

	// One volume of each mode: host-only legs are re-keyed live, the
	// bidirectional ones by reconnecting one leg at a time.
	hv := provisionVolume(t, c, "auth-host", 64<<20, map[string]string{"numReplicas": "2", "authentication": "host"})
	bv := provisionVolume(t, c, "auth-bidi", 64<<20, map[string]string{"numReplicas": "2", "authentication": "bidirectional"})
	hvol, bvol := getVolume(t, p, hv.id), getVolume(t, p, bv.id)
	if bvol.PublishedHost != hostIdent.NQN {
		t.Fatalf("volume published to %s, this node is %s", bvol.PublishedHost, hostIdent.NQN)
	}
	first := hostCreds(t, p, hostIdent.NQN)
	hlegs, blegs := activeLegs(t, hvol), activeLegs(t, bvol)
	checkLegSecrets(t, ini, hlegs, first, false, "host-only volume after staging")
	checkLegSecrets(t, ini, blegs, first, true, "bidirectional volume after staging")
	checkTargetSecret(t, hostIdent.NQN, first[blegs[0].StorageNode].Secret)
	for _, v := range []*volume.Volume{hvol, bvol} {
		if a := mdOf(t, md, v); a.Degraded != 0 || a.RaidDisks != 2 {
			t.Fatalf("array of %s after staging: %s", v.ID, describe(a))
		}
	}

	t.Run("stranger claiming the host NQN is refused", func(t *testing.T) {
		leg := blegs[0]
		since := time.Now()
		withHealerPaused(t, s, func() {
			disconnectLeg(t, ini, leg)
			for _, tc := range []struct {
				name           string
				secret, ctrlSe string
			}{
				{"no secret", "", ""},
				// The host's secret is right, but it expects another
				// controller secret: the host refuses the target.
				{"wrong controller secret", first[leg.StorageNode].Secret, newSecret(t)},
				// Last: a refused host secret can take the target the
				// admin timeout to answer, and the kernel serialises
				// fabrics connects.
				{"wrong secret", newSecret(t), ""},
			} {
				o := legOptions(hostIdent, leg)
				o.DHCHAPSecret, o.DHCHAPCtrlSecret = tc.secret, tc.ctrlSe
				start := time.Now()
				_, err := ini.Connect(ctxTimeout(t, 2*time.Minute), o)
				if err == nil {
					t.Errorf("%s: connected", tc.name)
					disconnectLeg(t, ini, leg)
					continue
				}
				refusedByTarget(t, tc.name, err, tc.ctrlSe == "" && tc.secret != "")
				for _, sec := range []string{tc.secret, tc.ctrlSe} {
					if sec != "" && strings.Contains(err.Error(), sec[len("DHHC-1:00:"):len(sec)-1]) {
						t.Errorf("%s: the error shows a secret: %v", tc.name, err)
					}
				}
				t.Logf("%s: refused after %v: %v", tc.name, time.Since(start).Round(time.Millisecond), err)
				if ctrls, _ := ini.ControllersFor(leg.NQN); len(ctrls) != 0 {
					t.Errorf("%s: a controller was left behind: %+v", tc.name, ctrls)
				}
			}
		})
		// The healer reconnects the leg with the right secrets.
		waitEvent(t, p, bvol.ID, events.VolumeHealed, 2*time.Minute, since)
		checkLegSecrets(t, ini, blegs, first, true, "after the healer's reconnect")
	})

	t.Run("rotation under writes", func(t *testing.T) {
		waitWhole(t, md, hvol, bvol)
		hw, bw := startWriter(t, hv.target), startWriter(t, bv.target)
		hwatch, bwatch := watchArray(t, md, hvol), watchArray(t, md, bvol)
		since := time.Now()
		out, err := exec.Command("nvmirrorctl", append(s.nvmirrorctlFlags(), "rotate-keys", bvol.ID)...).CombinedOutput()
		t.Logf("nvmirrorctl rotate-keys %s:\n%s", bvol.ID, out)
		if err != nil {
			t.Fatalf("rotate-keys: %v", err)
		}
		if strings.Contains(string(out), "DHHC-1:") {
			t.Error("rotate-keys printed a secret")
		}
		next := hostCreds(t, p, hostIdent.NQN)
		for _, l := range blegs {
			if next[l.StorageNode].Secret == first[l.StorageNode].Secret || next[l.StorageNode].Generation != first[l.StorageNode].Generation+1 {
				t.Fatalf("storage node %s: secrets not rotated (generation %d)", l.StorageNode, next[l.StorageNode].Generation)
			}
		}
		// The target holds the new secret only: the old one is gone.
		checkTargetSecret(t, hostIdent.NQN, next[blegs[0].StorageNode].Secret)
		took := waitFor(t, 3*time.Minute, "every leg re-keyed and both mirrors whole", func() (bool, string) {
			for _, lv := range []struct {
				legs []volume.Replica
				bidi bool
			}{{hlegs, false}, {blegs, true}} {
				for _, l := range lv.legs {
					ctrls, err := ini.ControllersFor(l.NQN)
					if err != nil {
						return false, err.Error()
					}
					if len(ctrls) == 0 {
						return false, fmt.Sprintf("%s (%s) has no controller (reconnecting)", l.ID, l.StorageNode)
					}
					for _, ctrl := range ctrls {
						sec, ctrlSec, err := ini.ControllerSecrets(ctrl.Name)
						want := next[l.StorageNode]
						if err != nil || !dhchap.Equal(sec, want.Secret) || (lv.bidi && !dhchap.Equal(ctrlSec, want.CtrlSecret)) {
							return false, fmt.Sprintf("%s (%s) not re-keyed yet (%v)", ctrl.Name, l.StorageNode, err)
						}
					}
				}
			}
			for _, v := range []*volume.Volume{hvol, bvol} {
				if a := mdOf(t, md, v); a.Degraded != 0 || a.SyncAction != "idle" {
					return false, describe(a)
				}
			}
			return true, ""
		})
		t.Logf("every leg re-keyed and both mirrors whole %v after rotate-keys returned", took.Round(time.Millisecond))
		waitFor(t, 30*time.Second, "an Audit record per re-keyed leg", func() (bool, string) {
			n := 0
			for _, v := range []*volume.Volume{hvol, bvol} {
				for _, e := range eventsOf(t, p, v.ID, events.Audit) {
					if e.Method == "RotateCredentials" && e.Outcome == "OK" && !e.Time.Before(since.Add(-time.Second)) {
						n++
					}
				}
			}
			return n >= len(hlegs)+len(blegs), fmt.Sprintf("%d of %d", n, len(hlegs)+len(blegs))
		})
		// Keep writing a little with the new secrets in place.
		hw.waitMore(t, 4)
		bw.waitMore(t, 4)
		hsums, bsums := hw.stop(t), bw.stop(t)
		if worst := hwatch(); worst.degraded != 0 {
			t.Errorf("the host-only volume degraded during the live re-key: %s", worst.first)
		} else {
			t.Logf("host-only volume: never degraded while re-keyed live")
		}
		worst := bwatch()
		if worst.degraded > 1 || worst.degraded == len(blegs) {
			t.Errorf("the bidirectional volume lost more than one leg at a time: %s", worst.first)
		}
		t.Logf("bidirectional volume: at most %d leg out at a time (%s)", worst.degraded, worst.first)
		dropCaches(t)
		verifyFiles(t, hsums)
		verifyFiles(t, bsums)
		for _, v := range []*volume.Volume{hvol, bvol} {
			checkMirrors(t, md, mdOf(t, md, v).Name)
		}
		t.Logf("%d + %d files written during the rotation verified", len(hsums), len(bsums))

		// The old secret no longer opens a connection; the healer's
		// reconnect with the new one does.
		leg := hlegs[1]
		since = time.Now()
		withHealerPaused(t, s, func() {
			disconnectLeg(t, ini, leg)
			o := legOptions(hostIdent, leg)
			o.DHCHAPSecret = first[leg.StorageNode].Secret
			_, err := ini.Connect(ctxTimeout(t, 2*time.Minute), o)
			if err == nil {
				t.Fatal("connected with the rotated-out secret")
			}
			refusedByTarget(t, "rotated-out secret", err, true)
			if ctrls, _ := ini.ControllersFor(leg.NQN); len(ctrls) != 0 {
				t.Errorf("a controller was left behind: %+v", ctrls)
			}
		})
		waitEvent(t, p, hvol.ID, events.VolumeHealed, 2*time.Minute, since)
		checkLegSecrets(t, ini, hlegs, next, false, "after reconnecting with the new secrets")
	})
}

// refusedByTarget checks a refused connect's error. A wrong host secret is
// refused by the target, and the 6.12 target does not always say so: seen
// both ways in this VM, an immediate EKEYREJECTED, or nvmet logging
// "failure1 ... fatal error" and the host's exchange timing out at the admin
// timeout (60 s) with EIO. Either way no controller comes up, which the
// callers check; anything the host itself decides (no secret, a controller
// that fails the host's check) must be an authentication error.
func refusedByTarget(t *testing.T, what string, err error, targetSide bool) {
	t.Helper()
	if errors.Is(err, nvmeof.ErrAuthFailed) {
		return
	}
	if targetSide && (errors.Is(err, syscall.EIO) || strings.Contains(err.Error(), "input/output error")) {
		t.Logf("%s: the target ended the exchange without an answer (EIO after the admin timeout)", what)
		return
	}
	t.Errorf("%s: %v, want an authentication failure", what, err)
}

func getVolume(t *testing.T, p *provisionerclient.Client, id string) *volume.Volume {
	t.Helper()
	v, err := p.GetVolume(ctxTimeout(t, 10*time.Second), id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// hostCreds returns the provisioner's secrets for host by storage node.
func hostCreds(t *testing.T, p *provisionerclient.Client, hostIdent string) map[string]volume.Credentials {
	t.Helper()
	list, err := p.GetHostCredentials(ctxTimeout(t, 10*time.Second), hostIdent)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]volume.Credentials{}
	for _, c := range list {
		out[c.StorageNode] = c
	}
	return out
}

func activeLegs(t *testing.T, v *volume.Volume) []volume.Replica {
	t.Helper()
	var out []volume.Replica
	for _, r := range v.Replicas {
		if r.State == volume.ReplicaActive {
			out = append(out, r)
		}
	}
	if len(out) != 2 {
		t.Fatalf("volume %s has %d active replicas, want 2", v.ID, len(out))
	}
	return out
}

func controllersOf(t *testing.T, ini *host.Initiator, r volume.Replica) []host.Controller {
	t.Helper()
	ctrls, err := ini.ControllersFor(r.NQN)
	if err != nil {
		t.Fatal(err)
	}
	return ctrls
}

// checkLegSecrets requires every leg's controllers to authenticate with the
// pair's host secret, and for bidirectional legs its controller secret.
func checkLegSecrets(t *testing.T, ini *host.Initiator, legs []volume.Replica, creds map[string]volume.Credentials, bidi bool, when string) {
	t.Helper()
	for _, l := range legs {
		c, ok := creds[l.StorageNode]
		if !ok {
			t.Fatalf("%s: no secrets for storage node %s", when, l.StorageNode)
		}
		ctrls := controllersOf(t, ini, l)
		if len(ctrls) == 0 {
			t.Fatalf("%s: replica %s has no controller", when, l.ID)
		}
		for _, ctrl := range ctrls {
			sec, ctrlSec, err := ini.ControllerSecrets(ctrl.Name)
			if err != nil {
				t.Fatalf("%s: secrets of %s: %v", when, ctrl.Name, err)
			}
			wantCtrl := ctrlSec == ""
			if bidi {
				wantCtrl = dhchap.Equal(ctrlSec, c.CtrlSecret)
			}
			if !dhchap.Equal(sec, c.Secret) || !wantCtrl {
				t.Errorf("%s: controller %s of %s does not use the pair's secrets (host %v, controller %v)",
					when, ctrl.Name, l.ID, dhchap.Equal(sec, c.Secret), wantCtrl)
			}
		}
	}
}

// checkTargetSecret requires the kernel target's entry for host to demand
// secret.
func checkTargetSecret(t *testing.T, hostIdent, secret string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(nvmet.DefaultRoot, "hosts", hostIdent, "dhchap_key"))
	if err != nil {
		t.Fatalf("target entry of %s: %v", hostIdent, err)
	}
	if !dhchap.Equal(strings.TrimSpace(string(b)), secret) {
		t.Errorf("the kernel target demands another secret from %s than the registry's", hostIdent)
	}
}

func legOptions(h driver.HostIdentity, r volume.Replica) host.ConnectOptions {
	ep := r.Endpoints[0]
	return host.ConnectOptions{Transport: "tcp", TrAddr: ep.Address, TrSvcID: ep.Port, SubsysNQN: r.NQN,
		HostNQN: h.NQN, HostID: h.ID, CtrlLossTmo: intp(2), ReconnectDelay: intp(1)}
}

func disconnectLeg(t *testing.T, ini *host.Initiator, r volume.Replica) {
	t.Helper()
	if err := ini.DisconnectNQN(ctxTimeout(t, 30*time.Second), r.NQN); err != nil {
		t.Fatalf("disconnect %s: %v", r.ID, err)
	}
}

// withHealerPaused stops the node plugin (and with it the healer) while fn
// runs, so nothing reconnects a leg behind the test's back.
func withHealerPaused(t *testing.T, s *stack, fn func()) {
	t.Helper()
	if err := s.csi.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.csi.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Errorf("resume the node plugin: %v", err)
		}
	}()
	fn()
}

// waitWhole waits until every volume's mirror is whole and idle.
func waitWhole(t *testing.T, md *mdraid.Manager, vols ...*volume.Volume) {
	t.Helper()
	waitFor(t, 2*time.Minute, "mirrors whole", func() (bool, string) {
		for _, v := range vols {
			if a := mdOf(t, md, v); a.Degraded != 0 || a.SyncAction != "idle" {
				return false, describe(a)
			}
		}
		return true, ""
	})
}

// writer keeps writing checksummed files into dir until stopped.
type writer struct {
	mu     sync.Mutex
	sums   map[string]string
	cancel context.CancelFunc
	done   chan error
}

func startWriter(t *testing.T, dir string) *writer {
	t.Helper()
	return startRingWriter(t, dir, 0)
}

// startRingWriter is startWriter rewriting at most ring files over and
// over (0: no bound), so a long run does not fill a small volume; the sums
// are those of each file's last write.
func startRingWriter(t *testing.T, dir string, ring int) *writer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{sums: map[string]string{}, cancel: cancel, done: make(chan error, 1)}
	go func() {
		buf := make([]byte, 256<<10)
		for i := 0; ctx.Err() == nil; i++ {
			n := i
			if ring > 0 {
				n = i % ring
			}
			p := filepath.Join(dir, fmt.Sprintf("rot-%04d.bin", n))
			sum, err := writeSynced(p, buf)
			if err != nil {
				w.done <- err
				return
			}
			w.mu.Lock()
			w.sums[p] = sum
			w.mu.Unlock()
		}
		w.done <- nil
	}()
	t.Cleanup(cancel)
	return w
}

// writeSynced fills buf with random bytes, writes it to path, fsyncs, and
// returns its SHA-256.
func writeSynced(path string, buf []byte) (string, error) {
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Write(buf); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:]), nil
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.sums)
}

// waitMore waits until n more files are written.
func (w *writer) waitMore(t *testing.T, n int) {
	t.Helper()
	target := w.count() + n
	waitFor(t, time.Minute, fmt.Sprintf("%d more files written", n), func() (bool, string) {
		return w.count() >= target, fmt.Sprintf("%d of %d", w.count(), target)
	})
}

// stop ends the writer; a write that failed (the volume stopped serving)
// fails the test.
func (w *writer) stop(t *testing.T) map[string]string {
	t.Helper()
	w.cancel()
	if err := <-w.done; err != nil {
		t.Fatalf("writing during the rotation: %v", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sums
}

// worstState is the most degraded state an array was seen in.
type worstState struct {
	degraded int    // most slots missing at once
	first    string // the array when first seen that way
}

// watchArray polls the volume's array until the returned function is
// called, which reports the worst state seen.
func watchArray(t *testing.T, md *mdraid.Manager, v *volume.Volume) func() worstState {
	t.Helper()
	name := mdOf(t, md, v).Name
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan worstState, 1)
	go func() {
		var w worstState
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if a, err := md.ReadArray(name); err == nil {
				missing := a.Degraded
				if n := a.RaidDisks - len(a.Members); n > missing {
					missing = n
				}
				if missing > w.degraded {
					w.degraded, w.first = missing, describe(a)
				}
			}
			select {
			case <-ctx.Done():
				res <- w
				return
			case <-tick.C:
			}
		}
	}()
	return func() worstState { cancel(); return <-res }
}
