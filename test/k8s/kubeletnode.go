package k8s

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nvmirror/nvmirror/test/vm"
)

// A real Kubernetes node: kubelet, containerd, runc and the CNI bridge
// plugin in a VM on the real kernel, registered with the control plane on
// the host. Everything the node runs comes from images loaded into its
// containerd; the storage node agents run in the same VM as processes (as
// in bootStorageNodes), the node plugin as the DaemonSet's containers.
//
// Networking, all on loopback and inside the VM:
//   - the guest reaches the API server through a guest forward
//     (apiServerGuestAddr: a connection to it runs a relay to the host's
//     127.0.0.1:PORT);
//   - the API server reaches the kubelet (exec, logs, port-forward) through
//     a host forward of the kubelet's own port: the node is named
//     "localhost" (its Hostname address, the first the API server tries), and
//     its kubelet listens on a port free on the host, forwarded to the same
//     port in the guest;
//   - pods are on a CNI bridge (podSubnet) without NAT; Services and cluster
//     DNS are served by test/standins/clusterservices on the node (no
//     kube-proxy or CoreDNS here): cluster IPs become local addresses of the
//     node and are proxied in user space.

const (
	// KubeletNodeName is the node's name and hostname (see above).
	KubeletNodeName = "localhost"
	// apiServerGuestAddr is where the guest reaches the API server.
	apiServerGuestAddr = "10.0.2.100"
	// clusterDNS is the cluster DNS address kubelet gives pods
	// (clusterservices serves it); inside ServiceClusterIPRange.
	clusterDNS = "10.0.0.10"
	// podSubnet is the CNI bridge's range.
	podSubnet = "10.88.0.0/16"
	// nodeDiskMiB is the node's scratch disk (containerd's images and
	// containers, kubelet's pods and logs): sparse, so it costs the host
	// only what is written.
	nodeDiskMiB = 16 << 10
	// nodeMemoryMiB: containerd, kubelet, the nvmirror pods, three agents
	// with tmpfs pools, and the e2e suite's pods.
	nodeMemoryMiB = 6144
	// sandboxImage is the pod sandbox image containerd runs (pause).
	sandboxImage = "registry.k8s.io/pause:3.10.2"
)

// NodeConfig is what a kubelet node runs besides kubelet.
type NodeConfig struct {
	// Images is the directory hack/images.sh printed: docker-archive tars
	// listed in its images.txt, loaded into containerd before kubelet
	// starts, but for SkipImages (names the node does not run).
	Images     string
	SkipImages []string
	// Extra is shell run in the guest before kubelet starts (the agents),
	// outside the node's mount namespace, whose root is /node here (see
	// nodeSetupScript).
	Extra string
	// Files and Forward are added to the VM's (Extra's files and ports).
	Files   map[string]string
	Forward []int
}

// KubeletNode is the running node VM.
type KubeletNode struct {
	Svc *vm.Service
	// Ready is how long from the VM's start until the Node was Ready.
	Ready time.Duration
}

// guest paths
const (
	nodeEtc        = "/etc/kubernetes"
	nodeKubeconfig = nodeEtc + "/kubeconfig"
)

