#!/usr/bin/env bash
# Cluster mode on one machine: a throwaway PostgreSQL server and three arena nodes
# (http://127.0.0.1:3001, :3002, :3003) that share it. Open the arena page on any node; every
# node serves every room, relaying to the room's owner. Try `kill -9` on one node (its pid is
# printed): its rooms come back on another node after the lease TTL and the page reconnects.
# Ctrl-C stops the nodes (SIGTERM: they drain) and removes the database.
#
#   scripts/cluster-demo.sh [NODES] [FIRST_PORT]
#
# Needs Debian's `postgresql` package (installed when missing and run as root). ARENA_BIN runs
# that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${1:-3}
first_port=${2:-3001}

apt_install() {
  [ "$(id -u)" = 0 ] || { echo "install PostgreSQL first: sudo apt-get install postgresql" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
# shellcheck source=lib/postgres.sh
. scripts/lib/postgres.sh

bin=${ARENA_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release -p partyroom-arena --quiet
  bin=./target/release/partyroom-arena
fi
pg_start /tmp/partyroom-cluster-demo 55532 partyroom
secret=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')

pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pg_stop
}
trap stop_all EXIT
trap 'exit 130' INT TERM

for i in $(seq 1 "$nodes"); do
  port=$((first_port + i - 1))
  "$bin" --host 127.0.0.1 --port "$port" \
    --cluster "$PG_URL" --node-id "n$i" --cluster-secret "$secret" \
    > >(sed -u "s/^/[n$i] /") 2>&1 &
  pids+=("$!")
  echo "node n$i: pid $!"
  echo "node n$i: http://127.0.0.1:$port/ (GET /cluster: what it owns)"
done
echo "Ctrl-C to stop"
wait
