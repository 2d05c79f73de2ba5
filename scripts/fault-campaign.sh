#!/bin/bash
# The full fault campaign (issue 7): bootstrapd/tests/fault_campaign.rs with more rounds, more
# of them at once, a registration budget long enough that a stalled attempt (35 s, beyond the
# 30 s attempt timeout of bootstrapd's CA fetch and /healthz) is abandoned and retried.
# CI runs the same test in its short form (`cargo test -p bootstrapd --test fault_campaign`).
#
# Usage: scripts/fault-campaign.sh [--release] [extra libtest args]
# Every knob can be overridden from the environment:
#   FAULT_CAMPAIGN_ROUNDS (400)  FAULT_CAMPAIGN_DS_ROUNDS (300)  FAULT_CAMPAIGN_PARALLEL (48)
#   FAULT_CAMPAIGN_DEADLINE_SECS (120)  FAULT_CAMPAIGN_STALL_SECS (35)  FAULT_CAMPAIGN_SEED (random)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE=()
if [ "${1:-}" = "--release" ]; then
    PROFILE=(--release)
    shift
fi

export FAULT_CAMPAIGN_ROUNDS="${FAULT_CAMPAIGN_ROUNDS:-400}"
export FAULT_CAMPAIGN_DS_ROUNDS="${FAULT_CAMPAIGN_DS_ROUNDS:-300}"
export FAULT_CAMPAIGN_PARALLEL="${FAULT_CAMPAIGN_PARALLEL:-48}"
export FAULT_CAMPAIGN_DEADLINE_SECS="${FAULT_CAMPAIGN_DEADLINE_SECS:-120}"
export FAULT_CAMPAIGN_STALL_SECS="${FAULT_CAMPAIGN_STALL_SECS:-35}"

cd "$ROOT"
exec cargo test "${PROFILE[@]}" -p bootstrapd --test fault_campaign -- --nocapture --test-threads=1 "$@"
