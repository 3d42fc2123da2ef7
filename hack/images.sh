#!/usr/bin/env bash
# Builds every container image a test Kubernetes node needs, for real and
# without a Docker engine, and exports each as a docker-archive tar that
# `ctr -n k8s.io images import` loads (docs/images.md). The images are listed
# in hack/images/images.txt (its header describes the sources).
#
# buildah (overlay storage driver where the kernel mounts overlays, else vfs;
# chroot isolation) does the work; its storage is private to this script, in
# the cache, never /var/lib/containers. Our
# Dockerfile is built unchanged, as `docker buildx build` would; its base
# images are made here: debian:<release>-slim by mmdebstrap, golang:<go>-<release>
# from that with make, git and this machine's Go. Both trust this machine's CA
# bundle (a TLS-intercepting proxy's CA included), and the golang one carries
# this machine's module proxy settings when they are not Go's defaults.
#
# The cache, ${NVMIRROR_IMAGES_CACHE:-~/.cache/nvmirror/images}:
#   base/<name>-<key>/     a base image (docker-archive) and its recipe's inputs
#   parts/<image>-<key>/   one image: image.tar, size; <key> hashes its inputs
#                          (our image: the Dockerfile, every file of its build
#                          context, VERSION and the base images; a tool's: the
#                          binary, its list line and the recipe)
#   <key>/                 what consumers use: <image>.tar (hard links into
#                          parts/), images.txt (NAME FILE BYTES) and `complete`;
#                          <key> hashes the parts' names
#   storage/<driver>/ tmp/ buildah's storage, and its temporary files and
#                          RUN --mount=type=cache directories (Go's module and
#                          build caches: a warm rebuild of our image compiles
#                          only what changed); deleting them costs one cold build
# Changing one source rebuilds only the images that depend on it. Output
# directories unused for a week, and all but the 4 most recent others, are
# removed, with whatever only they used.
#
#   hack/images.sh              build what is missing; print the output directory last
#   hack/images.sh --print-dir  print the output directory (built or not), build nothing
#
# VERSION (default: git describe, as the Makefile's) is stamped into our
# binaries and the image's version label.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
GO=${GO:-go}
list=hack/images/images.txt
cache="${NVMIRROR_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nvmirror/images}"
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
# overlay where this machine mounts it (a trial mount in the cache decides),
# else vfs. vfs works wherever buildah does (no mounts), but it stores every
# layer as a full copy of the file system, so each build step copies and
# later deletes hundreds of MB: a warm rebuild of our image takes about
# five times as long (docs/images.md has both's times). The images are the
# same. NVMIRROR_IMAGES_STORAGE_DRIVER=vfs|overlay chooses.
overlay_mounts() {
  local d
  mkdir -p "$cache/tmp"
  d=$(mktemp -d "$cache/tmp/overlay-probe.XXXXXX") || return 1
  mkdir "$d/lower" "$d/upper" "$d/work" "$d/merged"
  if mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" "$d/merged" 2>/dev/null; then
    umount "$d/merged"
    rm -rf "$d"
    return 0
  fi
  rm -rf "$d"
  return 1
}
driver=${NVMIRROR_IMAGES_STORAGE_DRIVER:-}
print_dir=0
case "${1:-}" in
  --print-dir) print_dir=1 ;;
  "") ;;
  *) echo "usage: hack/images.sh [--print-dir]" >&2; exit 2 ;;
esac

hash16() { sha256sum | cut -c1-16; }
warn() { echo "images [${SECONDS}s]: $*" >&2; }
die() { warn "$*"; exit 1; }
# An input that does not exist (a go: package, a k8s tool): the build fails;
# --print-dir (which builds nothing) names the directory without that image.
missing_input() { [ "$print_dir" = 1 ] || die "$1: $2"; }
human() { numfmt --to=iec-i --suffix=B --format=%.1f "$1"; }

