#!/usr/bin/env bash
# Builds the cached base of the Debian 12 node image: a debootstrapped root filesystem with
# systemd, firewalld (enabled) and systemd-networkd, plus a local apt repository holding
# docker.io and its whole dependency closure (NOT installed in the rootfs: bootstrapd installs
# it at first boot, from that repository, with real apt).
#
# Usage: build-base.sh OUTDIR MIRROR
#   OUTDIR/rootfs   the root filesystem
#   OUTDIR/aptrepo  pool/main/*.deb + dists/bookworm/{Release,main/binary-amd64/Packages{,.gz}}
# Called by scripts/build-image.sh, which caches OUTDIR by the hash of this directory.
set -euo pipefail

out=${1:?usage: build-base.sh OUTDIR MIRROR}
mirror=${2:?usage: build-base.sh OUTDIR MIRROR}
here=$(cd "$(dirname "$0")" && pwd)
suite=bookworm
rootfs=$out/rootfs
repo=$out/aptrepo

list() { grep -v -e '^#' -e '^[[:space:]]*$' "$1"; }

# shellcheck source=images/debian12/chroot.sh
. "$here/../chroot.sh"
trap chroot_umount EXIT

echo "build-base: debootstrap $suite from $mirror"
include=$(list "$here/packages" | paste -sd, -)
debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" "$mirror" \
  >"$out/debootstrap.log" 2>&1 || { tail -n 30 "$out/debootstrap.log" >&2; exit 1; }

chroot_mount "$rootfs"
deny_services "$rootfs"
debian_sources "$rootfs" "$mirror"

in_root() { chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }

echo "build-base: upgrading to the current point release and security updates"
in_root apt-get update -qq
# Without Recommends, as debootstrap: a new kernel would otherwise pull apparmor and firmware.
in_root apt-get -y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef dist-upgrade >/dev/null
# A kernel upgrade leaves the old kernel behind (debootstrap marks it manually installed, so
# autoremove keeps it): the image boots one kernel only, the one the metapackage depends on.
# shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
keep=$(in_root dpkg-query -W -f='${Depends}' linux-image-amd64 | sed 's/[ ,].*//')
# shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
mapfile -t old_kernels < <(in_root dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' 'linux-image-[0-9]*' \
  | awk -v keep="$keep" '$2 == "ii" && $1 != keep { print $1 }')
if [ ${#old_kernels[@]} -gt 0 ]; then
  in_root apt-get -y -qq purge "${old_kernels[@]}" >/dev/null
fi
in_root apt-get -y -qq autoremove --purge >/dev/null
# shellcheck disable=SC2012 # counting kernels; the names do not matter
[ "$(ls "$rootfs"/boot/vmlinuz-* | wc -l)" = 1 ] || { echo "build-base: more than one kernel left" >&2; exit 1; }

echo "build-base: downloading the runtime packages' dependency closure"
# --download-only against this very rootfs yields exactly what the VM (booted from it) lacks.
in_root apt-get clean
mapfile -t runtime < <(list "$here/runtime-packages")
in_root apt-get -y -qq --download-only install "${runtime[@]}" >/dev/null
mkdir -p "$repo/pool/main" "$repo/dists/$suite/main/binary-amd64"
mv "$rootfs"/var/cache/apt/archives/*.deb "$repo/pool/main/"
for p in "${runtime[@]}"; do
  ls "$repo/pool/main/${p}_"*.deb >/dev/null 2>&1 || {
    echo "build-base: $p was not downloaded (already installed in the rootfs?)" >&2
    exit 1
  }
done

echo "build-base: configuring units"
in_root systemctl enable firewalld.service systemd-networkd.service >/dev/null 2>&1
# Debian links wait-online through systemd-networkd's Also=; make it explicit for network-online.target.
in_root systemctl enable systemd-networkd-wait-online.service >/dev/null 2>&1
for u in firewalld.service systemd-networkd.service systemd-networkd-wait-online.service; do
  [ "$(in_root systemctl is-enabled "$u")" = enabled ] || { echo "build-base: $u not enabled" >&2; exit 1; }
done

in_root apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/*
allow_services "$rootfs"
chroot_umount

# Clones of this image must not share a machine id (DHCP client identity, journal).
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"

echo "build-base: indexing the local apt repository"
(
  cd "$repo"
  apt-ftparchive packages pool >"dists/$suite/main/binary-amd64/Packages"
  gzip -9nk "dists/$suite/main/binary-amd64/Packages"
  apt-ftparchive \
    -o APT::FTPArchive::Release::Origin=bootstrapd-e2e \
    -o APT::FTPArchive::Release::Suite=$suite \
    -o APT::FTPArchive::Release::Codename=$suite \
    -o APT::FTPArchive::Release::Architectures=amd64 \
    -o APT::FTPArchive::Release::Components=main \
    release "dists/$suite" >"dists/$suite/Release.tmp"
  mv "dists/$suite/Release.tmp" "dists/$suite/Release"
)
# shellcheck disable=SC2012 # counting files; the names do not matter
echo "build-base: done ($(ls "$repo/pool/main" | wc -l) packages in the local repository)"
