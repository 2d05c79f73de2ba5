# shellcheck shell=bash
# The callers set repo_root, cache and mirror before sourcing; LAYER_ROOTFS is read by them.
# shellcheck disable=SC2154,SC2034
# Shared by scripts/build-qcow2.sh, scripts/build-pxe.sh and scripts/build-immutable.sh (sourced,
# bash): the product root filesystem of the Debian 12 images, built in layers:
#
#   1. the cached Debian 12 base rootfs of images/debian12/base (built and cached by
#      scripts/build-image.sh under ${BOOTSTRAPD_CACHE:-/var/cache/bootstrapd}; never modified
#      here: it is copied first)
#   2. a cached layer per image kind: the base plus the packages listed in
#      images/<kind>/packages (grub-pc for the disk, live-boot for PXE), old kernels purged;
#      keyed by the base's hash and the list, so apt downloads happen once
#   3. per build: bootstrapd installed FROM ITS .deb with dpkg -i, and the product settings
#      (networkd DHCP, apt sources, persistent journal, serial console)
#
# The caller defines die() and step() and sets repo_root, cache, mirror.

# shellcheck source=images/debian12/chroot.sh
. "$repo_root/images/debian12/chroot.sh"

in_chroot() { # DIR COMMAND...
  local d=$1
  shift
  chroot "$d" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    LC_ALL=C.UTF-8 HOME=/root "$@"
}

# product_deb DEB: the .deb an image is built from: DEB, or else this host's newest in
# build/pkg, built by scripts/build-packages.sh when there is none. Sets DEB and ARCH (the
# image's uname -m, which must be this host's: the layers run its programs in a chroot).
product_deb() {
  local host_deb_arch deb_arch t
  DEB=$1
  host_deb_arch=$(dpkg --print-architecture)
  if [ -z "$DEB" ]; then
    # shellcheck disable=SC2012 # names this project makes: no odd characters
    DEB=$(ls "$repo_root"/build/pkg/bootstrapd_*_"$host_deb_arch".deb 2>/dev/null | tail -n 1 || true)
    if [ -z "$DEB" ]; then
      t=$(date +%s)
      "$repo_root/scripts/build-packages.sh" --out "$repo_root/build/pkg"
      step "packages" "$t"
      # shellcheck disable=SC2012 # names this project makes: no odd characters
      DEB=$(ls "$repo_root"/build/pkg/bootstrapd_*_"$host_deb_arch".deb | tail -n 1)
    fi
  fi
  [ -f "$DEB" ] || die "$DEB: no such .deb"
  deb_arch=$(dpkg-deb -f "$DEB" Architecture)
  case $deb_arch in
    amd64) ARCH=x86_64 ;;
    arm64) ARCH=aarch64 ;;
    *) die "unexpected .deb architecture $deb_arch" ;;
  esac
  [ "$ARCH" = "$(uname -m)" ] || die "a $ARCH image needs a $ARCH build host or binfmt emulation (images/aarch64.md)"
}

# product_stage KIND WORK APT_URL: the three layers in WORK/stage, from DEB (product_deb), each
# timed with the caller's `step`. Sets STAGE.
product_stage() {
  local kind=$1 work=$2 apt_url=$3 t
  t=$(date +%s)
  # The base needs a bootstrapd binary only because scripts/build-image.sh wants one; take it
  # from the .deb so that nothing else is built.
  rm -rf "$work/debx"
  dpkg-deb -x "$DEB" "$work/debx"
  base_rootfs "$work" "$work/debx/usr/bin/bootstrapd"
  rm -rf "$work/debx"
  step "base (cached or built)" "$t"

  t=$(date +%s)
  cached_layer "$kind"
  step "$kind layer (cached or built)" "$t"

  t=$(date +%s)
  STAGE=$work/stage
  rm -rf "$STAGE"
  cp -a "$LAYER_ROOTFS" "$STAGE"
  install_product "$STAGE" "$DEB" "$apt_url"
  step "rootfs + dpkg -i bootstrapd" "$t"
}

# base_rootfs WORK BINARY: makes sure the cached base exists (through scripts/build-image.sh,
# which owns its recipe and cache) and sets BASE_ROOTFS and BASE_HASH.
base_rootfs() {
  local work=$1 binary=$2
  "$repo_root/scripts/build-image.sh" --binary "$binary" --out "$work/base-image" >"$work/base-image.log" 2>&1 \
    || { tail -n 30 "$work/base-image.log" >&2; die "scripts/build-image.sh failed (see $work/base-image.log)"; }
  # shellcheck source=/dev/null
  BASE_HASH=$(. "$work/base-image/image.env" && echo "$BASE_HASH")
  # Only its cache is wanted here, not its raw disk.
  rm -f "$work/base-image/disk.img"
  BASE_ROOTFS=$cache/debian12-base-$BASE_HASH/rootfs
  [ -d "$BASE_ROOTFS" ] || die "no cached base rootfs at $BASE_ROOTFS"
}

