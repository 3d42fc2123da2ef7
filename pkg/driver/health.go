package driver

import "github.com/nvmirror/nvmirror/pkg/volume"

// SetHealthSource sets (or, with nil, clears) the source NodeGetVolumeHealth
// asks first. The healer is built after the driver (it uses the driver's
// node ID, locks and connection settings), hence a setter; it is safe to call
// while serving.
func (d *Driver) SetHealthSource(h volume.HealthSource) {
	d.healthMu.Lock()
	defer d.healthMu.Unlock()
	d.health = h
}

func (d *Driver) healthSource() volume.HealthSource {
	d.healthMu.RLock()
	defer d.healthMu.RUnlock()
	return d.health
}
