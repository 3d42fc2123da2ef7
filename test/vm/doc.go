// Package vm boots a small Linux VM under qemu so that nvmirror's data path
// (nvmet, nvme-tcp, md RAID1, ext4/xfs) can be tested on a real kernel from an
// ordinary `go test` run on a machine whose own kernel has none of it.
//
// The VM is a Debian kernel plus an initramfs built here: busybox, the
// userspace tools the code shells out to (mdadm, mkfs...), the kernel modules
// the tests need (loaded in dependency order from modules.dep), and the test
// binaries. qemu runs under TCG (no KVM on the build machines), 2 CPUs; a
// boot to the first guest test takes about 10 s.
//
// # Guest tests (GuestTests)
//
// Guest tests are ordinary Go tests compiled with the build tag `vmguest`;
// their test2json stream comes back over a second serial port and is replayed
// as subtests of the host test, so `go test` reports each guest test by name.
// One boot runs many guest tests; test/kernel boots twice, one after the
// other:
//
//   - TestRealKernel: the default kernel (Debian 6.1, .cache/vm/kernel, or
//     $NVMIRROR_VM_KERNEL_DIR), every guest test but ^TestAuth (Skip).
//   - TestRealKernelAuth: the 6.12 bookworm-backports kernel
//     (KernelDir AuthKernelDir, `make vm-kernel-auth`), which has NVMe
//     in-band authentication (DH-HMAC-CHAP) that 6.1 lacks; only ^TestAuth
//     (Pattern). $NVMIRROR_VM_KERNEL_DIR does not change it.
//
// A boot can add to the initramfs what only its tests need (Tools,
// Modules), set the guest test binary's environment (Env), and read each
// line of the guest's output as it arrives (OnOutput): test/kernel's
// TestDatapathBenchmark boots with fio, DRBD's tools and module for the
// guest test TestBenchDatapath (which TestRealKernel skips), and picks its
// report out of the output (`make bench-datapath`, docs/performance.md).
//
// A boot can also have a scratch disk (DiskMiB) for data that does not fit
// in guest RAM, where every other pool lives on a tmpfs: a new sparse raw
// file of that size in the test's temporary directory on the host,
// attached as a virtio disk (cache=unsafe; zeros and discards stay holes
// on the host, so it takes only its real data's space there). The guest
// sees it as GuestDisk (/dev/vda), which EnvDisk ($NVMIRROR_VM_DISK) names
// in the guest tests' environment; the disk holds nothing, so the guest
// test formats it (mkfs.ext4 is in the image). test/kernel's
// TestDrainBenchmark boots with one for TestBenchDrain, whose storage
// nodes' pools must take 10 GiB of md copies (`make bench-drain`,
// docs/maintenance.md).
//
// The guest test binary and the commands are built (static linux/amd64)
// once per test process: boots of the same package and commands share
// them (test/kernel's four boots link them once), the commands in one `go
// build`, beside the test binary. A package whose tests boot VMs runs
// RunTests from its TestMain, which removes them at the end.
//
// The host lists the guest package's tests before booting, so each boot
// knows what it will run. $NVMIRROR_VM_RUN picks guest tests across both
// boots: it becomes the guest's -test.run, but a boot only runs its own tests
// (Pattern minus Skip), and a boot that owns none of the named tests skips
// without booting. NVMIRROR_VM_RUN=TestDataPath boots only 6.1;
// NVMIRROR_VM_RUN=TestAuth boots only 6.12. A boot whose Pattern matches no
// guest test at all fails: that is a mistake, not a selection.
//
// # Service VMs (StartService)
//
// A service VM runs programs that need the real kernel for a test that runs
// on the host, e.g. storage node agents (nvmirror-target, needing nvmet's
// configfs) for a Kubernetes control plane and CSI controller on the host. Its
// Script starts the services in the background and prints a ready line; the
// VM then has a virtio-net NIC on qemu's restricted user-mode network (the
// guest is GuestIP and can reach nothing; only forwarded connections come
// in), each forwarded guest port is reachable at HostAddr(port) on
// 127.0.0.1, and the VM stays up until Stop or the end of the test (t.Cleanup):
//
//	s := vm.StartService(t, vm.ServiceConfig{
//		Commands:  []string{"./cmd/nvmirror-target"},
//		Files:     map[string]string{"/etc/nvmirror/tls.crt": crt, "/etc/nvmirror/tls.key": key},
//		Script:    "nvmirror-target --listen=:9400 --tls-cert-file=/etc/nvmirror/tls.crt ... &\n" +
//			"until netstat -ltn | grep -q ':9400 '; do sleep 0.1; done; echo agents up", // ReadyTimeout bounds the wait
//		Forward:   []int{9400},
//		ReadyLine: "agents up",
//	})
//	conn, err := grpc.NewClient(s.HostAddr(9400), ...)
//
// Its output lines (the script's and the services' stdout and stderr) go to
// OnLine, WaitLine and a log file; on a failed test the cleanup logs them
// with the kernel console's tail. Only the VMs that need a NIC get one:
// guest-test boots run with -nic none.
//
// A boot is tried again, and said so in the test log, only for faults of the
// emulated machine that a fresh boot clears: a host port taken between
// choosing it and qemu binding it, a kernel that crashed in its first second,
// and a guest that printed its ready line but fails the caller's ReadyCheck
// (once; that boot's logs are kept as NAME.bootN.*.log, EarlierLogs).
//
// # Logs, prerequisites, leftovers
//
// With $NVMIRROR_VM_LOGDIR set, every boot keeps its kernel console log there
// (and a service VM its output), named after the test. Everything that cannot
// be found (qemu, a kernel, busybox) makes the host test skip with a message
// that says what is missing and which make target installs it; under
// NVMIRROR_REQUIRE_VM=1 (`make test`, `make test-kernel`) it fails instead,
// so CI never passes by skipping. qemu gets a parent-death signal: a test
// binary that dies without running its cleanups (go test's -timeout) takes
// its VMs with it.
package vm
