#!/usr/bin/env bash
# Prepare a Debian 12 machine for Spool: system packages, a Redis server,
# an FFmpeg with libvmaf, an S3-compatible server for the object-storage
# tests (moto), and PostgreSQL if it is installed. Idempotent:
# every step checks before acting, so it is safe to run any number of times.
#
# Environment:
#   SPOOL_REDIS_URL       Redis to use (default redis://127.0.0.1:6379/).
#   SPOOL_HOME            per-user state (default ~/.spool): venv, bin/, env.
#   SPOOL_FFMPEG          use this ffmpeg instead of the imageio-ffmpeg one.
#   SPOOL_WITH_POSTGRES=1 also install PostgreSQL, and fail if it won't start.
set -euo pipefail

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=ops/scripts/lib.sh
. "$here/lib.sh"

# ---------------------------------------------------------------- toolchain
# The toolchain cannot be downloaded on our machines, so only check for it.
log "checking for cargo"
ensure_cargo
log "cargo: $(command -v cargo)"

# ---------------------------------------------------------------- packages
# python3-venv brings ensurepip, so the venv below gets its own pip.
# openssl makes the TLS tests' throw-away certificates; redis-tools brings
# redis-cli, which the cluster tests use to create their three-master cluster;
# prometheus brings promtool, which checks the alert rules and the dashboard's
# queries (the server it also installs is not started here); chromium and
# chromium-driver are the headless browser and its WebDriver server that the
# dashboard's browser tests (tests/dashboard_*.rs) drive.
packages=(ca-certificates openssl pkg-config procps redis-server redis-tools python3-venv prometheus chromium chromium-driver)
if [[ ${SPOOL_WITH_POSTGRES:-0} == 1 ]]; then
    packages+=(postgresql postgresql-client)
fi
log "checking system packages"
need_pkg "${packages[@]}"

# ---------------------------------------------------------------- redis
redis_url=${SPOOL_REDIS_URL:-$SPOOL_DEFAULT_REDIS_URL}
hp=$(redis_host_port "$redis_url")
read -r redis_host redis_port <<<"$hp"

log "checking Redis at $redis_host:$redis_port"
if redis_answers "$redis_host" "$redis_port"; then
    log "Redis is up at $redis_host:$redis_port"
elif ! is_local_host "$redis_host"; then
    die "Redis at $redis_host:$redis_port does not answer PING; it is not local, so start it yourself or change SPOOL_REDIS_URL"
else
    # A throwaway, memory-only server for dev/CI: no RDB/AOF persistence.
    redis_dir=/tmp/spool-redis/$redis_port
    mkdir -p "$redis_dir"
    log "starting redis-server on 127.0.0.1:$redis_port (dir $redis_dir)"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" \
        --save "" --appendonly no \
        --dir "$redis_dir" --logfile "$redis_dir/redis.log" \
        --pidfile "$redis_dir/redis.pid" \
        || die "redis-server failed to start; see $redis_dir/redis.log"
    if ! wait_for 10 redis_answers 127.0.0.1 "$redis_port"; then
        tail -n 20 "$redis_dir/redis.log" >&2 2>/dev/null || true
        die "redis-server on 127.0.0.1:$redis_port did not answer PING within 10 s; see $redis_dir/redis.log"
    fi
    log "Redis is up at 127.0.0.1:$redis_port"
fi

# ---------------------------------------------------------------- postgres
# The job store suites run on PostgreSQL too (SPOOL_WITH_POSTGRES=1, as
# test.sh sets): installed if missing, started if down.
pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432; }

start_postgres() {
    if ! command -v pg_lsclusters >/dev/null 2>&1 || ! command -v pg_isready >/dev/null 2>&1; then
        log "PostgreSQL not installed; skipping (SPOOL_WITH_POSTGRES=1 installs it)"
        return 0
    fi
    if pg_ready; then
        log "PostgreSQL is up at 127.0.0.1:5432"
        return 0
    fi
    log "starting PostgreSQL clusters"
    local ver name _rest
    # Debian's wrapper tools; pg_ctlcluster works without systemd.
    while read -r ver name _rest; do
        as_root pg_ctlcluster "$ver" "$name" start || warn "could not start cluster $ver/$name"
    done < <(pg_lsclusters --no-header)
    if wait_for 10 pg_ready; then
        log "PostgreSQL is up at 127.0.0.1:5432"
    else
        return 1
    fi
}

# The tests connect as postgres over TCP. A fresh Debian install asks for a
# password there (no trust auth): give the role one over the local socket,
# rather than edit pg_hba.conf, and hand the tests a URL that carries it.
pg_test_url=${SPOOL_TEST_POSTGRES_URL:-}
ensure_postgres_login() {
    local url=postgres://postgres@127.0.0.1:5432/postgres
    if PGCONNECT_TIMEOUT=5 psql "$url" -qtAc 'select 1' >/dev/null 2>&1; then
        return 0
    fi
    local password=spool-test
    log "giving the postgres role a password for TCP logins"
    if as_root runuser -u postgres -- psql -qtAc "ALTER ROLE postgres PASSWORD '$password'" >/dev/null; then
        pg_test_url="postgres://postgres:$password@127.0.0.1:5432/postgres"
    else
        warn "could not set a password for the postgres role"
    fi
}

log "checking PostgreSQL"
if start_postgres; then
    [[ -n $pg_test_url ]] || ensure_postgres_login
elif [[ ${SPOOL_WITH_POSTGRES:-0} == 1 ]]; then
    die "PostgreSQL does not answer on 127.0.0.1:5432"
