#!/usr/bin/env bash
# Builds the bootable Debian 12 disk image (qcow2) with a real bootloader (run as root).
#
#   scripts/build-qcow2.sh [--deb FILE] [--out DIR] [--size SIZE] [--apt-url URL]
#
#   --deb FILE     the bootstrapd .deb (default: build/pkg/bootstrapd_*_<host arch>.deb, built by
#                  scripts/build-packages.sh when missing)
#   --out DIR      output directory (default build/qcow2)
#   --size SIZE    virtual disk size (default 4G)
#   --apt-url URL  the image's only apt source (trusted), e.g. a local mirror; default: the
#                  Debian mirror (DEBIAN_MIRROR, default: the host's apt sources)
#
# The disk: an MBR partition table with one ext4 root partition (label bootstrapd-root),
# GRUB 2 (grub-pc, BIOS) installed by the image's own grub-install on the disk and grub.cfg by
# its update-grub, run once inside the image under qemu (images/qcow2/grub-setup as init):
# loop devices here cannot show partitions, and there is no nbd. Serial console on ttyS0.
# bootstrapd is installed with dpkg -i from the .deb; firewalld is enabled; cloud-init is not
# there. Downloads are cached in ${BOOTSTRAPD_CACHE:-/var/cache/bootstrapd} (see
# images/qcow2/rootfs.sh). Output: DIR/bootstrapd-debian12-ARCH.qcow2 and DIR/qcow2.env.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cache=${BOOTSTRAPD_CACHE:-/var/cache/bootstrapd}
# shellcheck source=scripts/host-tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/host-tools.sh"
# shellcheck disable=SC2034 # used by images/qcow2/rootfs.sh
mirror=$(host_debian_mirror) || exit 1
out=$repo_root/build/qcow2
size=4G
deb=
apt_url=

die() { echo "build-qcow2: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --deb) deb=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --size) size=${2:?}; shift 2 ;;
    --apt-url) apt_url=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-qcow2: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || die "must run as root (chroot, mounts)"
# shellcheck source=images/qcow2/rootfs.sh
. "$repo_root/images/qcow2/rootfs.sh"

# What is checked is the commands and files, not package names (scripts/host-tools.sh).
host_tools_need build-qcow2 debootstrap:debootstrap mkfs.ext4:e2fsprogs sfdisk:fdisk qemu-img:qemu-utils qemu-system-x86_64:qemu-system-x86 losetup:util-linux dpkg-scanpackages:dpkg-dev || exit 1

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

product_stage qcow2 "$work" "$apt_url"
stage=$STAGE
t=$(date +%s)
cat >"$stage/etc/default/grub" <<'EOF'
# Written by scripts/build-qcow2.sh. The serial console first so that a headless VM (and the
# e2e test) sees GRUB, the kernel and systemd; the VGA console too for a graphical one.
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1"
GRUB_DISABLE_OS_PROBER=true
EOF

t=$(date +%s)
raw=$work/disk.raw
rm -f "$raw"
truncate -s "$size" "$raw"
# One bootable Linux partition from 1 MiB to the end: the gap before it holds GRUB's core.img.
echo 'label: dos
start=2048, type=83, bootable' | sfdisk -q "$raw"
part_bytes=$(( $(stat -c %s "$raw") - 1048576 ))
uuid=$(cat /proc/sys/kernel/random/uuid)
printf '# <file system> <mount point> <type> <options> <dump> <pass>\nUUID=%s / ext4 defaults,errors=remount-ro 0 1\n' \
  "$uuid" >"$stage/etc/fstab"
# GRUB is installed the way Debian does it, by grub-install and update-grub on the real disk,
# once, inside the image (below), by this script, which then removes itself.
install -D -m 0755 "$repo_root/images/qcow2/grub-setup" "$stage/usr/local/sbin/bootstrapd-image-grub-setup"
# The ext4 filesystem straight from the directory into the partition (mke2fs -E offset):
# no loop device, whose partition scanning a build host (a container) may not offer.
mkfs.ext4 -q -F -b 4096 -L bootstrapd-root -U "$uuid" -E offset=1048576 -d "$stage" \
  "$raw" $(( part_bytes / 4096 ))
step "disk (partition + ext4)" "$t"

t=$(date +%s)
# shellcheck disable=SC2012 # names this project makes: no odd characters
kernel=$(ls -v "$stage"/boot/vmlinuz-* | tail -n 1)
initrd=$stage/boot/initrd.img-${kernel##*/vmlinuz-}
serial=$work/grub-setup.log
: >"$serial"
# The image's own kernel and initramfs, once, with the setup script as init.
timeout -k 10 600 qemu-system-x86_64 -accel tcg,tb-size=128 -m 1024 -smp 2 \
  -nodefaults -display none -no-reboot \
  -kernel "$kernel" -initrd "$initrd" \
  -append "root=UUID=$uuid rw console=ttyS0 panic=-1 init=/usr/local/sbin/bootstrapd-image-grub-setup" \
  -drive "file=$raw,format=raw,if=virtio,cache=unsafe" -serial "file:$serial" \
  || die "the GRUB setup VM failed (serial log: $serial)"
grep -aq '@@GRUB-SETUP OK' "$serial" || { tail -n 30 "$serial" >&2; die "grub-install/update-grub failed in the image (see $serial)"; }
# What must now be on the disk: GRUB's boot code in the MBR, core.img in the gap after it.
dd if="$raw" bs=440 count=1 2>/dev/null | grep -aq GRUB || die "no GRUB boot code in the MBR"
[ -n "$(dd if="$raw" bs=512 skip=1 count=1 2>/dev/null | tr -d '\0')" ] || die "no core.img after the MBR"
step "grub-install (in a VM)" "$t"

t=$(date +%s)
image=$out/bootstrapd-debian12-$arch.qcow2
rm -f "$image"
qemu-img convert -q -O qcow2 "$raw" "$image"
rm -f "$raw"
rm -rf "$stage"
step "qcow2 convert" "$t"

cat >"$out/qcow2.env" <<EOF
QCOW2=$image
DEB=$deb
ARCH=$arch
ROOT_UUID=$uuid
BASE_HASH=$BASE_HASH
APT_URL=$apt_url
EOF
echo "build-qcow2: $image ($(du -h "$image" | cut -f1) allocated, $size virtual)"
echo "build-qcow2: durations:"
printf '  %s\n' "${timings[@]}"
echo "  total                          $(( $(date +%s) - t0 ))s"
