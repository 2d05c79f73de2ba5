#!/usr/bin/env bash
# Helpers for the VM tests: the one host set-up (host_setup) that the e2e driver
# (tests/e2e-driver), the campaigns, the boot benchmark and scripts/lab share, and the serial
# log's cleaning for the lab's messages. Plumbing only: every VM test, the campaigns included,
# reads the report and asserts in Rust (tests/e2e-driver).

# e2e_clean LOG: the serial log without carriage returns and terminal escapes (systemd's status
# output can leave an ESC[K glued to the start of the next line the report prints).
e2e_clean() {
  tr -d '\r' <"$1" | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g'
}

# ---- host side, shared by the e2e driver, the campaigns, the benchmark and scripts/lab ----

# The pids of the servers host_setup/host_start_servers started (host_stop stops them).
HOST_PIDS=()

# The host tools the VM tests need (CI starts from a fresh Debian 12), as CHECK:PACKAGE for
# scripts/host-tools.sh, including what scripts/build-agent-image.sh copies into the agent
# image (jq, openssl, file).
# Further arguments of scripts/build-KIND.sh in host_setup_deb_image (host_setup_immutable).
HOST_IMAGE_BUILD_ARGS=()
HOST_VM_TOOLS=(qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils genisoimage:genisoimage
  python3:python3 curl:curl strip:binutils jq:jq openssl:openssl file:file)

# host_install_deps [CHECK:PACKAGE...]: installs HOST_VM_TOOLS and the further tools given and,
# for build-agent-image.sh's `apt-get download`, package lists.
host_install_deps() {
  # shellcheck source=scripts/host-tools.sh
  . "$(dirname "${BASH_SOURCE[0]}")/../../scripts/host-tools.sh"
  host_tools_need e2e "${HOST_VM_TOOLS[@]}" "$@" || return 1
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
  fi
}

# host_qemu_problem: prints why qemu cannot run VMs here, or nothing.
host_qemu_problem() {
  if ! command -v qemu-system-x86_64 >/dev/null; then
    echo "qemu-system-x86_64 is not installed"
  elif ! qemu-system-x86_64 -accel help 2>/dev/null | grep -qx tcg; then
    echo "qemu-system-x86_64 has no TCG accelerator ($(qemu-system-x86_64 --version 2>&1 | head -n 1))"
  fi
}

# host_target_dir: cargo's target directory.
host_target_dir() {
  echo "${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}"
}

# host_build_bootstrapd OUT PROFILE: builds bootstrapd and writes it, stripped, to OUT.
host_build_bootstrapd() {
  local out=$1 profile=$2 dir
  cargo build -q -p bootstrapd --profile "$profile"
  case $profile in dev) dir=debug ;; *) dir=$profile ;; esac
  cp "$(host_target_dir)/$dir/bootstrapd" "$out"
  strip "$out"
}

# host_start_http_server PORT DIR LOG PROBE [ADDR]: serves DIR on ADDR:PORT (default 127.0.0.1,
# which qemu's user network guests reach as 10.0.2.2) in the background (its own session, so it
# outlives the caller if asked to), up once PROBE (a path below DIR) answers; prints the pid.
host_start_http_server() {
  local port=$1 dir=$2 log=$3 probe=$4 addr=${5:-127.0.0.1} pid
  setsid python3 -m http.server "$port" --bind "$addr" --directory "$dir" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 50); do
    curl -fs -o /dev/null "http://$addr:$port/$probe" && break
    sleep 0.2
  done
  # kill -0: a stale server on the port would answer in place of ours.
  if ! curl -fs -o /dev/null "http://$addr:$port/$probe" || ! kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null
    return 1
  fi
  echo "$pid"
}

# host_start_apt_server PORT REPO LOG [ADDR]: serves the image's apt repository (host_start_http_server).
host_start_apt_server() {
  host_start_http_server "$1" "$2" "$3" dists/bookworm/Release "${4:-127.0.0.1}"
}

