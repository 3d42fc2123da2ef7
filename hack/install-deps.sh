#!/usr/bin/env bash
# Installs the Debian packages that nvmirror's build and real-kernel tests
# need, when they are missing. As root it runs apt-get; otherwise it says what
# to install and fails, so `make test` never silently skips the VM tests.
set -euo pipefail

# command-or-file : package
need=(
  "qemu-system-x86_64:qemu-system-x86"
  "/bin/busybox:busybox-static"
  "mdadm:mdadm"
  "mkfs.ext4:e2fsprogs"
  "mkfs.xfs:xfsprogs"
  "blkid:util-linux"
  "xz:xz-utils"
  "depmod:kmod"
  "dpkg-deb:dpkg"
  "cpio:cpio"
  "ldd:libc-bin"
  "etcd:etcd-server"
  "rsyslogd:rsyslog"
  # the data-path benchmark (make bench-datapath, and its smoke run in
  # make test-kernel): fio, and DRBD 8.4's userspace for the kernel's drbd
  "fio:fio"
  "/usr/lib/drbd/drbdsetup-84:drbd-utils"
  "/usr/sbin/drbdmeta:drbd-utils"
  "losetup:mount"
  # make images (hack/images.sh): container images without a Docker engine
  "buildah:buildah"
  "mmdebstrap:mmdebstrap"
  # the kubelet node's VM (test/k8s TestKubeletNode): runc and the CNI
  # plugins are copied into it from here, with unshare and nsenter
  "/usr/sbin/runc:runc"
  "/usr/lib/cni/bridge:containernetworking-plugins"
  "/usr/bin/unshare:util-linux"
  "/usr/bin/nsenter:util-linux"
)

have() {
  case "$1" in
    /*) [ -e "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] ;;
  esac
}

missing=()
for entry in "${need[@]}"; do
  what=${entry%%:*} pkg=${entry##*:}
  if ! have "$what"; then missing+=("$pkg"); fi
done
# busybox (dynamic) and busybox-static conflict; only the static one works in
# the initramfs, so check for it explicitly.
if [ -e /bin/busybox ] && ! dpkg -s busybox-static >/dev/null 2>&1; then
  missing+=(busybox-static)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
  echo "missing packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
