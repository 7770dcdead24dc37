# shellcheck shell=bash
# Shared helpers for Spool's ops scripts. Source it; do not run it.
#
#   here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
#   . "$here/lib.sh"

# Guard against double sourcing (setup.sh may be run from test.sh/demo.sh).
[[ -n ${SPOOL_LIB_SOURCED:-} ]] && return 0
SPOOL_LIB_SOURCED=1

# Repository root: two levels above this file (ops/scripts/lib.sh).
SPOOL_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)"
# Per-user state (venv, ffmpeg symlink, env file). Lives outside the repo.
SPOOL_HOME="${SPOOL_HOME:-${HOME:?HOME is not set}/.spool}"
SPOOL_ENV_FILE="$SPOOL_HOME/env"
SPOOL_DEFAULT_REDIS_URL="redis://127.0.0.1:6379/"
export SPOOL_ROOT SPOOL_HOME SPOOL_ENV_FILE SPOOL_DEFAULT_REDIS_URL

# ---------------------------------------------------------------- logging

log()  { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die()  { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- privileges

# Run a command as root: directly when we are root, else through sudo.
as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*' (not root and sudo is not installed)"
    fi
}

# ---------------------------------------------------------------- apt packages

# True if the Debian package is installed (not merely known / config-files).
pkg_installed() {
    dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

# need_pkg PKG...: install those of PKG that are missing. `apt-get update`
# runs at most once per shell, and only when something must be installed.
SPOOL_APT_UPDATED=""
need_pkg() {
    local pkg missing=()
    for pkg in "$@"; do
        pkg_installed "$pkg" || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0

    log "installing missing packages: ${missing[*]}"
    # sudo drops most of the environment, so pass the frontend through env(1).
    if [[ -z $SPOOL_APT_UPDATED ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
            || die "apt-get update failed"
        SPOOL_APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        || die "apt-get install failed for: ${missing[*]}"
}

# ---------------------------------------------------------------- toolchain

# Make sure cargo is reachable; rustup installs it in ~/.cargo/bin, which
# non-login shells (CI, cron, sudo) often do not have on PATH.
ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
        PATH="$HOME/.cargo/bin:$PATH"
        export PATH
    fi
    command -v cargo >/dev/null 2>&1 \
        || die "cargo not found on PATH or in $HOME/.cargo/bin; install a Rust toolchain (rustup) first"
}

# Print "--locked" when the workspace has a Cargo.lock, nothing otherwise
# (cargo refuses --locked without a lock file).
cargo_locked_flag() {
    [[ -f $SPOOL_ROOT/Cargo.lock ]] && printf '%s\n' --locked
    return 0
}

# ---------------------------------------------------------------- env file

# Load the variables setup.sh recorded (e.g. SPOOL_FFMPEG), if any.
load_spool_env() {
    # shellcheck source=/dev/null
    [[ -f $SPOOL_ENV_FILE ]] && . "$SPOOL_ENV_FILE"
    return 0
}

# ---------------------------------------------------------------- waiting

# wait_for TIMEOUT_SECONDS CMD [ARG...]: run CMD every 0.1 s until it succeeds
# or TIMEOUT_SECONDS (whole seconds) have passed; one last try at the end.
# Returns CMD's success (0) or 1 on timeout. CMD's output is discarded.
wait_for() {
    local timeout=$1
    shift
    local deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    "$@" >/dev/null 2>&1
}

# ---------------------------------------------------------------- redis

# redis_host_port URL: print "HOST PORT" for a redis:// or rediss:// URL,
# defaulting to 127.0.0.1 and 6379. Handles user:pass@ and [ipv6] hosts.
redis_host_port() {
    local url=${1:-$SPOOL_DEFAULT_REDIS_URL} rest host port=""
    case $url in
        unix:* | redis+unix:*) die "unix-socket Redis URLs are not supported here: $url" ;;
    esac
    rest=${url#*://}    # drop scheme
    rest=${rest%%/*}    # drop /db
    rest=${rest%%\?*}   # drop ?query
    rest=${rest##*@}    # drop user:pass@
    if [[ $rest == \[* ]]; then
        host=${rest%%]*}
        host=${host#\[}
        [[ $rest == *]:* ]] && port=${rest##*]:}
    else
        host=${rest%%:*}
        [[ $rest == *:* ]] && port=${rest#*:}
    fi
    host=${host:-127.0.0.1}
    port=${port:-6379}
    [[ $port =~ ^[0-9]+$ ]] || die "bad port '$port' in Redis URL: $url"
    printf '%s %s\n' "$host" "$port"
}

# redis_answers HOST PORT: true if a Redis server replies to PING. A server
# that demands a password (NOAUTH) still counts: something is listening.
redis_answers() {
    local reply
    reply=$(timeout 2 redis-cli -h "$1" -p "$2" ping 2>&1) || true
    [[ $reply == PONG || $reply == *NOAUTH* || $reply == *WRONGPASS* ]]
}

is_local_host() {
    [[ $1 == 127.0.0.1 || $1 == localhost ]]
}

# ---------------------------------------------------------------- redis cluster
# start_local_cluster DIR PORT...: three (or more) masters on loopback
# ports, their files under DIR, joined with `redis-cli --cluster create`;
# prints the Spool URL (redis+cluster://...). stop_local_cluster PORT...
# shuts them down.
start_local_cluster() {
    local dir=$1
    shift
    local port seeds=()
    for port in "$@"; do
        redis_answers 127.0.0.1 "$port" \
            && die "port $port is taken; set SPOOL_TEST_CLUSTER_PORTS to three free ports"
        mkdir -p "$dir/$port"
        redis-server --daemonize yes --bind 127.0.0.1 --port "$port" \
            --cluster-enabled yes --cluster-config-file nodes.conf \
            --dir "$dir/$port" --save "" --appendonly no \
            --logfile "$dir/$port/redis.log" --pidfile "$dir/$port/redis.pid" \
            || die "redis-server on $port failed to start; see $dir/$port/redis.log"
        wait_for 10 redis_answers 127.0.0.1 "$port" \
            || die "redis-server on $port did not answer; see $dir/$port/redis.log"
        seeds+=("127.0.0.1:$port")
    done
    redis-cli --cluster create "${seeds[@]}" --cluster-replicas 0 --cluster-yes \
        >"$dir/create.log" 2>&1 || die "redis-cli --cluster create failed; see $dir/create.log"
    for port in "$@"; do
        wait_for 20 cluster_ok "$port" || die "the cluster node on $port is not ok"
    done
    local IFS=,
    printf 'redis+cluster://%s/\n' "${seeds[*]}"
}

cluster_ok() {
    redis-cli -p "$1" cluster info 2>/dev/null | grep -q '^cluster_state:ok'
}

stop_local_cluster() {
    local port
    for port in "$@"; do
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
}