# cached_layer KIND: the cached rootfs of layer 2 for images/KIND/packages; sets LAYER_ROOTFS.
cached_layer() {
  local kind=$1
  local list=$repo_root/images/$kind/packages hash layer tmp t pkgs keep k
  hash=$(
    {
      echo "layer-v1 $BASE_HASH $mirror"
      # The recipe is the list and this function, not the rest of this file.
      cat "$list"
      declare -f cached_layer
    } | sha256sum | cut -c1-16
  )
  layer=$cache/$kind-layer-$hash
  exec 8>"$cache/$kind-layer.lock"
  flock 8
  if [ -f "$layer/DONE" ]; then
    echo "$kind: cached layer $layer"
  else
    t=$(date +%s)
    echo "$kind: building layer $hash (apt installs from $mirror)"
    tmp=$layer.tmp.$$
    rm -rf "$tmp"
    mkdir -p "$tmp"
    # The base is shared with other image builds: hold its lock while copying.
    exec 7>"$cache/debian12.lock"
    flock 7
    cp -a "$BASE_ROOTFS" "$tmp/rootfs"
    flock -u 7
    local r=$tmp/rootfs
    chroot_mount "$r"
    deny_services "$r"
    debian_sources "$r" "$mirror"
    # grub-pc asks where to install itself; the image build runs grub-install by hand.
    printf '%s\n' 'grub-pc grub-pc/install_devices multiselect' \
      'grub-pc grub-pc/install_devices_empty boolean true' | in_chroot "$r" debconf-set-selections
    mapfile -t pkgs < <(grep -v -e '^#' -e '^[[:space:]]*$' "$list")
    in_chroot "$r" apt-get update -qq
    in_chroot "$r" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >"$tmp/apt.log" 2>&1 \
      || { tail -n 30 "$tmp/apt.log" >&2; chroot_umount; die "$kind: apt-get install failed"; }
    # One kernel per image: the base may carry an older one next to the current.
    # shellcheck disable=SC2012 # names this project makes: no odd characters
    keep=$(ls -v "$r"/boot/vmlinuz-* | tail -n 1)
    keep=${keep##*/vmlinuz-}
    # shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
    for k in $(in_chroot "$r" dpkg-query -W -f '${Package}\n' 'linux-image-[0-9]*'); do
      [ "$k" = "linux-image-$keep" ] || in_chroot "$r" apt-get purge -y -qq "$k" >>"$tmp/apt.log" 2>&1
    done
    in_chroot "$r" apt-get clean
    rm -rf "$r"/var/lib/apt/lists/*
    allow_services "$r"
    chroot_umount
    date -u +%FT%TZ >"$tmp/DONE"
    mv "$tmp" "$layer"
    for k in "$cache/$kind"-layer-*; do
      case $k in "$layer" | *.lock) ;; *) rm -rf "$k" ;; esac
    done
    echo "$kind: layer built in $(( $(date +%s) - t ))s"
  fi
  flock -u 8
  LAYER_ROOTFS=$layer/rootfs
}

# install_product STAGE DEB APT_URL: layer 3 on a copy of the cached layer.
install_product() {
  local r=$1 deb=$2 apt_url=$3
  cp "$deb" "$r/tmp/bootstrapd.deb"
  chroot_mount "$r"
  deny_services "$r"
  # The package under test, exactly as shipped: its maintainer scripts enable the unit.
  in_chroot "$r" dpkg -i /tmp/bootstrapd.deb >"$r/tmp/dpkg.log" 2>&1 \
    || { cat "$r/tmp/dpkg.log" >&2; chroot_umount; die "dpkg -i bootstrapd.deb failed"; }
  rm -f "$r/tmp/bootstrapd.deb" "$r/tmp/dpkg.log"
  allow_services "$r"
  chroot_umount

  echo node >"$r/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tnode\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$r/etc/hosts"
  install -D -m 0644 /dev/stdin "$r/etc/systemd/network/99-dhcp.network" <<'EOF'
# DHCP on every wired interface; named to sort after anything a provisioner drops in.
[Match]
Name=en* eth*

[Network]
DHCP=yes
EOF
  if [ -n "$apt_url" ]; then
    printf '# Set at image build time (--apt-url).\ndeb [trusted=yes] %s bookworm main\n' "$apt_url" \
      >"$r/etc/apt/sources.list"
  else
    debian_sources "$r" "$mirror"
  fi
  # Clones must not share sshd's host keys (the package made them in the chroot): each node
  # makes its own before sshd first starts, as a cloud image does.
  rm -f "$r"/etc/ssh/ssh_host_*
  if [ -e "$r/lib/systemd/system/ssh.service" ]; then
    install -D -m 0644 /dev/stdin "$r/etc/systemd/system/ssh.service.d/10-host-keys.conf" <<'EOF'
# Written by the image build: the image ships no host keys; ssh-keygen -A makes the missing ones
# before Debian's own config test (an empty ExecStartPre= clears the list, so the order holds).
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
EOF
  fi
  # The journal survives reboots: a failed first boot must be readable afterwards.
  mkdir -p "$r/var/log/journal"
  # Clones must not share a machine id (DHCP client identity, journal).
  : >"$r/etc/machine-id"
  rm -f "$r/var/lib/dbus/machine-id"

  # What the image promises.
  # shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
  [ "$(chroot "$r" dpkg-query -W -f '${db:Status-Abbrev}' bootstrapd)" = "ii " ] \
    || die "bootstrapd is not installed from the .deb"
  # (dpkg knows cloud-init's name from the package's Conflicts:, as not installed.)
  # shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
  ! chroot "$r" dpkg-query -W -f '${db:Status-Abbrev}\n' 'cloud-init*' 2>/dev/null | grep -q '^i' \
    || die "cloud-init is installed in the image"
  [ ! -e "$r/usr/bin/cloud-init" ] || die "/usr/bin/cloud-init exists in the image"
  local u
  for u in bootstrapd.service bootstrapd-local.service bootstrapd-local-host.service firewalld.service systemd-networkd.service; do
    [ "$(systemctl --root="$r" is-enabled "$u" 2>/dev/null)" = enabled ] || die "$u is not enabled in the image"
  done
  if ! verify=$(systemd-analyze verify --root="$r" bootstrapd.service bootstrapd-local.service bootstrapd-local-host.service 2>&1); then
    die "systemd-analyze verify of bootstrapd's units failed: $verify"
  fi
}