# host_start_rancher PORT DIR LOG [ADDR [SERVER_ARG...]]: starts the Rancher test server
# (tests/rancher-server) on ADDR:PORT (default 127.0.0.1) with state in DIR and a fresh token in
# DIR/tokens (0600; never on a command line), and any further `serve` flags. Prints "PID TOKEN
# CA_CHECKSUM". A qemu user network guest reaches 127.0.0.1 as https://10.0.2.2:PORT, a SAN of
# the server's certificate; another ADDR (a libvirt gateway) is added as a SAN.
host_start_rancher() {
  local port=$1 dir=$2 log=$3 addr=${4:-127.0.0.1} pid token sum san=()
  shift $(($# < 4 ? $# : 4))
  [ "$addr" = 127.0.0.1 ] || san=(--san "$addr")
  rm -rf "$dir"
  mkdir -p "$dir"
  cargo build -q -p rancher-test-server || return 1
  token=e2e$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  (umask 077 && echo "$token" >"$dir/tokens")
  setsid "$(host_target_dir)/debug/rancher-test-server" serve --listen "$addr:$port" \
    "${san[@]}" --state-dir "$dir" --token-file "$dir/tokens" "$@" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 150); do
    [ -s "$dir/ca.pem" ] && curl -fs --cacert "$dir/ca.pem" "https://$addr:$port/ping" >/dev/null 2>&1 && break
    sleep 0.2
  done
  # The checksum as the node command carries it: sha256 of the /cacerts body (fetched with the
  # CA pinned, at ADDR: this also proves the SAN).
  if ! sum=$(curl -fsS --cacert "$dir/ca.pem" "https://$addr:$port/cacerts" | sha256sum | cut -d' ' -f1) \
    || [ "$sum" = "$(printf '' | sha256sum | cut -d' ' -f1)" ] || ! kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null
    return 1
  fi
  echo "$pid $token $sum"
}

# e2e_records [--summary] FILE: the Rancher test server's node record (FILE, its nodes.json)
# read into the server's own types by the e2e driver: one line per node, "hostname generation
# roles connect_count"; with --summary one line, the number of nodes, then per node
# "generation roles hostname connect_count".
e2e_records() {
  cargo run -q -p e2e-driver -- records "$@"
}

# render_userdata TEMPLATE OUT SERVER TOKEN CA_CHECKSUM [ROLES [MODE]]: fills a
# tests/e2e/userdata template; OUT is 0600 since it holds the token. Bash substitutions only:
# the token never lands on a command line (sed's argv would show it in /proc).
render_userdata() {
  local t
  t=$(<"$1")
  t=${t//@SERVER@/"$3"}
  t=${t//@TOKEN@/"$4"}
  t=${t//@CA_CHECKSUM@/"$5"}
  t=${t//@ROLES@/"${6:-worker}"}
  t=${t//@MODE@/"${7:-system-agent}"}
  rm -f "$2"
  (umask 077 && printf '%s\n' "$t" >"$2")
}

# host_setup WORK APT_PORT RANCHER_PORT [--profile P] [--binary PATH] [--image-dir DIR]
#     [--addr ADDR] [--sysext] [-- SERVE_FLAG...]: the host side of every VM test, in one place: host tools, the qemu check,
# bootstrapd (built with cargo profile P, default dev, or copied from PATH), the rke1 agent image
# archive, the node image (DIR, default WORK/image; its image.env is sourced), the image's apt
# repository on ADDR:APT_PORT and the Rancher test server on ADDR:RANCHER_PORT (state in
# WORK/rancher; the SERVE_FLAGs added to `rancher-test-server serve`), with --sysext also the Docker
# system extension served beside the repository (host_build_sysext). Both servers run in their own sessions: the caller stops them (HOST_PIDS).
# Sets HOST_PIDS, HOST_TOKEN, HOST_CA_CHECKSUM, HOST_SERVER_URL, HOST_RANCHER_DIR,
# HOST_IMAGE_ENV and writes them, all but the token, to WORK/host.env, which the Rust driver
# reads (the token stays in WORK/rancher/tokens, 0600). Logs in WORK/logs. Fails (status 1,
# the reason on stderr) with nothing left running.
host_setup() {
  local work=$1 apt_port=$2 rancher_port=$3 profile=dev binary='' image_dir='' addr=127.0.0.1 sysext=0
  shift 3
  while [ $# -gt 0 ]; do
    case $1 in
      --sysext) sysext=1; shift ;;
      --profile) profile=$2; shift 2 ;;
      --binary) binary=$2; shift 2 ;;
      --image-dir) image_dir=$2; shift 2 ;;
      --addr) addr=$2; shift 2 ;;
      --) shift; break ;;
      *) echo "host_setup: unknown option $1" >&2; return 2 ;;
    esac
  done
  image_dir=${image_dir:-$work/image}
  host_install_deps || return 1
  local problem
  problem=$(host_qemu_problem)
  [ -z "$problem" ] || { echo "qemu cannot run the VM tests: $problem" >&2; return 1; }
  mkdir -p "$work/logs"
  host_build_images "$work" "$image_dir" "$apt_port" "$profile" "$binary" || return 1
  # Only the suites that boot a node with the extension pay for building it.
  rm -rf "$work/sysext"
  if [ "$sysext" = 1 ]; then
    host_build_sysext "$work" || return 1
  fi
  host_start_servers "$work" "$apt_port" "$rancher_port" "$addr" "$@" || return 1
  host_write_env "$work"
}

