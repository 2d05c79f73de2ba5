#!/usr/bin/env bash
# The test command (README "Run the tests"): installs what it needs on a fresh Debian 12
# machine, then runs formatting and lint checks, the unit and integration tests, and the
# end-to-end tests in a qemu VM. Set BOOTSTRAPD_SKIP_VM=1 only for a quick local loop; CI never does.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }
start=$(date +%s)

log "installing build and test dependencies"
scripts/install-deps.sh

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "cargo test (unit + integration)"
cargo test --workspace 2>&1 | tee /tmp/bootstrapd-cargo-test.log
grep -E '^test result:' /tmp/bootstrapd-cargo-test.log | awk '{p+=$4; f+=$6; i+=$8} END {printf "cargo test totals: %d passed, %d failed, %d ignored\n", p, f, i}'

if [ "${BOOTSTRAPD_SKIP_VM:-0}" = 1 ] && [ "${CI:-}" != true ]; then
  log "VM end-to-end tests skipped (BOOTSTRAPD_SKIP_VM=1)"
else
  log "VM end-to-end tests"
  tests/e2e/run.sh
fi
log "all tests passed in $(( $(date +%s) - start ))s"