else
    warn "PostgreSQL does not answer on 127.0.0.1:5432 (continuing; the store's PostgreSQL tests need it)"
fi

# ---------------------------------------------------------------- ffmpeg
# A static FFmpeg build (with libvmaf) comes from the imageio-ffmpeg wheel on
# PyPI; Debian's ffmpeg package is built without libvmaf. Non-fatal here:
# the core tests do not need FFmpeg; the video suites then fail, unless
# SPOOL_SKIP_FFMPEG=1 asks them to skip.
venv="$SPOOL_HOME/venv"

install_ffmpeg() {
    local py="$venv/bin/python" exe
    # A venv whose interpreter vanished (e.g. python upgraded) is rebuilt.
    if ! "$py" -c 'import imageio_ffmpeg' >/dev/null 2>&1; then
        if ! "$py" -c '' >/dev/null 2>&1; then
            log "creating venv $venv"
            python3 -m venv --clear "$venv" || return 1
        fi
        log "installing imageio-ffmpeg from PyPI"
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install --quiet \
            --timeout 30 --retries 2 imageio-ffmpeg || return 1
    fi
    exe=$("$py" -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())') || return 1
    [[ -x $exe ]] || return 1
    mkdir -p "$SPOOL_HOME/bin"
    ln -sfn "$exe" "$SPOOL_HOME/bin/ffmpeg"
}

log "checking FFmpeg"
ffmpeg_path=""
if [[ -n ${SPOOL_FFMPEG:-} ]]; then
    # Accept a path or a command name on PATH.
    if ffmpeg_path=$(command -v -- "$SPOOL_FFMPEG"); then
        [[ $ffmpeg_path == /* ]] || ffmpeg_path="$PWD/$ffmpeg_path"
    else
        ffmpeg_path=""
        warn "SPOOL_FFMPEG=$SPOOL_FFMPEG is neither an executable file nor a command on PATH"
    fi
elif install_ffmpeg; then
    ffmpeg_path="$SPOOL_HOME/bin/ffmpeg"
else
    warn "could not install FFmpeg via imageio-ffmpeg (is PyPI reachable?); continuing without it"
fi
[[ -n $ffmpeg_path ]] && log "ffmpeg: $ffmpeg_path"

# The video tasks probe media with ffprobe. The imageio-ffmpeg wheel ships
# only ffmpeg, so take ffprobe from beside it, SPOOL_FFPROBE or PATH, and
# else from Debian's ffmpeg package (its ffprobe 5.1 probes fine; its
# /usr/bin/ffmpeg, built without libvmaf, is also what the suite uses to
# check the missing-libvmaf error).
log "checking ffprobe"
ffprobe_path=""
if [[ -n ${SPOOL_FFPROBE:-} ]] && ffprobe_path=$(command -v -- "$SPOOL_FFPROBE"); then
    [[ $ffprobe_path == /* ]] || ffprobe_path="$PWD/$ffprobe_path"
elif [[ -n $ffmpeg_path && -x $(dirname -- "$ffmpeg_path")/ffprobe ]]; then
    ffprobe_path="$(dirname -- "$ffmpeg_path")/ffprobe"
elif ffprobe_path=$(command -v ffprobe); then
    :
else
    [[ -n ${SPOOL_FFPROBE:-} ]] && warn "SPOOL_FFPROBE=$SPOOL_FFPROBE is neither an executable file nor a command on PATH"
    need_pkg ffmpeg
    ffprobe_path=$(command -v ffprobe) || ffprobe_path=""
fi
if [[ -n $ffprobe_path ]]; then
    log "ffprobe: $ffprobe_path"
else
    warn "no ffprobe found; the video tasks need one (apt-get install ffmpeg)"
fi

# ---------------------------------------------------------------- S3 server
# The object-storage suites (tests/storage_*.rs) start their own
# S3-compatible server per test: moto's, from PyPI, in the same venv.
# Non-fatal here: without it those suites fail, unless SPOOL_SKIP_S3=1.
install_moto() {
    local py="$venv/bin/python"
    if [[ -x $venv/bin/moto_server ]] && "$py" -c 'import moto.server' >/dev/null 2>&1; then
        return 0
    fi
    if ! "$py" -c '' >/dev/null 2>&1; then
        log "creating venv $venv"
        python3 -m venv --clear "$venv" || return 1
    fi
    log "installing moto[server] from PyPI"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install --quiet \
        --timeout 30 --retries 2 'moto[server]>=5,<6' || return 1
    [[ -x $venv/bin/moto_server ]]
}

log "checking the S3-compatible test server (moto_server)"
if install_moto; then
    log "moto_server: $venv/bin/moto_server"
else
    warn "could not install moto[server] (is PyPI reachable?); the object-storage suites need it"
fi

# ---------------------------------------------------------------- env file
# Written atomically so a concurrent reader never sees a half-written file.
mkdir -p "$SPOOL_HOME"
tmp_env=$(mktemp "$SPOOL_ENV_FILE.XXXXXX")
{
    echo "# Written by ops/scripts/setup.sh; sourced by test.sh and demo.sh."
    [[ -n $ffmpeg_path ]] && printf 'export SPOOL_FFMPEG=%q\n' "$ffmpeg_path"
    [[ -n $ffprobe_path ]] && printf 'export SPOOL_FFPROBE=%q\n' "$ffprobe_path"
    [[ -n $pg_test_url ]] && printf 'export SPOOL_TEST_POSTGRES_URL=%q\n' "$pg_test_url"
    true
} >"$tmp_env"
mv -f "$tmp_env" "$SPOOL_ENV_FILE"
log "wrote $SPOOL_ENV_FILE"

log "setup done"
