#!/usr/bin/env bash
# Builds the Debian 12 node image used by the VM end-to-end tests (run as root).
#
#   scripts/build-image.sh --binary PATH [--out DIR] [--apt-url URL] [--size SIZE]
#                          [--image-archive FILE]... [--selinux]
#
# The slow part (debootstrap, upgrades, the local apt repository with docker.io's dependency
# closure) is cached in ${BOOTSTRAPD_CACHE:-/var/cache/bootstrapd}, keyed by the hash of the
# recipe (images/debian12/base/*, images/debian12/chroot.sh, the mirror): it is rebuilt only when the recipe changes.
# Each call then layers images/debian12/overlay, the given bootstrapd binary
# (/usr/bin/bootstrapd), configs/bootstrapd.service, bootstrapd-local.service and
# bootstrapd-local-host.service (enabled) on a
# copy of the cached root
# and writes, under --out (default build/image):
#   disk.img     raw ext4 filesystem (sparse), root=/dev/vda; boot it through a qcow2 overlay
#   vmlinuz, initrd.img
#   aptrepo      symlink to the cached local apt repository (serve it at --apt-url)
#   image.env    DISK= KERNEL= INITRD= APT_REPO= APT_URL= BASE_HASH= KERNEL_APPEND= (sourced
#                by scripts/vm.sh and images/qcow2/rootfs.sh, which also reuses the cached
#                base: keep the layout)
# --image-archive puts a `docker load`-able archive (e.g. build/agent-image.tar) in
# /var/lib/bootstrapd/images, where bootstrapd loads the rke1 agent image from when no registry
# is reachable.
# --selinux builds the SELinux variant (default --out build/image-selinux): Debian's reference
# policy, enforcing (images/debian12/selinux, a second cached layer on the base), every file
# labelled at build time with the policy's file_contexts (no autorelabel boot), and
# KERNEL_APPEND='selinux=1 security=selinux enforcing=1' in image.env, which scripts/vm.sh adds
# to the kernel command line.
# Environment: DEBIAN_MIRROR (default: the Debian archive of the host's apt sources).
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
recipe=$repo_root/images/debian12
cache=${BOOTSTRAPD_CACHE:-/var/cache/bootstrapd}
# shellcheck source=scripts/host-tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/host-tools.sh"
mirror=$(host_debian_mirror) || exit 1
out=
selinux=0
apt_url=http://10.0.2.2:18080/
size=4G
binary=
archives=()

usage() { sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "build-image: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --apt-url) apt_url=${2:?}; shift 2 ;;
    --size) size=${2:?}; shift 2 ;;
    --image-archive) archives+=("${2:?}"); shift 2 ;;
    --selinux) selinux=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "build-image: unknown argument $1" >&2; usage 2 ;;
  esac
done
[ -n "$binary" ] || die "--binary PATH is required"
if [ -z "$out" ]; then
  if [ "$selinux" = 1 ]; then out=$repo_root/build/image-selinux; else out=$repo_root/build/image; fi
fi
{ [ -f "$binary" ] && [ -x "$binary" ]; } || die "$binary is not an executable file"
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mounts)"

# Host tools; CI starts from a fresh Debian 12 machine.
# What is checked is the commands and files, not package names (scripts/host-tools.sh).
# shellcheck source=scripts/host-tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/host-tools.sh"
host_tools_need build-image debootstrap:debootstrap mkfs.ext4:e2fsprogs apt-ftparchive:apt-utils systemd-analyze:systemd chroot:coreutils losetup:util-linux || exit 1

