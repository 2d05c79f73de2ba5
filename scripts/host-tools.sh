# shellcheck shell=bash
# The one place that installs host tools for the project's scripts (sourced, not run).
#
#   host_tools_need WHO CHECK:PACKAGE ...
#
# CHECK is a command name (looked up on PATH) or an absolute path or glob (a file the package
# ships: a ROM, a header). Only what is missing is installed, all of it in one apt transaction,
# and afterwards every CHECK is looked at again: a fresh machine may hold newer builds than the
# archive's (it came with a qemu-utils backport that apt removed when qemu-system-x86 7.2 came
# in, and then `qemu-img` was gone), so a package name that dpkg calls installed proves nothing.
# A package the transaction would remove although one of our CHECKs needs it is installed again
# in that same transaction at the archive's version. Fails, naming each CHECK still missing.
#
# Needs root only when something is missing. apt's own sources are used as they are.

host_tool_present() {
  local path
  case $1 in
    /*) compgen -G "$1" >/dev/null ;;
    # Executable, not just found: bash's lookup falls back to a file it cannot run.
    *) path=$(type -P "$1") && [ -x "$path" ] ;;
  esac
}

# host_tools_missing CHECK:PACKAGE ...: prints "CHECK:PACKAGE" for each CHECK not present.
host_tools_missing() {
  local spec
  for spec in "$@"; do
    host_tool_present "${spec%%:*}" || echo "$spec"
  done
}

# host_tools_archive_version PACKAGE: the newest version apt's sources offer.
host_tools_archive_version() {
  apt-cache madison "$1" 2>/dev/null | awk -F'|' 'NR == 1 { gsub(/ /, "", $2); print $2 }'
}

# host_tools_kept SPECS... -- PACKAGES...: "PKG=VERSION" for each package that installing
# PACKAGES would remove while a CHECK of SPECS is provided by it.
host_tools_kept() {
  local wanted=() pkgs=() spec removed version
  while [ $# -gt 0 ] && [ "$1" != -- ]; do wanted+=("$1"); shift; done
  shift
  pkgs=("$@")
  removed=$(apt-get -s install --no-install-recommends "${pkgs[@]}" 2>/dev/null \
    | awk '/^Remv / { print $2 }')
  [ -n "$removed" ] || return 0
  echo "host-tools: apt would remove: $(echo "$removed" | tr '\n' ' ')" >&2
  for spec in "${wanted[@]}"; do
    if grep -qx -- "${spec#*:}" <<<"$removed"; then
      version=$(host_tools_archive_version "${spec#*:}")
      [ -n "$version" ] && echo "${spec#*:}=$version"
    fi
  done | sort -u
}

host_tools_need() {
  local who=$1 missing=() pkgs=() kept=() still=() spec
  shift
  mapfile -t missing < <(host_tools_missing "$@")
  [ ${#missing[@]} -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ]; then
    echo "$who: missing ${missing[*]%%:*} (run as root, or install: ${missing[*]#*:})" >&2
    return 1
  fi
  mapfile -t pkgs < <(printf '%s\n' "${missing[@]#*:}" | sort -u)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  mapfile -t kept < <(host_tools_kept "$@" -- "${pkgs[@]}")
  echo "$who: apt-get install ${pkgs[*]} ${kept[*]}"
  if ! apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "${pkgs[@]}" "${kept[@]}" >/tmp/host-tools-apt.log 2>&1; then
    tail -n 20 /tmp/host-tools-apt.log >&2
    echo "$who: apt-get install failed (log above)" >&2
    return 1
  fi
  mapfile -t still < <(host_tools_missing "$@")
  if [ ${#still[@]} -gt 0 ]; then
    for spec in "${still[@]}"; do
      echo "$who: still missing after the install: ${spec%%:*} (package ${spec#*:})" >&2
    done
    return 1
  fi
}

# host_debian_mirror: the Debian archive this host's apt uses (DEBIAN_MIRROR wins), read from
# its deb822 .sources files or sources.list; the images are built from the same mirror, so
# they need no network access the host lacks. Fails when there is none.
host_debian_mirror() {
  local uri
  if [ -n "${DEBIAN_MIRROR:-}" ]; then
    echo "$DEBIAN_MIRROR"
    return 0
  fi
  uri=$(host_apt_uris | grep -v -- '-security' | grep -m 1 -E '/debian/?$' || true)
  if [ -z "$uri" ]; then
    echo "no Debian archive (a URI ending in /debian) in this host's apt sources; set DEBIAN_MIRROR" >&2
    return 1
  fi
  echo "${uri%/}"
}

# host_apt_uris: every archive URI of the host's apt sources, one a line, in file order.
host_apt_uris() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed -n 's/^URIs:[[:space:]]*//p' "$f" | tr ' ' '\n'
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]\+\).*/\2/p' "$f"
  done
  return 0
}
