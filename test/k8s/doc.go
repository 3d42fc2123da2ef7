// Package k8s runs a real Kubernetes control plane on loopback for
// nvmirror's end-to-end tests: etcd, kube-apiserver, kube-controller-manager
// and the CSI sidecars (csi-provisioner, csi-attacher, csi-resizer, and
// csi-snapshotter with the cluster's snapshot-controller when the driver
// offers snapshots) against nvmirror-csi's controller socket, driven with
// kubectl.
//
// There is no kubelet, scheduler or container runtime: the tests play
// kubelet's part themselves (Node and CSINode objects, VolumeAttachments),
// which is all the controller side of a CSI driver ever sees of a node.
//
// The binaries come from `make k8s-tools` (hack/k8s-tools.sh builds them from
// pinned helper modules under hack/k8s/ and caches them in ~/.cache/nvmirror/k8s); etcd is
// Debian's etcd-server. When any is missing the tests skip with a message
// naming what to run, and fail instead under NVMIRROR_REQUIRE_K8S=1 (`make
// test-k8s`), so CI cannot pass by skipping. The test's client side is the
// kubectl binary; client-go is only in what it tests (the provisioner's
// Kubernetes events, kubectl-nvmirror).
package k8s
