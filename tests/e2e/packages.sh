#!/usr/bin/env bash
# Package test: builds the static binary, the .deb and the .rpm (scripts/build-packages.sh)
# and checks what they carry, without a VM.
#
#   dpkg -c / rpm -qlp list the binary, the unit, the config and the schema; the config is a
#   conffile / %config(noreplace); the binary is static and runs (--version); the packaged
#   config is accepted by bootstrapd and a broken one is rejected with its position; the
#   packaged schema is the one `bootstrapd schema` prints. (Installing the .deb for real,
#   maintainer scripts included, is tests/e2e/qcow2.sh's job: dpkg -i in the image's chroot.)
# Records the binary size (build/e2e-packages/binary-size.txt).
#
# Environment: E2E_WORK (default build/e2e-packages), PROFILE (default release).
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo_root"
# shellcheck source=tests/e2e/lib.sh
. tests/e2e/lib.sh
work=${E2E_WORK:-$repo_root/build/e2e-packages}
profile=${PROFILE:-release}
mkdir -p "$work"
t0=$(date +%s)
# What is checked is the commands and files, not package names (scripts/host-tools.sh).
# shellcheck source=scripts/host-tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/host-tools.sh"
host_tools_need packages cpio:cpio file:file rpm:rpm dpkg-deb:dpkg-dev python3:python3 || exit 1

scripts/build-packages.sh --profile "$profile" --out "$work/pkg" | tee "$work/build.log"
# shellcheck source=/dev/null
# packages.env sets VERSION, ARCH, DEB, RPM, BINARY (scripts/build-packages.sh).
. "$work/pkg/packages.env"
t_build=$(( $(date +%s) - t0 ))

echo "==> .deb: $DEB"
dpkg-deb -c "$DEB" | tee "$work/deb-contents.txt" | sed 's/^/    /'
for f in ./usr/bin/bootstrapd ./usr/lib/systemd/system/bootstrapd.service \
  ./etc/bootstrapd/bootstrapd.toml ./usr/share/bootstrapd/bootstrapd.schema.json; do
  check "deb carries $f" grep -q " $f\$" "$work/deb-contents.txt"
done
check "deb: the binary is executable (rwx for root)" grep -Eq '^-rwxr-xr-x root/root .* \./usr/bin/bootstrapd$' "$work/deb-contents.txt"
check_eq "deb: the config is a conffile" /etc/bootstrapd/bootstrapd.toml "$(dpkg-deb -I "$DEB" conffiles)"
check_eq "deb: package name" bootstrapd "$(dpkg-deb -f "$DEB" Package)"
check_eq "deb: architecture from the build target" \
  "$(case $ARCH in x86_64) echo amd64 ;; aarch64) echo arm64 ;; esac)" "$(dpkg-deb -f "$DEB" Architecture)"

echo "==> .rpm: $RPM"
rpm -qlp "$RPM" 2>/dev/null | tee "$work/rpm-contents.txt" | sed 's/^/    /'
for f in /usr/bin/bootstrapd /usr/lib/systemd/system/bootstrapd.service \
  /etc/bootstrapd/bootstrapd.toml /usr/share/bootstrapd/bootstrapd.schema.json; do
  check "rpm carries $f" grep -qx "$f" "$work/rpm-contents.txt"
done
check_eq "rpm: the config is %config(noreplace)" /etc/bootstrapd/bootstrapd.toml "$(rpm -qcp "$RPM" 2>/dev/null)"
check_eq "rpm: architecture" "$ARCH" "$(rpm -qp --qf '%{ARCH}' "$RPM" 2>/dev/null)"
check_eq "rpm: no shared-library requirements (static binary)" "" \
  "$(rpm -qRp "$RPM" 2>/dev/null | grep -E '\.so' || true)"

echo "==> the binary"
x=$work/x
rm -rf "$x"
mkdir -p "$x"
dpkg-deb -x "$DEB" "$x"
check "static binary" sh -c "file '$x/usr/bin/bootstrapd' | grep -Eq 'statically linked|static-pie linked'"
# shellcheck disable=SC2153 # VERSION comes from packages.env
check "it runs: --version" sh -c "'$x/usr/bin/bootstrapd' --version | grep -q '^bootstrapd $VERSION'"
check_eq "the .deb's and the .rpm's binary are the same bytes" "$(sha256sum <"$x/usr/bin/bootstrapd")" \
  "$(rpm2cpio "$RPM" | (cd "$work" && rm -rf rpmx && mkdir rpmx && cd rpmx && cpio -idm --quiet ./usr/bin/bootstrapd && sha256sum <usr/bin/bootstrapd))"

# The config as packaged, under --root: `query` loads it before looking for userdata (none
# here: exit 2). A config error is exit 1 naming the file and line:col.
qroot=$work/qroot
rm -rf "$qroot"
mkdir -p "$qroot/etc/bootstrapd"
cp "$x/etc/bootstrapd/bootstrapd.toml" "$qroot/etc/bootstrapd/"
set +e
"$x/usr/bin/bootstrapd" --root "$qroot" query >/dev/null 2>"$work/query.err"
rc=$?
set -e
check_eq "the packaged bootstrapd.toml is accepted (query: no userdata, exit 2)" 2 "$rc"
check "the packaged bootstrapd.toml has every key, commented" sh -c "
  for k in datasource imds_v1_fallback max_userdata_bytes datasource_deadline_ms attempt_ms \
    initial_backoff_ms max_backoff_ms max_attempts ec2 openstack; do
    grep -Eq \"^#\$k = \" '$x/etc/bootstrapd/bootstrapd.toml' || { echo missing \$k; exit 1; }
  done"
# Uncommenting every default must still parse (they are the defaults, spelled right).
sed -e 's/^#\([a-z_0-9]* = \)/\1/' -e '/^datasource = /d' "$x/etc/bootstrapd/bootstrapd.toml" \
  >"$qroot/etc/bootstrapd/bootstrapd.toml"
set +e
"$x/usr/bin/bootstrapd" --root "$qroot" query >/dev/null 2>"$work/query-uncommented.err"
rc=$?
set -e
check_eq "the uncommented defaults are accepted" 2 "$rc"
# Control: the same check rejects a typo, so the two passes above mean something.
printf 'imds_v1_fallbak = true\n' >"$qroot/etc/bootstrapd/bootstrapd.toml"
set +e
"$x/usr/bin/bootstrapd" --root "$qroot" query >/dev/null 2>"$work/query-bad.err"
rc=$?
set -e
check_eq "control: a misspelt key is rejected (exit 1)" 1 "$rc"
check "control: the error names the file and 1:1" grep -q 'bootstrapd.toml.*1:1' "$work/query-bad.err"

check_eq "the packaged schema is what bootstrapd schema prints" \
  "$(python3 -m json.tool --sort-keys <"$x/usr/share/bootstrapd/bootstrapd.schema.json" | sha256sum)" \
  "$("$x/usr/bin/bootstrapd" schema | python3 -m json.tool --sort-keys | sha256sum)"

size=$BINARY_SIZE
echo "$size" >"$work/binary-size.txt"
echo
echo "binary size: $size bytes ($((size / 1024)) KiB), $ARCH musl, profile $profile"
echo "durations: build-packages.sh ${t_build}s, total $(( $(date +%s) - t0 ))s"
e2e_summary
[ "$E2E_FAILED" = 0 ]
