#!/bin/bash
# Entrypoint of bootstrapd's stand-in rancher/rancher-agent image (node mode only).
#
# Written for this project; it implements the documented command-line interface of the
# rancher-agent image (the options Rancher prints in a custom cluster's node command) and hands
# the agent the CATTLE_* environment it reads. It is not Rancher's package/run.sh.
#
#   entrypoint.sh --server URL [--token T] [--ca-checksum HEX]
#                 [--etcd] [--controlplane] [--worker] [--all-roles]
#                 [--node-name NAME] [--address A] [--internal-address A]
#                 [--label k=v]... [--taints k=v:Effect]...
#
# Every option may instead come from the environment (CATTLE_SERVER, CATTLE_TOKEN,
# CATTLE_CA_CHECKSUM, CATTLE_ROLE, CATTLE_NODE_NAME, CATTLE_ADDRESS, CATTLE_INTERNAL_ADDRESS,
# CATTLE_NODE_LABEL, CATTLE_NODE_TAINTS); an option on the command line wins. bootstrapd gives
# the token only as CATTLE_TOKEN, so that it never shows in any process's argv.
#
# An address is an IPv4/IPv6 literal, a network interface name (its first address is used), or
# empty (the source address of the default route). Rancher's cloud keywords (awslocal, ...) are
# not implemented by this stand-in and are refused.
set -euo pipefail

CA_DIR=/etc/kubernetes/ssl/certs
CA_FILE=$CA_DIR/serverca
# How long to keep trying to reach the server before giving up; the real agent retries forever,
# a test double that hangs forever only hides failures.
WAIT_SECONDS=${ENTRYPOINT_WAIT_SECONDS:-300}

say() { printf 'entrypoint: %s\n' "$*" >&2; }
fail() {
    say "error: $*"
    exit 1
}

need_value() { # option value
    if [ $# -lt 2 ] || [ -z "$2" ]; then
        fail "option $1 needs a value"
    fi
}

# Comma-joined lists are what the agent splits (empty items are ignored there).
append() { # current item -> current,item
    if [ -z "$1" ]; then printf '%s' "$2"; else printf '%s,%s' "$1" "$2"; fi
}

server=${CATTLE_SERVER:-}
token=${CATTLE_TOKEN:-}
checksum=${CATTLE_CA_CHECKSUM:-}
node_name=${CATTLE_NODE_NAME:-}
address=${CATTLE_ADDRESS:-}
internal_address=${CATTLE_INTERNAL_ADDRESS:-}
roles_from_args=""
labels_from_args=""
taints_from_args=""
roles_given=false
labels_given=false
taints_given=false

while [ $# -gt 0 ]; do
    opt=$1
    case "$opt" in
        --server) need_value "$@"; server=$2; shift 2 ;;
        --token) need_value "$@"; token=$2; shift 2 ;;
        --ca-checksum) need_value "$@"; checksum=$2; shift 2 ;;
        --node-name) need_value "$@"; node_name=$2; shift 2 ;;
        --address) need_value "$@"; address=$2; shift 2 ;;
        --internal-address) need_value "$@"; internal_address=$2; shift 2 ;;
        --label) need_value "$@"; labels_from_args=$(append "$labels_from_args" "$2"); labels_given=true; shift 2 ;;
        --taints) need_value "$@"; taints_from_args=$(append "$taints_from_args" "$2"); taints_given=true; shift 2 ;;
        --etcd) roles_from_args=$(append "$roles_from_args" etcd); roles_given=true; shift ;;
        --controlplane) roles_from_args=$(append "$roles_from_args" controlplane); roles_given=true; shift ;;
        --worker) roles_from_args=$(append "$roles_from_args" worker); roles_given=true; shift ;;
        --all-roles) roles_from_args=etcd,controlplane,worker; roles_given=true; shift ;;
        --*=*) fail "write options as two words (--option value), not $opt" ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) fail "unknown argument: $opt" ;;
    esac
done

roles=${CATTLE_ROLE:-}
labels=${CATTLE_NODE_LABEL:-}
taints=${CATTLE_NODE_TAINTS:-}
$roles_given && roles=$roles_from_args
$labels_given && labels=$labels_from_args
$taints_given && taints=$taints_from_args

[ -n "$server" ] || fail "no server: pass --server URL or set CATTLE_SERVER"
server=${server%/}
case "$server" in
    https://*) ;;
    *) fail "the server must be an https:// URL, got $server" ;;
esac
[ -n "$token" ] || fail "no token: set CATTLE_TOKEN (or pass --token)"
[ -n "$roles" ] || fail "no role: pass --etcd, --controlplane, --worker or --all-roles"
case "$token" in
    *[[:space:]]*) fail "the token contains white space" ;;
esac

