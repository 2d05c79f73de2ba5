#!/usr/bin/env bash
# Crash campaign (issue 7), in the VM: crash bootstrapd's node at stage boundaries and in the
# middle of stages, boot the same disk again without the crash, and count what matters:
#   converged      the clean boot ends with bootstrapd.service succeeded, `status --json` rc 0,
#                  verdict done
#   records        the Rancher test server's records for the node's hostname (must be 1; a
#                  second record is a second registration under a new identity)
#   connects       accepted registrations/connections of that record (system-agent: 2 means
#                  the same identity registered again after a crash, which Rancher takes as
#                  the same machine; rke1: one per agent container start, not a count of
#                  registrations). Shown, not judged.
#   agents         rke1: rancher-agent containers on the node after the clean boot (must be 1)
#   journal        every state.json found at boot after a crash parses as JSON (a torn or empty
#                  journal is corrupt)
#   dpkg           rke1: docker.io is "ii" in dpkg after the clean boot (not iF/iHR)
#
#   scripts/crash-campaign.sh [--points "ID ..."] [--list] [--binary PATH]
#
# A point is "ID MODE SPEC [SPEC...]": one boot per SPEC with bootstrapd.crash=SPEC on the
# kernel command line (images/debian12/overlay/usr/libexec/bootstrapd-e2e/crasher explains
# SPEC: ACTION,STAGE[,STEP[,DELAY[,WAIT]]]), then one boot without. Each point is its own node (the
# ID is its hostname, a fresh disk). Boots run one at a time.
#
# Environment: CRASH_WORK (build/crash), CRASH_APT_PORT (18090), CRASH_RANCHER_PORT (8450),
# CRASH_BOOT_TIMEOUT (900 s), E2E_CARGO_PROFILE (dev), BOOTSTRAPD_CACHE, DEBIAN_MIRROR.
# Exit status: 0 when every point converged with no duplicate and no corrupt journal and every
# crash fired, 1 otherwise. Serial logs: $CRASH_WORK/logs/ID-bootN.log.
set -euo pipefail

# All of it inside main: bash reads a script as it runs, and a campaign runs for an hour.
main() {
repo_root=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo_root"
# shellcheck source=tests/e2e/lib.sh
. tests/e2e/lib.sh

# ID MODE SPECS. sa = rancher-system-agent (fast: no runtime install), r1 = rke1 (Docker from the
# local apt repository, the agent container from the image's archive). Ordered so that the most
# telling points come first when time is short.
ALL_POINTS=(
  "r1-kill-mid-install rke1 kill,runtime,runtime.install,60"
  "sa-reset-register-start system-agent reset,register,node+identity"
  "sa-reset-mid-register system-agent reset,register,registering,2"
  "sa-kill-mid-register system-agent kill,register,registering,2"
  "sa-reset-after-connect system-agent reset,register,registering,0,/var/lib/rancher/agent/rancher2_connection_info.json"
  "sa-kill-after-connect system-agent kill,register,registering,0,/var/lib/rancher/agent/rancher2_connection_info.json"
  "r1-reset-after-create rke1 reset,register,registering,0,/var/lib/docker/containers/*/config.v2.json"
  "r1-kill-after-create rke1 kill,register,registering,0,/var/lib/docker/containers/*/config.v2.json"
  "r1-reset-mid-install rke1 reset,runtime,runtime.install,120"
  "sa-kill-prepare-start system-agent kill,prepare"
  "sa-reset-mid-prepare system-agent reset,prepare,modules"
  "sa-reset-begin system-agent reset,begin"
  "sa-kill-runtime-start system-agent kill,runtime"
  "r1-reset-mid-register rke1 reset,register,registering,6"
  "r1-kill-mid-register rke1 kill,register,registering,12"
  "sa-poweroff-mid-register system-agent poweroff,register,registering,2"
  "r1-reset-runtime-start rke1 reset,runtime"
)
# The short form (tests/e2e/crash.sh): two crashes chained on one rke1 node.
CI_POINTS=(
  "ci-r1-chain rke1 kill,runtime,runtime.install,45 reset,register,node+identity"
)

work=${CRASH_WORK:-$repo_root/build/crash}
apt_port=${CRASH_APT_PORT:-18090}
rancher_port=${CRASH_RANCHER_PORT:-8450}
boot_timeout=${CRASH_BOOT_TIMEOUT:-900}
profile=${E2E_CARGO_PROFILE:-dev}
binary=
selected=()

die() { echo "crash-campaign: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --points) read -r -a selected <<<"${2:?}"; shift 2 ;;
    --binary) binary=${2:?}; shift 2 ;;
    --list) printf '%s\n' "${ALL_POINTS[@]}" "${CI_POINTS[@]}"; exit 0 ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "must run as root (image build)"

points=()
if [ ${#selected[@]} = 0 ]; then
  points=("${ALL_POINTS[@]}")
else
  for id in "${selected[@]}"; do
    found=
    for p in "${ALL_POINTS[@]}" "${CI_POINTS[@]}"; do
      [ "${p%% *}" = "$id" ] && found=$p
    done
    [ -n "$found" ] || die "no point $id (see --list)"
    points+=("$found")
  done
fi

mkdir -p "$work/logs"
trap host_stop EXIT
t_total=$(date +%s)
setup=(--profile "$profile")
[ -z "$binary" ] || setup+=(--binary "$binary")
host_setup "$work" "$apt_port" "$rancher_port" "${setup[@]}" \
  || { echo "crash-campaign: FAIL: the host set-up failed (see above)" >&2; exit 1; }
token=$HOST_TOKEN ca_checksum=$HOST_CA_CHECKSUM server_url=$HOST_SERVER_URL rancher_dir=$HOST_RANCHER_DIR
echo "    setup done in $(( $(date +%s) - t_total ))s"

# journal_ok LOG: "ok", "absent" or "corrupt (...)" for the journal-at-boot section.
journal_ok() {
  local sec
  # Not e2e_section: systemd's status line on the same console may glue an escape sequence
  # (ESC [K) in front of a report line.
  sec=$(tr -d '\r' <"$1" | sed -n 's/^.*@@E2E journal-at-boot| //p')
  if [ -z "$sec" ]; then
    echo "no-report"
  elif [ "$sec" = absent ]; then
    echo "absent"
  else
    printf '%s\n' "$sec" | sed -n 's/^json=//p' | python3 -c '
import json, sys
try:
    j = json.load(sys.stdin)
    p = j.get("progress") or {}
    print("ok(%s,%s/%s)" % (j.get("verdict"), p.get("stage", "-"), p.get("step", "-") or "-"))
except Exception as e:
    print("corrupt(%s)" % str(e).replace(" ", "_"))'
  fi
}

rows=()
failed_points=0
run_point() { # ID MODE SPECS
  local id=$1 mode=$2 specs=$3 ud=$work/$1.user-data n=0 spec log rc t0 extra f fired='' journals=() j
  local specs_a verdict status_rc result records connects agents corrupt=0 missed=0 notes=()
  read -r -a specs_a <<<"$specs"
  render_userdata tests/e2e/userdata/node.yaml "$ud" "$server_url" "$token" "$ca_checksum" \
    "$( [ "$mode" = rke1 ] && echo 'etcd, controlplane, worker' || echo worker)" "$mode"
  # The point's ID as rancher.node_name: a system-agent node sends no name by default, and the
  # records are counted per node name (a second record is a second registration).
  sed -i "s|^  rancher:\$|  rancher:\n    node_name: $id|" "$ud"
  t0=$(date +%s)
  for spec in "${specs_a[@]}" ""; do
    n=$((n + 1))
    log=$work/logs/$id-boot$n.log
    extra=()
    [ "$n" = 1 ] && extra+=(--fresh)
    if [ -n "$spec" ]; then echo "==> $id: boot $n (bootstrapd.crash=$spec)"; else echo "==> $id: boot $n (clean)"; fi
    rc=0
    scripts/vm.sh --image-env "$work/image/image.env" --overlay "$work/$id.qcow2" "${extra[@]}" \
      --user-data "$ud" --hostname "$id" \
      --append "bootstrapd.e2e bootstrapd.e2e.journal${spec:+ bootstrapd.crash=$spec}" \
      --serial "$log" --timeout "$boot_timeout" >/dev/null || rc=$?
    [ "$rc" = 0 ] || notes+=("boot $n: vm.sh status $rc")
    if [ -n "$spec" ]; then
      f=$(tr -d '\r' <"$log" | sed -n 's/^@@E2E crash| firing \([a-z]*\) at stage=\([a-z]*\) step=\(.*\) uptime=.*/\2:\3/p' | sed -n 1p)
      if [ -z "$f" ]; then
        missed=$((missed + 1))
        f="MISSED"
        tr -d '\r' <"$log" | sed -n 's/^@@E2E crash| /    crasher: /p' | sed -n 1,3p
      fi
      echo "    fired at: $f"
      fired=${fired:+$fired+}${f// /_}
      tr -d '\r' <"$log" | sed -n 's/^@@E2E crash| process [0-9]*: \(.*\) uptime=.*/    process: \1/p' | cut -c1-160
    fi
    if [ "$n" -gt 1 ]; then
      j=$(journal_ok "$log")
      journals+=("$j")
      case $j in corrupt*) corrupt=$((corrupt + 1)) ;; esac
    fi
  done
  # The clean boot's verdict.
  verdict=$(e2e_section "$log" status-json | sed -n 's/^  "verdict": "\(.*\)",$/\1/p' | sed -n 1p)
  status_rc=$(e2e_rc "$log" status-json)
  if ! e2e_section "$log" status-json | grep -v '^rc=' | python3 -m json.tool >/dev/null 2>&1; then
    corrupt=$((corrupt + 1))
    notes+=("final status --json is not JSON")
  fi
  records=$(e2e_records "$rancher_dir/nodes.json" | awk -v h="$id" '$1 == h' | grep -c . || true)
  connects=$(e2e_records "$rancher_dir/nodes.json" | awk -v h="$id" '$1 == h { print $4 }' | paste -sd, -)
  agents=-
  if [ "$mode" = rke1 ]; then
    agents=$(e2e_section "$log" docker-ps | grep -c ' rancher/rancher-agent:' || true)
  fi
  local problems=()
  if [ "$(e2e_prop "$log" unit-bootstrapd Result)" != success ] || [ "$status_rc" != 0 ] || [ "$verdict" != "done" ]; then
    problems+=(NOT-CONVERGED)
  fi
  [ "$records" = 1 ] || problems+=("RECORDS=$records")
  # The same identity registering again (its CATTLE_ID kept) is one record, not a duplicate:
  # shown in the connects column, not a failure.
  [ "$mode" != rke1 ] || [ "$agents" = 1 ] || problems+=("AGENTS=$agents")
  # Docker answering is not the package being installed: a dpkg run cut short leaves docker.io
  # half-configured (iF) or half-installed (iHR), and every later apt-get refuses to run.
  local dpkg_state
  dpkg_state=$(e2e_section "$log" packages | awk '$1 == "docker.io" { print $3 }')
  if [ "$mode" = rke1 ] && [ "$dpkg_state" != ii ]; then problems+=("DPKG-docker.io=${dpkg_state:-none}"); fi
  [ "$corrupt" = 0 ] || problems+=(CORRUPT-JOURNAL)
  [ "$missed" = 0 ] || problems+=(CRASH-MISSED)
  result=ok
  [ ${#problems[@]} = 0 ] || result=$(IFS=,; echo "${problems[*]}")
  [ "$result" = ok ] || failed_points=$((failed_points + 1))
  rows+=("$(printf '%-26s %-12s %-34s %-7s %-4s %-7s %-8s %-6s %-5s %s' "$id" "$mode" "$fired" \
    "${verdict:--}" "${status_rc:--}" "$records" "${connects:--}" "$agents" "$(( $(date +%s) - t0 ))s" "$result")")
  echo "    journal at boot: ${journals[*]}; final: verdict=${verdict:--} rc=${status_rc:--} records=$records connects=${connects:--} agents=$agents -> $result"
  for j in "${notes[@]}"; do echo "    note: $j"; done
  if [ "$result" != ok ]; then
    echo "    bootstrapd's journal on the clean boot (errors, last lines):"
    e2e_section "$log" journal-bootstrapd | grep -iE 'error|fail|dpkg|apt|interrupt|refus' | tail -n 15 | sed 's/^/      /' || true
    e2e_section "$log" status | tail -n 20 | sed 's/^/      status: /'
  fi
}

for p in "${points[@]}"; do
  read -r id mode specs <<<"$p"
  run_point "$id" "$mode" "$specs"
done

echo
echo "crash campaign: $((${#rows[@]})) points, $(( $(date +%s) - t_total ))s"
printf '%-26s %-12s %-34s %-7s %-4s %-7s %-8s %-6s %-5s %s\n' point mode "fired at" verdict rc records connects agents time result
printf '%s\n' "${rows[@]}"
echo "servers' records (hostname generation roles connect_count):"
e2e_records "$rancher_dir/nodes.json" | sed 's/^/  /'
echo "tally: $(( ${#rows[@]} - failed_points )) ok, $failed_points not ok"
[ "$failed_points" = 0 ]
}

main "$@"
exit
