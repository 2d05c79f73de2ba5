#!/usr/bin/env bash
# Network-boot end-to-end test of the PXE bundle (scripts/build-pxe.sh), run as root.
#
# A diskless qemu VM (no drive at all) boots with `-boot n`: the virtio NIC's iPXE ROM (Debian's
# ipxe-qemu) gets its address and the boot file name from qemu's built-in BOOTP/TFTP (user-mode
# networking, `tftp=DIR,bootfile=boot.ipxe`), runs the iPXE script rendered from
# images/pxe/boot.ipxe.in, which fetches the kernel and the initrd over HTTP from the host
# (python3 -m http.server); live-boot in the initrd fetches filesystem.squashfs over HTTP and
# runs it from RAM; bootstrapd.service then reads its userdata from bootstrapd.url=URL on the
# kernel command line. Everything is observed from outside: the HTTP server's request log and
# the serial console (systemd's status lines), plus the Rancher test server's record.
#
# Checked always: iPXE ran the TFTP script; the kernel, initrd and squashfs were fetched over
# HTTP; the kernel runs with boot=live and bootstrapd.url=; live-boot mounted the squashfs;
# bootstrapd.service started and fetched /user-data (HTTP 200 in the request log); it finished.
# E2E_LEVEL=full (default) also: bootstrapd.service succeeded and the node registered.
#
# Environment: E2E_LEVEL, E2E_WORK (default build/e2e-pxe), E2E_BOOT_TIMEOUT (s, default 1500),
# E2E_REUSE_IMAGE=1 (skip the builds when the bundle exists), E2E_MEMORY (MiB, default 2048).
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo_root"
# shellcheck source=tests/e2e/lib.sh
. tests/e2e/lib.sh

work=${E2E_WORK:-$repo_root/build/e2e-pxe}
boot_timeout=${E2E_BOOT_TIMEOUT:-1500}
memory=${E2E_MEMORY:-2048}
apt_port=${PXE_APT_PORT:-18095}
http_port=${PXE_HTTP_PORT:-18092}
rancher_port=${PXE_RANCHER_PORT:-8454}
e2e_deb_test_init pxe qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils \
  /usr/lib/ipxe/qemu/pxe-virtio.rom:ipxe-qemu python3:python3 curl:curl
# Debian's iPXE virtio ROM names the modern (virtio 1.0) device id 1af4:1041; SeaBIOS runs
# it only for a NIC with that id, hence disable-legacy=on below (a transitional 1af4:1000 NIC
# silently gets no boot ROM: "No bootable device").
rom=/usr/lib/ipxe/qemu/pxe-virtio.rom
[ -f "$rom" ] || die "no iPXE ROM at $rom (ipxe-qemu)"

mkdir -p "$work/logs"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

t=$(date +%s)
host_setup_deb_image "$work" pxe "$apt_port" "$rancher_port" || die "the host set-up failed (see above)"
timed "host set-up (packages, pxe image, servers)" $(( $(date +%s) - t ))
pids+=("${HOST_PIDS[@]}")
rancher_dir=$HOST_RANCHER_DIR token=$HOST_TOKEN ca_checksum=$HOST_CA_CHECKSUM

www=$work/www
tftp=$work/tftp
rm -rf "$www" "$tftp"
mkdir -p "$www" "$tftp"
ln -s "$KERNEL" "$www/vmlinuz"
ln -s "$INITRD" "$www/initrd.img"
ln -s "$SQUASHFS" "$www/filesystem.squashfs"
render_userdata tests/e2e/userdata/worker-system-agent.yaml "$www/user-data" \
  "https://10.0.2.2:$rancher_port" "$token" "$ca_checksum"
base_url=http://10.0.2.2:$http_port
sed -e "s|@BASE_URL@|$base_url|g" -e "s|@USERDATA_URL@|$base_url/user-data|g" \
  -e "s|@EXTRA_ARGS@|systemd.hostname=pxe-node|g" "$IPXE_TEMPLATE" >"$tftp/boot.ipxe"
