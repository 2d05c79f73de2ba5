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
# The campaign is `e2e-driver secrets` (tests/e2e-driver/src/secret_campaign.rs: the nodes, the
# boots, the table); its checks are tests/e2e-driver/src/secrets.rs's, the same the e2e driver
# applies to its own boots (CI). This is its entry point.
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
# Exit status: 0 when nothing leaked, 1 otherwise, 2 on bad usage. Serial logs:
# $SECRET_WORK/logs/s-MODE-bootN.log.
set -euo pipefail
cd "$(dirname "$0")/.."
case ${1:-} in
  -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
exec cargo run -q -p e2e-driver -- secrets "$@"
