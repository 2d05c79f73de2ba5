#!/usr/bin/env bash
# Builds the Docker runtime as a systemd system extension (sysext) image from Debian 12's own
# .debs, so that a node runs exactly the version the apt path installs (run as root).
#
#   scripts/build-sysext.sh [--apt-repo DIR] [--rootfs DIR] [--out DIR] [--any]
#
#   --apt-repo DIR  where the .debs come from: any directory holding them (searched
#                   recursively, e.g. a repository with pool/); default: the local apt
#                   repository of the cached Debian 12 base (scripts/build-image.sh builds it
#                   when missing, in ${BOOTSTRAPD_CACHE:-/var/cache/bootstrapd})
#   --rootfs DIR    the root filesystem the extension goes on: its dpkg status decides which
#                   dependencies are already there, its /etc/os-release the extension-release,
#                   and the checks run the programs on it (under an overlay, read only);
#                   default: the cached base
#   --out DIR       output directory (default build/sysext)
#   --any           ID=_any in the extension-release (any OS, any version) instead of the
#                   rootfs's ID and VERSION_ID; the architecture is always pinned
#
# The image holds docker.io, containerd, runc and tini, and those of their Depends and
# Pre-Depends (not Recommends) that the rootfs lacks, as apt itself resolves them against the
# rootfs's dpkg status. Only /usr is kept (the sysext rule): /lib, /bin and /sbin are moved into
# usr/ (Debian 12 is merged-/usr), /etc and the rest are dropped (none of it is needed to start
# the units: see the listing the script prints). Added:
#   usr/lib/sysusers.d/docker.conf             the docker group of docker.socket (Debian's
#                                              postinst makes it with addgroup, which never runs)
#   usr/share/containerd/config.toml           Debian's /etc/containerd/config.toml, put in /etc
#   usr/lib/tmpfiles.d/containerd-sysext.conf  when absent by a containerd.service drop-in
#   usr/lib/extension-release.d/extension-release.docker
# Output: DIR/docker.raw (squashfs), DIR/docker.raw.sha256 (sha256sum format) and DIR/sysext.env
# (SYSEXT= SYSEXT_NAME= SYSEXT_SHA256= SYSEXT_VERSIONS= SYSEXT_PACKAGES= SYSEXT_RELEASE=).
# Checks: the image's listing; the programs' --version, systemd-sysusers and systemd-analyze
# verify on the rootfs with the extension's usr/ laid over it (an overlayfs: the rootfs is only
# read); a real `systemd-sysext --root merge` and unmerge of the image onto the rootfs (skipped
# when the host cannot mount a squashfs image). Nothing is cached: a rebuild overwrites DIR.
# NAME is fixed (docker): systemd-sysext 252 reads extension-release.NAME of NAME.raw only, so
# the image must keep that file name wherever it is installed.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cache=${BOOTSTRAPD_CACHE:-/var/cache/bootstrapd}
# shellcheck source=scripts/host-tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/host-tools.sh"
out=$repo_root/build/sysext
apt_repo=
rootfs=
any=0
name=docker
wanted=(docker.io containerd runc tini)

die() { echo "build-sysext: $*" >&2; exit 1; }
usage() { sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case $1 in
    --apt-repo) apt_repo=${2:?}; shift 2 ;;
    --rootfs) rootfs=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --any) any=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "build-sysext: unknown argument $1" >&2; usage 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || die "must run as root (chroot, root-owned files, loop mounts)"

# What is checked is the commands and files, not package names (scripts/host-tools.sh).
host_tools_need build-sysext mksquashfs:squashfs-tools unsquashfs:squashfs-tools \
  apt-ftparchive:apt-utils dpkg-deb:dpkg systemd-analyze:systemd || exit 1

t0=$(date +%s)
timings=()
step() { timings+=("$(printf '%-34s %5ss' "$1" $(( $(date +%s) - $2 )))"); }
# Files the image makes must not depend on the caller's umask.
umask 022

mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd)
work=$out/work
rm -rf "$work"
mkdir -p "$work"
mounts=()
cleanup() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}" 2>/dev/null || true
  done
  # Never delete through a mount still there: its lower layer is the cached base.
  if findmnt -rn -o TARGET | grep -q -F "$work/"; then
    echo "build-sysext: $work still has mounts; left in place" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# The cached base (rootfs and its apt repository), through the same helper as the disk images.
