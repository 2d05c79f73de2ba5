#!/usr/bin/env bash
# The host side of the Vagrant lab (run as root, after scripts/setup-vagrant-host.sh and
# scripts/build-box.sh):
#
#   vagrant/lab-host.sh start          the box's apt repository and the Rancher test server
#   vagrant/lab-host.sh status         what runs, and the server's node table
#   vagrant/lab-host.sh wait N [SECS]  until the server has recorded N nodes (default 1800 s)
#   vagrant/lab-host.sh stop           stops both (the node record stays for `status`)
#
# Both listen on the gateway of vagrant-libvirt's management network (LAB_HOST_IP, default
# 192.168.121.1), where the libvirt guests reach the host; `start` defines that network first
# if no `vagrant up` has yet (same name and addresses vagrant-libvirt uses, so it adopts it).
# Ports: LAB_APT_PORT (18082: the box's apt source, baked in by scripts/build-box.sh) and
# LAB_RANCHER_PORT (8445), apart from scripts/lab's and the e2e test's.
# The server's certificate carries LAB_HOST_IP as a SAN. `start` writes vagrant/.lab/server.json
# (0600: it holds the fresh registration token), which the Vagrantfile reads.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo_root=$(cd "$here/.." && pwd)
cd "$repo_root"
# shellcheck source=tests/e2e/lib.sh
. tests/e2e/lib.sh

lab=$here/.lab
host_ip=${LAB_HOST_IP:-192.168.121.1}
apt_port=${LAB_APT_PORT:-18082}
rancher_port=${LAB_RANCHER_PORT:-8445}
image_env=${BOX_IMAGE_ENV:-$repo_root/build/box/image/image.env}
pidfile=$lab/pids
record=$lab/rancher/nodes.json
die() { echo "lab-host: $*" >&2; exit 1; }
running() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

ensure_network() {
  local virsh=(virsh -q -c qemu:///system)
  if ! "${virsh[@]}" net-info vagrant-libvirt >/dev/null 2>&1; then
    [ "$host_ip" = 192.168.121.1 ] || die "no libvirt network vagrant-libvirt and LAB_HOST_IP is not its default gateway"
    echo "lab-host: defining libvirt network vagrant-libvirt (192.168.121.0/24)"
    "${virsh[@]}" net-define /dev/stdin >/dev/null <<'XML'
<network ipv6='yes'>
  <name>vagrant-libvirt</name>
  <forward mode='nat'/>
  <ip address='192.168.121.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.121.1' end='192.168.121.254'/>
    </dhcp>
  </ip>
</network>
XML
  fi
  if [ "$("${virsh[@]}" net-info vagrant-libvirt | awk '/^Active:/ {print $2}')" != yes ]; then
    "${virsh[@]}" net-start vagrant-libvirt >/dev/null
  fi
  for _ in $(seq 50); do
    ip -o addr show | grep -q "inet $host_ip/" && return
    sleep 0.2
  done
  die "no host interface has $host_ip (virsh net-dumpxml vagrant-libvirt)"
}

# The lib.sh helpers, bound to the gateway address, where the libvirt guests reach the host.
start_apt() {
  local pid
  pid=$(host_start_apt_server "$apt_port" "$1" "$lab/logs/apt-http.log" "$host_ip") \
    || die "the apt repository server did not start (see $lab/logs/apt-http.log)"
  echo "apt apt-repo $pid" >>"$pidfile"
}

start_rancher() {
  local started pid token sum url=https://$host_ip:$rancher_port
  started=$(host_start_rancher "$rancher_port" "$lab/rancher" "$lab/logs/rancher.log" "$host_ip") \
    || { cmd_stop; die "the Rancher test server did not answer at $url (see $lab/logs/rancher.log)"; }
  read -r pid token sum <<<"$started"
  echo "server rancher $pid" >>"$pidfile"
  # The token through the environment, never a command line.
  (umask 077 && LAB_TOKEN=$token python3 - "$lab/server.json" "$url" "$sum" "$record" "http://$host_ip:$apt_port/" <<'PY'
import json, os, sys
path, url, checksum, record, repo = sys.argv[1:]
with open(path, "w", encoding="utf-8") as f:
    json.dump({"url": url, "token": os.environ["LAB_TOKEN"], "ca_checksum": checksum, "record": record,
               "runtime_repo": repo}, f, indent=1)
PY
  )
  echo "lab-host: Rancher test server $url (CA checksum $sum), record $record"
}

cmd_start() {
  [ "$(id -u)" = 0 ] || die "must run as root"
  [ ! -f "$pidfile" ] || die "the host side is already up ($pidfile): vagrant/lab-host.sh stop first"
  [ -f "$image_env" ] || die "no box image ($image_env): scripts/build-box.sh first"
  # shellcheck source=/dev/null
  . "$image_env"
  case $APT_URL in
    "http://$host_ip:$apt_port/") ;;
    *) die "the box was built with apt source $APT_URL, not http://$host_ip:$apt_port/ (rebuild with scripts/build-box.sh --apt-url)" ;;
  esac
  scripts/setup-vagrant-host.sh --check >/dev/null || die "libvirt is not ready: scripts/setup-vagrant-host.sh"
  mkdir -p "$lab/logs"
  chmod 0711 "$lab"
  ensure_network
  start_apt "$APT_REPO"
  start_rancher
  echo "lab-host: apt repository http://$host_ip:$apt_port/; now: cd vagrant && vagrant up"
}

cmd_stop() {
  [ -f "$pidfile" ] || { echo "lab-host: nothing is running"; return 0; }
  local kind name pid
  while read -r kind name pid; do
    if running "$pid"; then
      echo "lab-host: stopping $kind $name (pid $pid)"
      kill "$pid" 2>/dev/null || true
    fi
  done <"$pidfile"
  rm -f "$pidfile" "$lab/server.json"
}

table() {
  if [ -f "$record" ]; then
    "$(host_target_dir)/debug/rancher-test-server" table --record "$record"
  else
    echo "(no node has registered yet)"
  fi
}

cmd_status() {
  local kind name pid state
  if [ -f "$pidfile" ]; then
    while read -r kind name pid; do
      if running "$pid"; then state=running; else state=stopped; fi
      printf '%-8s %-10s %s\n' "$kind" "$name" "$state"
    done <"$pidfile"
  else
    echo "lab-host: nothing is running"
  fi
  table
}

cmd_wait() {
  local want=${1:?usage: lab-host.sh wait N [SECONDS]} timeout=${2:-1800} start n last=-1
  start=$(date +%s)
  while :; do
    n=$(e2e_records "$record" | grep -c . || true)
    if [ "$n" != "$last" ]; then
      echo "--- $(( $(date +%s) - start ))s: $n of $want registered"
      last=$n
    fi
    [ "$n" -ge "$want" ] && { table; return 0; }
    if [ $(( $(date +%s) - start )) -ge "$timeout" ]; then
      table
      die "only $n of $want nodes registered after ${timeout}s"
    fi
    sleep 5
  done
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  wait) shift; cmd_wait "$@" ;;
  -h|--help|help|'') sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command $1 (start, stop, status, wait)" ;;
esac
