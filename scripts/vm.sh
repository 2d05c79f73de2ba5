#!/usr/bin/env bash
# Boots the node image once under qemu (software emulation) and waits until it powers off.
#
#   scripts/vm.sh --overlay DISK.qcow2 --serial LOG [options]
#
#   --image-env FILE   image.env written by scripts/build-image.sh (default build/image/image.env)
#   --overlay FILE     copy-on-write disk on top of the image's disk.img; created when missing,
#                      reused when present (a second boot of "the same disk")
#   --fresh            recreate the overlay even if it exists
#   --user-data FILE   NoCloud user-data; with it a seed ISO (volume "cidata") is attached
#   --meta-data FILE   NoCloud meta-data (default: instance-id and local-hostname from --hostname)
#   --hostname NAME    node hostname (systemd.hostname= on the kernel command line)
#   --append ARGS      extra kernel command-line arguments (e.g. bootstrapd.e2e)
#   --serial LOG       serial console log file (required); the test units' report port (a
#                      second serial port, ttyS1, kept apart so that console output cannot cut
#                      its marker lines) goes to LOG.report and is appended to LOG at the end
#   --timeout SECONDS  hard limit for the whole boot (default 1200); exit 124 when hit
#   --memory MIB, --smp N  (default 1024, 2)
#   --tap NAME --mac MAC   a second NIC on the host tap device NAME (scripts/lab's private
#                      network), with that MAC; the first NIC stays qemu's user network
#   --proxy-only CMD   the user network restricted (qemu's restrict=on): the guest reaches
#                      nothing outside but 10.0.2.100:3128, each connection to it handed to CMD on
#                      its stdin/stdout (a relay to the test proxy on the host; no commas in CMD)
#
# Exit status: qemu's (0 after a guest power-off), 124 on timeout, 2 on bad usage.
# /dev/kvm is deliberately not used: nested KVM hangs on the project's machines.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
image_env=$repo_root/build/image/image.env
tap='' mac='' proxy_only='' overlay='' fresh=0 user_data='' meta_data='' hostname=node append='' serial='' timeout=1200 memory=1024 smp=2

die() { echo "vm.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --image-env) image_env=${2:?}; shift 2 ;;
    --overlay) overlay=${2:?}; shift 2 ;;
    --fresh) fresh=1; shift ;;
    --user-data) user_data=${2:?}; shift 2 ;;
    --meta-data) meta_data=${2:?}; shift 2 ;;
    --hostname) hostname=${2:?}; shift 2 ;;
    --append) append=${2:?}; shift 2 ;;
    --serial) serial=${2:?}; shift 2 ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    --memory) memory=${2:?}; shift 2 ;;
    --smp) smp=${2:?}; shift 2 ;;
    --tap) tap=${2:?}; shift 2 ;;
    --mac) mac=${2:?}; shift 2 ;;
    --proxy-only) proxy_only=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ -n "$overlay" ] || die "--overlay is required"
[ -n "$serial" ] || die "--serial is required"
[ -f "$image_env" ] || die "$image_env not found: run scripts/build-image.sh first"
KERNEL_APPEND=
# shellcheck source=/dev/null
. "$image_env"
# image.env (scripts/build-image.sh) names the disk, kernel and initrd, and what the image needs
# on the kernel command line (KERNEL_APPEND: the SELinux variant's selinux=1 security=selinux).
: "${DISK:?$image_env sets no DISK}" "${KERNEL:?$image_env sets no KERNEL}" "${INITRD:?$image_env sets no INITRD}"
for f in "$DISK" "$KERNEL" "$INITRD"; do [ -f "$f" ] || die "$f missing (rebuild the image)"; done

for tool in qemu-system-x86_64 qemu-img genisoimage; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install qemu-system-x86 qemu-utils genisoimage)"
done

if [ "$fresh" = 1 ] || [ ! -f "$overlay" ]; then
  rm -f "$overlay"
  qemu-img create -q -f qcow2 -F raw -b "$DISK" "$overlay"
fi

drives=(-drive "file=$overlay,format=qcow2,if=virtio,cache=unsafe")
seed_dir=
if [ -n "$user_data" ]; then
  seed_dir=$(mktemp -d)
  trap 'rm -rf "$seed_dir"' EXIT # replaced below, once the serial log exists
  cp "$user_data" "$seed_dir/user-data"
  if [ -n "$meta_data" ]; then
    cp "$meta_data" "$seed_dir/meta-data"
  else
    printf 'instance-id: iid-%s\nlocal-hostname: %s\n' "$hostname" "$hostname" >"$seed_dir/meta-data"
  fi
  genisoimage -quiet -output "$seed_dir/seed.iso" -volid cidata -joliet -rock \
    "$seed_dir/user-data" "$seed_dir/meta-data"
  drives+=(-drive "file=$seed_dir/seed.iso,format=raw,if=virtio,readonly=on")
