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

list() { grep -v -e '^#' -e '^[[:space:]]*$' "$1"; }

# shellcheck source=images/debian12/chroot.sh
. "$here/../chroot.sh"
trap chroot_umount EXIT
chroot_mount "$rootfs"
deny_services "$rootfs"
debian_sources "$rootfs" "$mirror"

in_root() { chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }

# container_selinux: a local package named container-selinux holding the reference policy's own
# container and docker modules. Debian 12's policy source has them (modules.conf: module), but
# selinux-policy-default ships neither, and Debian has no container-selinux package: without
# this, no Debian node can satisfy host.selinux: require. It takes the place RHEL's
# container-selinux has there (README, SELinux); built here from Debian's own policy source and
# headers, which are purged again afterwards (make stays).
container_selinux() {
  local work=$rootfs/tmp/container-selinux version
  echo "build-selinux: building container-selinux from the policy source"
  in_root apt-get -y -qq --no-install-recommends install selinux-policy-dev selinux-policy-src >/dev/null
  rm -rf "$work"
  mkdir -p "$work/src" "$work/pkg/DEBIAN" "$work/pkg/usr/share/selinux/packages/container-selinux"
  tar -I zstd -xf "$rootfs/usr/src/selinux-policy-src.tar.zst" -C "$work/src" \
    --strip-components=4 selinux-policy-src/policy/modules/services/{container,docker}.{te,fc}
  in_root make -s -C /tmp/container-selinux/src -f /usr/share/selinux/devel/Makefile \
    container.pp docker.pp >"$work/make.log" 2>&1 || { tail -n 20 "$work/make.log" >&2; exit 1; }
  cp "$work"/src/{container,docker}.pp "$work/pkg/usr/share/selinux/packages/container-selinux/"
  # shellcheck disable=SC2016 # dpkg-query's own format field, not a shell expansion
  version=$(in_root dpkg-query -W -f='${Version}' selinux-policy-default)
  cat >"$work/pkg/DEBIAN/control" <<EOC
Package: container-selinux
Version: ${version#*:}+bootstrapd1
Architecture: all
Maintainer: bootstrapd e2e <e2e@localhost>
Depends: selinux-policy-default (= $version), policycoreutils
Description: reference policy container and docker modules (bootstrapd e2e image)
 Built from Debian's selinux-policy-src for the SELinux variant of the e2e node image.
EOC
  cat >"$work/pkg/DEBIAN/postinst" <<'EOC'
#!/bin/sh
set -e
cd /usr/share/selinux/packages/container-selinux
semodule -i container.pp docker.pp
EOC
  printf '#!/bin/sh\nset -e\nsemodule -r docker container || true\n' >"$work/pkg/DEBIAN/prerm"
  chmod 0755 "$work/pkg/DEBIAN/postinst" "$work/pkg/DEBIAN/prerm"
  dpkg-deb --root-owner-group -b "$work/pkg" "$work/container-selinux.deb" >/dev/null
  in_root apt-get -y -qq purge selinux-policy-dev selinux-policy-src >/dev/null
  in_root apt-get -y -qq autoremove --purge >/dev/null
  in_root dpkg -i /tmp/container-selinux/container-selinux.deb >/dev/null
  rm -rf "$work"
  # grep without -q reads the whole list: under pipefail, grep -q exiting at its match would
  # fail the pipeline whenever semodule is still writing (SIGPIPE).
  in_root semodule -l | grep -x container >/dev/null || { echo "build-selinux: container module not loaded" >&2; exit 1; }
}

echo "build-selinux: installing the policy and tools"
mapfile -t pkgs < <(list "$here/packages")
in_root apt-get update -qq
in_root apt-get -y -qq --no-install-recommends install "${pkgs[@]}" >/dev/null
container_selinux
in_root apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/*
allow_services "$rootfs"

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
# shellcheck disable=SC2016 # dpkg-query's own format field, not a shell expansion
echo "build-selinux: done ($(in_root dpkg-query -W -f='${Version}' selinux-policy-default))"
