#!/usr/bin/env bash
# Builds the Vagrant box bootstrapd/debian12 (libvirt provider) from the node image and adds it
# to Vagrant (run as root; scripts/setup-vagrant-host.sh first).
#
#   scripts/build-box.sh [--binary PATH] [--apt-url URL] [--out DIR] [--no-add]
#
# 1. bootstrapd (cargo build, stripped; or --binary), the stand-in agent image archive
#    (scripts/build-agent-image.sh) and the node image (scripts/build-image.sh, its own --out
#    dir, the cached base) whose apt source is --apt-url: by default the lab's repository as
#    vagrant/lab-host.sh serves it on the management network's gateway.
# 2. What Vagrant needs, in the image itself (loop mount, chroot): openssh-server and sudo
#    (images/vagrant/packages, apt from DEBIAN_MIRROR; the .debs are cached per base), a
#    `vagrant` user with Vagrant's insecure public key, images/vagrant/overlay (sudoers, sshd,
#    host keys made at first boot, resolv.conf). The apt source is put back to the lab's, the
#    machine id stays empty.
# 3. box.img (qcow2), metadata.json and the box's Vagrantfile (images/vagrant/box-Vagrantfile)
#    tarred as OUT/bootstrapd-debian12.box; `vagrant box add --force --name bootstrapd/debian12`
#    (skipped with --no-add); the kernel and initrd go to /var/lib/libvirt/boot (0644), where
#    the box's direct kernel boot expects them. A stale copy of an older box in libvirt's
#    default pool is removed so the next `vagrant up` uploads this one.
# Environment: DEBIAN_MIRROR (default: the Debian archive of the host's apt sources), BOOTSTRAPD_CACHE.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo_root"
# shellcheck source=tests/e2e/lib.sh
. tests/e2e/lib.sh

recipe=$repo_root/images/vagrant
out=$repo_root/build/box
apt_url=${LAB_APT_URL:-http://192.168.121.1:18082/}
binary=
add=true
box_name=bootstrapd/debian12
# shellcheck source=scripts/host-tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/host-tools.sh"
mirror=$(host_debian_mirror) || exit 1
cache=${BOOTSTRAPD_CACHE:-/var/cache/bootstrapd}
boot_dir=/var/lib/libvirt/boot

usage() { sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "build-box: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=${2:?}; shift 2 ;;
    --apt-url) apt_url=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --no-add) add=false; shift ;;
    -h|--help) usage 0 ;;
    *) echo "build-box: unknown argument $1" >&2; usage 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || die "must run as root (loop mount, chroot)"
if $add; then
  command -v vagrant >/dev/null || die "vagrant is not installed (scripts/setup-vagrant-host.sh)"
fi
command -v qemu-img >/dev/null || die "qemu-img is not installed (apt-get install qemu-utils)"
# shellcheck disable=SC2012 # a glob over versions; the first match is enough
insecure_key=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub \
  /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -n 1 || true)
[ -n "$insecure_key" ] || die "Vagrant's insecure public key (keys/vagrant.pub) was not found"

t0=$(date +%s)
mkdir -p "$out"
if [ -z "$binary" ]; then
  echo "==> building bootstrapd"
  binary=$out/bootstrapd
  host_build_bootstrapd "$binary" "${BOX_CARGO_PROFILE:-dev}"
fi
echo "==> agent image archive"
scripts/build-agent-image.sh --out "$out/agent-image.tar" >"$out/agent-image.log" 2>&1 \
  || die "scripts/build-agent-image.sh failed (see $out/agent-image.log)"
echo "==> node image"
scripts/build-image.sh --binary "$binary" --out "$out/image" --apt-url "$apt_url" \
  --image-archive "$out/agent-image.tar"
# shellcheck source=/dev/null
. "$out/image/image.env"
: "${DISK:?image.env sets no DISK}" "${KERNEL:?image.env sets no KERNEL}" "${INITRD:?image.env sets no INITRD}"

echo "==> Vagrant additions"
mnt=$out/mnt
# shellcheck source=images/debian12/chroot.sh
. "$repo_root/images/debian12/chroot.sh"
cleanup() {
  chroot_umount
  umount -l "$mnt" 2>/dev/null || true
}
trap cleanup EXIT
mkdir -p "$mnt"
mount -o loop "$DISK" "$mnt"
chroot_mount "$mnt"
# Downloaded once per base: later builds install from the cache (apt still refreshes its lists).
debs=$cache/vagrant-debs-$BASE_HASH
mkdir -p "$debs/partial" "$mnt/var/cache/apt/archives"
chroot_bind "$debs" "$mnt/var/cache/apt/archives"
deny_services "$mnt"
cp "$mnt/etc/apt/sources.list" "$out/sources.list.lab"
echo "deb $mirror bookworm main" >"$mnt/etc/apt/sources.list"
cp -L /etc/resolv.conf "$mnt/etc/resolv.conf"