// StartKubeletNode boots the node VM and waits until the Node is Ready.
func (cp *ControlPlane) StartKubeletNode(nt NodeTools, cfg NodeConfig) *KubeletNode {
	t := cp.t
	t.Helper()
	work := filepath.Join(cp.Dir, "node")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	imagesDisk := filepath.Join(work, "images.ext4")
	archives := buildImagesDisk(t, cfg.Images, cfg.SkipImages, imagesDisk)

	kubeletPort := FreePort(t)
	_, apiPort, err := net.SplitHostPort(strings.TrimPrefix(cp.Server, "https://"))
	if err != nil {
		t.Fatalf("API server address %s: %v", cp.Server, err)
	}
	hostAPIPort, err := strconv.Atoi(apiPort)
	if err != nil {
		t.Fatalf("API server address %s: %v", cp.Server, err)
	}
	guestAPI := net.JoinHostPort(apiServerGuestAddr, apiPort)

	files := map[string]string{
		"/usr/local/bin/kubelet":                 nt.Kubelet,
		"/usr/local/bin/containerd":              nt.Containerd,
		"/usr/local/bin/containerd-shim-runc-v2": nt.ContainerdShim,
		"/usr/local/bin/ctr":                     nt.Ctr,
		nodeEtc + "/ca.crt":                      cp.CAFile,
	}
	for g, h := range cfg.Files {
		files[g] = h
	}
	write := func(guest, content string) {
		h := filepath.Join(work, strings.ReplaceAll(strings.TrimPrefix(guest, "/"), "/", "_"))
		writeFile(t, h, []byte(content))
		files[guest] = h
	}
	// The API server's self-signed certificate names 127.0.0.1, its
	// service IP and the kubernetes.default names, not the forward.
	write(nodeKubeconfig, tokenKubeconfig("https://"+guestAPI, nodeEtc+"/ca.crt", "kubernetes.default.svc", cp.Token))
	write(nodeEtc+"/kubelet.yaml", kubeletConfig(kubeletPort))
	write("/etc/containerd/config.toml", containerdConfig)
	write("/etc/cni/net.d/10-bridge.conflist", cniConfig)
	write("/etc/kubelet-resolv.conf", "nameserver "+clusterDNS+"\n")

	// The node's own start, run in its mount namespace (nodeSetupScript).
	var inner strings.Builder
	inner.WriteString(nodeStartScript)
	// Two import queues, one a CPU (nodeimages.go), then a check that
	// containerd has every image under its name.
	var names []string
	inner.WriteString("imports_start=$(date +%s)\n")
	for _, q := range importQueues(archives, 2) {
		inner.WriteString("(\n")
		for _, a := range q {
			fmt.Fprintf(&inner, "\timport_image %q\n", "/images/"+a.File)
			names = append(names, a.Names...)
		}
		inner.WriteString(") & pids=\"$pids $!\"\n")
	}
	inner.WriteString("wait_imports\n")
	fmt.Fprintf(&inner, "check_images %s\n", strings.Join(names, " "))
	fmt.Fprintf(&inner, `clusterservices --kubeconfig=%[1]s --apiserver-endpoint=%[2]s \
  --dns-address=%[3]s:53 --cluster-domain=cluster.local --v=2 2>&1 | sed 's/^/clusterservices: /' &
kubelet --config=%[4]s/kubelet.yaml --kubeconfig=%[1]s --hostname-override=%[5]s \
  --node-ip=%[6]s --v=2 2>&1 | sed 's/^/kubelet: /' &
echo "kubelet started"
`, nodeKubeconfig, guestAPI, clusterDNS, nodeEtc, KubeletNodeName, vm.GuestIP)
	write(nodeStartFile, inner.String())

	var script strings.Builder
	script.WriteString(nodeSetupScript)
	script.WriteString(cfg.Extra)
	fmt.Fprintf(&script, "ip addr add %s/32 dev lo\n", clusterDNS)
	script.WriteString(nodeSwitchRoot)

	start := time.Now()
	svc := vm.StartService(t, vm.ServiceConfig{
		Commands: []string{"./cmd/nvmirror-target", "./test/standins/clusterservices"},
		Files:    files,
		Script:   script.String(),
		Forward:  cfg.Forward,
		FixedForward: []vm.PortForward{
			{HostPort: kubeletPort, GuestPort: kubeletPort},
		},
		GuestForward:  []vm.GuestForward{{GuestAddr: guestAPI, HostPort: hostAPIPort}},
		Modules:       []string{"bridge", "veth", "overlay"},
		Tools:         append([]string{"/usr/sbin/runc", "/usr/sbin/losetup", "/usr/bin/nsenter", "/usr/bin/unshare"}, cniPlugins...),
		DiskMiB:       nodeDiskMiB,
		ReadOnlyDisks: []string{imagesDisk},
		MemoryMiB:     nodeMemoryMiB,
		ReadyLine:     "kubelet started",
		ReadyTimeout:  10 * time.Minute,
		// A kubelet registers its node within seconds of its start. One
		// that has not in minutes lost its way to the API server: seen once
		// in dozens of runs, every request through the guest forward hung
		// from the kubelet's start and the guest's kernel was later found
		// spinning in TCP code, a fault of the emulated machine that a new
		// boot clears (vm.ServiceConfig.ReadyCheck boots it again, once).
		ReadyCheck:        func(ctx context.Context) error { return cp.nodeRegistered(ctx, KubeletNodeName) },
		ReadyCheckTimeout: nodeRegisterTimeout,
		OnLine: func(line string) {
			if strings.HasPrefix(line, "node: ") {
				t.Log(line)
			}
		},
	})
	n := &KubeletNode{Svc: svc}
	cp.WaitJSONPath(5*time.Minute, "", "node", KubeletNodeName,
		`{.status.conditions[?(@.type=="Ready")].status}`, "node "+KubeletNodeName+" Ready", func(s string) bool { return s == "True" })
	n.Ready = time.Since(start)
	t.Logf("kubelet node %s Ready %v after the VM's start", KubeletNodeName, n.Ready.Round(100*time.Millisecond))
	return n
}

