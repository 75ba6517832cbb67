#!/usr/bin/env bash
# Slow clients and idle memory, for one arena server binary: the server's RSS per idle client
# (`partyroom-loadtest idle`), and what clients that stop reading cost it
# (`partyroom-loadtest slow`: its RSS, its open file descriptors, and the kernel memory of its
# side of their sockets, from `ss -tmnH`), and whether and when it drops them. Run it on two
# builds (before and after a change) and compare the tables it prints.
#
#   bash bench/slow-clients.sh path/to/partyroom-arena [LABEL]
#
# Every server gets a fresh process pinned to core 0 (taskset -c 0), the load generator runs
# on core 1, loopback only. The load generator is built from this tree
# (target/release/partyroom-loadtest). Raw results (one JSON per run) go to
# target/bench-slow-clients/LABEL/; the tables are printed on stdout (markdown).
#
# Environment (all optional):
#   RUNS=2                          runs of each configuration
#   IDLE=10000 IDLE_SECONDS=3       idle clients, and how long they are held
#   IDLE_CONFIGS="sqlite:1000 memory:100"   storage:rooms of the idle runs (BENCHMARKS.md's
#                                   "Idle connections" table: SQLite file, or --memory)
#   SLOW_CONFIGS="200:4:60:20 50:16:90:40"  slow-clients:drivers:moves-per-second:seconds of
#                                   the slow runs; the second fills the server's send buffers
#                                   within the hold (their growth is ~30 KB/s per slow client
#                                   at 240 moves/s)
#   CLIENT_RCVBUF=4096              SO_RCVBUF of the slow clients (0: the system's default,
#                                   which on loopback absorbs the traffic for minutes)
#   SKIP_BUILD=1                    use target/release/partyroom-loadtest as it is
#   OUT=dir                         where the JSON results go
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "bench/slow-clients.sh: $*" >&2; exit 1; }
log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