in_root() { chroot "$mnt" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }
mapfile -t pkgs < <(grep -v -e '^#' -e '^[[:space:]]*$' "$recipe/packages")
in_root apt-get update -qq
in_root apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >"$out/apt.log" 2>&1 \
  || { tail -n 20 "$out/apt.log" >&2; die "apt-get install ${pkgs[*]} in the image failed"; }
rm -rf "$mnt"/var/lib/apt/lists/*
install -m 0644 "$out/sources.list.lab" "$mnt/etc/apt/sources.list"
umount "$mnt/var/cache/apt/archives"
unset 'chroot_mounts[-1]'

if ! in_root id vagrant >/dev/null 2>&1; then
  in_root useradd --create-home --shell /bin/bash --user-group vagrant
fi
# Vagrant's documented default password, for the console only; logins over SSH use the key.
echo 'vagrant:vagrant' | in_root chpasswd
install -d -m 0700 "$mnt/home/vagrant/.ssh"
install -m 0600 "$insecure_key" "$mnt/home/vagrant/.ssh/authorized_keys"
in_root chown -R vagrant:vagrant /home/vagrant/.ssh

cp -a "$recipe/overlay/." "$mnt/"
chown root:root "$mnt/etc/sudoers.d/vagrant"
chmod 0440 "$mnt/etc/sudoers.d/vagrant"
in_root visudo -cq -f /etc/sudoers.d/vagrant || die "images/vagrant sudoers file does not parse"
# Every clone makes its own host keys (ssh-hostkeys.service).
rm -f "$mnt"/etc/ssh/ssh_host_*
in_root systemctl enable ssh.service ssh-hostkeys.service >/dev/null 2>&1
for u in ssh.service ssh-hostkeys.service bootstrapd.service systemd-networkd.service; do
  [ "$(in_root systemctl is-enabled "$u" 2>/dev/null)" = enabled ] || die "$u is not enabled in the box"
done
: >"$mnt/etc/machine-id"
allow_services "$mnt"
cleanup
trap - EXIT
e2fsck -fy "$DISK" >/dev/null 2>&1 || [ $? -le 1 ] || die "e2fsck of $DISK failed"

echo "==> box"
boxdir=$out/box
rm -rf "$boxdir"
mkdir -p "$boxdir"
qemu-img convert -O qcow2 "$DISK" "$boxdir/box.img"
size_gb=$(( ($(stat -c %s "$DISK") + (1 << 30) - 1) >> 30 ))
printf '{"provider":"libvirt","format":"qcow2","virtual_size":%d}\n' "$size_gb" >"$boxdir/metadata.json"
install -m 0644 "$recipe/box-Vagrantfile" "$boxdir/Vagrantfile"
# A plain tar: gzip would cost minutes for nothing on a local box.
tar -C "$boxdir" -cf "$out/bootstrapd-debian12.box" metadata.json Vagrantfile box.img
rm -rf "$boxdir"

install -d -m 0755 "$boot_dir"
install -m 0644 "$KERNEL" "$boot_dir/bootstrapd-vmlinuz"
install -m 0644 "$INITRD" "$boot_dir/bootstrapd-initrd.img"

if $add; then
  vagrant box add --force --name "$box_name" "$out/bootstrapd-debian12.box"
  # vagrant-libvirt uploads a box into the pool once and reuses that volume by name: drop the
  # old one, unless a domain still runs on it (then the next up keeps the old box).
  if command -v virsh >/dev/null; then
    pool=$(virsh -q -c qemu:///system pool-dumpxml default 2>/dev/null | sed -n 's|.*<path>\(.*\)</path>.*|\1|p' | head -n 1)
    for vol in "$pool"/bootstrapd-VAGRANTSLASH-debian12_vagrant_box_image_*; do
      [ -f "$vol" ] || continue
      # libvirt would delete a volume that VM disks still use as their backing file.
      if grep -lsF "${vol##*/}" "$pool"/*.img 2>/dev/null | grep -qv "^$vol\$"; then
        echo "build-box: $vol still backs VM disks: vagrant destroy the lab and rerun to use the new box" >&2
        continue
      fi
      virsh -q -c qemu:///system vol-delete --pool default "${vol##*/}" >/dev/null \
        && echo "build-box: removed the stale pool volume ${vol##*/}"
    done
  fi
fi
echo "build-box: $out/bootstrapd-debian12.box ready in $(( $(date +%s) - t0 ))s (apt source $apt_url)"
