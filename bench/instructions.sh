#!/usr/bin/env bash
# Instructions the arena server executes per move, for two builds, counted by valgrind's
# cachegrind: unlike wall-clock figures, counts do not move with the speed of a shared VM, so a
# change of 1 % shows. Two scenarios, each run twice per build, alternating:
#   single:  1 client x 90 moves/s, no throttle, 20 s (every move is its own batch: the
#            per-message path; counts repeat within 0.1 %);
#   batched: 20 clients x 50 moves/s, 16 ms sync throttle, 20 s.
#
#   bash bench/instructions.sh BEFORE_BIN_DIR AFTER_BIN_DIR
#
# BIN_DIRs hold release `partyroom-arena` builds; AFTER_BIN_DIR's `partyroom-loadtest` drives
# both. A run with no client for as long (`idle`: start-up, timers, shutdown) is subtracted
# from each count before dividing by the moves acknowledged.
# Under cachegrind the server runs some 50x slower, so the loads are small, and below the
# arena's default 100 messages per second and client (dropped messages would count too); a
# scenario with several clients and no throttle is left out because its batches, and so its
# counts, depend on timing. Raw output in target/bench-instructions/. AFTER_ARGS adds server
# flags to the "after" runs only.
set -euo pipefail

BEFORE=${1:?usage: instructions.sh BEFORE_BIN_DIR AFTER_BIN_DIR}
AFTER=${2:?usage: instructions.sh BEFORE_BIN_DIR AFTER_BIN_DIR}
OUT=${OUT:-target/bench-instructions}
mkdir -p "$OUT"
rm -f "$OUT"/*
if ! command -v valgrind >/dev/null; then
  sudo_=""
  [ "$(id -u)" -ne 0 ] && sudo_=sudo
  $sudo_ apt-get install -y valgrind >/dev/null
fi
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true; }
trap cleanup EXIT

# count LABEL BIN_DIR NAME SERVER-ARGS... -- LOADTEST-ARGS...: prints "NAME LABEL moves Ir".
count() {
  local label=$1 bin=$2 name=$3 server_args=() log port=
  shift 3
  while [ "$1" != "--" ]; do server_args+=("$1"); shift; done
  shift
  log="$OUT/$name.$label.log"
  : >"$log"
  # AFTER_ARGS: extra server flags for the "after" build only (e.g. `--metrics`).
  if [ "$label" = after ] && [ -n "${AFTER_ARGS:-}" ]; then
    # shellcheck disable=SC2206
    server_args+=($AFTER_ARGS)
  fi
  RUST_LOG=warn "${PIN_SERVER[@]}" valgrind --tool=cachegrind --cache-sim=no \
    --cachegrind-out-file="$OUT/$name.$label.cg" \
    "$bin/partyroom-arena" --port 0 --memory "${server_args[@]}" >"$log" 2>&1 &
  SERVER_PID=$!
  port=$(arena_port "$log" 60)
  sleep 1
  local moves=0 ir
  if [ "$#" -eq 0 ]; then
    sleep 21 # as long as a scenario's connect and 20 s of moves
  else
    "${PIN_LOAD[@]}" "$AFTER/partyroom-loadtest" --url "ws://127.0.0.1:$port" --json \
      --no-progress "$@" >"$OUT/$name.$label.json"
    moves=$(node -e 'console.log(require(require("path").resolve(process.argv[1])).results.move_to_echo.count)' "$OUT/$name.$label.json")
  fi
  kill -INT "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=
  ir=$(awk '/^summary:/ {print $2}' "$OUT/$name.$label.cg")
  echo "$name $label $moves $ir" | tee -a "$OUT/counts.txt"
}

for rep in 1 2; do
  order="before after"
  [ "$rep" -eq 2 ] && order="after before"
  for label in $order; do
    bin=$BEFORE
    [ "$label" = after ] && bin=$AFTER
    count "$label" "$bin" "idle-$rep" --
    count "$label" "$bin" "single-$rep" -- moves --clients 1 --rate 90 --seconds 20
    count "$label" "$bin" "batched-$rep" --sync-throttle-ms 16 -- moves --clients 20 --rate 50 --seconds 20
  done
done

awk '
  $1 ~ /^idle-/ { split($1, n, "-"); idle[n[2], $2] = $4; next }
  { split($1, n, "-"); k = n[1]; per[k, $2] += ($4 - idle[n[2], $2]) / $3; runs[k, $2]++; kinds[k] = 1 }
  END {
    for (k in kinds) {
      b = per[k, "before"] / runs[k, "before"]; a = per[k, "after"] / runs[k, "after"]
      printf "%s: before %.0f, after %.0f instructions per move (mean of %d runs); after / before %.4f\n", k, b, a, runs[k, "after"], a / b
    }
  }' "$OUT/counts.txt"
