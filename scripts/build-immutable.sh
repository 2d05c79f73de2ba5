#!/usr/bin/env bash
# Builds the immutable Debian 12 disk image (qcow2): a read-only /usr verified by dm-verity
# (run as root).
#
#   scripts/build-immutable.sh [--deb FILE] [--out DIR] [--size SIZE] [--apt-url URL]
#                              [--image-archive FILE]...
#
#   --deb FILE            the bootstrapd .deb (default: build/pkg/bootstrapd_*_<host arch>.deb,
#                         built by scripts/build-packages.sh when missing)
#   --out DIR             output directory (default build/immutable)
#   --size SIZE           virtual disk size (default 4G)
#   --apt-url URL         the image's only apt source (trusted); default: the Debian mirror
#   --image-archive FILE  a `docker load`-able archive (e.g. the rke1 agent image) put in
#                         /var/lib/bootstrapd/images on the root partition, bootstrapd's offline
#                         bundle; repeatable
#
# The disk (MBR, GRUB 2 for BIOS on the MBR):
#   p1  ext4, label bootstrapd-root: the writable root (/etc, /var, /home, /root, /opt, /boot
#       with the kernel, the initrd and GRUB; /bin, /sbin, /lib -> usr/...; an empty /usr)
#   p2  /usr as squashfs, read-only, every block checked by dm-verity when read
#   p3  p2's dm-verity hash tree (veritysetup format)
# The root hash is on the kernel command line (usrhash=, in /etc/default/grub and so in
# grub.cfg), with p2 and p3 by PARTUUID; the initramfs (images/immutable/initramfs-*) opens
# /usr through dm-verity and mounts it, or refuses to boot. GRUB is installed as
# scripts/build-qcow2.sh does it: the disk boots once under qemu with images/qcow2/grub-setup
# as init, which already goes through the verity path. Layers and caches: images/qcow2/rootfs.sh
# (kind immutable). Output: DIR/bootstrapd-immutable-ARCH.qcow2 and DIR/immutable.env.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cache=${BOOTSTRAPD_CACHE:-/var/cache/bootstrapd}
# shellcheck source=scripts/host-tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/host-tools.sh"
# shellcheck disable=SC2034 # used by images/qcow2/rootfs.sh
mirror=$(host_debian_mirror) || exit 1
out=$repo_root/build/immutable
size=4G
deb=
apt_url=
archives=()

die() { echo "build-immutable: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --deb) deb=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --size) size=${2:?}; shift 2 ;;
    --apt-url) apt_url=${2:?}; shift 2 ;;
    --image-archive) archives+=("${2:?}"); shift 2 ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-immutable: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || die "must run as root (chroot, mounts)"
for a in "${archives[@]}"; do [ -f "$a" ] || die "$a: no such image archive"; done
# shellcheck source=images/qcow2/rootfs.sh
. "$repo_root/images/qcow2/rootfs.sh"

host_tools_need build-immutable debootstrap:debootstrap mkfs.ext4:e2fsprogs sfdisk:fdisk \
  qemu-img:qemu-utils qemu-system-x86_64:qemu-system-x86 losetup:util-linux \
  dpkg-scanpackages:dpkg-dev mksquashfs:squashfs-tools veritysetup:cryptsetup-bin || exit 1

t0=$(date +%s)
timings=()
step() { timings+=("$(printf '%-30s %5ss' "$1" $(( $(date +%s) - $2 )))"); }

