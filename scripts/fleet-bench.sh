#!/bin/bash
# Fleet benchmark (issue 8): builds the `fleet` binary of the bootstrapd-bench crate in release
# mode and runs it: N simulated nodes (default 1000) register through bootstrapd's real
# system-agent code against one in-process Rancher test server that answers 503 for its first
# 60 s. Prints a table and a JSON line (the line starting with `{"`).
#
# Usage: scripts/fleet-bench.sh [fleet options]   e.g. --nodes 1000 --outage-secs 60
#        scripts/fleet-bench.sh --help
# Options: --nodes N, --outage-secs S, --deadline-secs S, --start-spread-secs S, --workers N,
# --work-dir DIR. Exit status 0 when every node registered, 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build --release -p bootstrapd-bench --bin fleet >&2
# Each node holds a few sockets and files at once; 1000 nodes and their server exceed the
# common default of 1024 descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "$ROOT/target/release/fleet" "$@"
