#!/usr/bin/env bash
# Compare two builds of the arena server on the hot path, alternating runs so that both see the
# same machine (in turn first, round by round): the closed loop (100 clients, saturation moves/s) and batched sync (16 ms
# throttle, 100 clients x 60 moves/s, server CPU). Server on core 0, load generator on core 1.
#
#   bash bench/ab.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS]
#
# Each BIN_DIR holds a release `partyroom-arena`; the load generator is AFTER_BIN_DIR's
# `partyroom-loadtest` for both, so only the server differs. Build the "before" side from a
# worktree, e.g.
#   git worktree add ../before <rev> && (cd ../before && cargo build --release -p partyroom-arena)
# Prints one line per run and a summary (medians, after / before); raw JSON in target/bench-ab/.
# AFTER_ARGS adds server flags to the "after" runs only (a feature the "before" build lacks).
set -euo pipefail

BEFORE=${1:?usage: ab.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS]}
AFTER=${2:?usage: ab.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS]}
ROUNDS=${3:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
LOADTEST="$AFTER/partyroom-loadtest"
OUT=${OUT:-target/bench-ab}
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
ulimit -n 4096 2>/dev/null || true

SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true; }
trap cleanup EXIT

# run LABEL BIN_DIR NAME SERVER-ARGS... -- LOADTEST-ARGS...
run() {
  local label=$1 bin=$2 name=$3 server_args=() logfile
  shift 3
  while [ "$1" != "--" ]; do server_args+=("$1"); shift; done
  shift
  logfile="$OUT/$name.$label.server.log"
  : >"$logfile"
  # AFTER_ARGS: extra server flags for the "after" build only (e.g. `--metrics`).
  if [ "$label" = after ] && [ -n "${AFTER_ARGS:-}" ]; then
    # shellcheck disable=SC2206
    server_args+=($AFTER_ARGS)
  fi
  RUST_LOG=warn "${PIN_SERVER[@]}" "$bin/partyroom-arena" --port 0 --memory "${server_args[@]}" >"$logfile" 2>&1 &
  SERVER_PID=$!
  local port
  port=$(arena_port "$logfile" 10)
  sleep 0.5
  "${PIN_LOAD[@]}" "$LOADTEST" --url "ws://127.0.0.1:$port" --server-pid "$SERVER_PID" \
    --label "$label" --json --no-progress "$@" >"$OUT/$name.$label.json"
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

for round in $(seq "$ROUNDS"); do
  # Odd rounds run "before" first, even rounds "after" first: a machine that slows down
  # within a round then favours neither side.
  order="before after"
  [ $((round % 2)) -eq 0 ] && order="after before"
  for label in $order; do
    bin=$BEFORE
    [ "$label" = after ] && bin=$AFTER
    run "$label" "$bin" "closed-$round" --max-messages-per-second 1000000 -- \
      throughput --clients 100 --seconds "$SECONDS_PER_RUN" --warmup 2 --max-rate 0
    run "$label" "$bin" "batched-$round" --sync-throttle-ms 16 -- \
      moves --clients 100 --rate 60 --seconds "$SECONDS_PER_RUN"
  done
  echo "round $round of $ROUNDS done" >&2
done

node - "$OUT" "$ROUNDS" <<'JS'
const fs = require("fs");
const [dir, rounds] = [process.argv[2], Number(process.argv[3])];
const read = (n) => JSON.parse(fs.readFileSync(`${dir}/${n}.json`, "utf8"));
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const get = { closed: (r) => r.results.saturation_moves_per_second, batched: (r) => r.results.processes.server.cpu_percent_of_one_core };
const unit = { closed: "moves/s acknowledged", batched: "server CPU, % of one core" };
for (const kind of ["closed", "batched"]) {
  const v = { before: [], after: [] };
  for (let i = 1; i <= rounds; i++) for (const l of ["before", "after"]) v[l].push(get[kind](read(`${kind}-${i}.${l}`)));
  const fmt = (xs) => xs.map((x) => (kind === "closed" ? Math.round(x).toLocaleString("en") : x.toFixed(2))).join("; ");
  const [mb, ma] = [median(v.before), median(v.after)];
  console.log(`${kind} (${unit[kind]}): before ${fmt(v.before)} (median ${kind === "closed" ? Math.round(mb) : mb.toFixed(2)}) | after ${fmt(v.after)} (median ${kind === "closed" ? Math.round(ma) : ma.toFixed(2)}) | after / before ${(ma / mb).toFixed(3)}`);
}
JS