if [ -z "$apt_repo" ] || [ -z "$rootfs" ]; then
  t=$(date +%s)
  # shellcheck source=images/qcow2/rootfs.sh
  . "$repo_root/images/qcow2/rootfs.sh"
  # scripts/build-image.sh wants a bootstrapd binary for its disk image, which is thrown away:
  # any executable does, and building the real one would cost minutes.
  printf '#!/bin/sh\nexit 0\n' >"$work/bootstrapd"
  chmod 0755 "$work/bootstrapd"
  base_rootfs "$work" "$work/bootstrapd"
  [ -n "$rootfs" ] || rootfs=$BASE_ROOTFS
  [ -n "$apt_repo" ] || apt_repo=$cache/debian12-base-$BASE_HASH/aptrepo
  rm -rf "$work/base-image" "$work/bootstrapd"
  step "base (cached or built)" "$t"
fi
[ -d "$apt_repo" ] || die "$apt_repo: no such directory"
[ -f "$rootfs/var/lib/dpkg/status" ] || die "$rootfs has no dpkg status"
apt_repo=$(cd "$apt_repo" && pwd)
rootfs=$(cd "$rootfs" && pwd)
# Another image build may replace the cached base while it is read (scripts/build-image.sh
# takes this lock for the same reason).
exec 9>"$cache/debian12.lock"
flock 9

# --- which .debs -----------------------------------------------------------------------------
t=$(date +%s)
deb_arch=$(dpkg-query --admindir="$rootfs/var/lib/dpkg" -W -f='${Architecture}' dpkg)
# systemd's names for the architectures (ARCHITECTURE= of extension-release).
case $deb_arch in
  amd64) sd_arch=x86-64 ;;
  arm64) sd_arch=arm64 ;;
  armhf) sd_arch=arm ;;
  i386) sd_arch=x86 ;;
  ppc64el) sd_arch=ppc64-le ;;
  riscv64) sd_arch=riscv64 ;;
  s390x) sd_arch=s390x ;;
  *) die "no systemd architecture name known for dpkg's $deb_arch" ;;
esac
# apt's own resolver, fed the rootfs's dpkg status and only this repository, gives the very set
# of packages `apt-get install --no-install-recommends` would unpack on that rootfs (versions,
# alternatives and Provides included). Nothing of the host's apt state is read or written.
a=$work/apt
mkdir -p "$a/repo" "$a/lists/partial" "$a/cache/archives/partial" "$a/empty"
(cd "$apt_repo" && apt-ftparchive packages .) >"$a/repo/Packages" 2>"$a/ftparchive.log"
grep -q '^Package: docker\.io$' "$a/repo/Packages" || die "$apt_repo holds no docker.io .deb"
echo "deb [trusted=yes] file:$a/repo ./" >"$a/sources.list"
: >"$a/extended_states"
apt_opts=(
  -o "Dir::State::status=$rootfs/var/lib/dpkg/status"
  -o "Dir::State::extended_states=$a/extended_states"
  -o "Dir::State::Lists=$a/lists"
  -o "Dir::Cache=$a/cache"
  -o "Dir::Etc::SourceList=$a/sources.list"
  -o "Dir::Etc::SourceParts=$a/empty"
  -o "Dir::Etc::Preferences=$a/empty/none"
  -o "Dir::Etc::PreferencesParts=$a/empty"
  -o "APT::Architecture=$deb_arch"
  -o "APT::Architectures=$deb_arch"
  -o APT::Install-Recommends=false
  -o APT::Install-Suggests=false
  -o Debug::NoLocking=true
)
apt-get "${apt_opts[@]}" -qq update >"$a/update.log" 2>&1 || { cat "$a/update.log" >&2; die "apt-get update on $apt_repo failed"; }
apt-get "${apt_opts[@]}" -s --no-install-recommends install "${wanted[@]}" >"$a/plan" 2>&1 \
  || { cat "$a/plan" >&2; die "apt cannot install ${wanted[*]} from $apt_repo on $rootfs"; }