fi

user_net=user,id=net0
if [ -n "$proxy_only" ]; then
  case $proxy_only in *,*) die "--proxy-only: no commas in the command (qemu option syntax)" ;; esac
  # DHCP still works (qemu answers it itself); every other packet out of the guest is dropped
  # but connections to the forwarded address.
  user_net="$user_net,restrict=on,guestfwd=tcp:10.0.2.100:3128-cmd:$proxy_only"
fi
# shellcheck disable=SC2054 # the commas are qemu option syntax
nics=(-netdev "$user_net" -device virtio-net-pci,netdev=net0)
if [ -n "$tap" ]; then
  [ -n "$mac" ] || die "--tap needs --mac"
  nics+=(-netdev "tap,id=net1,ifname=$tap,script=no,downscript=no" -device "virtio-net-pci,netdev=net1,mac=$mac")
fi
cmdline="root=/dev/vda rw console=ttyS0 quiet systemd.show_status=1 systemd.hostname=$hostname $append${KERNEL_APPEND:+ $KERNEL_APPEND}"
: >"$serial"
: >"$serial.report"
# Whatever way qemu ends, the report lands at the end of the console log, where tests read it.
append_report() {
  [ -f "$serial.report" ] || return 0
  cat "$serial.report" >>"$serial"
  rm -f "$serial.report"
}
trap 'append_report; [ -z "$seed_dir" ] || rm -rf "$seed_dir"' EXIT
start=$(date +%s)
# shell_words ARGS...: the arguments as one line a shell reads back the same, quoting only
# those that need it (qemu's comma-separated options stay readable).
shell_words() {
  local a out=()
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=,@+%-]+$ ]]; then out+=("$a"); else out+=("$(printf '%q' "$a")"); fi
  done
  echo "${out[*]}"
}
run_qemu() {
  # In the background so that a TERM to this script (scripts/lab down) reaches qemu: `timeout`
  # runs in its own process group and forwards the signal.
  # shellcheck disable=SC2054 # the commas are qemu option syntax, not array separators
  local qemu=(qemu-system-x86_64
    -accel tcg,tb-size=128 -m "$memory" -smp "$smp"
    -nodefaults -display none -monitor none -no-reboot
    -kernel "$KERNEL" -initrd "$INITRD" -append "$cmdline"
    "${drives[@]}"
    "${nics[@]}"
    -device virtio-rng-pci
    -serial "file:$serial" -serial "file:$serial.report")
  # Said first, so that whoever reads this log after a failed start can run it again by hand.
  printf 'vm.sh: running (limit %ss): %s\n' "$timeout" "$(shell_words "${qemu[@]}")"
  timeout -k 10 "$timeout" "${qemu[@]}" &
  qpid=$!
  rc=0
  wait "$qpid" || rc=$?
}
on_signal() {
  kill -TERM "$qpid" 2>/dev/null
  wait "$qpid"
  exit 143
}
trap on_signal TERM INT HUP
run_qemu
# qemu's TCG (Debian 12's 7.2) has been seen to segfault within seconds of starting (once in hours of boots,
# before the guest printed a line). That is the emulator, not the guest under test: start it
# once more, and say so. A guest that got further than that is never retried.
if [ "$rc" -gt 128 ] && [ "$rc" != 137 ] && [ "$rc" != 143 ] \
  && [ $(( $(date +%s) - start )) -lt 30 ] && ! grep -qa 'Welcome to' "$serial"; then
  note="vm.sh: qemu died of signal $((rc - 128)) after $(( $(date +%s) - start ))s, before the guest's systemd started; started it again"
  echo "$note" >&2
  run_qemu
  echo "$note" >>"$serial" # after: qemu truncates the log when it opens it
fi
elapsed=$(( $(date +%s) - start ))
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "vm.sh: timed out after ${timeout}s (serial log: $serial)" >&2
  exit 124
elif [ "$rc" != 0 ]; then
  echo "vm.sh: qemu failed with status $rc after ${elapsed}s (serial log: $serial)" >&2
  exit "$rc"
fi
echo "vm.sh: powered off after ${elapsed}s"
