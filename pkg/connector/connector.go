// Package connector connects one replica of a volume to this host over
// NVMe/TCP with the DH-HMAC-CHAP secrets its storage node demands. NodeStage
// and the healer's reconnects both connect through it, so a replica is
// connected the same way (same host identity, timeouts and secrets rule)
// whoever brings it up.
package connector

import (
	"context"
	"errors"
	"fmt"

	"github.com/nvmirror/nvmirror/pkg/nvmeof"
	"github.com/nvmirror/nvmirror/pkg/nvmeof/host"
	"github.com/nvmirror/nvmirror/pkg/storageclass"
	"github.com/nvmirror/nvmirror/pkg/volume"
)

// ErrNoSecrets: the volume requires authentication and the replica's storage
// node holds no secrets for this host yet (the provisioner sets them when it
// allows the host). The replica is not connected: never without
// authentication.
var ErrNoSecrets = errors.New("the storage node holds no authentication secrets for this host yet; not connecting without authentication")

// Fabric is the part of the host's NVMe-oF initiator connecting uses.
// Connect returns the existing controller when there is one, so connecting
// again is a no-op.
type Fabric interface {
	Connect(ctx context.Context, o host.ConnectOptions) (host.Controller, error)
}

// Connector connects replicas with one host identity.
type Connector struct {
	Fabric Fabric
	// Template carries the host identity and timeouts (HostNQN, HostID,
	// CtrlLossTmo...) of every connection; the target and secrets are
	// filled per replica endpoint.
	Template host.ConnectOptions
}

// Connect connects every endpoint of r, using the secrets in creds that the
// rule volume.ConnectSecrets picks for a volume of authentication mode auth.
// Every endpoint is connected (each is a path to the namespace); it succeeds
// when one answers. A volume requiring authentication
// whose storage node has no secrets gives ErrNoSecrets and nothing is
// attempted; a kernel without NVMe in-band authentication gives an error
// wrapping nvmeof.ErrAuthUnsupported at once (no endpoint could do better).
func (c *Connector) Connect(ctx context.Context, r volume.Replica, creds []volume.Credentials, auth storageclass.Authentication) error {
	if len(r.Endpoints) == 0 {
		return fmt.Errorf("replica %s has no endpoint", r.ID)
	}
	secret, ctrlSecret, has := volume.ConnectSecrets(creds, r.StorageNode, auth)
	if !has && auth.Required() {
		return fmt.Errorf("replica %s (%s): %w", r.ID, r.StorageNode, ErrNoSecrets)
	}
	var errs []error
	connected := false
	for _, ep := range r.Endpoints {
		o := c.Template
		o.TrAddr, o.TrSvcID, o.SubsysNQN = ep.Address, ep.Port, r.NQN
		o.DHCHAPSecret, o.DHCHAPCtrlSecret = secret, ctrlSecret
		if _, err := c.Fabric.Connect(ctx, o); err != nil {
			if errors.Is(err, nvmeof.ErrAuthUnsupported) {
				return fmt.Errorf("replica %s: %w", r.ID, err)
			}
			errs = append(errs, fmt.Errorf("%s:%s: %w", ep.Address, ep.Port, err))
			continue
		}
		connected = true
	}
	if !connected {
		return fmt.Errorf("replica %s (%s): connect: %w", r.ID, r.StorageNode, errors.Join(errs...))
	}
	return nil
}