# stage_initramfs STAGE: the verity hook and script in the image, and its initrd rebuilt with
# them (in /boot, which stays on the root partition), while /usr is still a directory.
stage_initramfs() {
  local r=$1 kver
  install -D -m 0755 "$repo_root/images/immutable/initramfs-hook" \
    "$r/etc/initramfs-tools/hooks/bootstrapd-verity"
  install -D -m 0755 "$repo_root/images/immutable/initramfs-usr-verity" \
    "$r/etc/initramfs-tools/scripts/local-bottom/bootstrapd-verity"
  # shellcheck disable=SC2012 # names this project makes: no odd characters
  kver=$(ls -v "$r"/boot/vmlinuz-* | tail -n 1)
  kver=${kver##*/vmlinuz-}
  chroot_mount "$r"
  in_chroot "$r" update-initramfs -u -k "$kver" >"$work/initramfs.log" 2>&1 \
    || { cat "$work/initramfs.log" >&2; chroot_umount; die "update-initramfs failed"; }
  # What the initrd must carry for the verity path; checked here rather than at the first boot.
  in_chroot "$r" lsinitramfs "/boot/initrd.img-$kver" >"$work/initrd.list"
  chroot_umount
  local want
  for want in sbin/veritysetup scripts/local-bottom/bootstrapd-verity dm-verity.ko squashfs.ko; do
    grep -q -- "$want" "$work/initrd.list" || die "the initrd lacks $want (see $work/initrd.list)"
  done
  KVER=$kver
}

# stage_archives STAGE: the image archives in bootstrapd's offline bundle (IMAGE_ARCHIVE_DIR),
# on the root partition: /var is persistent and writable.
stage_archives() {
  local a
  for a in "${archives[@]}"; do
    install -D -m 0644 "$a" "$1/var/lib/bootstrapd/images/$(basename "$a")"
  done
}

# squash_usr STAGE: STAGE/usr as WORK/usr.squashfs, padded to whole MiB, its hash tree in
# WORK/usr.verity; sets USR_HASH. STAGE/usr is left an empty mount point.
squash_usr() {
  local r=$1 sq=$work/usr.squashfs hash=$work/usr.verity bytes
  rm -f "$sq" "$hash"
  # zstd at level 3: within 15% of the default level's size in about 3 s instead of minutes
  # (2 cores), and cheap to read back under TCG. Owners and modes are kept as they are.
  mksquashfs "$r/usr" "$sq" -noappend -quiet -comp zstd -Xcompression-level 3 >"$work/mksquashfs.log" \
    || { cat "$work/mksquashfs.log" >&2; die "mksquashfs failed"; }
  # The partition is exactly this file: the hash tree covers all of it, padding included.
  bytes=$(stat -c %s "$sq")
  truncate -s $(( (bytes + 1048575) / 1048576 * 1048576 )) "$sq"
  veritysetup format "$sq" "$hash" >"$work/veritysetup.log" \
    || { cat "$work/veritysetup.log" >&2; die "veritysetup format failed"; }
  USR_HASH=$(sed -n 's/^Root hash:[[:space:]]*//p' "$work/veritysetup.log")
  [[ $USR_HASH =~ ^[0-9a-f]{64}$ ]] || die "no root hash in veritysetup's output ($work/veritysetup.log)"
  veritysetup verify "$sq" "$hash" "$USR_HASH" || die "veritysetup verify of the new /usr failed"
  bytes=$(stat -c %s "$hash")
  truncate -s $(( (bytes + 1048575) / 1048576 * 1048576 )) "$hash"
  rm -rf "${r:?}/usr"
  mkdir -m 0755 "$r/usr"
}

# root_settings STAGE ROOT_UUID DISK_ID: fstab, GRUB's settings with the verity parameters, and
# the one-time GRUB setup init on the root partition (/usr is read-only: it removes itself).
root_settings() {
  local r=$1 uuid=$2 id=$3
  cat >"$r/etc/fstab" <<EOF
# <file system> <mount point> <type> <options> <dump> <pass>
UUID=$uuid / ext4 defaults,errors=remount-ro 0 1
# /usr is not listed: the initramfs mounts it read-only from /dev/mapper/usr (dm-verity) with the
# root hash of the kernel command line (usrhash=), or refuses to boot.
EOF
  # systemd.verity=no: the initramfs opened /usr already; systemd's veritysetup generator would
  # otherwise look for GPT-discoverable partitions this MBR disk does not have. panic=10: a
  # refused boot reboots instead of leaving a root shell on the console.
  cat >"$r/etc/default/grub" <<EOF
# Written by scripts/build-immutable.sh. The serial console first so that a headless VM (and
# the e2e test) sees GRUB, the kernel and systemd; the VGA console too for a graphical one.
# usrhash is /usr's dm-verity root hash: a new /usr needs a new hash here (and update-grub).
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8 $(verity_cmdline "$id") systemd.verity=no panic=10"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1"
GRUB_DISABLE_OS_PROBER=true
EOF
  install -m 0755 "$repo_root/images/qcow2/grub-setup" "$r/bootstrapd-image-grub-setup"
}

# verity_cmdline DISK_ID: the kernel parameters the initramfs opens /usr with.
verity_cmdline() {
  echo "usrhash=$USR_HASH systemd.verity_usr_data=PARTUUID=$1-02 systemd.verity_usr_hash=PARTUUID=$1-03"
}

# make_disk RAW ROOT_UUID DISK_ID: the partition table, p1 from the stage (mke2fs -d at an
# offset: no loop device, whose partition scanning a build host may not offer), p2 and p3
# written in place. Sets USR_OFFSET, USR_SIZE.
make_disk() {
  local raw=$1 uuid=$2 id=$3 total usr_mib hash_mib root_mib
  rm -f "$raw"
  truncate -s "$size" "$raw"
  total=$(( $(stat -c %s "$raw") / 1048576 ))
  usr_mib=$(( $(stat -c %s "$work/usr.squashfs") / 1048576 ))
  hash_mib=$(( $(stat -c %s "$work/usr.verity") / 1048576 ))
  # The 1 MiB gap before p1 holds GRUB's core.img.
  root_mib=$(( total - 1 - usr_mib - hash_mib ))
  [ "$root_mib" -ge 512 ] || die "--size $size leaves only ${root_mib} MiB for the root"
  printf 'label: dos\nlabel-id: 0x%s\nstart=1MiB, size=%sMiB, type=83, bootable\nsize=%sMiB, type=83\nsize=%sMiB, type=83\n' \
    "$id" "$root_mib" "$usr_mib" "$hash_mib" | sfdisk -q "$raw"
  mkfs.ext4 -q -F -b 4096 -L bootstrapd-root -U "$uuid" -E offset=1048576 -d "$stage" \
    "$raw" $(( root_mib * 256 ))
  USR_OFFSET=$(( (1 + root_mib) * 1048576 ))
  USR_SIZE=$(( usr_mib * 1048576 ))
  dd if="$work/usr.squashfs" of="$raw" bs=1M seek=$(( 1 + root_mib )) conv=notrunc status=none
  dd if="$work/usr.verity" of="$raw" bs=1M seek=$(( 1 + root_mib + usr_mib )) conv=notrunc status=none
  # What the kernel will see as p2 and p3: the same bytes.
  cmp -n "$USR_SIZE" -i "$USR_OFFSET:0" "$raw" "$work/usr.squashfs" || die "p2 is not /usr's squashfs"
  sfdisk -d "$raw" | grep -q "label-id: 0x$id" || die "the MBR does not carry disk id $id"
}

# grub_boot RAW ROOT_UUID DISK_ID: the image's kernel and initrd once, with the GRUB setup as
# init: the initrd's verity path mounts /usr, grub-install and update-grub come from it.
grub_boot() {
  local raw=$1 uuid=$2 id=$3 serial=$work/grub-setup.log
  : >"$serial"
  timeout -k 10 600 qemu-system-x86_64 -accel tcg,tb-size=128 -m 1024 -smp 2 \
    -nodefaults -display none -no-reboot \
    -kernel "$kernel_dir/vmlinuz-$KVER" -initrd "$kernel_dir/initrd.img-$KVER" \
    -append "root=UUID=$uuid rw console=ttyS0 panic=-1 $(verity_cmdline "$id") systemd.verity=no init=/bootstrapd-image-grub-setup" \
    -drive "file=$raw,format=raw,if=virtio,cache=unsafe" -serial "file:$serial" \
    || die "the GRUB setup VM failed (serial log: $serial)"
  grep -aq 'bootstrapd-verity: /usr verified' "$serial" \
    || { tail -n 30 "$serial" >&2; die "the initrd did not mount a verified /usr (see $serial)"; }
  grep -aq '@@GRUB-SETUP OK' "$serial" \
    || { tail -n 30 "$serial" >&2; die "grub-install/update-grub failed in the image (see $serial)"; }
  dd if="$raw" bs=440 count=1 2>/dev/null | grep -aq GRUB || die "no GRUB boot code in the MBR"
  [ -n "$(dd if="$raw" bs=512 skip=1 count=1 2>/dev/null | tr -d '\0')" ] || die "no core.img after the MBR"
}

product_deb "$deb"
deb=$(realpath "$DEB")
# shellcheck disable=SC2153 # ARCH is product_deb's (images/qcow2/rootfs.sh)
arch=$ARCH
mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd)
work=$out/work
mkdir -p "$work"
trap chroot_umount EXIT