// nodeRegisterTimeout bounds the wait for a started kubelet's Node object
// (registered 5-20 s after its start here, a minute at worst with both CPUs
// busy).
const nodeRegisterTimeout = 3 * time.Minute

// nodeRegistered waits until the API server has the Node name, or ctx ends.
func (cp *ControlPlane) nodeRegistered(ctx context.Context, name string) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		out, err := cp.Kubectl("get", "node", name, "-o", "name", "--ignore-not-found")
		if err == nil && strings.TrimSpace(out) != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s not registered: %w (last: %q, %v)", name, ctx.Err(), strings.TrimSpace(out), err)
		case <-tick.C:
		}
	}
}

// cniPlugins are Debian's containernetworking-plugins the node uses.
var cniPlugins = []string{"/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback"}

// buildImagesDisk writes the images of dir (its images.txt: NAME FILE
// BYTES lines) but those of skip into an ext4 image (the VM's read-only
// disk, /images in the guest) as the archives the node imports
// (planImports) and returns them.
func buildImagesDisk(t testing.TB, dir string, skip []string, disk string) []importArchive {
	t.Helper()
	index, err := os.ReadFile(filepath.Join(dir, "images.txt"))
	if err != nil {
		t.Fatalf("images: %v (run `make images`)", err)
	}
	stage := filepath.Join(filepath.Dir(disk), "images")
	if err := os.MkdirAll(stage, 0o755); err != nil {
		t.Fatal(err)
	}
	var images []nodeImage
	for _, line := range strings.Split(string(index), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || strings.HasPrefix(f[0], "#") || slices.Contains(skip, f[0]) {
			continue
		}
		images = append(images, nodeImage{Name: f[0], File: f[1]})
	}
	if len(images) == 0 {
		t.Fatalf("no images listed in %s/images.txt (run `make images`)", dir)
	}
	archives, err := planImports(dir, images, stage)
	if err != nil {
		t.Fatalf("images: %v", err)
	}
	var total int64
	for _, a := range archives {
		total += a.Size
	}
	size := total + total/4 + 64<<20
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", stage, disk, fmt.Sprintf("%dk", size>>10)).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 -d %s: %v: %s", stage, err, out)
	}
	return archives
}

// kubeletConfig is the node's KubeletConfiguration: cgroup v2 with the
// cgroupfs driver (no systemd in the VM), anonymous access to the kubelet
// API (only the API server reaches it, through the forward), and no
// eviction or image garbage collection thresholds (the disk is scratch).
func kubeletConfig(port int) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
port: %d
readOnlyPort: 0
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
clusterDNS: [%s]
clusterDomain: cluster.local
resolvConf: /etc/kubelet-resolv.conf
failSwapOn: false
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
registerNode: true
# Under emulation everything is slower; these only shorten waits.
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
fileCheckFrequency: 5s
`, port, clusterDNS)
}

// containerdConfig: CRI with runc (Debian's) and the CNI bridge.
const containerdConfig = `version = 3
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "` + sandboxImage + `"

