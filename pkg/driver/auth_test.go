package driver_test

import (
	"context"
	"crypto/rand"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/nvmirror/nvmirror/pkg/dhchap"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// createAuth makes a 3-replica volume with the given authentication mode.
func (e *env) createAuth(name string, auth storageclass.Authentication) string {
	e.t.Helper()
	resp, err := e.ctl.CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: 64 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap},
		Parameters:         map[string]string{storageclass.KeyNumReplicas: "3", storageclass.KeyAuthentication: string(auth)}})
	must(e.t, err)
	return resp.GetVolume().GetVolumeId()
}

// secure gives each listed replica's storage node a pair of secrets, makes
// its target demand the host secret, and returns the credentials by node.
func (e *env) secure(v *volume.Volume, replicas ...int) map[string]volume.Credentials {
	e.t.Helper()
	var creds []volume.Credentials
	out := map[string]volume.Credentials{}
	for _, i := range replicas {
		r := v.Replicas[i]
		s, err := dhchap.Generate(rand.Reader)
		must(e.t, err)
		cs, err := dhchap.Generate(rand.Reader)
		must(e.t, err)
		c := volume.Credentials{StorageNode: r.StorageNode, Secret: s, CtrlSecret: cs, Generation: 1}
		creds = append(creds, c)
		out[r.StorageNode] = c
		e.fabric.RequireSecret(r.NQN, s)
	}
	e.prov.SetCredentials(v.PublishedHost, creds)
	return out
}

func TestStageBidirectionalPassesBothSecrets(t *testing.T) {
	e := newEnv(t)
	id := e.createAuth("v", storageclass.AuthBidirectional)
	e.publish(id)
	v := e.volume(id)
	creds := e.secure(v, 0, 1, 2)
	must(t, e.stage(id, mountCap))
	if n := len(e.ini.Connected()); n != 3 {
		t.Fatalf("connected %d replicas, want 3", n)
	}
	for _, o := range e.ini.Options {
		r := replicaByNQN(v, o.SubsysNQN)
		c := creds[r.StorageNode]
		if o.DHCHAPSecret != c.Secret || o.DHCHAPCtrlSecret != c.CtrlSecret {
			t.Errorf("connect to %s (%s) did not carry the pair's host and controller secrets", r.ID, r.StorageNode)
		}
	}
}

func TestStageHostAuthLeavesOutStorageNodeWithoutSecrets(t *testing.T) {
	e := newEnv(t)
	id := e.createAuth("v", storageclass.AuthHost)
	e.publish(id)
	v := e.volume(id)
	// The array is created with every replica; then the third storage
	// node's secrets are pending (a rotation it missed) at the next stage.
	e.secure(v, 0, 1, 2)
	must(t, e.stage(id, mountCap))
	must(t, e.unstage(id))
	e.secure(v, 0, 1)
	e.ini.Options = nil
	must(t, e.stage(id, mountCap))
	for _, o := range e.ini.Options {
		if o.SubsysNQN == v.Replicas[2].NQN {
			t.Fatalf("replica %s connected without authentication", v.Replicas[2].ID)
		}
		if o.DHCHAPSecret == "" || o.DHCHAPCtrlSecret != "" {
			t.Errorf("host-only authentication: connect to %s with secret %v, controller secret %v; want only the host secret",
				o.SubsysNQN, o.DHCHAPSecret != "", o.DHCHAPCtrlSecret != "")
		}
	}
	if n := len(e.ini.Connected()); n != 2 {
		t.Errorf("connected %d replicas, want the 2 with secrets (degraded)", n)
	}
}

func TestStageUsesPairSecretsForVolumeWithoutAuthentication(t *testing.T) {
	e := newEnv(t)
	id := e.create("v", "3")
	e.publish(id)
	v := e.volume(id)
	creds := e.secure(v, 0, 1, 2) // another volume made the storage nodes demand them
	must(t, e.stage(id, mountCap))
	if n := len(e.ini.Connected()); n != 3 {
		t.Fatalf("connected %d replicas, want 3", n)
	}
	for _, o := range e.ini.Options {
		c := creds[replicaByNQN(v, o.SubsysNQN).StorageNode]
		if o.DHCHAPSecret != c.Secret || o.DHCHAPCtrlSecret != "" {
			t.Errorf("connect to %s: want the pair's host secret only", o.SubsysNQN)
		}
	}
}

func TestStageAuthOnKernelWithoutSupportFailsAndLeavesNothing(t *testing.T) {
	e := newEnv(t)
	id := e.createAuth("v", storageclass.AuthHost)
	e.publish(id)
	v := e.volume(id)
	e.secure(v, 0, 1, 2)
	e.ini.Supported = slices.DeleteFunc(slices.Clone(e.ini.Supported), func(s string) bool { return strings.HasPrefix(s, "dhchap") })
	err := e.stage(id, mountCap)
	wantCode(t, err, codes.FailedPrecondition)
	if !strings.Contains(err.Error(), "authentication") || !strings.Contains(err.Error(), "CONFIG_NVME_HOST_AUTH") {
		t.Errorf("error %q must name the missing kernel feature", err)
	}
	if n := len(e.ini.Connected()); n != 0 {
		t.Errorf("%d replicas left connected after the failed stage", n)
	}
	if len(e.raid.Arrays()) != 0 {
		t.Error("an array was assembled")
	}
}

func TestStageWithWrongSecretIsRefused(t *testing.T) {
	e := newEnv(t)
	id := e.createAuth("v", storageclass.AuthHost)
	e.publish(id)
	v := e.volume(id)
	e.secure(v, 0, 1, 2)
	for _, r := range v.Replicas {
		s, _ := dhchap.Generate(rand.Reader)
		e.fabric.RequireSecret(r.NQN, s) // the targets now want other secrets
	}
	err := e.stage(id, mountCap)
	wantCode(t, err, codes.Unavailable)
	if !strings.Contains(err.Error(), "authentication") {
		t.Errorf("error %q should say authentication failed", err)
	}
}

func replicaByNQN(v *volume.Volume, nqn string) volume.Replica {
	for _, r := range v.Replicas {
		if r.NQN == nqn {
			return r
		}
	}
	return volume.Replica{}
}
