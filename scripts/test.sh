#!/usr/bin/env bash
# The test command (README "Run the tests"): installs what it needs on a fresh Debian 12
# machine, then runs formatting and lint checks, the unit and integration tests, and the
# end-to-end tests in a qemu VM. Set BOOTSTRAPD_SKIP_VM=1 only for a quick local loop; CI never does.
set -euo pipefail
cd "$(dirname "$0")/.."

# log: a section heading with the seconds since the start and the free space on this disk, so a
# slow CI run shows where its time went and a failed one whether the disk was full.
log() {
  printf '\n==> [%ss, %s free] %s\n' "$(( $(date +%s) - ${start:-$(date +%s)} ))" \
    "$(df -h --output=avail . 2>/dev/null | tail -n 1 | tr -d ' ')" "$*"
}

# shell_scripts: sets SHELL_SCRIPTS to every tracked file that is a shell script, by its name
# or its first line (the guest's helpers under images/ have no .sh ending).
shell_scripts() {
  local f first
  SHELL_SCRIPTS=()
  while IFS= read -r f; do
    [ -f "$f" ] || continue
    case $f in
      *.sh) SHELL_SCRIPTS+=("$f"); continue ;;
    esac
    IFS= read -r first <"$f" || true
    case $first in
      '#!/bin/sh'*|'#!/bin/bash'*|'#!/usr/bin/env bash'*|'#!/usr/bin/env sh'*) SHELL_SCRIPTS+=("$f") ;;
    esac
  done < <(git ls-files)
}
start=$(date +%s)

log "installing build and test dependencies"
scripts/install-deps.sh

log "shellcheck (every shell script in the repository)"
shell_scripts
shellcheck -x "${SHELL_SCRIPTS[@]}"
echo "shellcheck: ${#SHELL_SCRIPTS[@]} scripts clean"

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
  # The packages first: their release binary is the one every VM suite below boots (what
  # ships, and one build instead of a second, dev one).
  log "packages: .deb and .rpm contents (e2e-driver packages)"
  cargo run -q -p e2e-driver -- packages --work "$PWD/build/e2e-packages"
  binary=$PWD/build/e2e-packages/pkg/bootstrapd
  log "VM end-to-end tests: host preparation, runtime, registration (tests/e2e-driver)"
  E2E_BINARY=$binary cargo run -q -p e2e-driver
  log "disk image: boot through GRUB, bootstrapd from the .deb (e2e-driver qcow2)"
  cargo run -q -p e2e-driver -- qcow2
  # One image build and four short boots on qcow2 overlays of it (README: the immutable image).
  log "immutable image: verified read-only /usr, a corrupt /usr refused, rke1 with a Docker sysext (e2e-driver immutable)"
  cargo run -q -p e2e-driver -- immutable
  log "crash campaign, short form: kill -9 mid-install, reset as the register stage starts (e2e-driver crash)"
  CRASH_WORK=${CRASH_WORK:-$PWD/build/e2e-crash} cargo run -q -p e2e-driver -- crash --points ci-r1-chain --binary "$binary"
  # ~4-7 min on 2 cores.
  log "network boot: iPXE, live squashfs, userdata from bootstrapd.url= (e2e-driver pxe)"
  cargo run -q -p e2e-driver -- pxe
  # The full campaigns (scripts/*-campaign.sh, scripts/fuzz.sh, scripts/fleet-bench.sh) take
  # hours and are run by hand: see README.
fi
log "all tests passed in $(( $(date +%s) - start ))s"
