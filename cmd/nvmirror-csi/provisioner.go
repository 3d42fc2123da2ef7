package main

import (
	"fmt"

	"google.golang.org/grpc"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
)

// newProvisionerClient dials the provisioner over mutual TLS with this
// plugin's certificate (and the bearer token, if any)
// and returns the driver's view of it. Dialling is lazy: an unreachable
// provisioner shows as ErrUnavailable on the first call (Probe says so),
// not as a failure to start, so the plugin comes up while the provisioner
// is still starting. The connection lives as long as the process.
func newProvisionerClient(o driver.Options) (*provisionerclient.Client, *grpc.ClientConn, error) {
	if err := checkIdentity(o); err != nil {
		return nil, nil, err
	}
	conn, err := rpcauth.Dial(o.ProvisionerAddress, rpcauth.ClientConfig{
		CAFile:     o.ProvisionerCAFile,
		ServerName: o.ProvisionerServerName,
		CertFile:   o.ProvisionerCertFile,
		KeyFile:    o.ProvisionerKeyFile,
		TokenFile:  o.ProvisionerTokenFile,
	})
	if err != nil {
		return nil, nil, err
	}
	return provisionerclient.New(conn), conn, nil
}

// checkIdentity refuses to start with a certificate the provisioner would
// refuse every call of: one without the role of the mode, or, for the node
// plugin, one naming another node.
func checkIdentity(o driver.Options) error {
	id, err := rpcauth.LoadIdentity(o.ProvisionerCertFile)
	if err != nil {
		return fmt.Errorf("--provisioner-cert-file: %w", err)
	}
	if (o.Mode == driver.ControllerMode || o.Mode == driver.AllMode) && !id.Has(rpcauth.RoleController) {
		return fmt.Errorf("--provisioner-cert-file: certificate of %s has no role %q (Subject O), which --mode=%s needs", id, rpcauth.RoleController, o.Mode)
	}
	if o.Mode == driver.NodeMode || o.Mode == driver.AllMode {
		if !id.Has(rpcauth.RoleNode) {
			return fmt.Errorf("--provisioner-cert-file: certificate of %s has no role %q (Subject O), which --mode=%s needs", id, rpcauth.RoleNode, o.Mode)
		}
		if id.Name != o.NodeName {
			return fmt.Errorf("--provisioner-cert-file: certificate names node %q (Subject CN), not --node-name %q: the provisioner would refuse this node's calls", id.Name, o.NodeName)
		}
	}
	return nil
}
