// Package host is the initiator side of NVMe over Fabrics on a compute
// node (the kernel's drivers/nvme/host): it connects through
// /dev/nvme-fabrics, reads controllers, their state and namespace devices
// from sysfs, and re-keys live controllers' DH-HMAC-CHAP secrets. What it
// shares with the target side (validation, identities, sentinel errors) is
// in the parent package nvmeof.
package host