goversion=$("$GO" env GOVERSION)
goarch=$("$GO" env GOARCH)
goroot=$("$GO" env GOROOT)
# The base image names are the Dockerfile's FROM lines with its ARG defaults.
dockerfile_arg() { sed -n "s/^ARG $1=//p" Dockerfile | head -1; }
go_minor=$(dockerfile_arg GO_VERSION)
release=$(dockerfile_arg DEBIAN_RELEASE)
if [ -z "$go_minor" ] || [ -z "$release" ]; then
  die "Dockerfile: no ARG GO_VERSION=/DEBIAN_RELEASE= defaults"
fi
debian_image=docker.io/library/debian:$release-slim
golang_image=docker.io/library/golang:$go_minor-$release
# Our golang image carries this machine's Go, which must be the release the
# Dockerfile asks for.
case "$goversion" in
  "go$go_minor" | "go$go_minor".*) ;;
  *) die "the Dockerfile builds with Go $go_minor, this machine has $goversion" ;;
esac

# ---------------------------------------------------------------- recipes
# The text of each recipe function is part of the keys of what it makes:
# editing one rebuilds its images (and nothing else).

# buildah with its storage in the cache, one per storage driver. TMPDIR is
# where buildah 1.28 keeps RUN --mount=type=cache directories and its
# temporary layer files.
bh() {
  TMPDIR="$cache/tmp" buildah --root "$cache/storage/$driver/root" --runroot "$cache/storage/$driver/run" \
    --storage-driver "$driver" "$@"
}
export BUILDAH_ISOLATION=chroot

# debian_rootfs OUT: a Debian minbase made like upstream's -slim images
# (debuerreotype): merged /usr without the usrmerge package (and the perl it
# pulls in); no manual pages, docs but copyrights, or locales, now or in later
# installs (dpkg keeps the excludes in the image); an apt that keeps neither
# the packages it installed nor its binary caches (upstream's docker-clean:
# the Dockerfile removes only the package lists); no /dev (the runtime's);
# the security and updates suites enabled.
debian_rootfs() {
  local mirror=http://deb.debian.org/debian conf
  conf=$(mktemp -d "$cache/tmp/aptconf.XXXXXX")
  local clean='"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"'
  printf '%s\n' "DPkg::Post-Invoke { $clean; };" "APT::Update::Post-Invoke { $clean; };" \
    'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' >"$conf/docker-clean"
  echo 'Acquire::Languages "none";' >"$conf/docker-no-languages"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$conf/docker-autoremove-suggests"
  # shellcheck disable=SC2016 # mmdebstrap's hook expands $1, the chroot
  mmdebstrap --quiet --variant=minbase --mode=root --skip=output/dev \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/groff/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --customize-hook="upload $conf/docker-clean /etc/apt/apt.conf.d/docker-clean" \
    --customize-hook="upload $conf/docker-no-languages /etc/apt/apt.conf.d/docker-no-languages" \
    --customize-hook="upload $conf/docker-autoremove-suggests /etc/apt/apt.conf.d/docker-autoremove-suggests" \
    --customize-hook='rm -f "$1"/var/cache/apt/*.bin' \
    "$release" "$1" "deb $mirror $release main" "deb $mirror $release-updates main" \
    "deb http://deb.debian.org/debian-security $release-security main"
  rm -rf "$conf"
}

# debian_image ROOTFS: upstream's debian:<release>-slim config.
build_debian() {
  local c
  c=$(bh from scratch)
  bh add --quiet "$c" "$1" /
  bh copy --quiet --chmod 0644 "$c" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
  bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd '["bash"]' "$c"
  bh commit --quiet --rm "$c" "$debian_image" >/dev/null
}

# The module proxy settings that differ from Go's defaults on this machine
# (go env -changed); GOFLAGS is no proxy setting and stays out (the builder
# of a real docker build has none; test/image checks the build without it).
goproxy_env() {
  "$GO" env -changed GOPROXY GOSUMDB GONOSUMDB GONOPROXY GOPRIVATE GOINSECURE | sed "s/'//g"
}

