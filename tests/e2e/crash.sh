#!/usr/bin/env bash
# VM crash test, the short form of scripts/crash-campaign.sh for CI (run as root; ~7 min with
# the image base cached). One rke1 node, three boots of the same disk:
#   1. bootstrapd killed (SIGKILL) 45 s into the runtime install: apt/dpkg cut short
#   2. the resumed run, hard reset (sysrq b: no sync) right after the register stage started
#   3. a clean boot, which must converge: bootstrapd.service succeeded, `status --json` rc 0 and
#      verdict done, one record at the Rancher test server, one rancher-agent container, and
#      the state journal parsed at every boot after a crash.
# Arguments go to scripts/crash-campaign.sh (e.g. --binary PATH). Work directory:
# CRASH_WORK (default build/e2e-crash); ports CRASH_APT_PORT/CRASH_RANCHER_PORT (18090/8450).
set -euo pipefail
repo_root=$(cd "$(dirname "$0")/../.." && pwd)
export CRASH_WORK=${CRASH_WORK:-$repo_root/build/e2e-crash}
exec "$repo_root/scripts/crash-campaign.sh" --points ci-r1-chain "$@"
