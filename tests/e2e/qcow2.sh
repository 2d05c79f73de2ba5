#!/usr/bin/env bash
# VM end-to-end test of the bootable qcow2 (scripts/build-qcow2.sh), run as root.
#
# Builds the packages and the disk image (apt source: the base's local repository, served
# here), serves the Rancher test server on 127.0.0.1, then boots the image ONCE under qemu
# through its own bootloader (SeaBIOS -> GRUB on the MBR -> kernel; no -kernel), with NoCloud
# userdata on a cidata ISO. It waits on the serial console until bootstrapd.service has
# finished, powers the VM off over ACPI and reads the disk afterwards (the journal, dpkg's
# database, bootstrapd's state through `bootstrapd --root DIR status`): the image carries no
# test hook of its own.
#
# Checked always: GRUB booted the kernel (BOOT_IMAGE= on the kernel command line, root=UUID of
# the image's partition); bootstrapd is installed from the .deb (dpkg status, same bytes as the
# .deb's binary) and enabled; cloud-init absent; firewalld enabled and active before bootstrapd
# started; bootstrapd.service ran /usr/bin/bootstrapd and finished.
# E2E_LEVEL=full (default) also: bootstrapd succeeded and the Rancher test server recorded the
# node. E2E_LEVEL=boot lists those as NOT checked.
#
# Environment: E2E_LEVEL, E2E_WORK (default build/e2e-qcow2), E2E_BOOT_TIMEOUT (s, default
# 1500), E2E_REUSE_IMAGE=1 (skip the builds when the image exists), BOOTSTRAPD_CACHE.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo_root"
# shellcheck source=tests/e2e/lib.sh
. tests/e2e/lib.sh

work=${E2E_WORK:-$repo_root/build/e2e-qcow2}
boot_timeout=${E2E_BOOT_TIMEOUT:-1500}
# Ports of their own: the e2e driver may run at the same time.
apt_port=${QCOW2_APT_PORT:-18094}
rancher_port=${QCOW2_RANCHER_PORT:-8453}
e2e_deb_test_init qcow2 qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils \
  genisoimage:genisoimage python3:python3 curl:curl

mkdir -p "$work/logs"
pids=() loopdev='' mnt=''
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$mnt" ]; then umount "$mnt" 2>/dev/null || true; fi
  if [ -n "$loopdev" ]; then losetup -d "$loopdev" 2>/dev/null || true; fi
}
trap cleanup EXIT

t=$(date +%s)
host_setup_deb_image "$work" qcow2 "$apt_port" "$rancher_port" || die "the host set-up failed (see above)"
timed "host set-up (packages, qcow2 image, servers)" $(( $(date +%s) - t ))
pids+=("${HOST_PIDS[@]}")
rancher_dir=$HOST_RANCHER_DIR token=$HOST_TOKEN ca_checksum=$HOST_CA_CHECKSUM

seed=$work/seed
rm -rf "$seed"
mkdir -p "$seed"
render_userdata tests/e2e/userdata/worker-system-agent.yaml "$seed/user-data" \
  "https://10.0.2.2:$rancher_port" "$token" "$ca_checksum"
printf 'instance-id: iid-qcow2-node\nlocal-hostname: qcow2-node\n' >"$seed/meta-data"
genisoimage -quiet -output "$seed/seed.iso" -volid cidata -joliet -rock "$seed/user-data" "$seed/meta-data"

overlay=$work/node.qcow2
rm -f "$overlay"
qemu-img create -q -f qcow2 -F qcow2 -b "$QCOW2" "$overlay"
serial=$work/logs/serial.log
qmp=$work/qmp.sock
: >"$serial"
rm -f "$qmp"
echo "==> booting $QCOW2 (through an overlay) from its own bootloader"
t_boot=$(date +%s)
qemu-system-x86_64 -accel tcg,tb-size=128 -m 1536 -smp 2 \
  -nodefaults -display none -no-reboot -boot c \
  -drive "file=$overlay,format=qcow2,if=virtio,cache=unsafe" \
  -drive "file=$seed/seed.iso,format=raw,if=virtio,readonly=on" \
  -netdev user,id=net0 -device virtio-net-pci,netdev=net0 -device virtio-rng-pci \
  -serial "file:$serial" -qmp "unix:$qmp,server=on,wait=off" &
qemu_pid=$!
pids+=("$qemu_pid")

log() { tr -d '\r' <"$serial" | sed 's/\x1b\[[0-9;]*[a-zA-Z]//g'; }
outcome=$(e2e_wait_bootstrapd "$serial" "$qemu_pid" "$t_boot" "$boot_timeout")
timed "qemu start to bootstrapd.service done" $(( $(date +%s) - t_boot ))
echo "    serial: ${outcome:-bootstrapd.service did not finish within ${boot_timeout}s}"

# ACPI power button: systemd-logind shuts down cleanly, so the journal is complete on disk.
qmp_powerdown() {
  python3 - "$qmp" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
f.readline()
for cmd in ("qmp_capabilities", "system_powerdown"):
    f.write(json.dumps({"execute": cmd}) + "\n"); f.flush()
    while "return" not in json.loads(f.readline()):
        pass
PY
}
t=$(date +%s)
if kill -0 "$qemu_pid" 2>/dev/null; then
  qmp_powerdown || echo "    QMP powerdown failed"
  for _ in $(seq 120); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$qemu_pid" 2>/dev/null; then
    echo "    no clean power-off within 120s: killing qemu"
    kill "$qemu_pid"
  fi
fi
wait "$qemu_pid" 2>/dev/null || true
timed "power-off" $(( $(date +%s) - t ))
timed "qemu start to exit" $(( $(date +%s) - t_boot ))

