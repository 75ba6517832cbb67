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

# A throwaway PostgreSQL server for the storage and cluster tests (scripts/lib/postgres.sh), in
# a temporary directory, on the first free port from 55432; stopped and removed when the script
# exits. Exports PARTYROOM_TEST_POSTGRES_URL (a caller's own value is kept). Safe to run again:
# a server left by an earlier run is stopped and its data removed.
# shellcheck source=lib/postgres.sh
. scripts/lib/postgres.sh
start_test_postgres() {
  if [ -n "${PARTYROOM_TEST_POSTGRES_URL:-}" ]; then
    echo "using PARTYROOM_TEST_POSTGRES_URL from the environment"
    return
  fi
  pg_start /tmp/partyroom-pg 55432 partyroom_test fsync=off max_connections=300
  export PARTYROOM_TEST_POSTGRES_URL=$PG_URL
}

step "tools"
command -v node >/dev/null 2>&1 || apt_install nodejs npm
command -v chromium >/dev/null 2>&1 || apt_install chromium
node --version
chromium --version 2>/dev/null || true

step "postgres (for the storage and cluster tests)"
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

step "browser: two headless Chromium pages, and the monitor page"
(cd tests/browser && npm ci --silent --no-audit --no-fund && node --test --test-concurrency=1 ./*.test.mjs)

# WebSocket conformance: Autobahn|Testsuite's fuzzing client (tests/autobahn, installed into
# target/autobahn-venv) against the `autobahn_echo` example, an echo server on partyroom-server's
# own WebSocket layer; cases 1.* to 10.* (12.* and 13.* are permessage-deflate, which the server
# does not negotiate). The echo binds a free port (`BIN 127.0.0.1:0`) and prints its address
# (`... ws://127.0.0.1:PORT`); AUTOBAHN_ECHO_BIN names another binary of the same CLI instead of
# building the example. Reports: target/autobahn-reports/index.html. Fails if a case FAILED.
autobahn_conformance() (
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then apt_install python3 python3-venv; fi
  command -v patch >/dev/null 2>&1 || apt_install patch
  venv=$(bash tests/autobahn/install.sh target/autobahn-venv)
  if [ -n "${AUTOBAHN_ECHO_BIN:-}" ]; then
    echo_bin=$AUTOBAHN_ECHO_BIN
    echo "echo server: $echo_bin (AUTOBAHN_ECHO_BIN)"
  else
    # A debug build: the run takes as long as with a release one (the suite's client is the
    # slow side), and `--workspace` resolves features as `cargo test --workspace` did above, so
    # only partyroom-server and the example are compiled (with `-p`, some 55 dependencies again).
    cargo build --workspace --example autobahn_echo --features partyroom-server/autobahn-echo --quiet || {
      echo "autobahn: could not build partyroom-server's autobahn_echo example (feature autobahn-echo)" >&2
      exit 1
    }
    echo_bin=$PWD/target/debug/examples/autobahn_echo
  fi
  [ -x "$echo_bin" ] || { echo "autobahn: no echo binary at $echo_bin" >&2; exit 1; }
  log=target/autobahn-echo.log
  "$echo_bin" 127.0.0.1:0 >"$log" 2>&1 &
  echo_pid=$!
  trap 'kill "$echo_pid" 2>/dev/null; wait "$echo_pid" 2>/dev/null || true' EXIT
  port=
  for _ in $(seq 300); do
    port=$(grep -o -m 1 'ws://127\.0\.0\.1:[0-9]*' "$log" | sed 's/.*://' || true)
    [ -n "$port" ] && break
    kill -0 "$echo_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$port" ] || [ "$port" = 0 ]; then
    if kill -0 "$echo_pid" 2>/dev/null; then
      echo "autobahn: the echo server printed no ws://127.0.0.1:PORT address (its bound port):" >&2
    else
      echo "autobahn: the echo server $echo_bin exited:" >&2
    fi
    cat "$log" >&2
    exit 1
  fi
  for i in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    if [ "$i" = 300 ] || ! kill -0 "$echo_pid" 2>/dev/null; then
      echo "autobahn: the echo server does not accept on 127.0.0.1:$port:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "echo server on ws://127.0.0.1:$port"
  # 301 cases take about 1.5 minutes; a server that drops messages can take 20 (the suite waits
  # up to 480 s per case for echoes that never come), so the bound only stops a run that hangs.
  if ! AUTOBAHN_AGENT=partyroom AUTOBAHN_VENV="$venv" AUTOBAHN_TIMEOUT=1800 \
    bash tests/autobahn/run.sh "ws://127.0.0.1:$port" '*' target/autobahn-reports; then
    echo "autobahn: conformance failed (target/autobahn-reports/index.html); the echo server's log:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
)

step "WebSocket conformance: Autobahn|Testsuite, cases 1.* to 10.*"
autobahn_conformance

step "all tests passed"
