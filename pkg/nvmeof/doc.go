// Package nvmeof is what both sides of nvmirror's NVMe over Fabrics share,
// and what the provisioner needs without linking any kernel code: NQN and
// address validation, the namespace identities (UUID, NGUID, serial)
// derived from a replica ID, secret redaction and canonical form, and the
// sentinel errors both sides wrap.
//
// The kernel drivers live in its sub-packages, one per side, named after
// the kernel's own drivers/nvme/host and nvmet: host is the initiator
// (/dev/nvme-fabrics and sysfs on the compute node), nvmet the target
// (nvmet's configfs on the storage node). Both drive the kernel through its
// file interfaces, without nvme-cli, so behaviour does not depend on the
// version of a tool installed on the host.
package nvmeof
