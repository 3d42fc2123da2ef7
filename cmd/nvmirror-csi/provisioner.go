package main

import (
	"context"
	"fmt"

	"github.com/nvmirror/nvmirror/pkg/driver"
)

// newProvisionerClient returns the provisioner the driver talks to.
//
// PLACEHOLDER: the provisioner's gRPC client does not exist yet. Until the
// adapter (provisioner client → driver.Provisioner, mapping status codes to
// the driver's sentinels) lands, every call fails with ErrUnavailable, so
// the binary starts and Probe reports the provisioner unreachable instead of
// pretending to work.
func newProvisionerClient(o driver.Options) driver.Provisioner {
	return unavailableProvisioner{addr: o.ProvisionerAddress}
}

type unavailableProvisioner struct{ addr string }

func (p unavailableProvisioner) err() error {
	return fmt.Errorf("provisioner %s: no client wired into this build: %w", p.addr, driver.ErrUnavailable)
}

func (p unavailableProvisioner) CreateVolume(context.Context, driver.CreateVolumeRequest) (*driver.Volume, error) {
	return nil, p.err()
}
func (p unavailableProvisioner) DeleteVolume(context.Context, string) error { return p.err() }
func (p unavailableProvisioner) GetVolume(context.Context, string) (*driver.Volume, error) {
	return nil, p.err()
}
func (p unavailableProvisioner) ListVolumes(context.Context, string, int) ([]*driver.Volume, string, error) {
	return nil, "", p.err()
}
func (p unavailableProvisioner) PublishVolume(context.Context, string, string, string) (*driver.Volume, error) {
	return nil, p.err()
}
func (p unavailableProvisioner) UnpublishVolume(context.Context, string, string) error {
	return p.err()
}
func (p unavailableProvisioner) ExpandVolume(context.Context, string, int64) (*driver.Volume, error) {
	return nil, p.err()
}
func (p unavailableProvisioner) ModifyVolume(context.Context, string, map[string]string) (*driver.Volume, error) {
	return nil, p.err()
}
func (p unavailableProvisioner) GetCapacity(context.Context, map[string]string) (int64, error) {
	return 0, p.err()
}
func (p unavailableProvisioner) ReportAudit(context.Context, driver.AuditRecord) error {
	return p.err()
}
func (p unavailableProvisioner) Ping(context.Context) error { return p.err() }