echo "==> serial console"
check "GRUB ran from the disk's MBR (its banner/menu on the serial console)" sh -c "tr -d '\r' <'$serial' | grep -aq 'GNU GRUB'"
check_eq "the kernel was started by GRUB (BOOT_IMAGE=) with root=UUID of the image" yes \
  "$(log | grep -aE 'Command line: BOOT_IMAGE=/boot/vmlinuz-[^ ]+ root=UUID='"$ROOT_UUID" >/dev/null && echo yes || echo no)"
check "systemd reached a login prompt on ttyS0" sh -c "tr -d '\r' <'$serial' | grep -aq 'login:'"
check "bootstrapd.service finished (systemd status line)" test -n "$outcome"

echo "==> the disk after power-off"
raw=$work/node.raw
rm -f "$raw"
qemu-img convert -O raw "$overlay" "$raw"
# The root partition starts at 1 MiB (scripts/build-qcow2.sh): a loop device at that offset,
# since partition scanning of loop devices may be unavailable (containers).
loopdev=$(losetup -f --show -r -o 1048576 "$raw")
mnt=$work/mnt
mkdir -p "$mnt"
mount -o ro,noload "$loopdev" "$mnt"
debx=$work/debx
rm -rf "$debx"
dpkg-deb -x "$DEB" "$debx"

check_eq "bootstrapd installed by dpkg from the .deb" "ii  $(dpkg-deb -f "$DEB" Version)" \
  "$(dpkg-query --admindir="$mnt/var/lib/dpkg" -W -f '${db:Status-Abbrev} ${Version}' bootstrapd 2>&1)"
check_eq "/usr/bin/bootstrapd is the .deb's binary" "$(sha256sum <"$debx/usr/bin/bootstrapd")" "$(sha256sum <"$mnt/usr/bin/bootstrapd")"
check "bootstrapd.service enabled by the package" test -L "$mnt/etc/systemd/system/multi-user.target.wants/bootstrapd.service"
check_eq "cloud-init absent (dpkg, /usr/bin)" "" \
  "$(dpkg-query --admindir="$mnt/var/lib/dpkg" -W -f '${Package} ${db:Status-Abbrev}\n' 'cloud-init*' 2>/dev/null | grep ' i'; ls "$mnt"/usr/bin/cloud-init 2>/dev/null)"
check "firewalld installed" test -f "$mnt/usr/lib/systemd/system/firewalld.service"

journal=$work/logs/journal.txt
journalctl -D "$mnt/var/log/journal" -b -o short-monotonic --no-pager >"$journal" 2>&1 || true
journalctl -D "$mnt/var/log/journal" -b -o json --no-pager \
  -u bootstrapd.service -u firewalld.service >"$work/logs/journal-units.json" 2>/dev/null || true
check "the journal of the boot was read from the disk" test -s "$journal"
# Ordering from the journal's own monotonic clock: firewalld active before bootstrapd started.
read -r fw_up bs_start < <(python3 - "$work/logs/journal-units.json" <<'PY'
import json, sys
fw = bs = None
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    unit, msg, t = e.get("UNIT"), e.get("MESSAGE") or "", int(e.get("__MONOTONIC_TIMESTAMP", 0))
    if unit == "firewalld.service" and e.get("JOB_TYPE") == "start" and fw is None:
        fw = t
    if unit == "bootstrapd.service" and msg.startswith("Starting") and bs is None:
        bs = t
print(fw or 0, bs or 0)
PY
)
check "firewalld was started before bootstrapd (journal)" test "$fw_up" -gt 0 -a "$bs_start" -gt 0 -a "$fw_up" -le "$bs_start"
check "bootstrapd itself logged to the journal" sh -c "journalctl -D '$mnt/var/log/journal' -b --no-pager -o cat _SYSTEMD_UNIT=bootstrapd.service _EXE=/usr/bin/bootstrapd | grep -q ."
echo "    bootstrapd's journal (first 40 lines):"
journalctl -D "$mnt/var/log/journal" -b --no-pager -o short-monotonic -u bootstrapd.service 2>/dev/null \
  | head -n 40 | sed 's/^/      /'
set +e
status_json=$("$mnt/usr/bin/bootstrapd" --root "$mnt" status --json 2>"$work/logs/status.err")
status_rc=$?
set -e
echo "$status_json" >"$work/logs/status.json"
echo "    bootstrapd --root DISK status --json: exit $status_rc ($work/logs/status.json)"

if [ "$level" = full ]; then
  check_eq "bootstrapd.service succeeded" yes "$(echo "$outcome" | grep -q 'Failed' && echo no || echo yes)"
  check_eq "bootstrapd status: done (exit 0)" 0 "$status_rc"
  # The userdata says firewalld: disable; bootstrapd masks it over systemd's D-Bus API.
  check_eq "firewalld masked by bootstrapd (userdata firewalld: disable)" /dev/null \
    "$(readlink "$mnt/etc/systemd/system/firewalld.service" 2>/dev/null)"
  record=$(e2e_records --summary "$rancher_dir/nodes.json" 2>&1 || true)
  echo "    server record: $record"
  check "the Rancher test server recorded one system-agent worker, registered once" \
    sh -c "echo '$record' | grep -Eqx '1 system-agent worker [^ ]+ 1'"
else
  echo
  echo "E2E_LEVEL=boot: NOT checked: bootstrapd's success, its status, the node's registration"
fi

umount "$mnt"
mnt=''
losetup -d "$loopdev"
loopdev=''
rm -f "$raw"
echo
echo "durations:"
printf '  %s\n' "${timings[@]}"
echo "  total                                    $(( $(date +%s) - t_total ))s"
e2e_summary
[ "$E2E_FAILED" = 0 ]
