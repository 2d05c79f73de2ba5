#!/bin/bash
# Builds a `docker load`-able archive of a stand-in rancher/rancher-agent:v2.6.14 image without a
# Docker engine: our entrypoint (tests/rancher-server/agent/entrypoint.sh) at
# /usr/bin/entrypoint.sh, the rancher-agent-double as /usr/bin/agent, and what the entrypoint
# calls (bash, busybox applets, tini, curl, jq), plus openssl, getent and printenv, which
# Rancher's own package/run.sh needs when an operator drops one in with --with-run-sh.
#
# Usage:
#   scripts/build-agent-image.sh                      # -> build/agent-image.tar
#   scripts/build-agent-image.sh --out FILE
#   scripts/build-agent-image.sh --rootfs-only DIR [--agent BIN] [--with-run-sh FILE]
#       only lay out the image's root filesystem in DIR (used by the tests, which chroot into it)
#
# --agent BIN uses that agent binary instead of building the static one. --with-run-sh FILE
# also installs FILE (a copy of Rancher's package/run.sh the operator has) as /usr/bin/run.sh;
# the image's entrypoint stays ours. Needs: cargo, apt-get
# (bash-static, busybox-static and tini are fetched with `apt-get download`), curl, jq, openssl
# on the build host (their binaries and shared libraries are copied into the image), tar,
# sha256sum, file.
set -euo pipefail

TAG="rancher/rancher-agent:v2.6.14"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/build/agent-image.tar"
ROOTFS_ONLY=""
AGENT=""
RUN_SH=""

while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --rootfs-only) ROOTFS_ONLY="$2"; shift 2 ;;
        --agent) AGENT="$2"; shift 2 ;;
        --with-run-sh) RUN_SH="$2"; shift 2 ;;
        --tag) TAG="$2"; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "build-agent-image: unknown argument $1" >&2; exit 2 ;;
    esac
done

die() { echo "build-agent-image: $*" >&2; exit 1; }

CACHE="$ROOT/build/agent-image-cache"
mkdir -p "$CACHE/debs"

# --- the agent double ------------------------------------------------------------------------
if [ -z "$AGENT" ]; then
    # No musl target here: a static glibc build (crt-static) is just as self-contained.
    # getrandom's default probes for glibc's getrandom() with dlsym, which a static binary
    # cannot do, and then falls back to /dev/urandom; the syscall backend needs no /dev.
    ( cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
        cargo build --profile image \
        --target x86_64-unknown-linux-gnu -p rancher-test-server --bin rancher-agent-double )
    AGENT="$ROOT/target/x86_64-unknown-linux-gnu/image/rancher-agent-double"
    # Outputs are read whole before grep: `cmd | grep -q` under pipefail fails whenever grep
    # exits at its match before cmd has written everything (cmd dies of SIGPIPE).
    kind=$(file -L "$AGENT")
    grep -Eq 'static(-pie)? linked|statically linked' <<<"$kind" \
        || die "$AGENT is not statically linked: $kind"
    needs=$(ldd "$AGENT" 2>&1 || true)
    if grep -q '=>' <<<"$needs"; then
        die "$AGENT still needs shared libraries: $needs"
    fi
fi
[ -x "$AGENT" ] || die "agent binary $AGENT missing or not executable"

# --- Debian packages with static binaries ----------------------------------------------------
fetch_deb() { # package -> extracted directory
    local pkg=$1 dir="$CACHE/debs/$1"
    if [ ! -d "$dir" ]; then
        local deb
        deb=$(find "$CACHE/debs" -maxdepth 1 -name "${pkg}_*.deb" | sort | head -1)
        if [ -z "$deb" ]; then
            ( cd "$CACHE/debs" && apt-get download "$pkg" >&2 ) || die "apt-get download $pkg failed (run apt-get update?)"
            deb=$(find "$CACHE/debs" -maxdepth 1 -name "${pkg}_*.deb" | sort | head -1)
        fi
        mkdir -p "$dir.tmp" && dpkg-deb -x "$deb" "$dir.tmp" && mv "$dir.tmp" "$dir"
    fi
    echo "$dir"
}
BASH_DEB=$(fetch_deb bash-static)
BUSYBOX_DEB=$(fetch_deb busybox-static)
TINI_DEB=$(fetch_deb tini)

