#!/usr/bin/env bash
# Installs what building and testing bootstrapd needs on a fresh Debian 12 machine (as root).
# Idempotent and quiet when everything is already there. What counts is the commands and files
# themselves, not package names (scripts/host-tools.sh says why).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/host-tools.sh
. scripts/host-tools.sh
# shellcheck source=tests/e2e/lib.sh
. tests/e2e/lib.sh

host_tools_need install-deps \
  debootstrap:debootstrap mkfs.vfat:dosfstools mcopy:mtools mkfs.ext4:e2fsprogs \
  mksquashfs:squashfs-tools veritysetup:cryptsetup-bin dpkg-scanpackages:dpkg-dev apt-ftparchive:apt-utils \
  rpmbuild:rpm systemd-analyze:systemd /bin/busybox:busybox-static /bin/bash-static:bash-static \
  modprobe:kmod ip:iproute2 losetup:util-linux update-ca-certificates:ca-certificates \
  shellcheck:shellcheck "${HOST_VM_TOOLS[@]}"
# build-agent-image.sh fetches packages with `apt-get download`: it needs package lists.
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (rustup) first" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy
