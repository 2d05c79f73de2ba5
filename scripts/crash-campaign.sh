#!/usr/bin/env bash
# Crash campaign (issue 7), in the VM: crash bootstrapd's node at stage boundaries and in the
# middle of stages, boot the same disk again without the crash, and count what matters
# (converged, records, connects, agents, journal, dpkg). The campaign is `e2e-driver crash`
# (tests/e2e-driver/src/crash.rs: the points, the boots, the judging); this is its entry point.
#
#   scripts/crash-campaign.sh [--points "ID ..."] [--list] [--binary PATH]
#
# A point is "ID MODE SPEC [SPEC...]": one boot per SPEC with bootstrapd.crash=SPEC on the
# kernel command line (images/debian12/overlay/usr/libexec/bootstrapd-e2e/crasher explains
# SPEC: ACTION,STAGE[,STEP[,DELAY[,WAIT]]]), then one boot without. Each point is its own node
# (the ID is its hostname, a fresh disk). Boots run one at a time. CI runs the short form,
# `--points ci-r1-chain` (two crashes chained on one rke1 node; scripts/test.sh).
#
# Environment: CRASH_WORK (build/crash), CRASH_APT_PORT (18090), CRASH_RANCHER_PORT (8450),
# CRASH_BOOT_TIMEOUT (900 s), E2E_CARGO_PROFILE (dev), BOOTSTRAPD_CACHE, DEBIAN_MIRROR.
# Exit status: 0 when every point converged with no duplicate and no corrupt journal and every
# crash fired, 1 otherwise, 2 on bad usage. Serial logs: $CRASH_WORK/logs/ID-bootN.log.
set -euo pipefail
cd "$(dirname "$0")/.."
case ${1:-} in
  -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
exec cargo run -q -p e2e-driver -- crash "$@"
