#!/usr/bin/env bash
# Host-side secret checks on a VM boot's console log (sourced after tests/e2e/lib.sh by
# scripts/secret-campaign.sh; tests/e2e-driver/src/secrets.rs holds the same rules for CI).
# The guest side is the report's "secrets" section
# (images/debian12/overlay/usr/libexec/bootstrapd-e2e/secrets) and the command-line sampler
# (bootstrapd-e2e-sampler.service), both active with bootstrapd.e2e.
#
# The rule: the registration token appears nowhere but in root-owned 0600 files that hold it by
# design, and, for rke1, in the agent container's environment (CATTLE_TOKEN) and the container
# runtime's records of it (listed with their readability), never in its command line.
#
# The token is given on stdin-like file descriptors only (printf is a shell builtin): never on a
# command line of the host either.

# secrets_places: the places that must hold no token, as the guest names them.
SECRETS_PLACES="cmdline journal-this-boot journal-all-boots status status-json query"

# secrets_console_hits LOG TOKEN: lines of the whole console log (kernel, systemd, bootstrapd,
# every report section) that hold the token.
secrets_console_hits() {
  tr -d '\r' <"$1" | grep -acF -f <(printf '%s\n' "$2")
}

# secrets_hits LOG PLACE: the guest's count for PLACE ("" when the section lacks it).
secrets_hits() {
  e2e_section "$1" secrets | sed -n "s/^place=$2 hits=\([0-9]*\).*/\1/p" | sed -n 1p
}

# secrets_files LOG: "MODE OWNER PATH nobody-readable=yes|no" of each file holding the token.
secrets_files() {
  e2e_section "$1" secrets | sed -n 's/^file=//p'
}

# secrets_check LABEL LOG TOKEN MODE: the assertions (pass/fail from lib.sh).
secrets_check() {
  local p=$1 log=$2 token=$3 mode=$4 place n samples bad by_design
  if ! e2e_section "$log" secrets | grep -q '^token=found'; then
    fail "$p: secrets: the guest read the token from the seed" \
      "$(e2e_section "$log" secrets | grep '^token=' | sed -n 1p)"
    return
  fi
  samples=$(e2e_section "$log" secrets | sed -n 's/^place=cmdline .*samples=\([0-9]*\).*/\1/p')
  check "$p: secrets: /proc/*/cmdline sampled during the run (${samples:-0} samples)" \
    test "${samples:-0}" -ge 10
  for place in $SECRETS_PLACES; do
    check_eq "$p: secrets: no token in $place" 0 "$(secrets_hits "$log" "$place")"
  done
  check_eq "$p: secrets: no token anywhere on the serial console" 0 "$(secrets_console_hits "$log" "$token")"
  # rke1: the agent container's environment (CATTLE_TOKEN) is kept by the container runtime
  # itself, in its own state files: listed apart, with whether an unprivileged user can read
  # them, but not bootstrapd's to change short of not passing the token in the environment.
  local runtime_re='^(/var/lib/docker/containers/[0-9a-f]+/config\.v2\.json|/var/lib/containerd/io\.containerd\.metadata\.v1\.bolt/meta\.db|/run/containerd/io\.containerd\.runtime\.v2\.task/moby/[0-9a-f]+/config\.json)$'
  [ "$mode" = rke1 ] || runtime_re='^$'
  bad=$(secrets_files "$log" | awk -v re="$runtime_re" '$3 !~ re && ($1 != "600" || $2 != "root:root" || $4 != "nobody-readable=no")')
  check_eq "$p: secrets: files holding the token are 0600 root:root, unreadable to others" "" \
    "$(echo "$bad" | paste -sd';' -)"
  by_design=$(secrets_files "$log" | awk -v re="$runtime_re" '$3 !~ re && $1 == "600" && $2 == "root:root" { print $3 }' | paste -sd' ' -)
  echo "        (0600 root files holding the token: ${by_design:-none})"
  if [ "$mode" = rke1 ]; then
    echo "        (the container runtime's copies of the agent's environment: $(secrets_files "$log" \
      | awk -v re="$runtime_re" '$3 ~ re { printf "%s %s %s %s; ", $1, $2, $3, $4 }'))"
  fi
  if [ "$mode" = rke1 ]; then
    check_eq "$p: secrets: no token in the agent container's path/args/cmd/entrypoint/labels" 0 \
      "$(secrets_hits "$log" docker-args)"
    n=$(secrets_hits "$log" docker-env)
    echo "        (agent container environment lines holding the token, by design: ${n:-none})"
  fi
}

# secrets_table LOG TOKEN: one line per place, for the campaign's table.
secrets_table() {
  local log=$1 token=$2 place v
  for place in $SECRETS_PLACES docker-args docker-env; do
    v=$(secrets_hits "$log" "$place")
    printf '  %-22s %s\n' "$place" "${v:--}"
  done
  printf '  %-22s %s\n' "serial-console" "$(secrets_console_hits "$log" "$token")"
  printf '  %-22s %s\n' "files" "$(secrets_files "$log" | grep -c .)"
  secrets_files "$log" | sed 's/^/    file /'
  e2e_section "$log" secrets | grep '^hit=' | sed 's/^/    /' || true
}