product_stage immutable "$work" "$apt_url"
# shellcheck disable=SC2153 # STAGE is product_stage's (images/qcow2/rootfs.sh)
stage=$STAGE

t=$(date +%s)
stage_initramfs "$stage"
stage_archives "$stage"
step "initramfs (verity hook)" "$t"

t=$(date +%s)
squash_usr "$stage"
step "/usr squashfs + hash tree" "$t"

t=$(date +%s)
uuid=$(cat /proc/sys/kernel/random/uuid)
disk_id=$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')
root_settings "$stage" "$uuid" "$disk_id"
# The kernel and initrd the GRUB setup boot starts from (the stage goes away with the disk).
kernel_dir=$work/kernel
rm -rf "$kernel_dir"
mkdir -p "$kernel_dir"
cp "$stage/boot/vmlinuz-$KVER" "$stage/boot/initrd.img-$KVER" "$kernel_dir/"
raw=$work/disk.raw
make_disk "$raw" "$uuid" "$disk_id"
rm -rf "$stage"
step "disk (partitions, ext4, /usr)" "$t"

t=$(date +%s)
grub_boot "$raw" "$uuid" "$disk_id"
step "grub-install (in a VM)" "$t"

t=$(date +%s)
image=$out/bootstrapd-immutable-$arch.qcow2
rm -f "$image"
qemu-img convert -q -O qcow2 "$raw" "$image"
rm -rf "$raw" "$kernel_dir" "$work/usr.squashfs" "$work/usr.verity"
step "qcow2 convert" "$t"

cat >"$out/immutable.env" <<EOF
IMAGE=$image
DEB=$deb
ARCH=$arch
ROOT_UUID=$uuid
DISK_ID=$disk_id
ROOT_PARTUUID=$disk_id-01
USR_PARTUUID=$disk_id-02
HASH_PARTUUID=$disk_id-03
USR_HASH=$USR_HASH
USR_OFFSET=$USR_OFFSET
USR_SIZE=$USR_SIZE
KERNEL_VERSION=$KVER
BASE_HASH=$BASE_HASH
APT_URL=$apt_url
EOF
echo "build-immutable: $image ($(du -h "$image" | cut -f1) allocated, $size virtual; /usr $(( USR_SIZE / 1048576 )) MiB, root hash $USR_HASH)"
echo "build-immutable: durations:"
printf '  %s\n' "${timings[@]}"
echo "  total                          $(( $(date +%s) - t0 ))s"