# host_setup_e2e WORK APT_PORT RANCHER_PORT [host_setup options] [-- SERVE_FLAG...]: the main
# e2e suite's host side: host_setup, then host_start_egress for the proxy-only nodes, whose
# lines go to WORK/host.env too.
host_setup_e2e() {
  local work=$1 apt_port=$2 rancher_port=$3
  host_setup "$work" "$apt_port" "$rancher_port" --sysext "${@:4}" || return 1
  if ! host_start_egress "$work" "$apt_port" "$rancher_port" "${E2E_PROXY_PORT:-13128}" "${E2E_REGISTRY_PORT:-15443}"; then
    host_stop
    return 1
  fi
  host_write_env "$work"
}

# host_start_egress WORK APT_PORT RANCHER_PORT PROXY_PORT REGISTRY_PORT: the test proxy
# (tests/edge-servers test-proxy) on 127.0.0.1:PROXY_PORT, allowed to reach only the apt
# repository, the Rancher test server and the registry (the guest names the host 10.0.2.2, which
# it maps to 127.0.0.1), with a password; the test registry (test-registry) on
# 127.0.0.1:REGISTRY_PORT, HTTPS from its own CA (WORK/egress/ca.pem), with a password, serving
# the rancher-agent image under its own tag (v2.6.14-egress). The passwords are fresh, in 0600 files, never
# on a command line. Appends to HOST_PIDS; sets HOST_EGRESS (host.env lines).
host_start_egress() {
  local work=$1 apt_port=$2 rancher_port=$3 proxy_port=$4 registry_port=$5 dir=$1/egress bin pid
  echo "==> egress: test proxy on 127.0.0.1:$proxy_port, test registry on 127.0.0.1:$registry_port"
  cargo build -q -p edge-servers || return 1
  bin=$(host_target_dir)/debug
  rm -rf "$dir"
  mkdir -p "$dir"
  (umask 077
    echo "e2e-proxy:$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$dir/proxy-auth"
    echo "e2e-registry:$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$dir/registry-auth")
  "$bin/test-registry" gen-ca --dir "$dir" --san 10.0.2.2 --san 127.0.0.1 >"$work/logs/registry-ca.log" 2>&1 || return 1
  # Another tag than the archive baked into the node image: another image config, so Docker
  # must fetch the layers through the proxy (a config it already holds ends the pull early).
  scripts/build-agent-image.sh --out "$dir/agent-image-egress.tar" --tag rancher/rancher-agent:v2.6.14-egress \
    >"$work/logs/agent-image-egress.log" 2>&1 \
    || { host_build_failed scripts/build-agent-image.sh "$work/logs/agent-image-egress.log" $?; return 1; }
  setsid "$bin/test-registry" serve --listen "127.0.0.1:$registry_port" \
    --image "rancher/rancher-agent:v2.6.14-egress=$dir/agent-image-egress.tar" --htpasswd-file "$dir/registry-auth" \
    --tls-cert "$dir/server.pem" --tls-key "$dir/server-key.pem" --log "$work/logs/registry.jsonl" \
    >"$work/logs/registry.log" 2>&1 &
  pid=$!
  HOST_PIDS+=("$pid")
  setsid "$bin/test-proxy" --listen "127.0.0.1:$proxy_port" --map 10.0.2.2=127.0.0.1 \
    --allow "127.0.0.1:$apt_port" --allow "127.0.0.1:$rancher_port" --allow "127.0.0.1:$registry_port" \
    --auth-file "$dir/proxy-auth" --log "$work/logs/proxy.jsonl" >"$work/logs/proxy.log" 2>&1 &
  pid=$!
  HOST_PIDS+=("$pid")
  for _ in $(seq 100); do
    curl -fs --cacert "$dir/ca.pem" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$registry_port/v2/" 2>/dev/null | grep -q 401 \
      && curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$proxy_port" "http://10.0.2.2:$apt_port/" 2>/dev/null | grep -q 407 \
      && break
    sleep 0.2
  done
  curl -fs --cacert "$dir/ca.pem" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$registry_port/v2/" 2>/dev/null | grep -q 401 \
    || { echo "the test registry did not come up (see $work/logs/registry.log)" >&2; return 1; }
  curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$proxy_port" "http://10.0.2.2:$apt_port/" 2>/dev/null | grep -q 407 \
    || { echo "the test proxy did not come up (see $work/logs/proxy.log)" >&2; return 1; }
  HOST_EGRESS=$(printf '%s\n' \
    "HOST_PROXY_RELAY=$bin/stdio-relay 127.0.0.1:$proxy_port" \
    "HOST_PROXY_AUTH=$dir/proxy-auth" "HOST_PROXY_LOG=$work/logs/proxy.jsonl" \
    "HOST_REGISTRY=10.0.2.2:$registry_port" "HOST_REGISTRY_AUTH=$dir/registry-auth" \
    "HOST_REGISTRY_CA=$dir/ca.pem" "HOST_REGISTRY_LOG=$work/logs/registry.jsonl")
}

