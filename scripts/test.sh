#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: formatting and lints, the Rust test suite,
# the compatibility suite that drives the official @signe/sync client from Node, and the
# browser test in headless Chromium. Installs what it needs (npm packages, Debian's chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

step "tools"
command -v node >/dev/null 2>&1 || apt_install nodejs npm
command -v chromium >/dev/null 2>&1 || apt_install chromium
node --version
chromium --version 2>/dev/null || true

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
(cd tests/compat && npm ci --silent --no-audit --no-fund && node --test --test-concurrency=1 test/*.test.mjs)

step "browser: two headless Chromium pages"
(cd tests/browser && npm ci --silent --no-audit --no-fund && node --test --test-concurrency=1 ./*.test.mjs)

step "all tests passed"
