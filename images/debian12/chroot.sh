# shellcheck shell=bash
# Sourced (bash) by every image builder that runs Debian's tools inside a root filesystem:
# images/debian12/base/build-base.sh, images/debian12/selinux/build-selinux.sh,
# images/qcow2/rootfs.sh and scripts/build-box.sh. scripts/build-image.sh keys its caches on
# this file too.

chroot_mounts=()

# chroot_mount DIR: /proc, /sys and /dev for package scripts (grub-install probes devices;
# /dev recursively for /dev/pts: dpkg logs through a pty).
chroot_mount() {
  local d=$1
  mount -t proc proc "$d/proc"
  chroot_mounts+=("$d/proc")
  mount --bind /sys "$d/sys"
  chroot_mounts+=("$d/sys")
  mount --rbind /dev "$d/dev"
  mount --make-rslave "$d/dev"
  chroot_mounts+=("$d/dev")
}

# chroot_bind SRC DST: one more bind mount, undone by chroot_umount with the others.
chroot_bind() {
  mount --bind "$1" "$2"
  chroot_mounts+=("$2")
}

# chroot_umount: undoes every chroot_mount and chroot_bind, newest first.
chroot_umount() {
  local i
  for ((i = ${#chroot_mounts[@]} - 1; i >= 0; i--)); do
    umount -R "${chroot_mounts[$i]}" 2>/dev/null || umount -l "${chroot_mounts[$i]}" 2>/dev/null || true
  done
  chroot_mounts=()
}

# deny_services DIR: package scripts must not start services inside the chroot (policy-rc.d);
# allow_services DIR takes that back before the image ships.
deny_services() {
  printf '#!/bin/sh\nexit 101\n' >"$1/usr/sbin/policy-rc.d"
  chmod 0755 "$1/usr/sbin/policy-rc.d"
}
allow_services() { rm -f "$1/usr/sbin/policy-rc.d"; }

# debian_sources DIR MIRROR: DIR's apt sources, bookworm with its updates and security
# suites, the security one beside MIRROR (MIRROR/../debian-security).
debian_sources() {
  local security=${2%/debian}/debian-security
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
    "$2" "$2" "$security" >"$1/etc/apt/sources.list"
}
