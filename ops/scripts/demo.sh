#!/usr/bin/env bash
# Run Spool's main job end to end: set up services, then build and run the
# spool-demo binary in release mode. Arguments go to spool-demo.
#
# Usage: ops/scripts/demo.sh [ARGS...]
set -euo pipefail

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=ops/scripts/lib.sh
. "$here/lib.sh"

export SPOOL_REDIS_URL="${SPOOL_REDIS_URL:-$SPOOL_DEFAULT_REDIS_URL}"

bash "$here/setup.sh"
load_spool_env
ensure_cargo
cd "$SPOOL_ROOT"

mapfile -t locked < <(cargo_locked_flag)

# The demo starts two spool-worker processes for the chunked encode: build
# it beside spool-demo.
log "cargo build --release -p spool-worker-cli --bin spool-worker --bin spool-demo"
cargo build --release "${locked[@]}" -p spool-worker-cli --bin spool-worker --bin spool-demo
log "cargo run --release -p spool-worker-cli --bin spool-demo"
exec cargo run --release "${locked[@]}" -p spool-worker-cli --bin spool-demo -- "$@"