[plugins.'io.containerd.cri.v1.runtime']
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "/etc/cni/net.d"
`

// cniConfig: one bridge, host-local addresses, no NAT (nothing to reach
// outside the VM; ipMasq would need iptables).
const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "nvmirror-e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "` + podSubnet + `"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
`

// nodeStartFile is the node's own start script (nodeStartScript, the
// imports, clusterservices and kubelet), run by nodeSwitchRoot.
const nodeStartFile = "/etc/node-start.sh"

// nodeSetupScript prepares the node's root on the scratch disk.
//
// The node's root is the scratch disk, not the initramfs: the initramfs is
// the kernel's rootfs, from which pivot_root(2) cannot move, and a mount
// namespace's own root is what a process entering it starts from (runc exec
// joins a container's namespaces so: a kubectl exec). So the system is
// copied onto the disk, the kernel's filesystems are bound in, and
// nodeSwitchRoot starts containerd, kubelet and clusterservices in a mount
// namespace where the disk is moved onto / (switch_root's way), shared so
// that the node plugin's mounts (Bidirectional propagation) reach kubelet and
// the pods. The storage node agents stay outside (Extra).
const nodeSetupScript = `set -e
log() { echo "node: $*"; }
export PATH=/usr/local/bin:$PATH
mkdir -p /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
	echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control || log "cgroup controller $c not enabled"
done
mkfs.ext4 -q -F ` + vm.GuestDisk + `
mkdir -p /node
mount ` + vm.GuestDisk + ` /node
cp -a /bin /sbin /usr /lib /etc /nvmirror /node/
[ -d /lib64 ] && cp -a /lib64 /node/
for d in dev proc sys run tmp; do mkdir -p /node/$d; mount --rbind /$d /node/$d; done
mkdir -p /node/var/lib/containerd /node/var/lib/kubelet /node/var/log /node/images /node/root
n=0; while [ ! -b /dev/vdb ]; do n=$((n+1)); [ $n -le 200 ] || { log "no images disk"; exit 1; }; sleep 0.1; done
mount -o ro /dev/vdb /node/images
echo 1 > /proc/sys/net/ipv4/ip_forward
cat /proc/sys/kernel/random/uuid | tr -d - > /node/etc/machine-id
echo "root:x:0:0:root:/root:/bin/sh" > /node/etc/passwd
echo "root:x:0:" > /node/etc/group
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost\n' > /node/etc/hosts
`

// nodeSwitchRoot starts the node in its mount namespace (nodeSetupScript).
const nodeSwitchRoot = `unshare -m sh -c 'mount --make-rprivate / && cd /node && mount --move . / && exec chroot . sh ` + nodeStartFile + `' &
`

// nodeStartScript starts containerd in the node's root; import_image loads
// one image tar.
const nodeStartScript = `set -e
log() { echo "node: $*"; }
export PATH=/usr/local/bin:/nvmirror/bin:$PATH
mount --make-rshared /
containerd --config /etc/containerd/config.toml 2>&1 | sed 's/^/containerd: /' &
n=0; while [ ! -S /run/containerd/containerd.sock ]; do n=$((n+1)); [ $n -le 600 ] || { log "containerd did not start"; exit 1; }; sleep 0.1; done
log "containerd up"
import_image() {
	s=$(date +%s)
	ctr -n k8s.io images import "$1" > /dev/null || { log "import $1 failed"; exit 1; }
	log "imported $1 in $(( $(date +%s) - s )) s"
}
# Waits for the imports started since the last call (never "wait" alone:
# containerd is a background job too).
pids=
wait_imports() { for p in $pids; do wait $p; done; pids=; }
# check_images NAME...: fails unless containerd has every image named.
check_images() {
	have=$(ctr -n k8s.io images ls -q)
	for n in "$@"; do
		echo "$have" | grep -qxF "$n" || { log "image $n missing after the imports; containerd has: $have"; exit 1; }
	done
	log "all $# images imported in $(( $(date +%s) - imports_start )) s"
}
`