for tool in curl jq openssl getent printenv; do
    command -v "$tool" >/dev/null || die "$tool is needed on the build host (apt-get install curl jq openssl libc-bin)"
done

# --- root filesystem -------------------------------------------------------------------------
if [ -n "$ROOTFS_ONLY" ]; then
    RFS="$ROOTFS_ONLY"
else
    RFS="$CACHE/rootfs"
    rm -rf "$RFS"
fi
mkdir -p "$RFS"/{bin,usr/bin,usr/sbin,sbin,etc,tmp,dev,proc,sys,root,var/run,var/lib/rancher,etc/kubernetes}
chmod 1777 "$RFS/tmp"

install -m 0755 "$BASH_DEB/bin/bash-static" "$RFS/bin/bash"
ln -sf ../../bin/bash "$RFS/usr/bin/bash"
install -m 0755 "$BUSYBOX_DEB/bin/busybox" "$RFS/bin/busybox"
# Every applet as a link, except where a real tool is installed below.
for applet in $("$RFS/bin/busybox" --list); do
    case "$applet" in bash|busybox|curl|jq|openssl|getent|tini|printenv) continue ;; esac
    [ -e "$RFS/bin/$applet" ] || ln -s busybox "$RFS/bin/$applet"
done
install -m 0755 "$TINI_DEB/usr/bin/tini-static" "$RFS/usr/bin/tini"

# Dynamic tools from the build host, with the shared libraries ldd reports.
copy_with_libs() {
    local bin=$1 dest=$2
    install -D -m 0755 "$(readlink -f "$bin")" "$RFS$dest"
    ldd "$bin" | grep -o '/[^ ]*' | while read -r lib; do
        [ -e "$lib" ] || continue
        install -D -m 0755 "$(readlink -f "$lib")" "$RFS$lib"
    done
}
copy_with_libs "$(command -v curl)" /usr/bin/curl
copy_with_libs "$(command -v jq)" /usr/bin/jq
copy_with_libs "$(command -v openssl)" /usr/bin/openssl
copy_with_libs "$(command -v getent)" /usr/bin/getent
# Debian's busybox-static has no printenv applet; Rancher's run.sh logs its environment with it.
copy_with_libs "$(command -v printenv)" /usr/bin/printenv
if [ -f /usr/lib/ssl/openssl.cnf ]; then
    install -D -m 0644 "$(readlink -f /usr/lib/ssl/openssl.cnf)" "$RFS/usr/lib/ssl/openssl.cnf"
fi

install -m 0755 "$ROOT/tests/rancher-server/agent/entrypoint.sh" "$RFS/usr/bin/entrypoint.sh"
if [ -n "$RUN_SH" ]; then
    [ -f "$RUN_SH" ] || die "--with-run-sh $RUN_SH: no such file"
    install -m 0755 "$RUN_SH" "$RFS/usr/bin/run.sh"
fi
# Read whole first (see above): a pipe into grep -q made this take the static branch at
# random, and the test's chrooted agent then missed libgcc_s.so.1.
needs=$(ldd "$AGENT" 2>&1 || true)
if grep -q '=>' <<<"$needs"; then
    copy_with_libs "$AGENT" /usr/bin/agent   # a test build; the image build is static
else
    install -m 0755 "$AGENT" "$RFS/usr/bin/agent"
fi

printf 'root:x:0:0:root:/root:/bin/bash\n' > "$RFS/etc/passwd"
printf 'root:x:0:\n' > "$RFS/etc/group"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' > "$RFS/etc/hosts"
printf 'hosts: files dns\n' > "$RFS/etc/nsswitch.conf"
: > "$RFS/etc/resolv.conf"
printf 'rancher-agent\n' > "$RFS/etc/hostname"

