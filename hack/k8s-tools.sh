#!/usr/bin/env bash
# Builds the Kubernetes binaries that the control-plane e2e (test/k8s) runs:
# kube-apiserver, kube-controller-manager, kubectl and the CSI sidecars
# csi-provisioner, csi-attacher and csi-resizer. etcd is Debian's
# (hack/install-deps.sh).
#
# Each comes from a helper module under hack/k8s/ (its own go.mod, pinned
# versions, upstream's replace lines), never from the main go.mod. The binaries
# are static, stripped and cached in ~/.cache/nvmirror/k8s/<key>/bin ($NVMIRROR_K8S_CACHE),
# where <key> hashes
# the helper modules' go.mod/go.sum, this script and the Go version: a second
# run with nothing changed costs nothing.
#
# A cold build takes about 10 minutes on 2 cores and fills about 7 GB of build
# cache, of no use to anything else: it uses a temporary GOCACHE, deleted
# afterwards. Module downloads stay in the normal GOMODCACHE.
#
#   hack/k8s-tools.sh                 build if needed; print the bin directory last
#   hack/k8s-tools.sh --print-bin-dir print the bin directory (built or not), build nothing
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
GO=${GO:-go}

# module directory : packages it builds
modules=(
  "hack/k8s/kubernetes:k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl"
  "hack/k8s/csi-provisioner:github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner"
  "hack/k8s/csi-attacher:github.com/kubernetes-csi/external-attacher/v4/cmd/csi-attacher"
  "hack/k8s/csi-resizer:github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer"
)
binaries=(kube-apiserver kube-controller-manager kubectl csi-provisioner csi-attacher csi-resizer)

goversion=$("$GO" env GOVERSION)
key=$({
  echo "$goversion"
  cat "${BASH_SOURCE[0]}"
  for entry in "${modules[@]}"; do
    dir=${entry%%:*}
    echo "== $dir"
    cat "$dir/go.mod" "$dir/go.sum"
  done
} | sha256sum | cut -c1-16)
# Outside the work tree by default, so every clone on a machine (CI runs a
# fresh clone each time) shares the one 10-minute build; NVMIRROR_K8S_CACHE
# overrides, e.g. to keep it inside the repo's ignored .cache/.
cache="${NVMIRROR_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nvmirror/k8s}"
out="$cache/$key"

if [ "${1:-}" = "--print-bin-dir" ]; then
  echo "$out/bin"
  exit 0
fi

complete() {
  [ -f "$out/complete" ] || return 1
  for b in "${binaries[@]}"; do [ -x "$out/bin/$b" ] || return 1; done
}

mkdir -p "$cache"
# Two builds at once (two make runs) would each spend 10 minutes and 7 GB:
# the second waits for the first and then finds the binaries.
exec 9>"$cache/.lock"
flock 9

if complete; then
  echo "k8s tools up to date ($goversion, key $key)" >&2
  echo "$out/bin"
  exit 0
fi

# The version that a binary reports (kube-apiserver's /version, kubectl version,
# a sidecar's --version) comes from its module version, as upstream's release
# builds set it; without it they say v0.0.0-master or "unknown".
modversion() { (cd "$1" && "$GO" list -m -f '{{.Version}}' "$2"); }
kube_version=$(modversion hack/k8s/kubernetes k8s.io/kubernetes)
kube_minor=$(echo "$kube_version" | cut -d. -f2)
kube_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

tmp=$(mktemp -d "$cache/build.XXXXXX")
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/gocache"
export GOCACHE="$tmp/gocache" CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -mod=readonly"

start=$SECONDS
echo "building k8s tools ($goversion, key $key) into $out/bin; a cold build takes ~10 min on 2 cores" >&2
for entry in "${modules[@]}"; do
  dir=${entry%%:*}
  pkgs=${entry#*:}
  ldflags="-s -w"
  case "$dir" in
    hack/k8s/kubernetes) ldflags+="$kube_ldflags" ;;
    *) ldflags+=" -X main.version=$(modversion "$dir" "$(echo "$pkgs" | sed 's#/cmd/.*##')")" ;;
  esac
  t=$SECONDS
  # One retry: on a shared build machine a cold build has failed with a
  # transient ENOSPC in the compiler's temporary files; the retry reuses
  # what the first attempt compiled (GOCACHE), so it costs little when the
  # failure was transient and fails the same way when it was not.
  # shellcheck disable=SC2086 # pkgs is a list
  if ! (cd "$dir" && "$GO" build -trimpath -ldflags "$ldflags" -o "$tmp/bin/" $pkgs); then
    echo "  $dir: build failed after $(( SECONDS - t ))s; retrying once" >&2
    sleep 10
    (cd "$dir" && "$GO" build -trimpath -ldflags "$ldflags" -o "$tmp/bin/" $pkgs)
  fi
  echo "  $dir: $(( SECONDS - t ))s" >&2
done
for b in "${binaries[@]}"; do
  [ -x "$tmp/bin/$b" ] || { echo "k8s-tools: $b was not built" >&2; exit 1; }
done

rm -rf "$out"
mkdir -p "$out"
mv "$tmp/bin" "$out/bin"
echo "$goversion" >"$out/complete"
# Binaries of older keys are ~420 MB each and nothing uses them any more.
for old in "$cache"/*/; do
  old=${old%/}
  [ "$old" = "$out" ] || [ ! -f "$old/complete" ] || { echo "removing stale $old" >&2; rm -rf "$old"; }
done
echo "built k8s tools in $(( SECONDS - start ))s ($(du -sh "$out/bin" | cut -f1))" >&2
echo "$out/bin"
