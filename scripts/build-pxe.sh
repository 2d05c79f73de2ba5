#!/usr/bin/env bash
# Builds the PXE (diskless) bundle of the Debian 12 bootstrapd node (run as root).
#
#   scripts/build-pxe.sh [--deb FILE] [--out DIR] [--apt-url URL]
#
#   --deb FILE     the bootstrapd .deb (default: build/pkg/bootstrapd_*_<host arch>.deb, built by
#                  scripts/build-packages.sh when missing)
#   --out DIR      output directory (default build/pxe)
#   --apt-url URL  the node's only apt source (trusted); default: the Debian mirror
#
# Output, to serve over HTTP:
#   DIR/vmlinuz, DIR/initrd.img   the kernel and an initramfs with live-boot
#   DIR/filesystem.squashfs       the root filesystem (bootstrapd installed from the .deb)
#   DIR/boot.ipxe.in              the iPXE script template (images/pxe/boot.ipxe.in)
#   DIR/pxe.env                   KERNEL= INITRD= SQUASHFS= IPXE_TEMPLATE= ARCH=
# The node boots with `boot=live fetch=http://HOST/filesystem.squashfs`: live-boot downloads
# the squashfs into RAM and runs it under a tmpfs overlay; nothing touches a disk.
# bootstrapd reads its userdata from `bootstrapd.url=URL` on the kernel command line.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cache=${BOOTSTRAPD_CACHE:-/var/cache/bootstrapd}
# shellcheck source=scripts/host-tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/host-tools.sh"
# shellcheck disable=SC2034 # used by images/qcow2/rootfs.sh
mirror=$(host_debian_mirror) || exit 1
out=$repo_root/build/pxe
deb=
apt_url=

die() { echo "build-pxe: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --deb) deb=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --apt-url) apt_url=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-pxe: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || die "must run as root (chroot, mounts)"
# shellcheck source=images/qcow2/rootfs.sh
. "$repo_root/images/qcow2/rootfs.sh"

# What is checked is the commands and files, not package names (scripts/host-tools.sh).
host_tools_need build-pxe debootstrap:debootstrap mksquashfs:squashfs-tools dpkg-scanpackages:dpkg-dev || exit 1

t0=$(date +%s)
timings=()
step() { timings+=("$(printf '%-30s %5ss' "$1" $(( $(date +%s) - $2 )))"); }

product_deb "$deb"
deb=$DEB
arch=$ARCH

mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd)
work=$out/work
mkdir -p "$work"
trap chroot_umount EXIT

product_stage pxe "$work" "$apt_url"
stage=$STAGE
# live-boot mounts the root itself (overlay on the squashfs): no fstab entry for /.
printf '# The root filesystem is a live-boot overlay (squashfs + tmpfs): nothing to mount.\n' >"$stage/etc/fstab"

t=$(date +%s)
# shellcheck disable=SC2012 # names this project makes: no odd characters
kernel=$(ls -v "$stage"/boot/vmlinuz-* | tail -n 1)
kver=${kernel##*/vmlinuz-}
# The NIC driver must be in the initramfs: live-boot fetches the root before udev's later
# module loading. virtio for VMs; common physical NICs come with MODULES=most.
printf '%s\n' virtio_net virtio_pci >>"$stage/etc/initramfs-tools/modules"
chroot_mount "$stage"
in_chroot "$stage" update-initramfs -u -k "$kver" >"$work/initramfs.log" 2>&1 \
  || { cat "$work/initramfs.log" >&2; die "update-initramfs failed"; }
in_chroot "$stage" lsinitramfs "/boot/initrd.img-$kver" >"$work/initrd.list"
chroot_umount
initrd=$stage/boot/initrd.img-$kver
grep -q 'bin/live-boot$' "$work/initrd.list" || die "the initramfs has no live-boot"
grep -q 'virtio_net.ko' "$work/initrd.list" || die "the initramfs has no virtio_net"
grep -Eq 'bin/(wget|busybox)$' "$work/initrd.list" || die "the initramfs has no wget (busybox)"
install -m 0644 "$kernel" "$out/vmlinuz"
install -m 0644 "$initrd" "$out/initrd.img"
step "initramfs (live-boot)" "$t"

t=$(date +%s)
rm -f "$out/filesystem.squashfs"
# zstd: decompresses fast under emulation; the squashfs stays in RAM, so it must be small.
mksquashfs "$stage" "$out/filesystem.squashfs" -comp zstd -Xcompression-level 15 -noappend \
  -quiet -no-progress -e boot/initrd.img-"$kver" >"$work/mksquashfs.log" 2>&1 \
  || { cat "$work/mksquashfs.log" >&2; die "mksquashfs failed"; }
step "squashfs" "$t"
install -m 0644 "$repo_root/images/pxe/boot.ipxe.in" "$out/boot.ipxe.in"
rm -rf "$stage"

cat >"$out/pxe.env" <<EOF
KERNEL=$out/vmlinuz
INITRD=$out/initrd.img
SQUASHFS=$out/filesystem.squashfs
IPXE_TEMPLATE=$out/boot.ipxe.in
ARCH=$arch
DEB=$deb
BASE_HASH=$BASE_HASH
EOF
echo "build-pxe: vmlinuz $(du -h "$out/vmlinuz" | cut -f1), initrd.img $(du -h "$out/initrd.img" | cut -f1), filesystem.squashfs $(du -h "$out/filesystem.squashfs" | cut -f1)"
echo "build-pxe: durations:"
printf '  %s\n' "${timings[@]}"
echo "  total                          $(( $(date +%s) - t0 ))s"
