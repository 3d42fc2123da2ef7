// Package fake holds stateful in-memory stand-ins for the driver's
// dependencies: a provisioner that behaves like the real one (idempotent
// create by name, AlreadyExists on mismatch, NotFound, paging tokens,
// capacity accounting, publish fencing), a fabric of exported replicas that
// the fake initiator connects to (refusing hosts a replica does not admit),
// an md manager that records arrays and superblocks, and an exec that plays
// blkid, mkfs, fsck and resize tools. csi-sanity and the driver's tests run
// the real handlers against them.
package fake
