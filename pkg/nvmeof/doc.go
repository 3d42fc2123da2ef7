// Package nvmeof drives the Linux NVMe over Fabrics stack through its kernel
// file interfaces: the initiator side through /dev/nvme-fabrics and sysfs, the
// target side (nvmet) through configfs. No nvme-cli is involved, so behaviour
// does not depend on the version of a tool installed on the host.
package nvmeof