http_log=$work/logs/boot-http.log
python3 -m http.server "$http_port" --bind 127.0.0.1 --directory "$www" >"$http_log" 2>&1 &
http_pid=$!
pids+=("$http_pid")
for _ in $(seq 50); do curl -fsS -o /dev/null -r 0-0 "http://127.0.0.1:$http_port/vmlinuz" 2>/dev/null && break; sleep 0.2; done
curl -fsS -o /dev/null -r 0-0 "http://127.0.0.1:$http_port/vmlinuz" || die "boot file server down"
# A stale server on the port would answer instead of ours, and its log would be elsewhere.
kill -0 "$http_pid" 2>/dev/null || die "the boot file server could not start: $(tail -n 1 "$http_log")"
# Only the guest's requests count from here on.
: >"$http_log"

serial=$work/logs/serial.log
: >"$serial"
echo "==> network boot (-boot n, no disk), ${memory} MiB"
t_boot=$(date +%s)
qemu-system-x86_64 -accel tcg,tb-size=128 -m "$memory" -smp 2 \
  -nodefaults -display none -no-reboot -boot n \
  -netdev "user,id=net0,tftp=$tftp,bootfile=boot.ipxe" \
  -device "virtio-net-pci,disable-legacy=on,netdev=net0,romfile=$rom" -device virtio-rng-pci \
  -serial "file:$serial" &
qemu_pid=$!
pids+=("$qemu_pid")

log() { tr -d '\r' <"$serial" | sed 's/\x1b\[[0-9;]*[a-zA-Z]//g'; }
outcome=$(e2e_wait_bootstrapd "$serial" "$qemu_pid" "$t_boot" "$boot_timeout")
timed "qemu start to bootstrapd.service done" $(( $(date +%s) - t_boot ))
echo "    serial: ${outcome:-bootstrapd.service did not finish within ${boot_timeout}s}"
# Give the console a moment for the login prompt, then stop: a diskless node keeps nothing.
for _ in $(seq 12); do log | grep -q 'login:' && break; sleep 5; done
kill "$qemu_pid" 2>/dev/null || true
wait "$qemu_pid" 2>/dev/null || true

got() { grep -Eq "\"GET /$1 HTTP/1\.[01]\" 200" "$http_log"; }
echo "==> what the network boot showed"
# iPXE prints to the BIOS console, which -nodefaults has no VGA for; its requests show it ran.
check "iPXE fetched the kernel over HTTP" got vmlinuz
check "iPXE fetched the initrd over HTTP" got 'initrd\.img'
check "the kernel runs with boot=live and bootstrapd.url=" sh -c \
  "tr -d '\r' <'$serial' | grep -aE 'Command line: .*boot=live .*bootstrapd\.url=$base_url/user-data' >/dev/null"
check "live-boot fetched filesystem.squashfs over HTTP" got 'filesystem\.squashfs'
check "systemd booted from the live root (login prompt on ttyS0)" sh -c "tr -d '\r' <'$serial' | grep -aq 'login:'"
check "bootstrapd.service finished (systemd status line)" test -n "$outcome"
check "bootstrapd fetched its userdata from bootstrapd.url (HTTP 200 for /user-data)" got user-data
echo "    guest requests:"
sed -n 's/.*"\(GET [^"]*\)" \([0-9]*\).*/      \1 -> \2/p' "$http_log" | sort | uniq -c | sed 's/^/    /'

if [ "$level" = full ]; then
  check_eq "bootstrapd.service succeeded" yes "$(echo "$outcome" | grep -q 'Failed' && echo no || echo yes)"
  record=$(e2e_records --summary "$rancher_dir/nodes.json" 2>&1 || true)
  echo "    server record: $record"
  check "the Rancher test server recorded one system-agent worker, registered once" \
    sh -c "echo '$record' | grep -Eqx '1 system-agent worker [^ ]+ 1'"
else
  echo
  echo "E2E_LEVEL=boot: NOT checked: bootstrapd's success, the node's registration"
fi
echo
echo "durations:"
printf '  %s\n' "${timings[@]}"
echo "  total                                    $(( $(date +%s) - t_total ))s"
e2e_summary
[ "$E2E_FAILED" = 0 ]
