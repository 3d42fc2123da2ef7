package vm

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// GuestIP is the address of a VM with a NIC: qemu's user-mode network
// forwards host ports to it (its default DHCP address, set statically).
const GuestIP = "10.0.2.15"

// netModuleCandidates are what a virtio-net NIC needs, in load order.
// Debian builds them differently per kernel: 6.1 has virtio, virtio_ring and
// virtio_pci as modules, 6.12 builds those three in; virtio_net is a module
// in both. virtio_net does not depend on virtio_pci in modules.dep (the PCI
// transport is a separate driver), so it is named here.
var netModuleCandidates = []string{"virtio_pci", "virtio_net"}

// NetModules returns the modules a VM with a NIC must load on kernel k: the
// candidates that k does not build in.
func NetModules(k Kernel) ([]string, error) {
	return modulesNotBuiltin(k, netModuleCandidates)
}

// modulesNotBuiltin returns the candidates that k does not build in
// (modules.builtin), in order: insmod cannot load, and modules.dep does not
// list, a built-in one.
func modulesNotBuiltin(k Kernel, candidates []string) ([]string, error) {
	f, err := os.Open(filepath.Join(k.ModulesDir, "modules.builtin"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	builtin := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		builtin[moduleName(sc.Text())] = true
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var mods []string
	for _, m := range candidates {
		if !builtin[m] {
			mods = append(mods, m)
		}
	}
	return mods, nil
}

// initNetwork brings up the NIC in the guest's /init, after the modules
// loaded. virtio-net registers eth0 during the driver's probe, but the wait
// costs nothing and makes a missing NIC a clear setup failure. There is no
// default route on purpose: the network is restricted (qemu restrict=on) and
// only answers forwarded connections, which come from 10.0.2.2 on the local
// subnet; without a route, a guest service that tries to reach anything else
// fails at once instead of hanging in connect.
const initNetwork = `n=0
while [ ! -e /sys/class/net/eth0 ]; do
	n=$((n+1))
	[ $n -le 200 ] || fail "no eth0 20 s after loading virtio_net: does the VM have a NIC?"
	sleep 0.1
done
ip addr add ` + GuestIP + `/24 dev eth0 || fail "ip addr add on eth0 failed"
ip link set eth0 up || fail "eth0 up failed"
`

// freePorts returns n distinct TCP ports that were free on 127.0.0.1 a moment
// ago: each is bound to port 0 and kept open until all n are chosen, then
// released for qemu. Another process can still take one in between; qemu
// then fails to set up the forward and the caller retries with new ports.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free host port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
