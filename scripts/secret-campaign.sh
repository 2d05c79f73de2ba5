#!/usr/bin/env bash
# Secret campaign, in the VM: the whole flow (system-agent worker, then an rke1 node with all
# roles) with a known registration token, then a search for that token everywhere:
#   cmdline            /proc/*/cmdline sampled every ~100 ms from before bootstrapd starts
#                      (bootstrapd-e2e-sampler.service)
#   journal-this-boot, journal-all-boots   journalctl -o export
#   status, status-json, query             bootstrapd's own commands
#   docker-args        rke1: the agent container's path, args, cmd, entrypoint, labels
#   docker-env         rke1: its environment (CATTLE_TOKEN: by design, counted apart)
#   files              every file under /etc /var /run /tmp holding it, with mode and owner
#   serial-console     the whole console log (kernel, systemd, every report section)
# Allowed: root-owned 0600 files that hold the token by design (listed), and docker-env.
# The checks are tests/e2e/secrets.sh's; the e2e driver (tests/e2e-driver/src/secrets.rs) applies
# the same rules to its own boots (CI).
#
#   scripts/secret-campaign.sh [--binary PATH] [--boots N] [--modes "system-agent rke1"]
#                              [--log-forms "FORM FORM..."]
#
# Boot n of each node runs bootstrapd with BOOTSTRAPD_LOG set to the ((n-1) mod count)th log
# form (kernel command line systemd.setenv=, inherited by the unit): global debug/trace and
# per-module directives for the client libraries, which must print no secret whatever the
# operator asks for. Use --boots 2 or more to try every default form.
#
# Environment: SECRET_WORK (build/secrets), SECRET_APT_PORT (18091), SECRET_RANCHER_PORT
# (8451), SECRET_BOOT_TIMEOUT (900 s), E2E_CARGO_PROFILE (dev), BOOTSTRAPD_CACHE.
# Exit status 0 when nothing leaked.
set -euo pipefail

main() {
  repo_root=$(cd "$(dirname "$0")/.." && pwd)
  cd "$repo_root"
  # shellcheck source=tests/e2e/lib.sh
  . tests/e2e/lib.sh
  # shellcheck source=tests/e2e/secrets.sh
  . tests/e2e/secrets.sh

  local work=${SECRET_WORK:-$repo_root/build/secrets}
  local apt_port=${SECRET_APT_PORT:-18091} rancher_port=${SECRET_RANCHER_PORT:-8451}
  local boot_timeout=${SECRET_BOOT_TIMEOUT:-900} profile=${E2E_CARGO_PROFILE:-dev}
  local binary='' boots=1 modes='system-agent rke1' token ca_checksum mode name n
  local t_total rc log ud form
  local log_forms='info,bootstrapd=debug,bollard::docker=debug,bollard::read=trace,hyper_util::client=trace,hyper::proto=trace,reqwest::connect=debug,h2::codec=trace,zbus::connection=trace trace'
  while [ $# -gt 0 ]; do
    case $1 in
      --binary) binary=${2:?}; shift 2 ;;
      --boots) boots=${2:?}; shift 2 ;;
      --modes) modes=${2:?}; shift 2 ;;
      --log-forms) log_forms=${2:?}; shift 2 ;;
      -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) echo "secret-campaign: unknown argument $1" >&2; exit 2 ;;
    esac
  done
  [ "$(id -u)" = 0 ] || { echo "secret-campaign: must run as root" >&2; exit 2; }
  t_total=$(date +%s)

  mkdir -p "$work/logs"
  trap host_stop EXIT
  local setup=(--profile "$profile")
  [ -z "$binary" ] || setup+=(--binary "$binary")
  host_setup "$work" "$apt_port" "$rancher_port" "${setup[@]}" \
    || { echo "secret-campaign: FAIL: the host set-up failed (see above)" >&2; exit 1; }
  token=$HOST_TOKEN ca_checksum=$HOST_CA_CHECKSUM
  # The known token sits in $work/rancher/tokens (0600); it is never printed here.
  echo "==> token: ${#token} characters, from $work/rancher/tokens"

  local logs=()
  for mode in $modes; do
    name=s-$mode
    ud=$work/$name.user-data
    render_userdata tests/e2e/userdata/node.yaml "$ud" "https://10.0.2.2:$rancher_port" "$token" \
      "$ca_checksum" "$( [ "$mode" = rke1 ] && echo 'etcd, controlplane, worker' || echo worker)" "$mode"
    for n in $(seq "$boots"); do
      log=$work/logs/$name-boot$n.log
      echo "==> $name: boot $n"
      local t extra=()
      t=$(date +%s)
      [ "$n" = 1 ] && extra+=(--fresh)
      # shellcheck disable=SC2086 # the forms are space-separated on purpose
      set -- $log_forms
      shift $(( (n - 1) % $# ))
      form=$1
      echo "    BOOTSTRAPD_LOG=$form"
      rc=0
      scripts/vm.sh --image-env "$work/image/image.env" --overlay "$work/$name.qcow2" "${extra[@]}" \
        --user-data "$ud" --hostname "$name" --append "bootstrapd.e2e systemd.setenv=BOOTSTRAPD_LOG=$form" \
        --serial "$log" --timeout "$boot_timeout" >/dev/null || rc=$?
      echo "    $(( $(date +%s) - t ))s, vm.sh status $rc, bootstrapd $(e2e_prop "$log" unit-bootstrapd Result), verdict $(e2e_section "$log" status-json | sed -n 's/^  "verdict": "\(.*\)",$/\1/p')"
      secrets_check "$name boot $n" "$log" "$token" "$mode"
      logs+=("$name-boot$n $log $mode")
    done
  done

  echo
  echo "hits per place (must be 0; docker-env by design; files: see the list, all must be 600 root:root):"
  local entry label
  for entry in "${logs[@]}"; do
    read -r label log mode <<<"$entry"
    echo "$label ($mode):"
    secrets_table "$log" "$token"
  done
  echo "total $(( $(date +%s) - t_total ))s"
  e2e_summary
  [ "$E2E_FAILED" = 0 ]
}

main "$@"
exit