# build_golang: upstream's golang:<go>-<release> as far as a CGO_ENABLED=0
# build needs it: make and git (no compiler), this machine's Go in
# /usr/local/go, GOPATH /go, GOTOOLCHAIN=local.
build_golang() {
  local c e envs=()
  c=$(bh from --pull=never "$debian_image")
  bh run "$c" -- sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make git ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/*'
  # After installing ca-certificates, which writes Debian's bundle.
  bh copy --quiet --chmod 0644 "$c" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
  bh copy --quiet "$c" "$goroot" /usr/local/go
  bh run "$c" -- sh -c 'mkdir -p /go/src /go/bin && chmod -R 1777 /go'
  while IFS= read -r e; do envs+=(--env "$e"); done < <(goproxy_env)
  bh config --env GOLANG_VERSION="${goversion#go}" --env GOTOOLCHAIN=local --env GOPATH=/go \
    --env PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "${envs[@]}" --workingdir /go --cmd '["bash"]' "$c"
  bh commit --quiet --rm "$c" "$golang_image" >/dev/null
}

# build_dockerfile NAME: our Dockerfile, unchanged, as `docker buildx build
# --build-arg VERSION=...` for this machine's platform. --pull=never: the
# bases are the local ones, nothing is fetched from a registry. --layers
# keeps each step's result for the next build (prune_storage removes those
# of the builder stage afterwards: keeping them saves no more than they cost
# to check, the Go caches being cache mounts).
build_dockerfile() {
  bh bud --isolation chroot --layers --pull=never --build-arg TARGETOS=linux \
    --build-arg TARGETARCH="$goarch" --build-arg VERSION="$VERSION" -f Dockerfile -t "$1" . 2>&1 | stamp
}

# stamp: each line with the seconds since the script started (the logs show
# what each step cost).
stamp() { local l; while IFS= read -r l; do printf '[%ss] %s\n' "$SECONDS" "$l"; done; }

# The smoke tests run an image just built in a working container (chroot
# isolation, as the builds); their output goes to the image's log.

# smoke_dockerfile NAME: our binaries start (the version the build was
# given), and the tools they run work with the image's libraries; and the
# size of its file system (unpacked=BYTES).
smoke_dockerfile() {
  local c out
  c=$(bh from --pull=never "$1")
  out=$(bh run "$c" -- nvmirror-csi --version)
  if [ "$out" != "$VERSION" ]; then echo "nvmirror-csi --version says '$out', want '$VERSION'"; return 1; fi
  out=$(bh run "$c" -- nvmirrorctl -h 2>&1 || true)
  case "$out" in *"usage: nvmirrorctl"*) ;; *) echo "nvmirrorctl -h: $out"; return 1 ;; esac
  bh run "$c" -- sh -c 'nvmirror-provisioner --version && nvmirror-target --version && mdadm --version && mkfs.xfs -V && mkfs.ext4 -V && blkid -V && mount -V && nvme version'
  echo "unpacked=$(du -sb "$(bh mount "$c")" | cut -f1)"
  bh rm "$c" >/dev/null
}

# build_binary NAME SOURCE BINARY [base=debian] [cmd=WORD]: one static
# binary at /BINARY as the entrypoint, FROM scratch (or the debian base).
build_binary() {
  local name=$1 source=$2 bin=$3 opt c from=scratch cmd=()
  shift 3
  for opt; do
    case "$opt" in
      base=debian) from=$debian_image ;;
      cmd=*) cmd=(--cmd "[\"${opt#cmd=}\"]") ;;
      *) die "$name: unknown option $opt" ;;
    esac
  done
  c=$(bh from --pull=never "$from")
  bh copy --quiet --chmod 0755 "$c" "$bin" "/${bin##*/}"
  bh config --entrypoint "[\"/${bin##*/}\"]" "${cmd[@]}" \
    --label "org.opencontainers.image.description=nvmirror test image: $name from $source (hack/images.sh)" "$c"
  bh commit --quiet --rm "$c" "$name" >/dev/null
}