# host_build_failed SCRIPT LOG STATUS: a build step's failure, for a CI log that is all anyone
# sees: the log's last lines, or that it is empty (a full disk leaves an empty log: nothing
# could be written, not even the error), the exit status (over 128: killed by a signal, such
# as the OOM killer's 9), and the free space where the work and the image cache are.
host_build_failed() {
  local script=$1 log=$2 status=$3
  if [ -s "$log" ]; then
    tail -n 20 "$log" >&2
  else
    echo "$log is empty" >&2
  fi
  echo "$script failed, exit status $status (see $log)" >&2
  df -h "$(dirname "$log")" "${BOOTSTRAPD_CACHE:-/var/cache/bootstrapd}" 2>/dev/null | sed 's/^/    /' >&2 || true
}

# host_write_env WORK: what the set-up started, all but the token, to WORK/host.env for the Rust
# driver (tests/e2e-driver/src/host.rs).
host_write_env() {
  {
    echo "HOST_PIDS='${HOST_PIDS[*]}'"
    echo "HOST_CA_CHECKSUM=$HOST_CA_CHECKSUM"
    echo "HOST_SERVER_URL=$HOST_SERVER_URL"
    echo "HOST_RANCHER_DIR=$HOST_RANCHER_DIR"
    echo "HOST_IMAGE_ENV=$HOST_IMAGE_ENV"
    echo "HOST_BUILD_SECONDS=$HOST_BUILD_SECONDS"
    echo "HOST_IMAGE_SECONDS=$HOST_IMAGE_SECONDS"
    [ -z "${HOST_EGRESS:-}" ] || echo "$HOST_EGRESS"
    [ -z "${HOST_SYSEXT:-}" ] || echo "$HOST_SYSEXT"
  } >"$1/host.env"
}

