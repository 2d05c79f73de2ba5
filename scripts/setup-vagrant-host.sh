#!/usr/bin/env bash
# Makes a Debian 12 host ready for the Vagrant lab (vagrant/Vagrantfile) with vagrant-libvirt
# (run as root; idempotent: run it again after a reboot to restart the daemons).
#
#   scripts/setup-vagrant-host.sh [--check]
#
# Installs Debian's vagrant, vagrant-libvirt, libvirt and qemu, starts virtlogd and libvirtd
# (through systemd when it is PID 1, by hand otherwise: containers and CI machines often have
# no systemd), and makes sure libvirt's `default` storage pool exists and is active.
# vagrant-libvirt creates its own management network (vagrant-libvirt, 192.168.121.0/24) at the
# first `vagrant up`. --check only reports what is missing and exits 1 if anything is.
set -euo pipefail

check_only=false
case ${1:-} in
  --check) check_only=true ;;
  -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  '') ;;
  *) echo "setup-vagrant-host: unknown argument $1" >&2; exit 2 ;;
esac
die() { echo "setup-vagrant-host: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

# vagrant-libvirt pulls libvirt-daemon-system and qemu via Recommends only in part; name them.
# genisoimage builds the NoCloud seeds, qemu-utils the box's qcow2, python3 the lab's apt server.
need=(vagrant:vagrant '/usr/share/rubygems-integration/all/gems/vagrant-libvirt-*:vagrant-libvirt'
  libvirtd:libvirt-daemon-system virsh:libvirt-clients qemu-system-x86_64:qemu-system-x86
  qemu-img:qemu-utils dnsmasq:dnsmasq-base ebtables:ebtables iptables:iptables
  genisoimage:genisoimage python3:python3 curl:curl rsync:rsync)
# What is checked is the commands and files, not package names (scripts/host-tools.sh).
# shellcheck source=scripts/host-tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/host-tools.sh"
if $check_only; then
  absent=$(host_tools_missing "${need[@]}")
  [ -z "$absent" ] || die "missing: $(tr '\n' ' ' <<<"$absent")"
fi
# policy-rc.d-less hosts without systemd: the maintainer scripts' service starts fail
# harmlessly ("System has not been booted with systemd"); we start the daemons below.
host_tools_need setup-vagrant-host "${need[@]}" || exit 1

running() { pgrep -x "$1" >/dev/null; }

start_daemons() {
  if [ -d /run/systemd/system ]; then
    systemctl start virtlogd.socket libvirtd.service
    return
  fi
  # Without systemd there is no socket activation: virtlogd must run before libvirtd starts a
  # domain (qemu's console log goes through it). `-d` daemonizes; `-l` (listen on TCP) is not
  # wanted.
  mkdir -p /run/libvirt
  if ! running virtlogd; then
    echo "setup-vagrant-host: starting virtlogd"
    virtlogd -d
  fi
  if ! running libvirtd; then
    echo "setup-vagrant-host: starting libvirtd"
    libvirtd -d
  fi
  for _ in $(seq 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && return
    sleep 0.2
  done
  die "libvirtd does not answer on qemu:///system (see /var/log/libvirt/libvirtd.log)"
}

if $check_only; then
  running libvirtd || die "libvirtd is not running"
  running virtlogd || die "virtlogd is not running"
else
  start_daemons
fi

# Without udev (containers, CI machines) /dev/kvm stays root:root 0600. libvirt then probes an
# emulator with KVM (as root) but finds /dev/kvm unusable for the qemu user when it checks its
# cache ("KVM was enabled when probing ..., but it is not available now"), so it re-probes the
# emulator on every API call: defining six domains took over 7 minutes. Give it the group and
# mode Debian's udev rules give it.
if [ -c /dev/kvm ] && [ "$(stat -c %G:%a /dev/kvm)" = root:600 ] && getent group kvm >/dev/null; then
  $check_only && die "/dev/kvm is root:root 0600 (udev would make it root:kvm 0660)"
  echo "setup-vagrant-host: /dev/kvm -> root:kvm 0660 (as udev would)"
  chgrp kvm /dev/kvm
  chmod 0660 /dev/kvm
fi

virsh=(virsh -q -c qemu:///system)
if ! "${virsh[@]}" pool-info default >/dev/null 2>&1; then
  $check_only && die "libvirt storage pool 'default' is missing"
  echo "setup-vagrant-host: defining storage pool default (/var/lib/libvirt/images)"
  mkdir -p /var/lib/libvirt/images
  "${virsh[@]}" pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
  "${virsh[@]}" pool-autostart default >/dev/null
fi
if [ "$("${virsh[@]}" pool-info default | awk '/^State:/ {print $2}')" != running ]; then
  $check_only && die "libvirt storage pool 'default' is not active"
  "${virsh[@]}" pool-start default >/dev/null
fi

# libvirt's own NAT network (virbr0), for plain `virt-install`/`virsh` guests next to the lab.
if "${virsh[@]}" net-info default >/dev/null 2>&1 \
  && [ "$("${virsh[@]}" net-info default | awk '/^Active:/ {print $2}')" != yes ]; then
  $check_only && die "libvirt network default is not active"
  "${virsh[@]}" net-autostart default >/dev/null
  "${virsh[@]}" net-start default >/dev/null
fi

# vagrant-libvirt makes its management network itself; a stale inactive one (left from a
# killed libvirtd) must be started, or `vagrant up` fails with "network not active".
if "${virsh[@]}" net-info vagrant-libvirt >/dev/null 2>&1 \
  && [ "$("${virsh[@]}" net-info vagrant-libvirt | awk '/^Active:/ {print $2}')" != yes ]; then
  $check_only && die "libvirt network vagrant-libvirt is not active"
  "${virsh[@]}" net-start vagrant-libvirt >/dev/null
fi

# Kernel and initrd for direct kernel boot must be readable by the qemu process (user
# libvirt-qemu), which cannot enter /root.
mkdir -p /var/lib/libvirt/boot
chmod 0755 /var/lib/libvirt/boot

if ! vagrant plugin list 2>/dev/null | grep -q vagrant-libvirt; then
  die "vagrant does not list the vagrant-libvirt plugin (vagrant plugin list)"
fi
echo "setup-vagrant-host: ready ($(vagrant --version), $(virsh -c qemu:///system version 2>/dev/null | sed -n 's/^Running hypervisor: //p'))"
