package volume

// VolumeHealth is a staged volume's health as a HealthSource sees it. The
// node's healer is one: it watches md and every replica's NVMe-oF controller
// (md alone does not notice a lost leg of an idle array), so its view is the
// better one while it runs.
type VolumeHealth struct {
	// Abnormal: the volume runs short of its mirror (a replica missing or
	// resynchronising) or cannot be used at all (then Inaccessible too).
	Abnormal bool
	// Inaccessible: no I/O is possible (the array does not run, or the only
	// replica of a single-replica volume is not connected).
	Inaccessible bool
	// Reason is a CamelCase reason code; empty picks the driver's default
	// (MirrorDegraded, or ArrayNotRunning when inaccessible).
	Reason string
	// Message names the missing replicas, since when the volume is
	// degraded, and the progress of a running resync.
	Message string
}

// HealthSource reports the health of staged volumes; ok is false when it
// has no current view of the volume (not observed yet, or its view is
// stale), and NodeGetVolumeHealth then reads md itself.
type HealthSource interface {
	VolumeHealth(volumeID string) (h VolumeHealth, ok bool)
}
