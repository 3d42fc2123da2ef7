// Package mdraid manages Linux md RAID1 arrays: mdadm for changes, sysfs and
// /proc/mdstat for state, and poll() on md sysfs attributes for change
// notifications.
package mdraid
