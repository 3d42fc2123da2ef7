#!/usr/bin/env bash
# Builds the Kubernetes binaries that the control-plane e2e (test/k8s) runs:
# kube-apiserver, kube-controller-manager, kubectl, the CSI sidecars
# csi-provisioner, csi-attacher, csi-resizer and csi-snapshotter, and the
# cluster's snapshot-controller. etcd is Debian's (hack/install-deps.sh).
# For a real node (test/k8s FindNodeTools): kubelet, kube-scheduler, agnhost,
# Kubernetes' e2e test binary e2e.test, and containerd v2 (containerd,
# containerd-shim-runc-v2, ctr); runc is Debian's.
#
# Each comes from a helper module under hack/k8s/ (its own go.mod, pinned
# versions, upstream's replace lines), never from the main go.mod. The binaries
# are static and stripped, and cached per helper module in
# ~/.cache/nvmirror/k8s/modules/<module>-<key>/bin ($NVMIRROR_K8S_CACHE), where
# <key> hashes that module's go.mod/go.sum, its packages, the build recipe
# below (build_module) and the Go version. The directory the tests use,
# ~/.cache/nvmirror/k8s/<key>/bin, holds hard links to every module's
# binaries, <key> hashing the modules' keys. A second run with nothing changed
# costs nothing, and changing or adding one helper module rebuilds only that
# module.
#
# A cold build of everything took 54 minutes on a 2-core machine with an
# empty module cache (2026-12-05: kubernetes 10, each sidecar 6-9,
# kubernetes-node 14, containerd 3, downloads included), when each module
# had a build cache of its own; the modules now share one (the standard
# library, gRPC, protobuf and client-go versions in common are compiled
# once). It fills several GB of build cache, of no use to anything else:
# a temporary GOCACHE, deleted afterwards. Module downloads stay in the
# normal GOMODCACHE.
#
#   hack/k8s-tools.sh                 build if needed; print the bin directory last
#   hack/k8s-tools.sh --print-bin-dir print the bin directory (built or not), build nothing
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
GO=${GO:-go}

# module directory : packages it builds (each binary is named after its
# package; PKG.test is the test binary of PKG, `go test -c`, for modules that
# build_node_module builds)
modules=(
  "hack/k8s/kubernetes:k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl"
  "hack/k8s/csi-provisioner:github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner"
  "hack/k8s/csi-attacher:github.com/kubernetes-csi/external-attacher/v4/cmd/csi-attacher"
  "hack/k8s/csi-resizer:github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer"
  "hack/k8s/csi-snapshotter:github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller"
  "hack/k8s/kubernetes-node:k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/test/images/agnhost k8s.io/kubernetes/test/e2e.test"
  "hack/k8s/containerd:github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/ctr"
)

# The version that a binary reports (kube-apiserver's /version, kubectl version,
# a sidecar's --version) comes from its module version, as upstream's release
# builds set it; without it they say v0.0.0-master or "unknown".
modversion() { (cd "$1" && "$GO" list -m -f '{{.Version}}' "$2"); }