if [ -n "$ROOTFS_ONLY" ]; then
    echo "root filesystem ready in $RFS"
    exit 0
fi

# --- docker-archive ----------------------------------------------------------------------------
WORK="$CACHE/archive"
rm -rf "$WORK" && mkdir -p "$WORK"
# Entry names without a "./" prefix, as `docker save` writes them.
mapfile -t ENTRIES < <(cd "$RFS" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | sort)
( cd "$RFS" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$WORK/layer.tar" -- "${ENTRIES[@]}" )
DIFF_ID=$(sha256sum "$WORK/layer.tar" | cut -d' ' -f1)
LAYER_DIR="$DIFF_ID"
mkdir -p "$WORK/$LAYER_DIR"
mv "$WORK/layer.tar" "$WORK/$LAYER_DIR/layer.tar"
printf '1.0' > "$WORK/$LAYER_DIR/VERSION"

CREATED="1970-01-01T00:00:00Z"
jq -n -c --arg created "$CREATED" --arg diff "sha256:$DIFF_ID" --arg tag "$TAG" '{
  architecture: "amd64",
  os: "linux",
  created: $created,
  config: {
    Env: [
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      ("AGENT_IMAGE=" + $tag),
      "SSL_CERT_DIR=/etc/kubernetes/ssl/certs"
    ],
    Entrypoint: ["entrypoint.sh"],
    WorkingDir: "/var/lib/rancher",
    Labels: {"io.cattle.agent": "true"}
  },
  rootfs: {type: "layers", diff_ids: [$diff]},
  history: [{created: $created, created_by: "scripts/build-agent-image.sh (bootstrapd test double)"}]
}' > "$WORK/config.json"
CONFIG_ID=$(sha256sum "$WORK/config.json" | cut -d' ' -f1)
mv "$WORK/config.json" "$WORK/$CONFIG_ID.json"

# The legacy per-layer json that older `docker load` versions read.
jq -n -c --arg id "$LAYER_DIR" --arg created "$CREATED" \
    '{id: $id, created: $created, os: "linux", architecture: "amd64",
      config: {Entrypoint: ["entrypoint.sh"], WorkingDir: "/var/lib/rancher"}}' > "$WORK/$LAYER_DIR/json"

REPO="${TAG%:*}"
VERSION="${TAG##*:}"
jq -n -c --arg cfg "$CONFIG_ID.json" --arg tag "$TAG" --arg layer "$LAYER_DIR/layer.tar" \
    '[{Config: $cfg, RepoTags: [$tag], Layers: [$layer]}]' > "$WORK/manifest.json"
jq -n -c --arg repo "$REPO" --arg version "$VERSION" --arg id "$LAYER_DIR" \
    '{($repo): {($version): $id}}' > "$WORK/repositories"

mkdir -p "$(dirname "$OUT")"
mapfile -t ENTRIES < <(cd "$WORK" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | sort)
( cd "$WORK" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$OUT.tmp" -- "${ENTRIES[@]}" )
mv "$OUT.tmp" "$OUT"

# Self-check: what `docker load` relies on is present and consistent.
tar -xOf "$OUT" manifest.json | jq -e --arg tag "$TAG" '.[0].RepoTags[0] == $tag' >/dev/null \
    || die "manifest.json check failed"
[ "$(tar -xOf "$OUT" "$CONFIG_ID.json" | sha256sum | cut -d' ' -f1)" = "$CONFIG_ID" ] \
    || die "config digest check failed"
[ "$(tar -xOf "$OUT" "$LAYER_DIR/layer.tar" | sha256sum | cut -d' ' -f1)" = "$DIFF_ID" ] \
    || die "layer diff_id check failed"
LISTING=$(tar -xOf "$OUT" "$LAYER_DIR/layer.tar" | tar -t)
for f in usr/bin/entrypoint.sh usr/bin/agent usr/bin/tini bin/bash; do
    grep -qx "$f" <<<"$LISTING" || die "$f missing from the layer"
done
echo "wrote $OUT ($TAG, config sha256:$CONFIG_ID, layer sha256:$DIFF_ID)"