[ $# -ge 1 ] || die "usage: bash bench/slow-clients.sh path/to/partyroom-arena [LABEL]"
ARENA=$(realpath "$1")
[ -x "$ARENA" ] || die "$1 is not an executable"
LABEL=${2:-arena}
RUNS=${RUNS:-2}
IDLE=${IDLE:-10000}
IDLE_SECONDS=${IDLE_SECONDS:-3}
IDLE_CONFIGS=${IDLE_CONFIGS:-sqlite:1000 memory:100}
SLOW_CONFIGS=${SLOW_CONFIGS:-200:4:60:20 50:16:90:40}
CLIENT_RCVBUF=${CLIENT_RCVBUF:-4096}
OUT=${OUT:-$ROOT/target/bench-slow-clients/$LABEL}
LOADTEST=$ROOT/target/release/partyroom-loadtest

command -v ss >/dev/null || die "ss (iproute2) is required"
command -v node >/dev/null || die "node is required (to read the results)"
if [ -z "${SKIP_BUILD:-}" ]; then
  log "building partyroom-loadtest (release)"
  (cd "$ROOT" && cargo build --release -q -p partyroom-loadtest)
fi
[ -x "$LOADTEST" ] || die "$LOADTEST is missing"

if [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0)
  PIN_LOAD=(taskset -c 1)
else
  PIN_SERVER=()
  PIN_LOAD=()
  echo "warning: fewer than 2 cores, server and load generator share the CPU" >&2
fi
# 10,000 idle clients need 10,000 sockets on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log
DB_DIR=$(mktemp -d)

# --- servers (every process started is killed on exit) ----------------------------------------
SERVER_PID=
PORT=
cleanup() {
  [ -z "$SERVER_PID" ] || kill -9 "$SERVER_PID" 2>/dev/null || true
  rm -rf "$DB_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server LOGFILE ARGS...: sets SERVER_PID and PORT.
start_server() {
  local logfile=$1
  shift
  : >"$logfile" # before the server's own redirection, which happens in the background
  RUST_LOG=warn "${PIN_SERVER[@]}" "$ARENA" --port 0 "$@" >"$logfile" 2>&1 &
  SERVER_PID=$!
  PORT=
  for _ in $(seq 200); do
    PORT=$(sed -n 's/^partyroom listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$logfile" | head -1 || true)
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$logfile" >&2; die "the server exited"; }
    sleep 0.05
  done
  [ -n "$PORT" ] || die "the server did not print its port"
  sleep 0.5 # RSS baseline after start-up
}

# A server held by clients that stopped reading may never stop by itself: SIGTERM, then
# SIGKILL after 5 s.
stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "  (the server did not stop within 5 s of SIGTERM: killed)" >&2
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# run NAME SERVER-ARGS... -- LOADTEST-ARGS...: one fresh server, one scenario.
run() {
  local name=$1 server_args=() status=0
  shift
  while [ "$1" != "--" ]; do server_args+=("$1"); shift; done
  shift
  log "$LABEL: $name (${server_args[*]} | $*)"
  start_server "$OUT/$name.server.log" "${server_args[@]}"
  "${PIN_LOAD[@]}" "$LOADTEST" --url "ws://127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
    --label "$LABEL" --json --no-progress "$@" >"$OUT/$name.json" || status=$?
  stop_server
  if [ "$status" -ne 0 ]; then
    echo "{\"error\":\"load generator exited with $status\"}" >"$OUT/$name.json"
    echo "warning: $name failed (exit $status)" >&2
  fi
}

STARTED=$(date +%s)
for config in $IDLE_CONFIGS; do
  storage=${config%%:*}
  rooms=${config##*:}
  for i in $(seq "$RUNS"); do
    if [ "$storage" = memory ]; then
      server_args=(--memory)
    else
      rm -f "$DB_DIR"/idle.db*
      server_args=(--db "$DB_DIR/idle.db")
    fi
    run "idle-$storage-$rooms-$i" "${server_args[@]}" -- \
      idle --clients "$IDLE" --rooms "$rooms" --seconds "$IDLE_SECONDS" --timeout 240
  done
done
for config in $SLOW_CONFIGS; do
  IFS=: read -r clients drivers rate seconds <<<"$config"
  for i in $(seq "$RUNS"); do
    run "slow-$clients-$drivers-$rate-$seconds-$i" --memory -- \
      slow --clients "$clients" --drivers "$drivers" --rate "$rate" --seconds "$seconds" \
      --client-rcvbuf "$CLIENT_RCVBUF" --timeout 300
  done
done
ELAPSED=$(( $(date +%s) - STARTED ))

# --- tables --------------------------------------------------------------------------------
echo "### $LABEL: $ARENA"
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), Linux $(uname -r), tcp_wmem $(tr '\t' ' ' </proc/sys/net/ipv4/tcp_wmem), tcp_rmem $(tr '\t' ' ' </proc/sys/net/ipv4/tcp_rmem); server on core 0, load generator on core 1; ${ELAPSED} s. Results: $OUT"
echo
node - "$OUT" <<'EOF'
const fs = require("fs");
const path = require("path");
const dir = process.argv[2];
const files = fs.readdirSync(dir).filter((f) => f.endsWith(".json")).sort();
const load = (f) => JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"));
const num = (v, d = 1) => (v == null || Number.isNaN(v) ? "—" : Number(v).toFixed(d));
const kib = (bytes, d = 1) => (bytes == null ? "—" : num(bytes / 1024, d));
const mib = (k) => (k == null ? "—" : num(k / 1024, 1));

const idle = files.filter((f) => f.startsWith("idle-"));
if (idle.length) {
  console.log("| Idle run | server RSS before (MiB) | with the clients (MiB) | **RSS per client (KiB)** | still open | connected in (s) |");
  console.log("|---|---|---|---|---|---|");
  for (const f of idle) {
    const r = load(f);
    const name = f.replace(/\.json$/, "");
    if (r.error) { console.log(`| ${name} | ${r.error} | | | | |`); continue; }
    const x = r.results;
    console.log(`| ${r.params.clients} clients, ${r.params.rooms} rooms, ${name.split("-")[1]} (run ${name.split("-").pop()}) | ${mib(x.server_rss_kib_before)} | ${mib(x.processes?.server?.rss_kib_end)} | **${kib(x.server_rss_bytes_per_client, 2)}** | ${x.still_open_at_end} | ${num(x.connected_ms / 1000, 2)} |`);
  }
  console.log();
}

const slow = files.filter((f) => f.startsWith("slow-"));
if (slow.length) {
  console.log("| Slow run | still established at end | dropped by the server (median s after moves started) | send buffer full (median s) | server fds: before / end / after close | RSS Δ per slow client (KiB) | **kernel send queue per slow client (KiB, `w`)** | payload queued (KiB, Send-Q) | send buffer `tb` (KiB) | **total per slow client (KiB)** | load generator's receive queue per slow client (KiB) | drivers' move-to-echo p99 (ms) |");
  console.log("|---|---|---|---|---|---|---|---|---|---|---|---|");
  for (const f of slow) {
    const r = load(f);
    const name = f.replace(/\.json$/, "");
    if (r.error) { console.log(`| ${name} | ${r.error} |${" |".repeat(10)}`); continue; }
    const x = r.results;
    const e = x.per_slow_client_at_end;
    const dropped = x.slow_dropped_by_server
      ? `${x.slow_dropped_by_server} (${num(x.dropped_after_moves_started.p50_ms / 1000, 1)})`
      : "0";
    const full = x.slow_send_buffer_full
      ? `${x.slow_send_buffer_full} (${num(x.send_buffer_full_after_moves_started.p50_ms / 1000, 1)})`
      : "0";
    const fds = `${x.before_slow_clients.server_fds} / ${x.end_of_hold.server_fds} / ${x.after_slow_clients_closed.server_fds}`;
    const run = `${x.slow_clients} slow + ${x.drivers} × ${x.rate_per_driver} moves/s, ${x.held_seconds} s (run ${name.split("-").pop()})`;
    console.log(`| ${run} | ${x.slow_still_established_at_end} | ${dropped} | ${full} | ${fds} | ${kib(e.server_rss_delta_bytes)} | **${kib(e.kernel_send_queue_bytes_wmem_queued)}** | ${kib(e.kernel_send_q_payload_bytes)} | ${kib(e.kernel_sndbuf_bytes, 0)} | **${kib(e.total_bytes_rss_plus_send_queue)}** | ${kib(e.load_generator_receive_queue_bytes)} | ${num(x.drivers_move_to_echo.p99_ms, 2)} |`);
  }
  console.log();
  console.log("Per slow client: at the end of the hold, while the slow clients still hold their sockets. RSS Δ: the server's RSS then minus before the slow clients joined, ÷ slow clients. Kernel send queue: `ss -tmnH` `skmem` `w` (wmem_queued) of the server's side of their sockets, ÷ slow clients (not in the RSS); total = RSS Δ + `w`. The load generator's receive queues (`r`, its side of the same sockets) are its memory, not the server's.");
}
EOF
