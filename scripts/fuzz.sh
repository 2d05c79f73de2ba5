#!/usr/bin/env bash
# Input campaign: runs each cargo-fuzz target for a bounded time and prints a tally.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
# CI runs the short form on the stable toolchain: bootstrapd/tests/input_campaign.rs (the same
# entry points and seeds, 12,800+ deterministic mutations).
# Needs the nightly toolchain (installed here) and cargo-fuzz (installed on demand).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
targets=(userdata cmdline fs_label)

# Seeds: the shipped examples and the malformed corpus.
mkdir -p fuzz/corpus/userdata fuzz/corpus/cmdline fuzz/corpus/fs_label
cp configs/examples/* fuzz/corpus/userdata/ 2>/dev/null || true
find tests/corpus/userdata -type f -exec cp {} fuzz/corpus/userdata/ \; 2>/dev/null || true
printf 'root=/dev/vda ds=nocloud;s=http://10.0.2.2:8000/ bootstrapd.url=http://x/y quiet' \
  > fuzz/corpus/cmdline/seed1

total_fail=0
printf '%-10s %10s %8s %s\n' target runs seconds result
for t in "${targets[@]}"; do
  log=$(mktemp)
  if cargo +nightly fuzz run "$t" --fuzz-dir fuzz -- -max_total_time="$secs" -max_len=65536 \
       -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1; then
    result=ok
  else
    result="CRASH (see fuzz/artifacts/$t)"
    total_fail=$((total_fail + 1))
    tail -n 30 "$log" >&2
  fi
  runs=$(grep -o 'Done [0-9]* runs' "$log" | awk '{print $2}' | tail -n 1)
  printf '%-10s %10s %8s %s\n' "$t" "${runs:-?}" "$secs" "$result"
  rm -f "$log"
done
echo "fuzz: $(( ${#targets[@]} - total_fail )) passed, $total_fail failed"
[ "$total_fail" = 0 ]
