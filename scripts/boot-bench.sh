#!/usr/bin/env bash
# Boot benchmark (run as root; NOT part of the test suite): time from qemu start to the
# registration arriving at the Rancher test server, for images built on the same cached Debian
# 12 base and booted in the same qemu TCG setup (scripts/vm.sh), ROUNDS times each, interleaved
# (A B C, A B C, ...) so that load on the machine hits all of them alike.
#
#   A         bootstrapd: the e2e node image (scripts/build-image.sh: bootstrapd enabled, the
#             rke1 agent image archive baked in), NoCloud userdata like the e2e node2 (rke1,
#             all roles, Docker from the distribution)
#   B         cloud-init: the same base plus Debian's cloud-init and curl, bootstrapd absent,
#             driven by a #cloud-config whose runcmd does A's work (images/bench/cloud-init/user-data.in)
#   C         floor: the same base plus curl, neither bootstrapd nor cloud-init, one oneshot unit
#             after network-online making only the rke1 registration request (images/bench/floor)
#   A-sysext  image A, userdata like the e2e node6 (tests/e2e/userdata/node-sysext.yaml): rke1,
#             all roles, Docker from the system extension the host set-up serves
#   B-sysext  image B, runcmd doing A-sysext's steps by hand (user-data-sysext.in)
#   A2        image A, system-agent mode, worker role (images/bench/bootstrapd/node-system-agent.yaml.in)
#   B2        image B, a script doing rancher/system-agent install.sh's steps (user-data-system-agent.in)
# "Registered" is the test server's first record of the node: rke1 (A, B, C, *-sysext) its
# /v3/connect/register, system agent (A2, B2) its /v3/connect/agent (the connection info
# request, where Rancher creates the machine); both found by the boot's hostname.
# All images carry images/bench/common: a marker unit early in boot (uptime, to place the
# kernel's start on the host clock) and one after the job (CPU figures, bootstrapd's footprint).
#
#   scripts/boot-bench.sh [--rounds N] [--images "A B C A-sysext B-sysext A2 B2"]   (default "A B C")
#
# Writes build/boot-bench/results.md and results.csv; serial logs (with host timestamps, *.ts)
# in build/boot-bench/logs. See bench/README.md for what each figure means.
# Environment: ROUNDS (default 3), BENCH_WORK (build/boot-bench), BENCH_BOOT_TIMEOUT (s, 900),
# BENCH_CARGO_PROFILE (release), BENCH_APT_PORT (18093), BENCH_RANCHER_PORT (8455),
# BENCH_PROFILE=1 prints where the job's time went (journal, dpkg and apt logs) into each
# serial log. BENCH_KEEP=1 keeps the disk images, BOOTSTRAPD_CACHE and DEBIAN_MIRROR as build-image.sh.
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo_root"
# shellcheck source=tests/e2e/lib.sh
. tests/e2e/lib.sh

rounds=${ROUNDS:-3}
images="A B C"
work=${BENCH_WORK:-$repo_root/build/boot-bench}
boot_timeout=${BENCH_BOOT_TIMEOUT:-900}
profile=${BENCH_CARGO_PROFILE:-release}
apt_port=${BENCH_APT_PORT:-18093}
rancher_port=${BENCH_RANCHER_PORT:-8455}
cache=${BOOTSTRAPD_CACHE:-/var/cache/bootstrapd}
# shellcheck source=scripts/host-tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/host-tools.sh"
mirror=$(host_debian_mirror) || exit 1
bench=$repo_root/images/bench

usage() { sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "boot-bench: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=${2:?}; shift 2 ;;
    --images) images=${2:?}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "boot-bench: unknown argument $1" >&2; usage 2 ;;
  esac
done
case $rounds in '' | *[!0-9]* | 0) die "--rounds must be a positive number, not '$rounds'" ;; esac
for i in $images; do
  case $i in A | B | C | A-sysext | B-sysext | A2 | B2) ;; *) die "--images takes A B C A-sysext B-sysext A2 B2, not '$i'" ;; esac
done
[ "$(id -u)" = 0 ] || die "must run as root (image builds, chroot, loop mount)"