# host_build_images WORK IMAGE_DIR APT_PORT PROFILE BINARY: host_setup's build half; sets
# HOST_IMAGE_ENV, HOST_BUILD_SECONDS, HOST_IMAGE_SECONDS and sources the image.env.
host_build_images() {
  local work=$1 image_dir=$2 apt_port=$3 profile=$4 binary=$5 t
  t=$(date +%s)
  if [ -n "$binary" ]; then
    install -m 0755 "$binary" "$work/bootstrapd"
  else
    echo "==> building bootstrapd (profile $profile)"
    host_build_bootstrapd "$work/bootstrapd" "$profile" || return 1
  fi
  HOST_BUILD_SECONDS=$(( $(date +%s) - t ))
  echo "    bootstrapd: $(du -h "$work/bootstrapd" | cut -f1) stripped"
  echo "==> rke1 agent image archive, node image"
  t=$(date +%s)
  scripts/build-agent-image.sh --out "$work/agent-image.tar" >"$work/logs/agent-image.log" 2>&1 \
    || { host_build_failed scripts/build-agent-image.sh "$work/logs/agent-image.log" $?; return 1; }
  scripts/build-image.sh --binary "$work/bootstrapd" --out "$image_dir" \
    --apt-url "http://10.0.2.2:$apt_port/" --image-archive "$work/agent-image.tar" \
    >"$work/logs/image.log" 2>&1 \
    || { host_build_failed scripts/build-image.sh "$work/logs/image.log" $?; return 1; }
  HOST_IMAGE_SECONDS=$(( $(date +%s) - t ))
  HOST_IMAGE_ENV=$image_dir/image.env
  # shellcheck source=/dev/null
  . "$HOST_IMAGE_ENV"
}

# host_build_sysext WORK: the Docker system extension (scripts/build-sysext.sh) from the same
# .debs as the apt repository the nodes install from (APT_REPO and BASE_HASH of the sourced
# image env), into WORK/sysext, which host_start_servers serves beside the repository; sets
# HOST_SYSEXT (host.env lines: the image's URL path and sha256).
host_build_sysext() {
  local work=$1 rootfs
  rootfs=${BOOTSTRAPD_CACHE:-/var/cache/bootstrapd}/debian12-base-$BASE_HASH/rootfs
  echo "==> Docker system extension"
  scripts/build-sysext.sh --apt-repo "$APT_REPO" --rootfs "$rootfs" --out "$work/sysext" \
    >"$work/logs/build-sysext.log" 2>&1 \
    || { host_build_failed scripts/build-sysext.sh "$work/logs/build-sysext.log" $?; return 1; }
  host_sysext_served "$work"
}

# host_sysext_served WORK: HOST_SYSEXT from WORK/sysext/sysext.env (the image's URL path below
# the apt server and its sha256, as host.env lines).
host_sysext_served() {
  # shellcheck source=/dev/null # written by scripts/build-sysext.sh
  HOST_SYSEXT=$(. "$1/sysext/sysext.env" && printf 'HOST_SYSEXT_PATH=/sysext/%s.raw\nHOST_SYSEXT_SHA256=%s' "$SYSEXT_NAME" "$SYSEXT_SHA256")
}

