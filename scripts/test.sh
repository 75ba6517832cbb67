#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: formatting and lints, the Rust test suite,
# the compatibility suite that drives the official @signe/sync client from Node, and the
# browser test in headless Chromium. Installs what it needs (npm packages, Debian's chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# A fresh checkout gains nothing from incremental artifacts; they only double the disk used.
export CARGO_INCREMENTAL=0

step() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# A throwaway PostgreSQL server for the storage tests (crates/partyroom-storage), as the
# `postgres` user, in a temporary directory, on the first free port from 55432; stopped and
# removed when the script exits. Exports PARTYROOM_TEST_POSTGRES_URL (a caller's own value is
# kept). Safe to run again: a server left by an earlier run is stopped and its data removed.
PG_DIR=/tmp/partyroom-pg
pg_bin=
as_postgres() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
stop_test_postgres() {
  if [ -n "$pg_bin" ] && [ -f "$PG_DIR/data/postmaster.pid" ]; then
    as_postgres "$pg_bin/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PG_DIR"
}
start_test_postgres() {
  if [ -n "${PARTYROOM_TEST_POSTGRES_URL:-}" ]; then
    echo "using PARTYROOM_TEST_POSTGRES_URL from the environment"
    return
  fi
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || apt_install postgresql
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  stop_test_postgres
  local port=55432
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  if [ "$(id -u)" = 0 ]; then install -d -o postgres -g postgres -m 700 "$PG_DIR"; else install -d -m 700 "$PG_DIR"; fi
  as_postgres "$pg_bin/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
  trap stop_test_postgres EXIT
  if ! as_postgres "$pg_bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start \
    -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" >/dev/null; then
    cat "$PG_DIR/server.log" >&2
    return 1
  fi
  "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$port" -t 30
  # A database whose default collation is not byte order (ICU), so the tests show that the
  # storage sorts keys byte-wise by itself; plain UTF-8 if this server has no ICU.
  "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U postgres -T template0 --locale-provider=icu \
    --icu-locale=en-US partyroom_test 2>/dev/null \
    || "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U postgres partyroom_test
  export PARTYROOM_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/partyroom_test"
  echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

step "tools"
command -v node >/dev/null 2>&1 || apt_install nodejs npm
command -v chromium >/dev/null 2>&1 || apt_install chromium
node --version
chromium --version 2>/dev/null || true

step "postgres (for the storage tests)"
start_test_postgres

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo test --workspace"
cargo build -p partyroom-arena --quiet
cargo test --workspace --quiet 2>&1 | tee target/cargo-test.log
ARENA_BIN="$PWD/target/debug/partyroom-arena"
export ARENA_BIN

step "compatibility: official @signe/sync client and plain ws (Node)"
# The world test (test/world.test.mjs) runs the `shards` example: world, arena and shards.
cargo build -p partyroom-shards --quiet
SHARDS_BIN="$PWD/target/debug/shards"
export SHARDS_BIN
(cd tests/compat && npm ci --silent --no-audit --no-fund && node --test --test-concurrency=1 test/*.test.mjs)

step "browser: two headless Chromium pages"
(cd tests/browser && npm ci --silent --no-audit --no-fund && node --test --test-concurrency=1 ./*.test.mjs)

step "all tests passed"
