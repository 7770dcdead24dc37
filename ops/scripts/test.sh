#!/usr/bin/env bash
# Run every check CI runs: setup, rustfmt, clippy, rustdoc, then the whole
# test suite (unit, integration and doc tests) against a live Redis, and the
# end-to-end suites once more on a local Redis Cluster.
#
# Usage: ops/scripts/test.sh [ARGS...]
#   ARGS go to the test runner: `cargo nextest run` when cargo-nextest is
#   installed, else `cargo test` (e.g. a test-name filter).
set -euo pipefail

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=ops/scripts/lib.sh
. "$here/lib.sh"

export SPOOL_REDIS_URL="${SPOOL_REDIS_URL:-$SPOOL_DEFAULT_REDIS_URL}"
# The job store suites run on PostgreSQL as well as SQLite.
export SPOOL_WITH_POSTGRES="${SPOOL_WITH_POSTGRES:-1}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
if [[ -n ${CI:-} ]]; then
    export CARGO_TERM_COLOR=never
fi
# Tests are IO-bound (Redis round trips), so run more of them than the two
# cores, but not so many that timing-sensitive tests starve.
export NEXTEST_TEST_THREADS="${NEXTEST_TEST_THREADS:-4}"
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"

bash "$here/setup.sh"
load_spool_env
ensure_cargo
cd "$SPOOL_ROOT"

mapfile -t locked < <(cargo_locked_flag)

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets "${locked[@]}" -- -D warnings

# The library crates build without their optional job store, as an
# application that needs none depends on them.
log "cargo check of the library crates without the job store"
cargo check -p spool-broker --no-default-features --all-targets "${locked[@]}"
cargo check -p spool-worker -p spool-sdk --lib "${locked[@]}"

log "cargo doc (broken links and bad markup are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps "${locked[@]}"

# Suites run the workspace's binaries as processes. A test run builds a
# package's binaries only when that package has integration tests of its
# own, so build them all first.
log "cargo build --workspace --bins"
cargo build --workspace --bins "${locked[@]}"

if cargo nextest --version >/dev/null 2>&1; then
    log "cargo nextest run"
    cargo nextest run --workspace "${locked[@]}" --no-fail-fast "$@"
    # nextest does not run doctests. A filtered run skips them: nextest's
    # arguments do not necessarily mean anything to `cargo test`.
    if (($# == 0)); then
        log "cargo test --doc"
        cargo test --workspace --doc "${locked[@]}"
        # The end-to-end suites once more, on a Redis Cluster: every test
        # that takes SPOOL_REDIS_URL then runs through the cluster client.
        # The video suites add nothing there, the chaos suites restart
        # servers of their own, the conformance suite's in-memory half ran
        # already, and the permission tests make an ACL user, which a
        # cluster keeps per node (security_acl covers ACLs on one server).
        # The workflow suites' in-memory halves ran already too, their
        # `on_redis_outbox` cases take the same path as `on_redis` on a
        # cluster, and workflow_chaos restarts a server of its own.
        read -r -a cluster_ports <<<"${SPOOL_TEST_CLUSTER_PORTS:-7301 7302 7303}"
        cluster_dir=$(mktemp -d /tmp/spool-cluster.XXXXXX)
        trap 'stop_local_cluster "${cluster_ports[@]}"; rm -rf "$cluster_dir"' EXIT
        cluster_url=$(start_local_cluster "$cluster_dir" "${cluster_ports[@]}")
        log "cargo nextest run -p spool-tests on the Redis Cluster $cluster_url"
        SPOOL_REDIS_URL="$cluster_url" cargo nextest run -p spool-tests "${locked[@]}" \
            --no-fail-fast \
            -E 'not (binary(/^video_/) | binary(/^chaos_/) | ((binary(broker_conformance) | binary(/^workflow_/)) & test(/^on_(memory|redis_outbox)::/)) | binary(workflow_chaos) | (binary(bad_input_broker) & test(/permission|refused_fetch/)))'
    else
        log "skipping doctests and the cluster pass (filtered run)"
    fi
else
    log "cargo test (cargo-nextest not installed)"
    cargo test --workspace "${locked[@]}" --no-fail-fast "$@"
fi

log "all checks passed"