# selinux_layer: the cached SELinux layer on $base (built when missing, under the lock);
# sets root to its rootfs.
selinux_layer() {
  local hash layer tmp t
  hash=$(
    {
      echo "selinux-v1 $base_hash"
      (cd "$recipe/selinux" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
      sha256sum <"$recipe/chroot.sh"
    } | sha256sum | cut -c1-16
  )
  layer=$cache/debian12-selinux-$hash
  if [ -f "$layer/DONE" ]; then
    echo "build-image: cached SELinux layer $layer"
  else
    t=$(date +%s)
    echo "build-image: building SELinux layer $hash"
    tmp=$layer.tmp.$$
    rm -rf "$tmp"
    mkdir -p "$tmp"
    cp -a "$base/rootfs" "$tmp/rootfs"
    bash "$recipe/selinux/build-selinux.sh" "$tmp/rootfs" "$mirror"
    date -u +%FT%TZ >"$tmp/DONE"
    mv "$tmp" "$layer"
    for old in "$cache"/debian12-selinux-*; do
      [ "$old" = "$layer" ] || rm -rf "$old"
    done
    echo "build-image: SELinux layer built in $(( $(date +%s) - t ))s"
  fi
  root=$layer/rootfs
}

t0=$(date +%s)
base_hash=$(
  {
    echo "recipe-v1 $mirror"
    (cd "$recipe/base" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
    # The chroot plumbing both recipes source.
    sha256sum <"$recipe/chroot.sh"
  } | sha256sum | cut -c1-16
)
base=$cache/debian12-base-$base_hash
mkdir -p "$cache"
exec 9>"$cache/debian12.lock"
# One builder at a time per cache; others wait and then reuse its result.
flock 9
if [ -f "$base/DONE" ]; then
  echo "build-image: cached base $base"
else
  echo "build-image: building base $base_hash (cold: several minutes)"
  tmp=$base.tmp.$$
  rm -rf "$tmp"
  mkdir -p "$tmp"
  bash "$recipe/base/build-base.sh" "$tmp" "$mirror"
  date -u +%FT%TZ >"$tmp/DONE"
  mv "$tmp" "$base"
  # Older bases are dead weight once the recipe moved on.
  for old in "$cache"/debian12-base-*; do
    [ "$old" = "$base" ] || rm -rf "$old"
  done
  echo "build-image: base built in $(( $(date +%s) - t0 ))s"
fi

root=$base/rootfs
if [ "$selinux" = 1 ]; then
  selinux_layer
fi

mkdir -p "$out"
stage=$out/stage
rm -rf "$stage"
cp -a "$root" "$stage"
flock -u 9

cp -a "$recipe/overlay/." "$stage/"
sed "s|@APT_URL@|$apt_url|" "$recipe/overlay/etc/apt/sources.list.in" >"$stage/etc/apt/sources.list"
rm -f "$stage/etc/apt/sources.list.in"
install -m 0755 "$binary" "$stage/usr/bin/bootstrapd"
install -m 0644 "$repo_root/configs/bootstrapd.service" "$stage/usr/lib/systemd/system/bootstrapd.service"
install -m 0644 "$repo_root/configs/bootstrapd-local.service" "$stage/usr/lib/systemd/system/bootstrapd-local.service"
install -m 0644 "$repo_root/configs/bootstrapd-local-host.service" "$stage/usr/lib/systemd/system/bootstrapd-local-host.service"
for a in "${archives[@]}"; do
  [ -f "$a" ] || die "image archive $a not found"
  install -D -m 0644 "$a" "$stage/var/lib/bootstrapd/images/$(basename "$a")"
done
units=(bootstrapd.service bootstrapd-local.service bootstrapd-local-host.service bootstrapd-e2e.service bootstrapd-lab-net.service bootstrapd-lab-peers.service)
systemctl --root="$stage" enable "${units[@]}" >/dev/null 2>&1
for u in "${units[@]}" firewalld.service systemd-networkd.service; do
  [ "$(systemctl --root="$stage" is-enabled "$u" 2>/dev/null)" = enabled ] || die "$u is not enabled in the image"
done
# The unit as shipped, checked against the image's own units (firewalld, networkd...). Strict:
# systemd only warns ("ignoring") about a misspelt setting and still exits 0.
if ! verify=$(systemd-analyze verify --root="$stage" "${units[@]}" 2>&1) \
  || [ -n "$verify" ]; then
  die "systemd-analyze verify of the units in the image: ${verify:-failed}"
fi

append=
if [ "$selinux" = 1 ]; then
  # Labels from the policy's own file_contexts, with the policy's own setfiles (the host needs
  # no SELinux tools); mkfs.ext4 -d copies the security.selinux attributes into the image.
  t=$(date +%s)
  # libselinux sets labels through /proc/self/fd: setfiles needs /proc in the chroot.
  mount -t proc proc "$stage/proc"
  rc=0
  chroot "$stage" setfiles -F -e /proc -e /sys -e /dev \
    /etc/selinux/default/contexts/files/file_contexts / >"$out/setfiles.log" 2>&1 || rc=$?
  umount "$stage/proc"
  [ "$rc" = 0 ] || { head -n 20 "$out/setfiles.log" >&2; die "setfiles could not label the image"; }
  echo "build-image: labelled in $(( $(date +%s) - t ))s"
  append='selinux=1 security=selinux enforcing=1'
fi

# shellcheck disable=SC2012 # kernel names sort by version (ls -v); no odd characters
kernel=$(ls -v "$stage"/boot/vmlinuz-* | tail -n 1)
initrd=$stage/boot/initrd.img-${kernel##*/vmlinuz-}
[ -f "$initrd" ] || die "no initrd for $kernel"
install -m 0644 "$kernel" "$out/vmlinuz"
install -m 0644 "$initrd" "$out/initrd.img"

rm -f "$out/disk.img"
truncate -s "$size" "$out/disk.img"
mkfs.ext4 -q -F -L bootstrapd-root -d "$stage" "$out/disk.img"
rm -rf "$stage"
ln -sfn "$base/aptrepo" "$out/aptrepo"

cat >"$out/image.env" <<EOF
DISK=$out/disk.img
KERNEL=$out/vmlinuz
INITRD=$out/initrd.img
APT_REPO=$base/aptrepo
APT_URL=$apt_url
BASE_HASH=$base_hash
KERNEL_APPEND='$append'
EOF
echo "build-image: $out/disk.img ready in $(( $(date +%s) - t0 ))s (base $base_hash)"