# host_start_servers WORK APT_PORT RANCHER_PORT ADDR [SERVE_FLAG...]: host_setup's server half (APT_REPO from
# the image.env); appends to HOST_PIDS, sets HOST_TOKEN, HOST_CA_CHECKSUM, HOST_SERVER_URL,
# HOST_RANCHER_DIR.
host_start_servers() {
  local work=$1 apt_port=$2 rancher_port=$3 addr=$4 pid started guest_addr=10.0.2.2
  shift 4
  echo "==> host side: apt repository on $addr:$apt_port, Rancher test server on $addr:$rancher_port"
  # The repository (a cache shared by every build, never written here) and the system
  # extension, when one was built, under one address.
  rm -rf "$work/served"
  mkdir -p "$work/served"
  ln -s "$APT_REPO/dists" "$APT_REPO/pool" "$work/served/"
  [ ! -d "$work/sysext" ] || ln -s "$work/sysext" "$work/served/sysext"
  pid=$(host_start_apt_server "$apt_port" "$work/served" "$work/logs/apt-http.log" "$addr") \
    || { echo "the apt repository server did not come up (see $work/logs/apt-http.log)" >&2; return 1; }
  HOST_PIDS+=("$pid")
  HOST_RANCHER_DIR=$work/rancher
  if ! started=$(host_start_rancher "$rancher_port" "$HOST_RANCHER_DIR" "$work/logs/rancher.log" "$addr" "$@"); then
    kill "${HOST_PIDS[@]}" 2>/dev/null
    echo "the Rancher test server did not start (see $work/logs/rancher.log)" >&2
    return 1
  fi
  # shellcheck disable=SC2034 # HOST_TOKEN is for the caller (the campaigns' userdata)
  read -r pid HOST_TOKEN HOST_CA_CHECKSUM <<<"$started"
  HOST_PIDS+=("$pid")
  [ "$addr" = 127.0.0.1 ] || guest_addr=$addr
  HOST_SERVER_URL=https://$guest_addr:$rancher_port
}

# host_setup_deb_image WORK KIND APT_PORT RANCHER_PORT [CHECK:PACKAGE...]: the host side of the tests that boot
# bootstrapd installed from its .deb (KIND qcow2, pxe or immutable: `e2e-driver qcow2`, `e2e-driver pxe`,
# `e2e-driver immutable`): the host tools (and the further ones given), the packages
# (scripts/build-packages.sh), scripts/build-KIND.sh's image from the .deb (with
# HOST_IMAGE_BUILD_ARGS; kept with E2E_REUSE_IMAGE=1 when WORK/KIND/KIND.env exists), the Docker
# system extension when HOST_WANT_SYSEXT=1, then the servers (host_start_servers) with the
# cached base's apt repository; WORK/host.env (host_write_env, HOST_IMAGE_ENV is
# WORK/KIND/KIND.env). Logs in WORK/logs.
host_setup_deb_image() {
  local work=$1 kind=$2 apt_port=$3 rancher_port=$4 env t deb
  env=$work/$kind/$kind.env
  shift 4
  mkdir -p "$work/logs"
  host_install_deps "$@" || return 1
  HOST_BUILD_SECONDS=0 HOST_IMAGE_SECONDS=0
  if [ "${E2E_REUSE_IMAGE:-0}" = 1 ] && [ -f "$env" ]; then
    echo "==> reusing $env"
  else
    echo "==> packages"
    t=$(date +%s)
    scripts/build-packages.sh --out "$work/pkg" >"$work/logs/build-packages.log" 2>&1 \
      || { host_build_failed scripts/build-packages.sh "$work/logs/build-packages.log" $?; return 1; }
    HOST_BUILD_SECONDS=$(( $(date +%s) - t ))
    echo "==> $kind image"
    t=$(date +%s)
    # shellcheck source=/dev/null # written by scripts/build-packages.sh
    deb=$(. "$work/pkg/packages.env" && echo "$DEB")
    "scripts/build-$kind.sh" --deb "$deb" --out "$work/$kind" --apt-url "http://10.0.2.2:$apt_port/" \
      "${HOST_IMAGE_BUILD_ARGS[@]}" >"$work/logs/build-$kind.log" 2>&1 \
      || { host_build_failed "scripts/build-$kind.sh" "$work/logs/build-$kind.log" $?; return 1; }
    HOST_IMAGE_SECONDS=$(( $(date +%s) - t ))
  fi
  HOST_IMAGE_ENV=$env
  # shellcheck source=/dev/null
  . "$env"
  APT_REPO=${BOOTSTRAPD_CACHE:-/var/cache/bootstrapd}/debian12-base-$BASE_HASH/aptrepo
  [ -d "$APT_REPO" ] || { echo "no local apt repository at $APT_REPO" >&2; return 1; }
  if [ "${HOST_WANT_SYSEXT:-0}" = 1 ]; then
    # Built from the repository the servers serve, so after the image env names it.
    if [ "${E2E_REUSE_IMAGE:-0}" = 1 ] && [ -f "$work/sysext/sysext.env" ]; then
      host_sysext_served "$work"
    else
      host_build_sysext "$work" || return 1
    fi
  fi
  host_start_servers "$work" "$apt_port" "$rancher_port" 127.0.0.1 || return 1
  host_write_env "$work"
}

