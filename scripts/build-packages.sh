#!/usr/bin/env bash
# Builds the static release binary and the .deb and .rpm packages that carry it with its
# systemd unit, the default /etc/bootstrapd/bootstrapd.toml and the JSON schema.
#
#   scripts/build-packages.sh [--profile release|image] [--arch x86_64|aarch64] [--out DIR]
#
# Output (asset names follow the architecture; x86_64 shown):
#   DIR/bootstrapd                          the static binary (musl)
#   DIR/bootstrapd_VERSION_amd64.deb        Debian architecture name (arm64 for aarch64)
#   DIR/bootstrapd-VERSION-1.x86_64.rpm     RPM architecture name (aarch64)
#   DIR/packages.env                        VERSION= ARCH= DEB= RPM= BINARY= BINARY_SIZE=
# Host packages it needs (musl-tools, rpm, dpkg-dev) are installed when missing (root).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
out=build/pkg
arch=$(uname -m)
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --arch) arch=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-packages: unknown argument $1" >&2; exit 2 ;;
  esac
done
die() { echo "build-packages: $*" >&2; exit 1; }
t0=$(date +%s)

case $arch in
  x86_64) deb_arch=amd64 rpm_arch=x86_64 ;;
  aarch64|arm64) arch=aarch64 deb_arch=arm64 rpm_arch=aarch64 ;;
  *) die "unsupported architecture $arch (x86_64, aarch64)" ;;
esac
target=$arch-unknown-linux-musl

# ring compiles C and assembly for the target: musl-gcc for a native build, a cross gcc for
# aarch64 (see images/aarch64.md).
# What is checked is the commands and files, not package names (scripts/host-tools.sh).
need=(rpmbuild:rpm dpkg-deb:dpkg-dev)
if [ "$arch" = "$(uname -m)" ]; then
  need+=(musl-gcc:musl-tools)
else
  need+=(aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu /usr/aarch64-linux-gnu/include/stdio.h:libc6-dev-arm64-cross)
fi
# shellcheck source=scripts/host-tools.sh
. scripts/host-tools.sh
host_tools_need build-packages "${need[@]}" || exit 1
rustup target list --installed 2>/dev/null | grep -qx "$target" || rustup target add "$target"