# "Inst NAME [OLD] (VERSION ARCHIVE [ARCH])": OLD only when the rootfs has an older version.
mapfile -t plan < <(sed -n 's/^Inst \([^ ]*\) \(\[[^]]*\] \)\{0,1\}(\([^ ]*\) .*/\1=\3/p' "$a/plan" | sort)
[ ${#plan[@]} -gt 0 ] || { cat "$a/plan" >&2; die "apt plans to install nothing"; }
for p in "${wanted[@]}"; do
  printf '%s\n' "${plan[@]}" | grep -q "^$p=" \
    || die "$p is already installed in $rootfs: the extension would shadow dpkg's copy"
done
# NAME=VERSION -> the .deb, from the index apt read (Filename is relative to the repository).
debs=()
for pv in "${plan[@]}"; do
  f=$(awk -v p="${pv%%=*}" -v v="${pv#*=}" '
    /^Package: / { pkg = $2 } /^Version: / { ver = $2 } /^Filename: / { file = $2 }
    /^$/ { if (pkg == p && ver == v) exit; pkg = ver = file = "" }
    END { if (pkg == p && ver == v) print file }' "$a/repo/Packages")
  if [ -z "$f" ] || [ ! -f "$apt_repo/$f" ]; then die "no .deb for $pv in $apt_repo"; fi
  debs+=("$apt_repo/${f#./}")
done
echo "build-sysext: packages (apt's plan on $rootfs, without Recommends):"
for pv in "${plan[@]}"; do
  why=dependency
  printf '%s\n' "${wanted[@]}" | grep -qx "${pv%%=*}" && why=requested
  printf '  %-28s %-40s %s\n' "${pv%%=*}" "${pv#*=}" "$why"
done
# The other side of the plan: what the image relies on the rootfs for.
deps=$(awk '
    /^Package: / { pkg = $2 } /^Version: / { ver = $2 }
    /^(Pre-)?Depends: / { sub(/^[^:]*: /, ""); d[pkg "=" ver] = d[pkg "=" ver] ", " $0 }
    END { for (k in d) print k "\t" d[k] }' "$a/repo/Packages" \
  | grep -F -f <(printf '%s\t\n' "${plan[@]}") | cut -f2 | tr ',|' '\n' \
  | sed -e 's/([^)]*)//' -e 's/:any//' -e 's/[[:space:]]//g' | grep -v '^$' | sort -u)
echo "build-sysext: dependencies the rootfs already has:"
for d in $deps; do
  printf '%s\n' "${plan[@]}" | grep -q "^$d=" && continue
  v=$(dpkg-query --admindir="$rootfs/var/lib/dpkg" -W -f='${db:Status-Abbrev}${Version}' "$d" 2>/dev/null \
    | sed -n 's/^ii *//p' || true)
  if [ -z "$v" ]; then
    v=$(dpkg-query --admindir="$rootfs/var/lib/dpkg" -W -f='${db:Status-Abbrev} ${Package}=${Version} ${Provides},\n' \
      | awk -v d="$d" '$1 == "ii" && index(" " $0, " " d " ") + index(" " $0, " " d ",") { printf "%s%s", sep, $2; sep = ", " }
        END { if (sep) print " provides it" }')
  fi
  printf '  %-28s %s\n' "$d" "${v:-(not installed: another alternative satisfies it)}"
done
versions=
for p in "${wanted[@]}"; do
  versions+="$(printf '%s\n' "${plan[@]}" | grep "^$p=") "
done
versions=${versions% }
step "package set (apt -s)" "$t"

# --- the tree ----------------------------------------------------------------------------------
t=$(date +%s)
tree=$work/tree
mkdir -p "$tree"
for d in "${debs[@]}"; do
  dpkg-deb -x "$d" "$tree"
done
# Merged /usr: the host's /lib, /bin and /sbin are symlinks into /usr, so that is where the
# files are seen from once the extension is merged.
for d in bin sbin lib lib32 lib64 libx32; do
  if [ ! -d "$tree/$d" ] || [ -L "$tree/$d" ]; then continue; fi
  while IFS= read -r -d '' f; do
    if [ -e "$tree/usr/$d/$f" ] || [ -L "$tree/usr/$d/$f" ]; then
      die "/$d/$f and /usr/$d/$f are both shipped"
    fi
  done < <(cd "$tree/$d" && find . ! -type d -printf '%P\0')
  mkdir -p "$tree/usr/$d"
  cp -a "$tree/$d/." "$tree/usr/$d/"
  rm -rf "${tree:?}/$d"
done
echo "build-sysext: dropped (this extension holds /usr only):"
dropped=$(cd "$tree" && find . -mindepth 1 ! -path './usr' ! -path './usr/*' ! -type d -printf '  /%P\n' | sort)
echo "${dropped:-  (nothing)}"
# Why each is safe to drop (the check below fails on anything new, so that it gets looked at):
#   /etc/default/docker          comments only; docker.service reads it with EnvironmentFile=-
#   /etc/init.d/docker           the sysvinit script; systemd runs docker.service
#   /etc/containerd/config.toml  kept below under usr/share and put in place by tmpfiles
unexpected=$(grep -v -x -e '  /etc/default/docker' -e '  /etc/init.d/docker' \
  -e '  /etc/containerd/config.toml' <<<"$dropped" || true)
[ -z "$unexpected" ] || die "files outside /usr that nobody looked at: $unexpected"
# containerd starts without its config, but Debian's differs from the built-in defaults (the
# "opt" plugin's directory under /var/lib/containerd instead of /opt/containerd, the CNI paths):
# the same file, copied into /etc only when absent, keeps the apt path's behaviour and the
# admin's own file.
if [ -f "$tree/etc/containerd/config.toml" ]; then
  install -D -m 0644 "$tree/etc/containerd/config.toml" "$tree/usr/share/containerd/config.toml"
  install -D -m 0644 /dev/stdin "$tree/usr/lib/tmpfiles.d/containerd-sysext.conf" <<'EOF'
# Debian's containerd configuration, from the docker system extension (its /usr only).
C /etc/containerd/config.toml - - - - /usr/share/containerd/config.toml
EOF
  # tmpfiles runs at boot, but the extension is merged later (by bootstrapd, at first boot).
  install -D -m 0644 /dev/stdin "$tree/usr/lib/systemd/system/containerd.service.d/10-sysext-config.conf" <<'EOF'
[Service]
ExecStartPre=-/usr/bin/systemd-tmpfiles --create /usr/lib/tmpfiles.d/containerd-sysext.conf
EOF
fi
find "$tree" -mindepth 1 -maxdepth 1 ! -name usr -exec rm -rf {} +
# Debian's postinst creates the group with addgroup; a sysext has no maintainer scripts.
install -D -m 0644 /dev/stdin "$tree/usr/lib/sysusers.d/docker.conf" <<'EOF'
# The group of /run/docker.sock (docker.socket's SocketGroup=).
g docker -
EOF
# systemd-sysext looks for extension-release.NAME, NAME being the image file's name without .raw.
release_file=$tree/usr/lib/extension-release.d/extension-release.$name
if [ "$any" = 1 ]; then
  release="ID=_any ARCHITECTURE=$sd_arch"
else
  os_id=$(. "$rootfs/etc/os-release" && echo "${ID:-}")
  os_version=$(. "$rootfs/etc/os-release" && echo "${VERSION_ID:-}")
  if [ -z "$os_id" ] || [ -z "$os_version" ]; then die "$rootfs/etc/os-release lacks ID or VERSION_ID"; fi
  release="ID=$os_id VERSION_ID=$os_version ARCHITECTURE=$sd_arch"
fi
mkdir -p "${release_file%/*}"
tr ' ' '\n' <<<"$release" >"$release_file"
chmod 0644 "$release_file"
step "extract + layout" "$t"

# --- the image ---------------------------------------------------------------------------------
t=$(date +%s)
# zstd: the Debian 12 kernel reads it (CONFIG_SQUASHFS_ZSTD, checked below); at a low level it
# builds in seconds and decompresses faster than xz at nearly xz's size for these binaries.
kconfig=$(ls -v "$rootfs"/boot/config-* 2>/dev/null | tail -n 1 || true)
if [ -n "$kconfig" ]; then
  grep -qx 'CONFIG_SQUASHFS_ZSTD=y' "$kconfig" || die "$kconfig: no zstd squashfs (CONFIG_SQUASHFS_ZSTD=y)"
else
  echo "build-sysext: warning: no kernel config in $rootfs/boot; zstd squashfs support unchecked" >&2
fi
image=$out/$name.raw
rm -f "$image" "$image.tmp" "$image.sha256" "$out/sysext.env"
# Times and owners fixed, no host xattrs: the same .debs give the same image.
mksquashfs "$tree" "$image.tmp" -noappend -all-root -no-xattrs -mkfs-time 0 -all-time 0 \
  -comp zstd -Xcompression-level 6 -quiet -no-progress >"$work/mksquashfs.log" 2>&1 \
  || { cat "$work/mksquashfs.log" >&2; die "mksquashfs failed"; }
mv "$image.tmp" "$image"
sha=$(sha256sum "$image" | cut -d' ' -f1)
(cd "$out" && sha256sum "$name.raw" >"$name.raw.sha256")
step "mksquashfs" "$t"

# --- plumbing checks: what the image lists -----------------------------------------------------
t=$(date +%s)
listing=$(unsquashfs -l "$image" | sed -n 's|^squashfs-root/||p')
tini_static=$(readlink "$tree/usr/bin/docker-init" || true)
for f in usr/sbin/dockerd usr/bin/docker usr/bin/containerd usr/bin/containerd-shim-runc-v2 \
  usr/sbin/runc usr/bin/docker-init "usr/bin/${tini_static:-tini-static}" \
  usr/lib/systemd/system/docker.service usr/lib/systemd/system/docker.socket \
  usr/lib/systemd/system/containerd.service usr/lib/sysusers.d/docker.conf \
  "usr/lib/extension-release.d/extension-release.$name"; do
  grep -qx "$f" <<<"$listing" || die "$name.raw lacks $f"
done
grep -v -e '^$' -e '^usr$' -e '^usr/' <<<"$listing" && die "$name.raw holds more than usr/"

# --- real checks: the programs and units on the rootfs with the extension over it ---------------
# Overlays, not copies: the rootfs stays the read-only lower layer (it is the shared cache) and
# nothing of its ~700 MB is copied or deleted (deleting is slow on a disk mounted with discard).
case $work$rootfs in *[:,]*) die "overlayfs options cannot name $work or $rootfs (':' or ',')" ;; esac
overlay_root() { # DIR LOWER...: DIR, a writable root over the LOWER layers (the first on top)
  local dir=$1 lower
  shift
  lower=$(IFS=:; echo "$*")
  mkdir -p "$dir" "$dir.upper" "$dir.work"
  mount -t overlay overlay -o "lowerdir=$lower,upperdir=$dir.upper,workdir=$dir.work" "$dir"
  mounts+=("$dir")
}
check=$work/check
unsquashfs -q -d "$work/unsquashed" "$image" >/dev/null
# What `cp -a unsquashed/usr/. rootfs/usr/` would make, without touching the rootfs.
overlay_root "$check" "$work/unsquashed" "$rootfs"
in_check() { chroot "$check" env -i PATH=/usr/sbin:/usr/bin LC_ALL=C.UTF-8 "$@"; }
v_dockerd=$(in_check dockerd --version) || die "dockerd --version failed on the rootfs"
v_docker=$(in_check docker --version) || die "docker --version failed on the rootfs"
v_containerd=$(in_check containerd --version) || die "containerd --version failed on the rootfs"
v_runc=$(in_check runc --version | head -n 1) || die "runc --version failed on the rootfs"
v_tini=$(in_check docker-init --version) || die "docker-init --version failed on the rootfs"
# The group must come from the extension's own sysusers.d (bootstrapd runs systemd-sysusers).
grep -q '^docker:' "$check/etc/group" && die "the rootfs already has a docker group: the sysusers check proves nothing"
systemd-sysusers --root="$check" >"$work/sysusers.log" 2>&1 || { cat "$work/sysusers.log" >&2; die "systemd-sysusers failed"; }
grep -q '^docker:' "$check/etc/group" || die "systemd-sysusers did not create the docker group"
# What the containerd.service drop-in runs: Debian's file into /etc when absent, never over one.
if [ -f "$check/usr/lib/tmpfiles.d/containerd-sysext.conf" ]; then
  systemd-tmpfiles --root="$check" --create containerd-sysext.conf >"$work/tmpfiles.log" 2>&1 \
    || { cat "$work/tmpfiles.log" >&2; die "systemd-tmpfiles --create containerd-sysext.conf failed"; }
  cmp -s "$check/etc/containerd/config.toml" "$check/usr/share/containerd/config.toml" \
    || die "systemd-tmpfiles did not put Debian's config.toml in /etc/containerd"
fi
# Strict like scripts/build-image.sh: systemd only warns about a misspelt setting, exit 0.
if ! verify=$(systemd-analyze verify --root="$check" docker.socket docker.service containerd.service 2>&1) \
  || [ -n "$verify" ]; then
  die "systemd-analyze verify of the extension's units: ${verify:-failed}"
fi
step "checks (listing, chroot, units)" "$t"

# The real thing where the host can do it: systemd-sysext itself merges the image onto the rootfs
# (under another overlay), which proves that the extension-release matches that rootfs's os-release and that
# its file name matches the image's. In a mount namespace of its own, so that nothing outlives a
# failure, with a tmpfs /run as on a booted node (systemd-sysext makes /run a slave mount, which
# fails where /run is no mount point, e.g. in a container).
t=$(date +%s)
mroot=$work/merge-root
overlay_root "$mroot" "$rootfs"
mkdir -p "$mroot/var/lib/extensions"
cp "$image" "$mroot/var/lib/extensions/$name.raw"
if grep -qw squashfs /proc/filesystems && [ -e /dev/loop-control ] && command -v unshare >/dev/null; then
  # shellcheck disable=SC2016 # the script of the inner shell, given ROOT and NAME as $1 and $2
  if ! unshare --mount --propagation private bash -c '
      set -euo pipefail
      # Cut off from the host first, then shared within: systemd-sysext moves its overlay into
      # place from a namespace of its own, which reaches this one only through a shared mount.
      mount --make-rshared /
      mount -t tmpfs tmpfs /run
      systemd-sysext --root="$1" merge
      # systemd-sysext 252 reports some failures only in its log, not in its exit status.
      [ -x "$1/usr/sbin/dockerd" ] || { echo "merged, but no usr/sbin/dockerd: extension-release.$2 did not match"; exit 1; }
      [ -f "$1/usr/lib/systemd/system/docker.service" ] || { echo "merged, but no docker.service"; exit 1; }
      # `status` would read the host'"'"'s /usr whatever --root says (252); the marker it reads is here.
      echo "merged over $1/usr: $(findmnt -n -o FSTYPE "$1/usr"), extensions: $(tr "\n" " " <"$1/usr/.systemd-sysext/extensions" 2>/dev/null || echo "?")"
      systemd-sysext --root="$1" list --no-pager
      systemd-sysext --root="$1" unmerge
      [ ! -e "$1/usr/sbin/dockerd" ] || { echo "unmerge left usr/sbin/dockerd behind"; exit 1; }
    ' sh "$mroot" "$name" >"$work/merge.log" 2>&1; then
    cat "$work/merge.log" >&2
    die "systemd-sysext --root merge of $name.raw failed"
  fi
  sysext_status=$(sed 's/^/  /' "$work/merge.log")
  step "systemd-sysext merge --root" "$t"
else
  sysext_status="  skipped: this host cannot mount a squashfs image in a mount namespace"
fi

cat >"$out/sysext.env" <<EOF
SYSEXT=$image
SYSEXT_NAME=$name
SYSEXT_SHA256=$sha
SYSEXT_VERSIONS="$versions"
SYSEXT_PACKAGES="${plan[*]}"
SYSEXT_RELEASE="$release"
EOF

size=$(stat -c %s "$image")
echo "build-sysext: checks passed; versions, run on the rootfs with the extension over it:"
printf '  %s\n' "$v_dockerd" "$v_docker" "$v_containerd" "$v_runc" "$v_tini"
echo "build-sysext: systemd-sysext --root merge:"
echo "$sysext_status"
echo "build-sysext: extension-release.$name: $release"
echo "build-sysext: timings:"
printf '  %s\n' "${timings[@]}"
echo "build-sysext: $image ready in $(( $(date +%s) - t0 ))s: $(( size / 1024 )) KiB, $(unsquashfs -s "$image" | sed -n 's/^Number of inodes \([0-9]*\).*/\1/p') inodes, sha256 $sha"