# build_module DIR OUTDIR PKGS...: the build recipe; its text is part of every
# module's cache key, so changing it rebuilds everything.
build_module() {
  local dir=$1 outdir=$2 ldflags="-s -w" kube_version kube_minor pkg
  shift 2
  case "$dir" in
    hack/k8s/kubernetes)
      kube_version=$(modversion "$dir" k8s.io/kubernetes)
      kube_minor=$(echo "$kube_version" | cut -d. -f2)
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
      done
      ;;
    *) ldflags+=" -X main.version=$(modversion "$dir" "${1%%/cmd/*}")" ;;
  esac
  # CGO off for static binaries; -mod=readonly so the pinned go.sum is what
  # gets built.
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" \
    "$GO" build -trimpath -ldflags "$ldflags" -o "$outdir/" "$@")
}

# build_node_module DIR OUTDIR PKGS...: the recipe of the node's modules (a
# function of its own, so that its text enters only their cache keys and
# build_module's text, in every other module's key, stays as it was).
build_node_module() {
  local dir=$1 outdir=$2 ldflags="-s -w" tags version minor pkg
  local -a bins=() tests=() shims=()
  shift 2
  for pkg; do
    case "$pkg" in
      *.test) tests+=("${pkg%.test}") ;;
      */containerd-shim-runc-v2) shims+=("$pkg") ;;
      *) bins+=("$pkg") ;;
    esac
  done
  case "$dir" in
    hack/k8s/kubernetes-node)
      # As build_module's kubernetes, so that `kubelet --version` and
      # e2e.test's report the pinned version; the tags are upstream's
      # (hack/lib/golang.sh: selinux,notest, and grpcnotrace for non-debug
      # builds). kubelet needs no cgo (upstream links it dynamically, but no
      # file of it requires cgo).
      version=$(modversion "$dir" k8s.io/kubernetes)
      minor=$(echo "$version" | cut -d. -f2)
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
      done
      tags=selinux,notest,grpcnotrace
      ;;
    hack/k8s/containerd)
      # Upstream's Makefile with STATIC=1: its version package, and the
      # static tags (the btrfs snapshotter needs cgo and drops out by
      # itself); the shim also with no_grpc (it speaks ttrpc).
      version=$(modversion "$dir" github.com/containerd/containerd/v2)
      ldflags+=" -X github.com/containerd/containerd/v2/version.Version=$version"
      tags=urfave_cli_no_docs,osusergo,netgo,static_build
      ;;
    *) echo "build_node_module: no recipe for $dir" >&2; return 1 ;;
  esac
  (
    cd "$dir"
    export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly"
    if [ ${#bins[@]} -gt 0 ]; then
      "$GO" build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$outdir/" "${bins[@]}"
    fi
    if [ ${#shims[@]} -gt 0 ]; then
      "$GO" build -trimpath -tags "$tags,no_grpc" -ldflags "$ldflags" -o "$outdir/" "${shims[@]}"
    fi
    for pkg in "${tests[@]}"; do
      # Upstream builds e2e.test so too (hack/lib/golang.sh).
      "$GO" test -c -vet=off -trimpath -tags "$tags" -ldflags "$ldflags" -o "$outdir/${pkg##*/}.test" "$pkg"
    done
  )
}

# builder DIR: the function that builds the module in DIR.
builder() {
  case "$1" in
    hack/k8s/kubernetes-node | hack/k8s/containerd) echo build_node_module ;;
    *) echo build_module ;;
  esac
}

goversion=$("$GO" env GOVERSION)
recipe=$(declare -f modversion build_module)
node_recipe=$(declare -f modversion build_node_module)
hash16() { sha256sum | cut -c1-16; }
# A module's key: the Go version, its recipe, its entry above, go.mod, go.sum
# and its own Go files (kubernetes-node's tools.go; the other modules have
# none, so their keys are what they were before there were any).
modkey() {
  local dir=${1%%:*} r=$recipe f
  [ "$(builder "$dir")" = build_module ] || r=$node_recipe
  {
    echo "$goversion"; echo "$r"; echo "$1"; cat "$dir/go.mod" "$dir/go.sum"
    for f in "$dir"/*.go; do if [ -f "$f" ]; then cat "$f"; fi; done
  } | hash16
}
modname() { local dir=${1%%:*}; echo "${dir##*/}-$(modkey "$1")"; }
binaries() { local p; for p in ${1#*:}; do echo "${p##*/}"; done; }

names=()
for entry in "${modules[@]}"; do names+=("$(modname "$entry")"); done
key=$(printf '%s\n' "${names[@]}" | hash16)
# Outside the work tree by default, so every clone on a machine (CI runs a
# fresh clone each time) shares the one long build; NVMIRROR_K8S_CACHE
# overrides, e.g. to keep it inside the repo's ignored .cache/.
cache="${NVMIRROR_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nvmirror/k8s}"
out="$cache/$key"

if [ "${1:-}" = "--print-bin-dir" ]; then
  echo "$out/bin"
  exit 0
fi

# complete DIR BINARIES...: DIR/bin holds every binary of a finished build.
complete() {
  local d=$1 b
  shift
  [ -f "$d/complete" ] || return 1
  for b in "$@"; do [ -x "$d/bin/$b" ] || return 1; done
}

mkdir -p "$cache/modules"
# Two builds at once (two make runs) would each spend the build time and
# disk: the second waits for the first and then finds the binaries.
exec 9>"$cache/.lock"
flock 9

# Stale entries: a tests' directory of other modules unused for a week (every
# run touches the one it uses; a directory of the old layout, with binaries of
# its own and no modules file, at once), then every module build that no
# tests' directory links any more. Clones on one machine at different
# versions (two branches) thus share the modules they have in common and keep
# the rest while both are in use.
cleanup() {
  local old mod
  for old in "$cache"/*/; do
    old=${old%/}
    [ "$old" != "$out" ] && [ "$old" != "$cache/modules" ] && [ -f "$old/complete" ] || continue
    if [ ! -f "$old/modules" ] || [ -n "$(find "$old/complete" -mtime +7)" ]; then
      echo "removing stale $old" >&2
      rm -rf "$old"
    fi
  done
  for mod in "$cache"/modules/*/; do
    mod=${mod%/}
    [ -d "$mod" ] || continue
    grep -qxF "${mod##*/}" "$cache"/*/modules 2>/dev/null && continue
    echo "removing stale $mod" >&2
    rm -rf "$mod"
  done
}

all=()
for entry in "${modules[@]}"; do mapfile -t -O "${#all[@]}" all < <(binaries "$entry"); done
if complete "$out" "${all[@]}"; then
  touch "$out/complete"
  cleanup
  echo "k8s tools up to date ($goversion, key $key)" >&2
  echo "$out/bin"
  exit 0
fi

# Whatever a build killed midway left (the lock says none is running).
chmod -R u+w "$cache"/gocache.* "$cache"/build.* 2>/dev/null || true
rm -rf "$cache"/gocache.* "$cache"/build.*

start=$SECONDS
built=0
# One build cache for every module this run builds, deleted at the end:
# they share the standard library, gRPC, protobuf and often client-go at
# the same versions, which a cache per module compiled again each time.
gocache=$(mktemp -d "$cache/gocache.XXXXXX")
tmp=
trap 'chmod -R u+w "$gocache" $tmp 2>/dev/null; rm -rf "$gocache" $tmp' EXIT
for i in "${!modules[@]}"; do
  entry=${modules[$i]}
  dir=${entry%%:*}
  mod="$cache/modules/${names[$i]}"
  mapfile -t bins < <(binaries "$entry")
  if complete "$mod" "${bins[@]}"; then continue; fi
  echo "building $dir ($goversion) into $mod/bin" >&2
  tmp=$(mktemp -d "$cache/build.XXXXXX")
  mkdir -p "$tmp/bin"
  t=$SECONDS
  # One retry: on a shared build machine a cold build has failed with a
  # transient ENOSPC in the compiler's temporary files, and been OOM-killed
  # while other jobs filled the memory (kubernetes-node's go test -c, once);
  # the retry reuses what the first attempt compiled (GOCACHE), so it costs
  # little when the failure was transient and fails the same way when it was
  # not.
  build=$(builder "$dir")
  # shellcheck disable=SC2086 # the packages are a list
  if ! GOCACHE="$gocache" "$build" "$dir" "$tmp/bin" ${entry#*:}; then
    echo "  $dir: build failed after $(( SECONDS - t ))s; retrying once" >&2
    sleep 10
    # shellcheck disable=SC2086
    GOCACHE="$gocache" "$build" "$dir" "$tmp/bin" ${entry#*:}
  fi
  for b in "${bins[@]}"; do
    [ -x "$tmp/bin/$b" ] || { echo "k8s-tools: $b was not built" >&2; exit 1; }
  done
  rm -rf "$mod"
  mkdir -p "$mod"
  mv "$tmp/bin" "$mod/bin"
  echo "$goversion" >"$mod/complete"
  chmod -R u+w "$tmp"; rm -rf "$tmp"; tmp=
  echo "  $dir: $(( SECONDS - t ))s ($(du -sh "$mod/bin" | cut -f1))" >&2
  built=$((built + 1))
done

# The tests' directory: hard links (copies on a file system without them).
rm -rf "$out"
mkdir -p "$out/bin"
for name in "${names[@]}"; do
  for f in "$cache/modules/$name/bin/"*; do
    ln "$f" "$out/bin/" 2>/dev/null || cp "$f" "$out/bin/"
  done
done
printf '%s\n' "${names[@]}" >"$out/modules"
echo "$goversion" >"$out/complete"

cleanup
echo "k8s tools: built $built module(s) in $(( SECONDS - start ))s; $out/bin ($(du -sh "$out/bin" | cut -f1))" >&2
echo "$out/bin"
