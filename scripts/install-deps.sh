#!/usr/bin/env bash
# Installs what building and testing bootstrapd needs on a fresh Debian 12 machine (as root).
# Idempotent and quiet when everything is already there.
set -euo pipefail
pkgs=(debootstrap qemu-system-x86 qemu-utils genisoimage dosfstools mtools e2fsprogs
      squashfs-tools dpkg-dev apt-utils rpm python3 curl ca-certificates systemd
      busybox-static bash-static file kmod iproute2 util-linux jq openssl binutils
      e2fsprogs)
missing=()
# build-agent-image.sh fetches packages with `apt-get download`: it needs package lists.
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
fi
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (rustup) first" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy
