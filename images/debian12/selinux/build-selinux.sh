#!/usr/bin/env bash
# Turns a copy of the cached Debian 12 base root filesystem into the SELinux variant's root:
# Debian's reference policy (selinux-policy-default) and tools, the audit daemon, and
# /etc/selinux/config set to enforcing. Labelling happens later, in scripts/build-image.sh,
# once the overlay and the bootstrapd binary are in place (setfiles must see every file).
#
# Usage: build-selinux.sh ROOTFS MIRROR
# Called by scripts/build-image.sh --selinux, which caches the result by the hash of the base
# and of this directory.
set -euo pipefail

rootfs=${1:?usage: build-selinux.sh ROOTFS MIRROR}
mirror=${2:?usage: build-selinux.sh ROOTFS MIRROR}
here=$(cd "$(dirname "$0")" && pwd)
suite=bookworm

list() { grep -v -e '^#' -e '^[[:space:]]*$' "$1"; }

mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount -l "${mounted[$i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT

mount -t proc proc "$rootfs/proc"
mounted+=("$rootfs/proc")
mount --bind /sys "$rootfs/sys"
mounted+=("$rootfs/sys")
mount --rbind /dev "$rootfs/dev"
mount --make-rslave "$rootfs/dev"
mounted+=("$rootfs/dev")
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 0755 "$rootfs/usr/sbin/policy-rc.d"

security_mirror=${mirror%/debian}/debian-security
cat >"$rootfs/etc/apt/sources.list" <<EOS
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
EOS

in_root() { chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }

echo "build-selinux: installing the policy and tools"
mapfile -t pkgs < <(list "$here/packages")
in_root apt-get update -qq
in_root apt-get -y -qq --no-install-recommends install "${pkgs[@]}" >/dev/null
in_root apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/*
rm -f "$rootfs/usr/sbin/policy-rc.d"

# Enforcing from the first boot. selinux-activate is not run: it edits GRUB (the VM boots its
# kernel directly; the image carries the command line in image.env) and schedules an
# autorelabel reboot, which build-time labelling makes unnecessary.
sed -i -e 's/^SELINUX=.*/SELINUX=enforcing/' -e 's/^SELINUXTYPE=.*/SELINUXTYPE=default/' \
  "$rootfs/etc/selinux/config"
grep -qx 'SELINUX=enforcing' "$rootfs/etc/selinux/config" \
  || { echo "build-selinux: /etc/selinux/config not set to enforcing" >&2; exit 1; }
[ -f "$rootfs/etc/selinux/default/contexts/files/file_contexts" ] \
  || { echo "build-selinux: no file_contexts: the policy did not install" >&2; exit 1; }
in_root systemctl enable auditd.service >/dev/null 2>&1
echo "build-selinux: done ($(in_root dpkg-query -W -f='${Version}' selinux-policy-default))"
