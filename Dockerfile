# syntax=docker/dockerfile:1
# One image, every nvmirror binary (nvmirror-csi, nvmirror-provisioner,
# nvmirror-target, nvmirrorctl); each Kubernetes container names the one it
# runs in `command` (deploy/). Build with BuildKit:
#   docker buildx build --build-arg VERSION=$(git describe --tags --always) \
#     --platform linux/amd64,linux/arm64 -t ghcr.io/nvmirror/nvmirror:TAG .
# `make image-check` (and `go test ./test/image/`) lints this file with
# BuildKit's own rules and checks what it builds and installs, without a
# Docker engine.

ARG GO_VERSION=1.26
ARG DEBIAN_RELEASE=bookworm

# The builder runs on the build machine's platform and cross-compiles: the
# binaries are static Go (CGO_ENABLED=0), so no emulation is needed for
# other architectures.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
# Modules first: a source edit does not invalidate the download layer, and
# the module and build caches survive between builds.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
# The same build as a developer's `make build` (CGO_ENABLED=0, -trimpath,
# the version stamped into pkg/version) of the programs the image holds
# (the Makefile's IMAGE_CMDS: all but the kubectl plugin).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} make image-binaries VERSION=${VERSION} BIN=/out

# The runtime carries what the node plugin shells out to, nothing else:
#   mdadm       assembles, grows and repairs the md RAID1 (pkg/mdraid)
#   mount       mount(8), umount(8) for staging and publishing (k8s.io/mount-utils)
#   util-linux  blkid (is the device blank? which filesystem?), fsck (wrapper)
#   e2fsprogs   mkfs.ext4, fsck.ext4/e2fsck, resize2fs
#   xfsprogs    mkfs.xfs, xfs_growfs
#   kmod        modprobe/lsmod, for an administrator in `kubectl exec`
#               (nvmirror loads no module itself: the hosts do, at boot)
#   nvme-cli    `nvme list` and friends, for the same administrator; optional,
#               nvmirror talks to /dev/nvme-fabrics and sysfs directly
#   ca-certificates  system roots, when etcd or syslog use a public CA
# test/image checks every program the code runs is provided here.
#
# It runs as root, and cannot do otherwise where it matters: the node plugin
# writes /dev/nvme-fabrics, runs mdadm and mounts into kubelet's directories,
# and the storage node agent writes the kernel's nvmet configfs; both are
# privileged containers. The provisioner and the CSI controller need no
# privilege: deploy/ runs them as user 65532 with a read-only root
# filesystem and no capabilities.
FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      mdadm mount util-linux e2fsprogs xfsprogs kmod nvme-cli ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/ /usr/local/bin/
# Declared after the package layer: every RUN after an ARG sees it (as an
# environment variable), so a new version would miss the cache of the
# package install and download it all again.
ARG VERSION=dev
LABEL org.opencontainers.image.title="nvmirror" \
      org.opencontainers.image.description="CSI driver for md RAID1 volumes mirrored over NVMe-oF replicas" \
      org.opencontainers.image.source="https://github.com/nvmirror/nvmirror" \
      org.opencontainers.image.version="${VERSION}"
# No default command: the image holds four programs and runs the one a
# manifest names. nvmirrorctl's help is the harmless default.
CMD ["nvmirrorctl", "-h"]
