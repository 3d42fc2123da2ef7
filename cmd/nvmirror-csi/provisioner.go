package main

import (
	"google.golang.org/grpc"

	"github.com/nvmirror/nvmirror/pkg/driver"
	"github.com/nvmirror/nvmirror/pkg/provisionerclient"
	"github.com/nvmirror/nvmirror/pkg/rpcauth"
)

// newProvisionerClient dials the provisioner over TLS with the bearer token
// and returns the driver's view of it. Dialling is lazy: an unreachable
// provisioner shows as ErrUnavailable on the first call (Probe says so),
// not as a failure to start, so the plugin comes up while the provisioner
// is still starting. The connection lives as long as the process.
func newProvisionerClient(o driver.Options) (*provisionerclient.Client, *grpc.ClientConn, error) {
	conn, err := rpcauth.Dial(o.ProvisionerAddress, rpcauth.ClientConfig{
		CAFile:     o.ProvisionerCAFile,
		ServerName: o.ProvisionerServerName,
		TokenFile:  o.ProvisionerTokenFile,
	})
	if err != nil {
		return nil, nil, err
	}
	return provisionerclient.New(conn), conn, nil
}
