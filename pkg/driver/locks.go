package driver

// TryLockVolume takes the lock the CSI node calls take on a volume, without
// waiting: the healer skips a volume that NodeStage, NodeUnstage or
// NodeExpand is working on and looks again at its next cycle.
func (d *Driver) TryLockVolume(volumeID string) (unlock func(), ok bool) {
	if !d.inflight.Insert(volumeID) {
		return nil, false
	}
	return func() { d.inflight.Delete(volumeID) }, true
}