# host_setup_immutable WORK APT_PORT RANCHER_PORT [CHECK:PACKAGE...]: host_setup_deb_image for
# the immutable image (`e2e-driver immutable`), with the rke1 agent image archive in the image
# (build-immutable.sh --image-archive: bootstrapd's offline bundle on the root partition) and
# the Docker system extension served beside the repository (host_build_sysext): an rke1 node
# cannot install Docker into a read-only /usr.
host_setup_immutable() {
  local work=$1
  shift
  mkdir -p "$work/logs"
  host_install_deps "${@:3}" || return 1
  if [ "${E2E_REUSE_IMAGE:-0}" != 1 ] || [ ! -f "$work/agent-image.tar" ]; then
    echo "==> rke1 agent image archive"
    scripts/build-agent-image.sh --out "$work/agent-image.tar" >"$work/logs/agent-image.log" 2>&1 \
      || { host_build_failed scripts/build-agent-image.sh "$work/logs/agent-image.log" $?; return 1; }
  fi
  HOST_IMAGE_BUILD_ARGS=(--image-archive "$work/agent-image.tar")
  HOST_WANT_SYSEXT=1
  host_setup_deb_image "$work" immutable "$@"
}

# host_setup_pxe WORK APT_PORT RANCHER_PORT HTTP_PORT: host_setup_deb_image for the PXE bundle,
# plus the boot file server on 127.0.0.1:HTTP_PORT (WORK/www: the kernel, the initrd, the
# squashfs; the driver adds the userdata; its request log WORK/logs/boot-http.log).
host_setup_pxe() {
  local work=$1 www=$1/www pid
  # Debian's iPXE virtio ROM, which the driver gives the diskless VM's NIC.
  host_setup_deb_image "$work" pxe "$2" "$3" /usr/lib/ipxe/qemu/pxe-virtio.rom:ipxe-qemu || return 1
  rm -rf "$www"
  mkdir -p "$www"
  ln -s "$KERNEL" "$www/vmlinuz"
  ln -s "$INITRD" "$www/initrd.img"
  ln -s "$SQUASHFS" "$www/filesystem.squashfs"
  if ! pid=$(host_start_http_server "$4" "$www" "$work/logs/boot-http.log" initrd.img); then
    host_stop
    echo "the boot file server did not come up on 127.0.0.1:$4 (see $work/logs/boot-http.log)" >&2
    return 1
  fi
  HOST_PIDS+=("$pid")
  host_write_env "$work"
}

# host_stop: stops what host_setup started (for an EXIT trap).
host_stop() {
  local p
  for p in "${HOST_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}
