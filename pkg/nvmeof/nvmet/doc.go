// Package nvmet drives the kernel NVMe-oF target (nvmet) on a storage node
// through its configfs tree: subsystems, their namespaces, the ports that
// export them, the hosts allowed to connect and those hosts' DH-HMAC-CHAP
// secrets. What it shares with the initiator side (validation, identities,
// sentinel errors) is in the parent package nvmeof.
package nvmet
