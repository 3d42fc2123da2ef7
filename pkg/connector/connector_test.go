package connector

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// fabric answers per target address and records every attempt.
type fabric struct {
	fail     map[string]error // by TrAddr
	attempts []host.ConnectOptions
}

func (f *fabric) Connect(_ context.Context, o host.ConnectOptions) (host.Controller, error) {
	f.attempts = append(f.attempts, o)
	if err := f.fail[o.TrAddr]; err != nil {
		return host.Controller{}, err
	}
	return host.Controller{Name: "nvme1", State: host.StateLive}, nil
}

func replica(addrs ...string) volume.Replica {
	r := volume.Replica{ID: "r1", StorageNode: "sn-1", NQN: "nqn.2026-01.io.nvmirror:r1"}
	for _, a := range addrs {
		r.Endpoints = append(r.Endpoints, volume.Endpoint{Address: a, Port: "4420"})
	}
	return r
}

var pair = []volume.Credentials{{StorageNode: "sn-1", Secret: "DHHC-1:00:host", CtrlSecret: "DHHC-1:00:ctrl"}}

// Every endpoint is a path: all are connected with the template's host
// identity, the target filled per endpoint, and one answering is enough.
func TestConnectEveryEndpoint(t *testing.T) {
	f := &fabric{fail: map[string]error{"10.0.0.2": nvmeof.ErrConnectRefused}}
	c := &Connector{Fabric: f, Template: host.ConnectOptions{Transport: "tcp", HostNQN: "nqn.host", HostID: "id"}}
	if err := c.Connect(context.Background(), replica("10.0.0.1", "10.0.0.2", "10.0.0.3"), nil, storageclass.AuthNone); err != nil {
		t.Fatal(err)
	}
	if len(f.attempts) != 3 {
		t.Fatalf("%d attempts, want one per endpoint", len(f.attempts))
	}
	for i, o := range f.attempts {
		if o.HostNQN != "nqn.host" || o.HostID != "id" || o.Transport != "tcp" || o.SubsysNQN != "nqn.2026-01.io.nvmirror:r1" ||
			o.TrAddr != fmt.Sprintf("10.0.0.%d", i+1) || o.TrSvcID != "4420" || o.DHCHAPSecret != "" {
			t.Errorf("attempt %d: %+v", i, o)
		}
	}
}

// The secrets rule: the pair's host secret whatever the mode, the
// controller secret only for bidirectional volumes, and an authenticated
// volume without secrets is not connected at all.
func TestConnectSecrets(t *testing.T) {
	for _, tc := range []struct {
		auth             storageclass.Authentication
		creds            []volume.Credentials
		secret, ctrl     string
		wantErr          error
		wantNoConnection bool
	}{
		{auth: storageclass.AuthNone},
		{auth: storageclass.AuthNone, creds: pair, secret: "DHHC-1:00:host"},
		{auth: storageclass.AuthHost, creds: pair, secret: "DHHC-1:00:host"},
		{auth: storageclass.AuthBidirectional, creds: pair, secret: "DHHC-1:00:host", ctrl: "DHHC-1:00:ctrl"},
		{auth: storageclass.AuthHost, wantErr: ErrNoSecrets, wantNoConnection: true},
		{auth: storageclass.AuthBidirectional, creds: []volume.Credentials{{StorageNode: "sn-2", Secret: "x"}}, wantErr: ErrNoSecrets, wantNoConnection: true},
	} {
		f := &fabric{}
		err := (&Connector{Fabric: f}).Connect(context.Background(), replica("10.0.0.1"), tc.creds, tc.auth)
		if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
			t.Errorf("%s with %d credentials: err %v, want %v", tc.auth, len(tc.creds), err, tc.wantErr)
		}
		if tc.wantNoConnection {
			if len(f.attempts) != 0 {
				t.Errorf("%s without secrets: connected anyway: %+v", tc.auth, f.attempts)
			}
			continue
		}
		if len(f.attempts) != 1 || f.attempts[0].DHCHAPSecret != tc.secret || f.attempts[0].DHCHAPCtrlSecret != tc.ctrl {
			t.Errorf("%s with %d credentials: attempts %+v, want secret %q ctrl %q", tc.auth, len(tc.creds), f.attempts, tc.secret, tc.ctrl)
		}
	}
}

// A kernel without in-band authentication stops at the first endpoint;
// other failures are reported for every endpoint, naming it.
func TestConnectFailures(t *testing.T) {
	f := &fabric{fail: map[string]error{"10.0.0.1": nvmeof.ErrAuthUnsupported, "10.0.0.2": nvmeof.ErrAuthUnsupported}}
	err := (&Connector{Fabric: f}).Connect(context.Background(), replica("10.0.0.1", "10.0.0.2"), pair, storageclass.AuthHost)
	if !errors.Is(err, nvmeof.ErrAuthUnsupported) || len(f.attempts) != 1 {
		t.Errorf("auth unsupported: %v after %d attempts", err, len(f.attempts))
	}
	f = &fabric{fail: map[string]error{"10.0.0.1": nvmeof.ErrConnectRefused, "10.0.0.2": errors.New("timed out")}}
	err = (&Connector{Fabric: f}).Connect(context.Background(), replica("10.0.0.1", "10.0.0.2"), nil, storageclass.AuthNone)
	if !errors.Is(err, nvmeof.ErrConnectRefused) || len(f.attempts) != 2 {
		t.Fatalf("all refused: %v after %d attempts", err, len(f.attempts))
	}
	for _, want := range []string{"r1", "sn-1", "10.0.0.1:4420", "10.0.0.2:4420", "timed out"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if err := (&Connector{Fabric: f}).Connect(context.Background(), replica(), nil, storageclass.AuthNone); err == nil {
		t.Error("a replica without endpoints connected")
	}
}