mkdir -p "$work/logs"
mounts=()
vm_pid=
cleanup() {
  local i
  if [ -n "$vm_pid" ]; then
    kill -TERM "$vm_pid" 2>/dev/null || true
    wait "$vm_pid" 2>/dev/null || true
  fi
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
  host_stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { echo "==> $*"; }

# ---- images -------------------------------------------------------------------------------

# The host side first: image A is the e2e node image, and images B and C carry the Rancher test
# server's token and CA.
step "image A (the e2e node image, bootstrapd profile $profile) and the host side"
host_setup "$work" "$apt_port" "$rancher_port" --sysext --profile "$profile" --image-dir "$work/image-A" \
  || die "the host set-up failed (see above)"
token=$HOST_TOKEN ca_checksum=$HOST_CA_CHECKSUM server_url=$HOST_SERVER_URL rancher_dir=$HOST_RANCHER_DIR
# The Docker system extension, served beside the apt repository (HOST_SYSEXT: host.env lines).
sysext_url=http://10.0.2.2:$apt_port$(sed -n 's/^HOST_SYSEXT_PATH=//p' <<<"$HOST_SYSEXT")
sysext_sha256=$(sed -n 's/^HOST_SYSEXT_SHA256=//p' <<<"$HOST_SYSEXT")
echo "    bootstrapd: $(stat -c %s "$work/bootstrapd") bytes stripped"
base=$cache/debian12-base-$BASE_HASH
[ -d "$base/rootfs" ] || die "cached base $base/rootfs not found"
# The bench units go into A's filesystem as into B's and C's; build-image.sh has no hook for
# extra files, so through a loop mount of A's own copy of the disk.
mnt=$work/mnt-A
mkdir -p "$mnt"
mount -o loop "$work/image-A/disk.img" "$mnt"
mounts+=("$mnt")
cp -a "$bench/common/." "$mnt/"
systemctl --root="$mnt" enable bench-mark.service bench-end.service >/dev/null 2>&1
umount "$mnt"
unset 'mounts[-1]'
rmdir "$mnt"

# bench_root KIND: sets bench_dir to the cached base plus images/bench/KIND/packages from
# Debian's mirror, cached like build-image.sh caches its base: built once per base and package
# list, under $cache. Not in a subshell, so that the cleanup trap sees its mounts.
bench_root() {
  local kind=$1 key dir tmp pkgs=() r
  key=$(
    {
      echo "bench-v1 $BASE_HASH $mirror"
      cat "$bench/$kind/packages"
    } | sha256sum | cut -c1-16
  )
  dir=$cache/bench-$kind-$key
  exec 8>"$cache/bench-$kind.lock"
  flock 8
  if [ ! -f "$dir/DONE" ]; then
    mapfile -t pkgs < <(grep -v -e '^#' -e '^[[:space:]]*$' "$bench/$kind/packages")
    echo "    building $dir: base + ${pkgs[*]} from $mirror"
    tmp=$dir.tmp.$$
    rm -rf "$tmp"
    mkdir -p "$tmp"
    cp -a "$base/rootfs" "$tmp/rootfs"
    r=$tmp/rootfs
    mount -t proc proc "$r/proc" && mounts+=("$r/proc")
    mount --bind /sys "$r/sys" && mounts+=("$r/sys")
    mount --rbind /dev "$r/dev" && mount --make-rslave "$r/dev" && mounts+=("$r/dev")
    printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
    chmod 0755 "$r/usr/sbin/policy-rc.d"
    # The base's sources.list is the Debian mirror (the image overlay replaces it later).
    chroot "$r" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 apt-get update -qq
    chroot "$r" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 \
      apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >"$tmp/install.log" 2>&1 \
      || { tail -n 20 "$tmp/install.log" >&2; die "apt-get install ${pkgs[*]} in the chroot failed"; }
    # shellcheck disable=SC2016 # dpkg-query's format, not the shell's
    chroot "$r" dpkg-query -W -f '${Package} ${Version}\n' "${pkgs[@]}" >"$tmp/versions"
    chroot "$r" apt-get clean
    rm -rf "$r"/var/lib/apt/lists/*
    rm -f "$r/usr/sbin/policy-rc.d"
    umount -l "$r/dev" "$r/sys" "$r/proc"
    unset 'mounts[-1]' 'mounts[-1]' 'mounts[-1]'
    : >"$r/etc/machine-id"
    rm -f "$r/var/lib/dbus/machine-id"
    date -u +%FT%TZ >"$tmp/DONE"
    mv "$tmp" "$dir"
    for old in "$cache"/bench-"$kind"-*; do
      [ "$old" = "$dir" ] || [ "$old" = "$cache/bench-$kind.lock" ] || rm -rf "$old"
    done
  fi
  flock -u 8
  bench_dir=$dir
}

# make_image KIND ROOT OUT: a disk image laid out like build-image.sh's (the e2e overlay, the
# local apt repository as the mirror) from ROOT, with the bench units and KIND's files; the
# kernel and initrd are image A's (the same base kernel).
make_image() {
  local kind=$1 root=$2 out=$3 stage
  stage=$out/stage
  rm -rf "$out"
  mkdir -p "$out"
  cp -a "$root" "$stage"
  cp -a "$repo_root/images/debian12/overlay/." "$stage/"
  sed "s|@APT_URL@|http://10.0.2.2:$apt_port/|" "$repo_root/images/debian12/overlay/etc/apt/sources.list.in" \
    >"$stage/etc/apt/sources.list"
  rm -f "$stage/etc/apt/sources.list.in"
  cp -a "$bench/common/." "$stage/"
  local units=(bench-mark.service bench-end.service)
  case $kind in
    cloud-init)
      install -D -m 0644 "$work/agent-image.tar" "$stage/var/lib/bootstrapd/images/agent-image.tar"
      # Debian's cloud-init.service runs before sysinit.target yet after
      # systemd-networkd-wait-online; firewalld (enabled in the base, Before=network-pre.target,
      # after sysinit.target) closes an ordering cycle, and systemd breaks it by deleting
      # cloud-init.service's job: the user-data is then never processed. The same unit without
      # that one ordering (the NoCloud seed needs no network); firewalld and networkd keep the
      # order they have in images A and C.
      sed '/^After=systemd-networkd-wait-online.service$/d' "$stage/lib/systemd/system/cloud-init.service" \
        >"$stage/etc/systemd/system/cloud-init.service"
      cmp -s "$stage/lib/systemd/system/cloud-init.service" "$stage/etc/systemd/system/cloud-init.service" \
        && die "cloud-init.service has no After=systemd-networkd-wait-online.service line to drop"
      ;;
    floor)
      cp -a "$bench/floor/etc" "$bench/floor/usr" "$stage/"
      install -d -m 0700 "$stage/etc/bench"
      (umask 077 && echo "$token" >"$stage/etc/bench/token")
      install -m 0644 "$rancher_dir/ca.pem" "$stage/etc/bench/ca.pem"
      echo "SERVER=$server_url" >"$stage/etc/bench/floor.env"
      units+=(bench-floor.service)
      ;;
  esac
  systemctl --root="$stage" enable "${units[@]}" >/dev/null 2>&1
  for u in "${units[@]}" firewalld.service systemd-networkd.service; do
    [ "$(systemctl --root="$stage" is-enabled "$u" 2>/dev/null)" = enabled ] || die "$u is not enabled in image $kind"
  done
  if [ "$kind" = cloud-init ]; then
    for u in cloud-init-local.service cloud-init.service cloud-config.service cloud-final.service; do
      [ "$(systemctl --root="$stage" is-enabled "$u" 2>/dev/null)" = enabled ] || die "$u is not enabled in image B"
    done
  fi
  truncate -s 4G "$out/disk.img"
  mkfs.ext4 -q -F -L bootstrapd-root -d "$stage" "$out/disk.img"
  rm -rf "$stage"
  cat >"$out/image.env" <<EOF
DISK=$out/disk.img
KERNEL=$work/image-A/vmlinuz
INITRD=$work/image-A/initrd.img
APT_REPO=$APT_REPO
APT_URL=http://10.0.2.2:$apt_port/
BASE_HASH=$BASE_HASH
EOF
}

step "images B (cloud-init) and C (floor)"
versions=()
if [[ " $images " == *" B"* ]]; then  # B, B-sysext, B2 boot image B
  bench_root cloud-init
  make_image cloud-init "$bench_dir/rootfs" "$work/image-B"
  versions+=("B: $(paste -sd' ' "$bench_dir/versions")")
fi
if [[ " $images " == *" C "* ]]; then
  bench_root floor
  make_image floor "$bench_dir/rootfs" "$work/image-C"
  versions+=("C: $(paste -sd' ' "$bench_dir/versions")")
fi

# base_image IMG: the disk image a variant boots (A, B or C).
base_image() { echo "${1:0:1}"; }

# write_userdata IMG NAME: IMG's NoCloud user-data for the boot NAME, 0600 (it holds the token),
# as $work/IMG.user-data; C has none.
write_userdata() {
  local img=$1 name=$2 out=$work/$1.user-data t all="etcd, controlplane, worker"
  case $img in
    A) render_userdata tests/e2e/userdata/node.yaml "$out" "$server_url" "$token" "$ca_checksum" "$all" rke1 ;;
    A-sysext) render_userdata tests/e2e/userdata/node-sysext.yaml "$out" "$server_url" "$token" "$ca_checksum" "$all" rke1 ;;
    A2) render_userdata "$bench/bootstrapd/node-system-agent.yaml.in" "$out" "$server_url" "$token" "$ca_checksum" ;;
    B) render_userdata "$bench/cloud-init/user-data.in" "$out" "$server_url" "$token" "$ca_checksum" ;;
    B-sysext) render_userdata "$bench/cloud-init/user-data-sysext.in" "$out" "$server_url" "$token" "$ca_checksum" ;;
    B2) render_userdata "$bench/cloud-init/user-data-system-agent.in" "$out" "$server_url" "$token" "$ca_checksum" ;;
    *) return 0 ;;
  esac
  t=$(<"$out")
  t=${t//@SYSEXT_URL@/"$sysext_url"}
  t=${t//@SYSEXT_SHA256@/"$sysext_sha256"}
  t=${t//@NODE_NAME@/"$name"}
  (umask 077 && printf '%s\n' "$t" >"$out")
}

# ---- boots --------------------------------------------------------------------------------

# The monitor follows one boot: it stamps every serial line with the host clock as it arrives
# (LOG.ts), finds qemu's process start, watches the server's record for the node, and returns
# (one JSON line) once the registration and the guest's final figures are in, or on timeout,
# or when the VM is gone.
cat >"$work/monitor.py" <<'PY'
import json, os, re, sys, time

serial, stamped, record, hostname, timeout, vm_pid = sys.argv[1:7]
timeout = float(timeout)
t_launch = time.time()
hz = os.sysconf("SC_CLK_TCK")

def proc_start_epoch(pid):
    # Field 22 of /proc/PID/stat: start time in clock ticks after boot.
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open("/proc/uptime") as f:
        up = float(f.read().split()[0])
    return time.time() - up + int(fields[19]) / hz

def find_qemu():
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-system-x86_64") and f"file:{serial}".encode() in argv:
            try:
                return proc_start_epoch(pid)
            except OSError:
                return None
    return None

def rfc3339_epoch(s):
    m = re.match(r"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)(?:\.(\d+))?Z$", s)
    if not m:
        return None
    import calendar
    y, mo, d, h, mi, se, frac = m.groups()
    t = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(se), 0, 0, 0))
    return t + (float("0." + frac) if frac else 0.0)

def registered():
    try:
        with open(record) as f:
            nodes = json.load(f)
    except (OSError, ValueError):
        return None
    for n in nodes if isinstance(nodes, list) else nodes.get("nodes", []):
        if n.get("hostname") == hostname:
            return rfc3339_epoch(n.get("first_seen", ""))
    return None

def alive(pid):
    try:
        os.kill(int(pid), 0)
        return True
    except OSError:
        return False

esc = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
marker = re.compile(r"@@BENCH (\w+) ?(.*)")
res = {"qemu_start": None, "reg": None, "markers": {}, "status": None, "end": "timeout"}
pos, buf = 0, b""
grace_until = None
with open(stamped, "w") as out:
    while True:
        now = time.time()
        if res["qemu_start"] is None:
            res["qemu_start"] = find_qemu()
        try:
            size = os.path.getsize(serial)
        except OSError:
            size = 0
        if size < pos:
            pos, buf = 0, b""
        if size > pos:
            with open(serial, "rb") as f:
                f.seek(pos)
                data = f.read()
            pos += len(data)
            buf += data
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = esc.sub(b"", raw.replace(b"\r", b"")).decode("utf-8", "replace")
                out.write(f"{now:.3f} {line}\n")
                m = marker.search(line)
                if m:
                    name, rest = m.group(1), m.group(2)
                    if name == "NOTE":
                        res.setdefault("notes", []).append(rest)
                    elif name == "STATUS":
                        try:
                            res["status"] = json.loads(rest)
                        except ValueError:
                            res["status"] = None
                    else:
                        kv = dict(p.split("=", 1) for p in rest.split() if "=" in p)
                        res["markers"].setdefault(name, {"t": now, **kv})
            out.flush()
        if res["reg"] is None:
            res["reg"] = registered()
        done = "DONE" in res["markers"]
        if res["reg"] is not None and done:
            res["end"] = "ok"
            break
        if done and grace_until is None:
            # The job is over; a registration still in flight (an agent container starting)
            # gets two minutes.
            grace_until = now + 120
        if grace_until is not None and now > grace_until:
            res["end"] = "no-registration"
            break
        if not alive(vm_pid):
            res["end"] = "vm-exited"
            break
        if now - t_launch > timeout:
            break
        time.sleep(0.05)
res["launch"] = t_launch
print(json.dumps(res))
PY

# boot IMG ROUND: one boot, its result appended to $work/raw.jsonl.
boot() {
  local img=$1 r=$2 name log extra=() load result rc=0
  name=bench-${img,,}-r$r
  log=$work/logs/$name.log
  rm -f "$log" "$log.ts"
  write_userdata "$img" "$name"
  [ "$img" = C ] || extra+=(--user-data "$work/$img.user-data")
  [ "${BENCH_PROFILE:-0}" = 0 ] || extra+=(--append bench.profile)
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "==> round $r, image $img ($name), load average $load"
  scripts/vm.sh --image-env "$work/image-$(base_image "$img")/image.env" --overlay "$work/$img.qcow2" --fresh \
    "${extra[@]}" --hostname "$name" --serial "$log" --timeout "$((boot_timeout + 60))" \
    >"$work/logs/$name.vm.out" 2>&1 &
  vm_pid=$!
  result=$(python3 "$work/monitor.py" "$log" "$log.ts" "$rancher_dir/nodes.json" "$name" \
    "$boot_timeout" "$vm_pid") || rc=$?
  # Registration seen (or timeout): the VM is stopped, never left running.
  kill -TERM "$vm_pid" 2>/dev/null || true
  wait "$vm_pid" 2>/dev/null || true
  vm_pid=
  [ "$rc" = 0 ] || result='{"end": "monitor-failed"}'
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(image=sys.argv[2], round=int(sys.argv[3]), host=sys.argv[4], load=sys.argv[5]); print(json.dumps(r))' \
    "$result" "$img" "$r" "$name" "$load" >>"$work/raw.jsonl"
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); q=r.get("qemu_start"); g=r.get("reg"); print("    %s%s" % (r["end"], "" if q is None or g is None else ", qemu start to registered %.1f s" % (g - q)))' "$result"
}

: >"$work/raw.jsonl"
t_run=$(date +%s)
for ((r = 1; r <= rounds; r++)); do
  for img in $images; do boot "$img" "$r"; done
done

# ---- results ------------------------------------------------------------------------------

cat >"$work/summarize.py" <<'PY'
import csv, json, statistics, sys

raw, out_csv, out_md, header = sys.argv[1:5]
rows = []
for line in open(raw):
    r = json.loads(line)
    m = r.get("markers", {})
    q, reg = r.get("qemu_start"), r.get("reg")
    start = m.get("START", {})
    kstart = None
    if "t" in start and "uptime" in start:
        kstart = start["t"] - float(start["uptime"])
    def usec(marker, units):
        mk = m.get(marker, {})
        vals = [mk.get(u) for u in units]
        if not vals or any(v is None or v == "NA" for v in vals):
            return None
        return sum(int(v) for v in vals) / 1000.0
    def mono(name):
        v = m.get("TIMES", {}).get(name)
        return int(v) / 1e6 if v else None
    def job_start(image):
        # When the image's job began, seconds after kernel start: bootstrapd's process, the
        # first runcmd line, the floor unit's process.
        if image.startswith("A"):
            return mono("bootstrapd")
        if image.startswith("B"):
            return float(m["JOBSTART"]["uptime"]) if "uptime" in m.get("JOBSTART", {}) else None
        return mono("bench-floor")
    ci = ["cloud-init-local.service", "cloud-init.service", "cloud-config.service", "cloud-final.service"]
    res = (r.get("status") or {}).get("resources") or {}
    row = {
        "image": r.get("image"), "round": r.get("round"), "host": r.get("host"), "end": r.get("end"),
        "load1": r.get("load", "").split()[0] if r.get("load") else None,
        "qemu_to_registered_s": reg - q if reg and q else None,
        "kernel_to_registered_s": reg - kstart if reg and kstart else None,
        "qemu_to_kernel_s": kstart - q if kstart and q else None,
        "kernel_to_network_online_s": mono("network-online"),
        "kernel_to_job_start_s": job_start(r.get("image")),
        "job_start_to_registered_s": reg - kstart - job_start(r.get("image"))
        if reg and kstart and job_start(r.get("image")) is not None else None,
        "bootstrapd_cpu_ms": res.get("cpu_user_ms", 0) + res.get("cpu_system_ms", 0) if res else None,
        "bootstrapd_peak_rss_kib": res.get("peak_rss_kib") if res else None,
        "bootstrapd_wall_ms": res.get("wall_ms") if res else None,
        "bootstrapd_unit_cpu_ms": usec("END", ["bootstrapd.service"]),
        "cloudinit_cpu_before_job_ms": usec("JOBSTART", ci),
        "cloudinit_units_cpu_total_ms": usec("END", ci),
        "floor_unit_cpu_ms": usec("END", ["bench-floor.service"]),
        "docker_cpu_ms": usec("END", ["docker.service"]),
        "guest_cpu_total_ms": int(m["ROOT"]["usage_usec"]) / 1000.0 if "usage_usec" in m.get("ROOT", {}) else None,
        "guest_uptime_at_end_s": float(m["END"]["uptime"]) if "uptime" in m.get("END", {}) else None,
        # The kernel's start placed on the host clock from the END line instead of START: the
        # difference is the error of that placement (line latency, guest clock drift).
        "kernel_start_check_s": (m["END"]["t"] - float(m["END"]["uptime"])) - kstart
        if kstart and "uptime" in m.get("END", {}) else None,
    }
    rows.append(row)

fields = list(rows[0].keys()) if rows else []
with open(out_csv, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if v is None else (round(v, 3) if isinstance(v, float) else v)) for k, v in row.items()})

figures = [
    ("qemu_to_registered_s", "qemu start to registered (s)", 1),
    ("kernel_to_registered_s", "kernel start to registered (s)", 1),
    ("qemu_to_kernel_s", "qemu start to kernel start (s)", 2),
    ("kernel_to_network_online_s", "kernel start to network-online (s)", 1),
    ("kernel_to_job_start_s", "kernel start to job start (s)", 1),
    ("job_start_to_registered_s", "job start to registered (s)", 1),
    ("bootstrapd_cpu_ms", "bootstrapd's own CPU (ms)", 0),
    ("bootstrapd_peak_rss_kib", "bootstrapd's peak RSS (KiB)", 0),
    ("bootstrapd_unit_cpu_ms", "bootstrapd.service CPU incl. children (ms)", 0),
    ("cloudinit_cpu_before_job_ms", "cloud-init units' CPU before the job (ms)", 0),
    ("cloudinit_units_cpu_total_ms", "cloud-init units' CPU in total (ms)", 0),
    ("floor_unit_cpu_ms", "floor unit CPU (ms)", 0),
    ("docker_cpu_ms", "docker.service CPU (ms)", 0),
    ("guest_cpu_total_ms", "guest CPU, whole machine, to the end marker (ms)", 0),
    ("load1", "host load average (1 min) at boot start", 2),
]
order = ["A", "B", "C", "A-sysext", "B-sysext", "A2", "B2"]
images = [i for i in order if any(r["image"] == i for r in rows)]
names = {"A": "A bootstrapd", "B": "B cloud-init", "C": "C floor", "A-sysext": "A-sysext bootstrapd",
         "B-sysext": "B-sysext cloud-init", "A2": "A2 bootstrapd system-agent", "B2": "B2 cloud-init install.sh"}

def cell(key, img, nd):
    vals = [float(r[key]) for r in rows if r["image"] == img and r[key] not in (None, "")]
    if not vals:
        return "-"
    f = lambda v: f"{v:.{nd}f}"
    if len(vals) == 1:
        return f(vals[0])
    return f"{f(statistics.median(vals))} ({f(min(vals))}-{f(max(vals))})"

lines = [header, "", "Median (min-max) over the boots of each image; `-`: not applicable.", ""]
lines.append("| figure | " + " | ".join(names[i] for i in images) + " |")
lines.append("| --- |" + " --- |" * len(images))
counts = []
for i in images:
    ok = sum(1 for r in rows if r["image"] == i and r["end"] == "ok")
    counts.append(f"{ok}/{sum(1 for r in rows if r['image'] == i)}")
lines.append("| boots registered | " + " | ".join(counts) + " |")
for key, label, nd in figures:
    cells = [cell(key, i, nd) for i in images]
    if all(c == "-" for c in cells):
        continue
    lines.append(f"| {label} | " + " | ".join(cells) + " |")

def med(key, img):
    vals = [float(r[key]) for r in rows if r["image"] == img and r[key] not in (None, "")]
    return statistics.median(vals) if vals else None

# The goals of the issues: (numerator, denominator, goal), qemu start to registered, medians.
goals = [("A", "B", 0.5), ("A", "C", 1.10), ("A-sysext", "C", 1.3), ("A2", "C", 1.15),
         ("A2", "B2", 0.5), ("A-sysext", "B-sysext", 0.6)]
lines.append("")
for x, y, goal in goals:
    vx, vy = med("qemu_to_registered_s", x), med("qemu_to_registered_s", y)
    if vx and vy:
        met = "met" if vx / vy <= goal else "not met"
        lines.append(f"- {x} / {y} time to registered (medians): {vx / vy:.2f} (goal <= {goal:.2f}: {met})")
bcpu, cib = med("bootstrapd_cpu_ms", "A"), med("cloudinit_cpu_before_job_ms", "B")
if bcpu is not None and cib:
    lines.append(f"- bootstrapd's own CPU / cloud-init's CPU before the job (medians): {100 * bcpu / cib:.1f}% (goal < 5%)")
rss = med("bootstrapd_peak_rss_kib", "A")
if rss is not None:
    lines.append(f"- bootstrapd's peak RSS (median): {rss / 1024:.1f} MiB (goal < 15 MiB)")
lines += ["", "Per boot, in boot order:", ""]
cols = ["round", "image", "end", "load1", "qemu_to_registered_s", "kernel_to_registered_s",
        "kernel_to_job_start_s",
        "bootstrapd_cpu_ms", "bootstrapd_peak_rss_kib", "cloudinit_cpu_before_job_ms",
        "cloudinit_units_cpu_total_ms", "guest_cpu_total_ms"]
lines.append("| " + " | ".join(cols) + " |")
lines.append("|" + " --- |" * len(cols))
for r in rows:
    def fmt(v):
        if v is None or v == "":
            return "-"
        return f"{v:.1f}" if isinstance(v, float) else str(v)
    lines.append("| " + " | ".join(fmt(r[k]) for k in cols) + " |")
notes = [(r.get("host"), n) for r in map(json.loads, open(raw)) for n in r.get("notes", [])]
if notes:
    lines += ["", "Notes the guests printed (failed units, ordering cycles systemd broke):", ""]
    lines += [f"- {h}: `{n}`" for h, n in notes]
open(out_md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY

header="# Boot benchmark, $(date -u +%FT%TZ)

\`scripts/boot-bench.sh --rounds $rounds --images \"$images\"\` on $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)),
qemu TCG ($(qemu-system-x86_64 --version | head -n 1)), 1024 MiB, 2 vCPUs; bootstrapd profile $profile
($(stat -c %s "$work/bootstrapd") bytes stripped); base $BASE_HASH; ${versions[*]:-}; wall time $(( $(date +%s) - t_run )) s."
python3 "$work/summarize.py" "$work/raw.jsonl" "$work/results.csv" "$work/results.md" "$header"

if [ "${BENCH_KEEP:-0}" != 1 ]; then
  rm -rf "$work/image-B" "$work/image-C" "$work"/*.qcow2
  rm -f "$work/image-A/disk.img"
fi
echo "results: $work/results.md, $work/results.csv"