target_env=${target//-/_}
if [ "$arch" = "$(uname -m)" ]; then
  command -v "$arch-linux-musl-gcc" >/dev/null || export "CC_$target_env=musl-gcc"
else
  export "CC_$target_env=aarch64-linux-gnu-gcc"
  export "CARGO_TARGET_$(echo "$target_env" | tr "[:lower:]" "[:upper:]")_LINKER=aarch64-linux-gnu-gcc"
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' bootstrapd/Cargo.toml | head -1)
[ -n "$version" ] || die "no version in bootstrapd/Cargo.toml"
mkdir -p "$out"
out=$(cd "$out" && pwd)

tb=$(date +%s)
cargo build -p bootstrapd --profile "$profile" --target "$target" --locked --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
dir=$profile; [ "$profile" = dev ] && dir=debug
bin=$target_dir/$target/$dir/bootstrapd
install -m 0755 "$bin" "$out/bootstrapd"
# The release profile strips already; the image profile does not.
strip "$out/bootstrapd" 2>/dev/null || true
file "$out/bootstrapd" 2>/dev/null | grep -q 'statically linked\|static-pie' || \
  die "$out/bootstrapd is not statically linked: $(file "$out/bootstrapd" 2>/dev/null)"
size=$(stat -c %s "$out/bootstrapd")
echo "build-packages: binary $out/bootstrapd: $size bytes ($((size / 1024)) KiB), $target, profile $profile, built in $(( $(date +%s) - tb ))s"

# The default config must be one bootstrapd accepts: an image built with a config that the
# agent rejects would fail on every node's first boot.
if [ "$arch" = "$(uname -m)" ]; then
  chk=$(mktemp -d)
  install -D -m 0644 configs/bootstrapd.toml "$chk/etc/bootstrapd/bootstrapd.toml"
  # Nothing under this root offers userdata: exit 2 ("none") is the success here; a config
  # error is exit 1 with the file named.
  set +e
  msg=$(BOOTSTRAPD_LOG=error "$out/bootstrapd" --root "$chk" query 2>&1 >/dev/null)
  rc=$?
  set -e
  rm -rf "$chk"
  [ "$rc" = 2 ] || die "bootstrapd rejects configs/bootstrapd.toml (exit $rc): $msg"
  echo "build-packages: configs/bootstrapd.toml accepted by bootstrapd"
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
files=$stage/files
# /usr/lib/systemd/system: the unit directory on merged-/usr Debian 12 and on RHEL 9 alike
# (/lib is a symlink there, and a package must not ship files through it).
install -D -m 0755 "$out/bootstrapd" "$files/usr/bin/bootstrapd"
install -D -m 0644 configs/bootstrapd.service "$files/usr/lib/systemd/system/bootstrapd.service"
install -D -m 0644 configs/bootstrapd-local.service "$files/usr/lib/systemd/system/bootstrapd-local.service"
install -D -m 0644 configs/bootstrapd-local-host.service "$files/usr/lib/systemd/system/bootstrapd-local-host.service"
install -D -m 0644 configs/bootstrapd.toml "$files/etc/bootstrapd/bootstrapd.toml"
install -D -m 0644 configs/bootstrapd.schema.json "$files/usr/share/bootstrapd/bootstrapd.schema.json"
if [ -f LICENSE ]; then install -D -m 0644 LICENSE "$files/usr/share/doc/bootstrapd/copyright"; fi

# .deb
deb=$stage/deb
cp -a "$files" "$deb"
mkdir -p "$deb/DEBIAN"
cat >"$deb/DEBIAN/control" <<CONTROL
Package: bootstrapd
Version: $version
Architecture: $deb_arch
Maintainer: bootstrapd developers <dev@bootstrapd.invalid>
Section: admin
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$deb" | cut -f1)
Recommends: firewalld, iptables, ca-certificates
Conflicts: cloud-init
Description: first-boot node bootstrap agent
 Reads userdata from a datasource, prepares the host, installs the container
 runtime and registers the node with Rancher under its roles.
CONTROL
echo /etc/bootstrapd/bootstrapd.toml >"$deb/DEBIAN/conffiles"
cat >"$deb/DEBIAN/postinst" <<'POST'
#!/bin/sh
set -e
# Enabled for the next boot, never started from the package: it is a first-boot job, and a
# package install inside an image build must not run it.
if [ "$1" = configure ]; then
  for unit in bootstrapd.service bootstrapd-local.service bootstrapd-local-host.service; do
    if command -v deb-systemd-helper >/dev/null 2>&1; then
      deb-systemd-helper unmask "$unit" >/dev/null || true
      if deb-systemd-helper --quiet was-enabled "$unit" || [ -z "$2" ]; then
        deb-systemd-helper enable "$unit" >/dev/null || true
      else
        deb-systemd-helper update-state "$unit" >/dev/null || true
      fi
    elif command -v systemctl >/dev/null 2>&1; then
      systemctl enable "$unit" >/dev/null 2>&1 || true
    fi
  done
  if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
  fi
fi
POST
cat >"$deb/DEBIAN/postrm" <<'POST'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl --system daemon-reload >/dev/null || true
fi
for unit in bootstrapd.service bootstrapd-local.service bootstrapd-local-host.service; do
  if [ "$1" = remove ] && command -v deb-systemd-helper >/dev/null 2>&1; then
    deb-systemd-helper mask "$unit" >/dev/null || true
  fi
  if [ "$1" = purge ] && command -v deb-systemd-helper >/dev/null 2>&1; then
    deb-systemd-helper purge "$unit" >/dev/null || true
    deb-systemd-helper unmask "$unit" >/dev/null || true
  fi
done
POST
chmod 0755 "$deb/DEBIAN/postinst" "$deb/DEBIAN/postrm"
debfile=$out/bootstrapd_${version}_${deb_arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$deb" "$debfile" >/dev/null
echo "build-packages: deb $debfile"

# .rpm
top=$stage/rpm
mkdir -p "$top"/{BUILD,RPMS,SOURCES,SPECS,SRPMS,BUILDROOT}
cat >"$top/SPECS/bootstrapd.spec" <<SPEC
Name: bootstrapd
Version: $version
Release: 1
Summary: first-boot node bootstrap agent
License: Apache-2.0
Recommends: firewalld, iptables, container-selinux
Conflicts: cloud-init
%description
Reads userdata from a datasource, prepares the host, installs the container runtime and
registers the node with Rancher under its roles.
%install
mkdir -p %{buildroot}
cp -a $files/. %{buildroot}/
%post
# Enabled for the next boot, never started: it is a first-boot job.
if [ \$1 -eq 1 ]; then systemctl enable bootstrapd.service bootstrapd-local.service bootstrapd-local-host.service >/dev/null 2>&1 || :; fi
%preun
if [ \$1 -eq 0 ]; then systemctl disable bootstrapd.service bootstrapd-local.service bootstrapd-local-host.service >/dev/null 2>&1 || :; fi
%files
%attr(0755,root,root) /usr/bin/bootstrapd
%attr(0644,root,root) /usr/lib/systemd/system/bootstrapd.service
%attr(0644,root,root) /usr/lib/systemd/system/bootstrapd-local.service
%attr(0644,root,root) /usr/lib/systemd/system/bootstrapd-local-host.service
%dir /etc/bootstrapd
%config(noreplace) %attr(0644,root,root) /etc/bootstrapd/bootstrapd.toml
%dir /usr/share/bootstrapd
%attr(0644,root,root) /usr/share/bootstrapd/bootstrapd.schema.json
SPEC
if [ -f "$files/usr/share/doc/bootstrapd/copyright" ]; then
  echo "%doc /usr/share/doc/bootstrapd/copyright" >>"$top/SPECS/bootstrapd.spec"
fi
# The binary is stripped and static: no debuginfo package, no build-id links, no
# automatic shared-library requirements to find. The architecture comes from --target, not
# from a BuildArch: line, which rpmbuild refuses for a foreign one ("No compatible
# architectures found for build").
rpmbuild --quiet --define "_topdir $top" --define '__strip /bin/true' \
  --define 'debug_package %{nil}' --define '_build_id_links none' \
  --target "$rpm_arch" -bb "$top/SPECS/bootstrapd.spec" >"$stage/rpmbuild.log" 2>&1 ||
  { cat "$stage/rpmbuild.log" >&2; die "rpmbuild failed"; }
rpmfile=$out/bootstrapd-$version-1.$rpm_arch.rpm
cp "$top/RPMS/$rpm_arch/bootstrapd-$version-1.$rpm_arch.rpm" "$rpmfile"
echo "build-packages: rpm $rpmfile"

cat >"$out/packages.env" <<EOF
VERSION=$version
ARCH=$arch
DEB=$debfile
RPM=$rpmfile
BINARY=$out/bootstrapd
BINARY_SIZE=$size
EOF
echo "build-packages: done in $(( $(date +%s) - t0 ))s"
