#!/usr/bin/env bash
# Unpacks a Debian kernel package for the test VM into .cache/vm without
# installing it: the host's /boot and bootloader are never touched.
#
#   hack/vm-kernel.sh [PACKAGE [SUITE [LINK]]]
#
# PACKAGE defaults to the kernel that Debian's linux-image-amd64 currently
# depends on. The tree lands in .cache/vm/kernel-<version> (kept as a cache
# keyed by version) and .cache/vm/LINK (default "kernel") points at it.
#
# SUITE names a Debian suite the machine's sources do not list (e.g.
# bookworm-backports for the 6.12 kernel with NVMe in-band authentication).
# Its package index goes into a private apt state under .cache/vm/apt: the
# machine's sources and lists are never changed.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=.cache/vm
mkdir -p "$cache/debs"

suite=${2:-}
link=${3:-kernel}
apt_opts=()
if [ -n "$suite" ]; then
  aptdir="$PWD/$cache/apt/$suite"
  mkdir -p "$aptdir/lists/partial"
  echo "deb http://deb.debian.org/debian $suite main" >"$aptdir/sources.list"
  apt_opts=(-o "Dir::Etc::sourcelist=$aptdir/sources.list" -o "Dir::Etc::sourceparts=-"
            -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=")
fi

pkg=${1:-}
if [ -z "$pkg" ]; then
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  if [ -z "$pkg" ]; then
    if [ "$(id -u)" -eq 0 ]; then apt-get update -qq; fi
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  fi
fi
if [ -z "$pkg" ]; then
  echo "cannot resolve the kernel package of linux-image-amd64 (run apt-get update as root)" >&2
  exit 1
fi
ver=${pkg#linux-image-}
dest="$cache/kernel-$ver"
if [ -f "$dest/lib/modules/$ver/modules.dep" ] && [ -r "$dest/boot/vmlinuz-$ver" ]; then
  ln -sfn "kernel-$ver" "$cache/$link"
  echo "kernel $ver: cached in $dest"
  exit 0
fi
echo "kernel $ver: downloading $pkg"
# As root, apt drops privileges to _apt, which cannot write into our cache.
sandbox=()
if [ "$(id -u)" -eq 0 ]; then sandbox=(-o APT::Sandbox::User=root); fi
if [ -n "$suite" ]; then
  apt-get -q "${sandbox[@]}" "${apt_opts[@]}" update >/dev/null
fi
(cd "$cache/debs" && rm -f "${pkg}"_*.deb && apt-get download -q "${sandbox[@]}" "${apt_opts[@]}" "$pkg" >/dev/null)
deb=$(ls "$cache/debs/${pkg}"_*.deb | head -n1)
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
dpkg-deb -x "$deb" "$dest.tmp"
# Debian ships no modules.dep; the package's postinst would run depmod.
depmod -b "$dest.tmp" "$ver"
chmod a+r "$dest.tmp/boot/vmlinuz-$ver"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
ln -sfn "kernel-$ver" "$cache/$link"
rm -f "$deb"
echo "kernel $ver: unpacked in $dest"