# go_binary PKG OUTDIR: a main package of this module, as the images need it.
go_binary() {
  CGO_ENABLED=0 GOOS=linux GOARCH=$goarch "$GO" build -trimpath -buildvcs=false \
    -ldflags '-s -w' -o "$2/" "$1"
}

# build_busybox NAME DEB: Debian's static busybox at /bin/busybox and a
# symlink for every applet, so `sh -c`, dd, md5sum, mount, stat, ls... work.
build_busybox() {
  local tmp c applet
  tmp=$(mktemp -d "$cache/tmp/busybox.XXXXXX")
  dpkg-deb -x "$2" "$tmp/deb"
  mkdir -p "$tmp/root/bin" "$tmp/root/tmp" "$tmp/root/etc" "$tmp/root/root"
  chmod 1777 "$tmp/root/tmp"
  cp "$tmp/deb/bin/busybox" "$tmp/root/bin/busybox"
  for applet in $("$tmp/root/bin/busybox" --list-full); do
    [ "$applet" = bin/busybox ] && continue
    mkdir -p "$tmp/root/$(dirname "$applet")"
    ln -sf /bin/busybox "$tmp/root/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$tmp/root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/root/etc/group"
  tar -C "$tmp/root" --owner=0 --group=0 --numeric-owner -cf "$tmp/root.tar" .
  c=$(bh from scratch)
  bh add --quiet "$c" "$tmp/root.tar" /
  bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd '["sh"]' \
    --label "org.opencontainers.image.description=nvmirror test image: $1 from Debian's busybox-static (hack/images.sh)" "$c"
  bh commit --quiet --rm "$c" "$1" >/dev/null
  rm -rf "$tmp"
}

# build_debian_shell NAME: the local debian base under another name, with
# sh as its command: for test images whose specs only run shell scripts.
build_debian_shell() {
  local c
  c=$(bh from --pull=never "$debian_image")
  bh config --cmd '["sh"]' \
    --label "org.opencontainers.image.description=nvmirror test image: $1 from the debian base (hack/images.sh)" "$c"
  bh commit --quiet --rm "$c" "$1" >/dev/null
}

# smoke_busybox NAME: what test pods run through sh -c works.
smoke_busybox() {
  local c
  c=$(bh from --pull=never "$1")
  bh run "$c" -- sh -c 'dd if=/dev/zero of=/tmp/f bs=4k count=4 && md5sum /tmp/f && stat -c %s /tmp/f && ls -l / && mount --help 2>&1 | head -1'
  bh rm "$c" >/dev/null
}

# smoke_binary NAME BINARY: an image with a shell finds it (a scratch
# image's binary is checked by test/image: there, and static).
smoke_binary() {
  local c
  c=$(bh from --pull=never "$1")
  bh run "$c" -- sh -c "test -x /$2 && ls -l /$2"
  bh rm "$c" >/dev/null
}

# ---------------------------------------------------------------- keys