# host:port of the server, as docker names its per-registry CA directories.
authority=${server#https://}
authority=${authority%%/*}

# --- addresses ---------------------------------------------------------------------------------
is_ip() {
    case "$1" in
        *:*:*) return 0 ;; # IPv6
        *[!0-9.]*) return 1 ;;
        *.*.*.*) return 0 ;;
        *) return 1 ;;
    esac
}

default_route_source() {
    ip -o route get 8.8.8.8 2>/dev/null | sed -n 's/.* src \([^ ]*\).*/\1/p' | head -n1
}

interface_address() { # interface
    ip -o addr show dev "$1" 2>/dev/null | sed -n 's/.* inet6\{0,1\} \([^/ ]*\).*/\1/p' | head -n1
}

resolve_address() { # what value -> address on stdout
    local what=$1 value=$2 found
    if [ -z "$value" ]; then
        found=$(default_route_source)
        [ -n "$found" ] || fail "no $what given and no default route to take one from"
    elif is_ip "$value"; then
        found=$value
    elif ip link show dev "$value" >/dev/null 2>&1; then
        found=$(interface_address "$value")
        [ -n "$found" ] || fail "$what: interface $value has no address"
    else
        case "$value" in
            awslocal|awspublic|doprivate|dopublic|azprivate|azpublic|gceinternal|gceexternal|packetlocal|packetpublic|ipify)
                fail "$what: the cloud keyword $value is not supported by this stand-in image" ;;
        esac
        fail "$what: $value is neither an IP address nor a network interface"
    fi
    printf '%s' "$found"
}

address=$(resolve_address address "$address")
if [ -n "$internal_address" ]; then
    internal_address=$(resolve_address "internal address" "$internal_address")
fi
if [ -z "$node_name" ]; then
    node_name=$(hostname -s 2>/dev/null || cat /etc/hostname)
fi
[ -n "$node_name" ] || fail "no node name: pass --node-name"

# --- CA checksum ---------------------------------------------------------------------------------
# The CA is fetched without verification: the checksum the operator copied from Rancher is the
# trust anchor. Only after it matches does the agent, holding the token, talk to the server.
deadline=$((SECONDS + WAIT_SECONDS))
retry_or_fail() { # message
    [ "$SECONDS" -lt "$deadline" ] || fail "$1 (gave up after ${WAIT_SECONDS}s)"
    say "$1; retrying in 5s"
    sleep 5
}

fetch_ca() { # -> the cacerts setting, with exactly one trailing newline, on stdout
    local body value
    body=$(curl --silent --show-error --fail --insecure --max-time 30 "$server/v3/settings/cacerts") || return 1
    # $(...) drops every trailing newline; the checksum covers exactly one.
    value=$(jq -r '.value // empty' <<<"$body") || return 1
    [ -n "$value" ] || return 2
    printf '%s\n' "$value"
}

if [ -n "$checksum" ]; then
    checksum=$(tr 'A-F' 'a-f' <<<"$checksum")
    while :; do
        rc=0
        ca=$(fetch_ca) || rc=$?
        if [ "$rc" -eq 2 ]; then
            fail "a CA checksum was given but $server/v3/settings/cacerts has no CA certificate"
        elif [ "$rc" -eq 0 ]; then
            break
        fi
        retry_or_fail "could not fetch the CA from $server/v3/settings/cacerts"
    done
    actual=$(printf '%s\n' "$ca" | sha256sum | cut -d' ' -f1)
    if [ "$actual" != "$checksum" ]; then
        fail "CA checksum mismatch: $server serves a CA with sha256 $actual, expected $checksum; not sending the token"
    fi
    mkdir -p "$CA_DIR" "/etc/docker/certs.d/$authority"
    printf '%s\n' "$ca" >"$CA_FILE.tmp"
    chmod 0644 "$CA_FILE.tmp"
    mv -f "$CA_FILE.tmp" "$CA_FILE"
    # Image pulls from a registry on the same host:port trust the same CA.
    cp -f "$CA_FILE" "/etc/docker/certs.d/$authority/ca.crt"
    say "CA verified (sha256 $actual) and pinned in $CA_FILE"
    verify=(--cacert "$CA_FILE")
else
    say "no CA checksum given: the server certificate must be trusted by the system store"
    verify=()
fi

# The server must answer with the pinned CA before the agent starts.
until [ "$(curl --silent --fail --max-time 30 "${verify[@]}" "$server/ping" 2>/dev/null || true)" = pong ]; do
    retry_or_fail "$server/ping does not answer pong with a verified certificate"
done

# --- hand over to the agent ----------------------------------------------------------------------
export CATTLE_SERVER=$server
export CATTLE_TOKEN=$token
export CATTLE_CA_CHECKSUM=$checksum
export CATTLE_NODE_NAME=$node_name
export CATTLE_ADDRESS=$address
export CATTLE_INTERNAL_ADDRESS=$internal_address
export CATTLE_ROLE=$roles
export CATTLE_NODE_LABEL=$labels
export CATTLE_NODE_TAINTS=$taints
unset token

say "server=$CATTLE_SERVER token=<redacted> node-name=$CATTLE_NODE_NAME roles=$CATTLE_ROLE"
say "address=$CATTLE_ADDRESS internal-address=${CATTLE_INTERNAL_ADDRESS:-<none>} labels=${CATTLE_NODE_LABEL:-<none>} taints=${CATTLE_NODE_TAINTS:-<none>}"

if command -v tini >/dev/null 2>&1; then
    exec tini -- agent
fi
exec agent
