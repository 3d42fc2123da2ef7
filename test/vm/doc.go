// Package vm boots a small Linux VM under qemu so that nvmirror's data path
// (nvmet, nvme-tcp, md RAID1, ext4/xfs) can be tested on a real kernel from an
// ordinary `go test` run on a machine whose own kernel has none of it.
//
// The VM is a Debian kernel plus an initramfs built here: busybox, the
// userspace tools the code shells out to (mdadm, mkfs...), the kernel modules
// the tests need (loaded in dependency order from modules.dep), and the test
// binaries. Guest tests are ordinary Go tests compiled with the build tag
// `vmguest`; their test2json stream comes back over a second serial port and is
// replayed as subtests of the host test, so `go test` reports each guest test
// by name.
//
// Everything that cannot be found (qemu, a kernel, busybox) makes the host test
// skip with a message that says what is missing and which make target installs
// it; `make test` installs all of it, so CI never skips.
package vm