# The build context of our image exactly as BuildKit sends it (.dockerignore
# applied by moby's matcher): hack/dockerfile-lint -list-context, built once
# per version of it.
lint_key=$({ echo "$goversion"; cat hack/dockerfile-lint/go.mod hack/dockerfile-lint/go.sum hack/dockerfile-lint/*.go; } | hash16)
lint_tool="$cache/tools/dockerfile-lint-$lint_key"
context_files() {
  if [ ! -x "$lint_tool" ]; then
    mkdir -p "$cache/tools"
    GOWORK=off GOFLAGS=-mod=readonly "$GO" -C hack/dockerfile-lint build -o "$lint_tool.tmp" . >&2
    mv "$lint_tool.tmp" "$lint_tool"
  fi
  "$lint_tool" -list-context .
}

cabundle=$(sha256sum /etc/ssl/certs/ca-certificates.crt | cut -d' ' -f1)
debian_key=$({ declare -f debian_rootfs build_debian; echo "$release $cabundle $(mmdebstrap --version 2>/dev/null)"; } | hash16)
golang_key=$({ declare -f build_golang goproxy_env; echo "$debian_key $goversion $goarch"; goproxy_env; sha256sum "$goroot/go.env"; } | hash16)

# The apt candidate of busybox-static and its .deb's checksum, without
# downloading it.
busybox_deb() {
  local v
  v=$(apt-cache policy busybox-static | sed -n 's/^ *Candidate: //p')
  if [ -z "$v" ] || [ "$v" = "(none)" ]; then die "busybox-static: no apt candidate (apt-get update?)"; fi
  echo "$v $(apt-cache show "busybox-static=$v" | sed -n 's/^SHA256: //p' | head -1)"
}

# go_key PKG: what a go: image's binary is built from: the packages it links
# (this module's by content, others by module version), go.sum, Go.
go_key() {
  local deps
  deps=$(CGO_ENABLED=0 GOOS=linux GOARCH=$goarch "$GO" list -deps \
    -f '{{if not .Standard}}{{.ImportPath}} {{with .Module}}{{.Path}}@{{.Version}}{{end}} {{.Dir}} {{join .GoFiles " "}} {{join .EmbedFiles " "}}{{end}}' "$1") || return 1
  {
    echo "$deps"
    echo "$deps" | awk -v root="$root" '$3 ~ "^"root { for (i = 4; i <= NF; i++) print $3 "/" $i }' | xargs -r sha256sum
    cat go.sum
    echo "$goversion $goarch"
  } | hash16
}

k8s_bin=$(hack/k8s-tools.sh --print-bin-dir)
if [ "$print_dir" = 0 ]; then
  for tool in buildah mmdebstrap; do
    command -v "$tool" >/dev/null || die "$tool is not installed (make deps)"
  done
  # Build the tools if needed (a no-op when `make k8s-tools` ran); a binary
  # missing afterwards is one hack/k8s-tools.sh does not build (yet).
  k8s_bin=$(hack/k8s-tools.sh)
fi

# One entry per image of the list: name, source, options, part directory.
names=() sources=() options=() parts=() skipped=()
while read -r name source rest; do
  case "$name" in "" | "#"*) continue ;; esac
  line="$name $source${rest:+ $rest}"
  case "$source" in
    dockerfile)
      mapfile -t ctx < <(context_files)
      [ ${#ctx[@]} -gt 0 ] || die "empty build context"
      key=$({ echo "$line $VERSION $goarch $debian_key $golang_key"; declare -f build_dockerfile smoke_dockerfile bh;
              cat Dockerfile .dockerignore; sha256sum "${ctx[@]}"; } | hash16)
      ;;
    k8s-tool:*)
      bin="$k8s_bin/${source#k8s-tool:}"
      if [ ! -x "$bin" ]; then
        missing_input "$name" "$bin does not exist (hack/k8s-tools.sh does not build ${source#k8s-tool:})"
        skipped+=("$line"); continue
      fi
      key=$({ echo "$line"; declare -f build_binary smoke_binary bh; sha256sum <"$bin";
              case "$rest" in *base=debian*) echo "$debian_key" ;; esac; } | hash16)
      ;;
    go:*)
      pkg=${source#go:}
      if [ ! -d "$pkg" ] || ! gokey=$(go_key "$pkg" 2>/dev/null); then
        missing_input "$name" "no Go package $pkg"
        skipped+=("$line"); continue
      fi
      key=$({ echo "$line $gokey"; declare -f build_binary smoke_binary go_binary bh;
              case "$rest" in *base=debian*) echo "$debian_key" ;; esac; } | hash16)
      ;;
    busybox)
      key=$({ echo "$line"; busybox_deb; declare -f build_busybox smoke_busybox bh; } | hash16)
      ;;
    debian)
      key=$({ echo "$line $debian_key"; declare -f build_debian_shell bh; } | hash16)
      ;;
    *) die "$list: $name: unknown source $source" ;;
  esac
  names+=("$name") sources+=("$source") options+=("$rest") parts+=("parts/${name//[\/:]/_}-$key")
done <"$list"

out_key=$(printf '%s\n' "${parts[@]}" "${skipped[@]}" | hash16)
out="$cache/$out_key"
if [ "$print_dir" = 1 ]; then
  echo "$out"
  exit 0
fi

# ---------------------------------------------------------------- build

mkdir -p "$cache/parts" "$cache/base" "$cache/tmp" "$cache/logs"
exec 9>"$cache/.lock"
flock 9
if [ -z "$driver" ]; then
  if overlay_mounts; then driver=overlay; else driver=vfs; fi
fi

# run_logged LOG CMD...: a step's output goes to its log, shown when it
# fails. It runs in a subshell with errexit on: bash ignores errexit in a
# function called as a condition (`if ! step`), which would let a step go
# on past its first failure.
run_logged() {
  local log=$1 rc
  shift
  set +e
  (set -e; "$@") >>"$log" 2>&1
  rc=$?
  set -e
  if [ "$rc" != 0 ]; then
    warn "failed ($*); the end of $log:"
    tail -n 40 "$log" >&2
    exit 1
  fi
}

# The base images in storage carry a second tag, localhost/nvmirror-images/
# base:KEY, saying which build of their recipe they are.
base_tag() { echo "localhost/nvmirror-images/base:$1"; }
image_id() { bh images --noheading --no-trunc --format '{{.ID}}' "$1" 2>/dev/null; }

# ensure_base NAME KEY DIR BUILD: the base image NAME in storage as built for
# KEY: found in storage, or loaded from DIR/image.tar, or built by BUILD
# (and saved in DIR, so that deleting storage/ costs no rebuild).
ensure_base() {
  local name=$1 key=$2 dir=$3 build=$4 t=$SECONDS id
  if id=$(image_id "$(base_tag "$key")") && [ -n "$id" ]; then
    [ "$(image_id "$name")" = "$id" ] || bh tag "$(base_tag "$key")" "$name"
    return 0
  fi
  if [ -f "$dir/complete" ]; then
    run_logged "$cache/logs/base.log" bh pull --quiet "docker-archive:$dir/image.tar"
    bh tag "$name" "$(base_tag "$key")"
    warn "$name: loaded from $dir in $((SECONDS - t))s"
    return 0
  fi
  warn "$name: building (logs in $cache/logs)"
  rm -f "$cache"/logs/{mmdebstrap,debian,golang,base}.log
  "$build"
  bh tag "$name" "$(base_tag "$key")"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  run_logged "$cache/logs/base.log" bh push --quiet "$name" "docker-archive:$dir.tmp/image.tar:$name"
  touch "$dir.tmp/complete"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  warn "$name: built in $((SECONDS - t))s ($(human "$(stat -c %s "$dir/image.tar")"))"
}

make_debian() {
  local t=$SECONDS rootfs="$cache/tmp/rootfs-$debian_key.tar"
  run_logged "$cache/logs/mmdebstrap.log" debian_rootfs "$rootfs"
  warn "  mmdebstrap $release: $((SECONDS - t))s"
  run_logged "$cache/logs/debian.log" build_debian "$rootfs"
  rm -f "$rootfs"
}
make_golang() { run_logged "$cache/logs/golang.log" build_golang; }

debian_dir="$cache/base/debian-$debian_key"
golang_dir="$cache/base/golang-$golang_key"
need_debian() { ensure_base "$debian_image" "$debian_key" "$debian_dir" make_debian; }
need_golang() { need_debian; ensure_base "$golang_image" "$golang_key" "$golang_dir" make_golang; }

# Left by a run killed half-way: its working containers and temporary files
# (not tmp/buildah-cache-*, the RUN --mount=type=cache directories).
bh rm --all >/dev/null 2>&1 || true
rm -rf "$cache"/tmp/busybox.* "$cache"/tmp/go.* "$cache"/tmp/rootfs-* "$cache"/parts/*.tmp "$cache"/base/*.tmp "$cache"/*.tmp

start=$SECONDS
built=0
for i in "${!names[@]}"; do
  name=${names[$i]} source=${sources[$i]} opts=${options[$i]} part="$cache/${parts[$i]}"
  [ -f "$part/complete" ] && continue
  t=$SECONDS
  log="$cache/logs/${name//[\/:]/_}.log"
  : >"$log"
  warn "$name: building from $source (log: $log)"
  unpacked=
  case "$source" in
    dockerfile)
      need_golang
      run_logged "$log" build_dockerfile "$name"
      warn "  built in $((SECONDS - t))s"
      run_logged "$log" smoke_dockerfile "$name"
      unpacked=$(sed -n 's/^unpacked=//p' "$log" | tail -n 1)
      warn "  runs: nvmirror-csi --version ($VERSION), nvmirrorctl -h, the other binaries, mdadm, mkfs.*, blkid, mount, nvme"
      ;;
    k8s-tool:*)
      case " $opts " in *" base=debian "*) need_debian ;; esac
      # shellcheck disable=SC2086 # the options are a list
      run_logged "$log" build_binary "$name" "$source" "$k8s_bin/${source#k8s-tool:}" $opts
      case " $opts " in *" base=debian "*) run_logged "$log" smoke_binary "$name" "${source#k8s-tool:}" ;; esac
      ;;
    go:*)
      case " $opts " in *" base=debian "*) need_debian ;; esac
      gobin=$(mktemp -d "$cache/tmp/go.XXXXXX")
      run_logged "$log" go_binary "${source#go:}" "$gobin"
      # shellcheck disable=SC2086
      run_logged "$log" build_binary "$name" "$source" "$gobin/$(basename "${source#go:}")" $opts
      rm -rf "$gobin"
      case " $opts " in *" base=debian "*) run_logged "$log" smoke_binary "$name" "$(basename "${source#go:}")" ;; esac
      ;;
    busybox)
      read -r bbver _ < <(busybox_deb)
      # apt-get download writes the epoch's colon as %3a.
      deb="$cache/debs/busybox-static_${bbver/:/%3a}_$(dpkg --print-architecture).deb"
      if [ ! -f "$deb" ]; then
        rm -rf "$cache/debs" && mkdir -p "$cache/debs"
        (cd "$cache/debs" && run_logged "$log" apt-get download "busybox-static=$bbver")
        [ -f "$deb" ] || die "apt-get download busybox-static=$bbver did not write $deb"
      fi
      run_logged "$log" build_busybox "$name" "$deb"
      run_logged "$log" smoke_busybox "$name"
      ;;
    debian)
      need_debian
      run_logged "$log" build_debian_shell "$name"
      ;;
  esac
  rm -rf "$part.tmp" && mkdir -p "$part.tmp"
  run_logged "$log" bh push --quiet "$name" "docker-archive:$part.tmp/image.tar:$name"
  size=$(stat -c %s "$part.tmp/image.tar")
  echo "$name $size ${unpacked:-}" >"$part.tmp/info"
  touch "$part.tmp/complete"
  rm -rf "$part" && mv "$part.tmp" "$part"
  warn "  $name: $((SECONDS - t))s, $(human "$size")${unpacked:+ (unpacked $(human "$unpacked"))}"
  built=$((built + 1))
done

# The output directory: hard links (copies on a file system without them).
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
echo "# NAME FILE BYTES (hack/images.sh; docs/images.md)" >"$out.tmp/images.txt"
for i in "${!names[@]}"; do
  name=${names[$i]} part="$cache/${parts[$i]}" file="${names[$i]//[\/:]/_}.tar"
  ln "$part/image.tar" "$out.tmp/$file" 2>/dev/null || cp "$part/image.tar" "$out.tmp/$file"
  echo "$name $file $(stat -c %s "$part/image.tar")" >>"$out.tmp/images.txt"
done
printf '%s\n' "${parts[@]}" "base/${debian_dir##*/}" "base/${golang_dir##*/}" >"$out.tmp/inputs"
[ ${#skipped[@]} -eq 0 ] || printf '%s\n' "${skipped[@]}" >"$out.tmp/skipped"
echo "$VERSION" >"$out.tmp/complete"
rm -rf "$out" && mv "$out.tmp" "$out"

# ---------------------------------------------------------------- cleanup

# prune_storage: remove the images nothing names or builds on, until none is
# left (each round frees the parents of the last): the former builds of our
# image, and the builder stage's intermediate images (vfs stores each as a
# full copy of its file system, 0.5 GB apiece). What the current image builds
# on stays (the runtime stage's package layer); the builder's caches survive
# as RUN --mount=type=cache directories, so a rebuild compiles only what
# changed. Storage thus holds about 1.5 GB after a run.
prune_storage() {
  local before after
  after=$(bh images --all --noheading --quiet | wc -l)
  while :; do
    before=$after
    bh rmi --prune >/dev/null 2>&1 || true
    after=$(bh images --all --noheading --quiet | wc -l)
    [ "$after" -lt "$before" ] || break
  done
}

# Stale output directories: other than this one, unused for a week or beyond
# the 4 most recently used; then every part, base image and tool that no
# remaining output directory uses; then what buildah's storage held for them.
cleanup() {
  local d n=0 keep_tags
  while read -r d; do
    d=${d#* }
    [ "$d" = "$out" ] && continue
    n=$((n + 1))
    if [ "$n" -gt 4 ] || [ -n "$(find "$d/complete" -mtime +7)" ]; then
      warn "removing stale $d"
      rm -rf "$d"
    fi
  done < <(for d in "$cache"/*/complete; do [ -f "$d" ] && echo "$(stat -c %Y "$d") ${d%/complete}"; done | sort -rn)
  for d in "$cache"/parts/* "$cache"/base/*; do
    [ -e "$d" ] || continue
    grep -qxF "${d#"$cache"/}" "$cache"/*/inputs 2>/dev/null && continue
    warn "removing stale $d"
    rm -rf "$d"
  done
  # buildah's storage as the first version of this script kept it
  rm -rf "$cache/storage/root" "$cache/storage/run"
  find "$cache/tools" -mindepth 1 -maxdepth 1 ! -name "dockerfile-lint-$lint_key" -exec rm -rf {} + 2>/dev/null || true
  # Base images of removed keys, then every image nothing names or builds on
  # (the layers --layers cached for a former build of our image).
  keep_tags=$(for d in "$cache"/base/*/; do d=${d%/}; echo "localhost/nvmirror-images/base:${d##*-}"; done)
  bh images --noheading --format '{{.Name}}:{{.Tag}}' | grep '^localhost/nvmirror-images/base:' |
    { grep -vxF "$keep_tags" || true; } | while read -r d; do bh rmi "$d" >/dev/null 2>&1 || true; done
  prune_storage
}
touch "$out/complete"
cleanup

warn "built $built image(s) in $((SECONDS - start))s; $out holds (docker-archive tar sizes):"
for i in "${!names[@]}"; do
  read -r _ size unpacked <"$cache/${parts[$i]}/info"
  printf '  %-56s %8s%s\n' "${names[$i]}" "$(human "$size")" "${unpacked:+ (unpacked $(human "$unpacked"))}" >&2
done
if [ ${#skipped[@]} -gt 0 ]; then
  warn "WARNING: ${#skipped[@]} image(s) SKIPPED (their inputs do not exist yet):"
  printf '  %s\n' "${skipped[@]}" >&2
fi
echo "$out"
