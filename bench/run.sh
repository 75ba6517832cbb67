#!/usr/bin/env bash
# Reference benchmark: partyroom's arena server against the original @signe/room arena server
# (bench/reference), both driven by the same load generator (crates/partyroom-loadtest) through
# the same scenarios in one run. Writes the table of both servers' figures and their ratios into
# BENCHMARKS.md, between the markers
#   <!-- reference-benchmark:start --> and <!-- reference-benchmark:end -->.
#
#   bash bench/run.sh
#
# The server runs on core 0 (taskset -c 0), the load generator on core 1 (taskset -c 1); each
# scenario gets a freshly started server, on loopback only. Raw results (one JSON per run) and
# SVG plots go to target/bench-reference/. See bench/README.md.
#
# Environment (all optional):
#   JOINS=1000            clients of the join storm
#   JOINS_ORIGINAL_MAX=60 seconds the original may take for it; if it cannot, the storm is run
#                         again on both servers with JOINS_SMALL clients
#   JOINS_SMALL=250
#   MOVERS=100 RATE=1.5 MOVE_SECONDS=20   the steady moves scenario (and the closed loop)
#   IDLE=10000 IDLE_ROOMS=100          idle clients and rooms
#   IDLE_ORIGINAL=10000                idle clients for the original
#   RECONNECT=500                      clients of the reconnect storm
#   BATCHED_FAST=6000 BATCHED_RUNS=5 BATCHED_SECONDS=10   the batched-sync scenarios
#   SKIP_BUILD=1                       use the binaries already built (in $BIN, default target/release)
#   NO_WRITE=1                         do not touch BENCHMARKS.md
#   TABLE_ONLY=1                       no build and no runs: rebuild the table from the results
#                                      of the last run (target/bench-reference)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

JOINS=${JOINS:-1000}
JOINS_ORIGINAL_MAX=${JOINS_ORIGINAL_MAX:-60}
JOINS_SMALL=${JOINS_SMALL:-250}
MOVERS=${MOVERS:-100}
RATE=${RATE:-1.5}
MOVE_SECONDS=${MOVE_SECONDS:-20}
IDLE=${IDLE:-10000}
IDLE_ROOMS=${IDLE_ROOMS:-100}
IDLE_ORIGINAL=${IDLE_ORIGINAL:-10000}
RECONNECT=${RECONNECT:-500}
BATCHED_FAST=${BATCHED_FAST:-6000}
BATCHED_RUNS=${BATCHED_RUNS:-5}
BATCHED_SECONDS=${BATCHED_SECONDS:-10}
OUT="$ROOT/target/bench-reference"
BIN=${BIN:-$ROOT/target/release}

log() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
die() { echo "bench/run.sh: $*" >&2; exit 1; }

# --- tools (installed only when missing) -----------------------------------------------------
APT_UPDATED=
apt_install() {
  command -v apt-get >/dev/null || die "$1 is missing and apt-get is not available"
  if [ -z "$APT_UPDATED" ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v taskset >/dev/null || apt_install util-linux
command -v node >/dev/null || apt_install nodejs
command -v npm >/dev/null || apt_install npm
command -v cargo >/dev/null || die "cargo is required (rustup)"

CORES=$(nproc)
if [ "$CORES" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0)
  PIN_LOAD=(taskset -c 1)
  PINNING="server on core 0, load generator on core 1"
else
  PIN_SERVER=()
  PIN_LOAD=()
  PINNING="not pinned (only $CORES core)"
  echo "warning: fewer than 2 cores, server and load generator share the CPU" >&2
fi

# 10,000 idle clients need 10,000 sockets on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)

# --- servers (every process started is killed on exit) -----------------------------------------
PIDS=()
SERVER_PID=
PORT=
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
}
# Stop tracking a process that has ended (so that its pid, if reused, is never signalled).
forget() {
  local keep=() pid
  for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
  PIDS=("${keep[@]}")
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server partyroom|original LOGFILE: sets SERVER_PID and PORT. Extra arguments: SYNC_ARGS
# for both servers (a sync throttle), SERVER_ARGS for partyroom's only.
SERVER_ARGS=()
SYNC_ARGS=()
start_server() {
  local kind=$1 logfile=$2
  case "$kind" in
    partyroom)
      RUST_LOG=warn "${PIN_SERVER[@]}" "$BIN/partyroom-arena" --port 0 --memory "${SYNC_ARGS[@]}" "${SERVER_ARGS[@]}" >"$logfile" 2>&1 &
      ;;
    original)
      "${PIN_SERVER[@]}" node "$ROOT/bench/reference/arena-server.mjs" --port 0 "${SYNC_ARGS[@]}" >"$logfile" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  PORT=
  for _ in $(seq 200); do
    PORT=$(sed -n 's/^partyroom listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$logfile" | head -1)
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$logfile" >&2; die "$kind server exited"; }
    sleep 0.05
  done
  [ -n "$PORT" ] || die "$kind server did not print its port"
  sleep 0.5 # let it settle (RSS baseline, JIT warm-up of the first module load)
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  forget "$SERVER_PID"
}

# run KIND NAME LOADTEST-ARGS...: a fresh server, one scenario, results in $OUT/KIND-NAME.json.
run() {
  local kind=$1 name=$2
  shift 2
  log "$kind: $name ($*)"
  start_server "$kind" "$OUT/$kind-$name.server.log"
  local status=0
  # In the background, so that a signal to this script is handled at once (the trap then
  # stops the load generator too).
  "${PIN_LOAD[@]}" "$BIN/partyroom-loadtest" --url "ws://127.0.0.1:$PORT" \
    --server-pid "$SERVER_PID" --label "$kind" --json --no-progress \
    --plot "$OUT/$kind-$name.svg" "$@" >"$OUT/$kind-$name.json" &
  local load_pid=$!
  PIDS+=("$load_pid")
  wait "$load_pid" || status=$?
  forget "$load_pid"
  stop_server
  if [ "$status" -ne 0 ]; then
    echo "{\"error\":\"load generator exited with $status\"}" >"$OUT/$kind-$name.json"
    echo "warning: $kind $name failed (exit $status)" >&2
  fi
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    if (r.error) { console.error("  " + r.error); process.exit(0); }
    const x = r.results, w = x.window || {}, l = x.move_to_echo || x.first_packet || x.reconnect || {};
    const bits = [];
    if (x.all_joined_ms != null) bits.push(`all joined in ${x.all_joined_ms} ms`);
    if (x.all_joined === false) bits.push(`joined ${x.joined} of ${x.clients} in ${x.gave_up_after_ms} ms`);
    if (x.all_reconnected_ms != null) bits.push(`all back in ${x.all_reconnected_ms} ms, kept pId ${x.kept_pid}`);
    if (w.moves_acked_per_second != null && x.move_to_echo) bits.push(`${w.moves_acked_per_second} moves/s acked`);
    if (l.p50_ms != null) bits.push(`p50 ${l.p50_ms} ms p99 ${l.p99_ms} ms`);
    if (x.server_rss_bytes_per_client != null) bits.push(`${(x.server_rss_bytes_per_client / 1024).toFixed(1)} KiB/client`);
    console.error("  " + bits.join(", "));
  ' "$OUT/$kind-$name.json"
}

# A figure from a result file: field KIND-NAME JS-EXPRESSION-ON-r
field() {
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    let v; try { v = eval(process.argv[2]); } catch { v = undefined; }
    process.stdout.write(v == null ? "" : String(v));
  ' "$OUT/$1.json" "$2"
}

mkdir -p "$OUT"
if [ -z "${TABLE_ONLY:-}" ]; then
# --- build -----------------------------------------------------------------------------------
STARTED=$(date +%s)
rm -f "$OUT"/*.json "$OUT"/*.svg "$OUT"/*.log "$OUT"/run-info
if [ -z "${SKIP_BUILD:-}" ]; then
  log "building partyroom (release)"
  cargo build --release -p partyroom-arena -p partyroom-loadtest
fi
log "installing the original @signe/room (npm ci in bench/reference)"
(cd bench/reference && npm ci --no-audit --no-fund --loglevel=error)

# --- scenarios -------------------------------------------------------------------------------
# (a) join storm. The original's storm grows with N² frames; give it JOINS_ORIGINAL_MAX seconds
# and, if it cannot, run a smaller storm on both servers.
run partyroom joins joins --clients "$JOINS" --timeout 120
run original joins joins --clients "$JOINS" --timeout "$JOINS_ORIGINAL_MAX"
if [ "$(field original-joins 'r.results.all_joined')" != "true" ]; then
  run partyroom joins-small joins --clients "$JOINS_SMALL" --timeout 120
  run original joins-small joins --clients "$JOINS_SMALL" --timeout 120
fi

# (b) steady moves, open loop.
for kind in partyroom original; do
  run "$kind" moves moves --clients "$MOVERS" --rate "$RATE" --seconds "$MOVE_SECONDS"
done

# (c) closed loop: saturation throughput with MOVERS moves in flight, no per-client cap.
# partyroom's per-client message limit (100/s by default, a protection the original does not
# have) is lifted for this scenario only, so that both servers take every move they can.
SERVER_ARGS=(--max-messages-per-second 1000000)
for kind in partyroom original; do
  run "$kind" throughput throughput --clients "$MOVERS" --seconds "$MOVE_SECONDS" --warmup 2 --max-rate 0
done
SERVER_ARGS=()

# (d) steady moves at the original's saturation load.
SAT=$(field original-throughput 'r.results.saturation_moves_per_second')
[ -n "$SAT" ] || die "no saturation figure from the original's closed loop"
SAT_RATE=$(node -e 'console.log(Math.max(0.1, +process.argv[1] / +process.argv[2]).toFixed(3))' "$SAT" "$MOVERS")
for kind in partyroom original; do
  run "$kind" moves-at-saturation moves --clients "$MOVERS" --rate "$SAT_RATE" --seconds "$MOVE_SECONDS"
done

# (d2) batched sync: both servers with a 16 ms sync throttle (the original's `throttleSync`,
# the mode Colyseus uses with its 16 ms patch rate), at MOVERS x RATE and at BATCHED_FAST
# moves/s; BATCHED_RUNS runs of BATCHED_SECONDS each, alternating servers (the table shows
# the median server CPU: this figure is the noisiest).
SYNC_ARGS=(--sync-throttle-ms 16)
BATCHED_RATE=$(node -e 'console.log((+process.argv[1] / +process.argv[2]).toFixed(3))' "$BATCHED_FAST" "$MOVERS")
for i in $(seq "$BATCHED_RUNS"); do
  for kind in partyroom original; do
    run "$kind" "batched-slow-$i" moves --clients "$MOVERS" --rate "$RATE" --seconds "$BATCHED_SECONDS"
    run "$kind" "batched-fast-$i" moves --clients "$MOVERS" --rate "$BATCHED_RATE" --seconds "$BATCHED_SECONDS"
  done
done
SYNC_ARGS=()

# (e) idle clients: server memory per connection.
run partyroom idle idle --clients "$IDLE" --rooms "$IDLE_ROOMS" --seconds 5 --timeout 240
run original idle idle --clients "$IDLE_ORIGINAL" --rooms "$IDLE_ROOMS" --seconds 5 --timeout 240

# (f) reconnect storm: every socket cut at once, same session ids.
for kind in partyroom original; do
  run "$kind" reconnect reconnect --clients "$RECONNECT" --timeout 120
done

ELAPSED=$(( $(date +%s) - STARTED ))
log "all scenarios done in ${ELAPSED} s"
echo "$ELAPSED $(date -u +%Y-%m-%d)" >"$OUT/run-info"
fi # TABLE_ONLY

[ -f "$OUT/run-info" ] || die "no results in $OUT: run without TABLE_ONLY first"
read -r ELAPSED RUN_DATE <"$OUT/run-info"
SAT=$(field original-throughput 'r.results.saturation_moves_per_second')
SAT_RATE=$(field partyroom-moves-at-saturation 'r.params.rate')

# --- table -----------------------------------------------------------------------------------
TABLE="$OUT/table.md"
node - "$OUT" "$TABLE" "$PINNING" "$ELAPSED" "$SAT" "$SAT_RATE" "$RUN_DATE" <<'NODE'
const fs = require('fs');
const os = require('os');
const [out, tablePath, pinning, elapsed, sat, satRate, date] = process.argv.slice(2);
const load = (name) => {
  try {
    const r = JSON.parse(fs.readFileSync(`${out}/${name}.json`, 'utf8'));
    return r.error ? null : r;
  } catch { return null; }
};
const get = (r, path) => path.split('.').reduce((v, k) => (v == null ? v : v[k]), r);
const fmt = (v, digits) => {
  if (v == null || Number.isNaN(v)) return 'n/a';
  const d = digits ?? (Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2);
  return Number(v).toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
};
const rows = [];
// better: 'low' (lower is better: ratio original/partyroom) or 'high' (partyroom/original).
// The ratio column reads "how many times better partyroom is" (> 1: partyroom better).
const row = (scenario, metric, name, path, better, unit = '', scale = 1, notes = {}) => {
  const p = load(`partyroom-${name}`), o = load(`original-${name}`);
  const pv = p ? get(p, path) : null, ov = o ? get(o, path) : null;
  const pn = pv == null ? null : pv * scale, on = ov == null ? null : ov * scale;
  let ratio = 'n/a';
  if (pn != null && on != null && pn > 0 && on > 0) {
    const x = better === 'low' ? on / pn : pn / on;
    ratio = `${fmt(x, x >= 10 ? 0 : 1)}×`;
  }
  const cell = (v, side) => {
    if (v == null) return notes[side] ?? 'n/a';
    return `${fmt(v)}${unit}${notes[side] ? ` ${notes[side]}` : ''}`;
  };
  if (on == null && pn && notes.o && /^gave up/.test(notes.o)) {
    // The original did not finish: partyroom is at least (time given) / (partyroom's time) faster.
    ratio = `> ${fmt(get(o, 'results.gave_up_after_ms') / 1000 / pn, 0)}×`;
  }
  rows.push(`| ${scenario} | ${metric} | ${cell(pn, 'p')} | ${cell(on, 'o')} | ${ratio} |`);
};
const pj = load('partyroom-joins'), oj = load('original-joins');
const joinsN = pj ? fmt(pj.params.clients, 0) : '?';
const origJoinsOk = oj && oj.results.all_joined;
const gaveUp = oj && !origJoinsOk;
const origNote = gaveUp
  ? { o: `gave up: ${fmt(oj.results.joined, 0)} of ${fmt(oj.results.clients, 0)} joined in ${fmt(oj.results.gave_up_after_ms / 1000, 0)} s` }
  : {};
const partial = gaveUp ? { o: `(the ${oj.results.joined} that joined)` } : {};
row(`join storm, ${joinsN} clients, 1 room`, 'all have their first packet (s)', 'joins', 'results.all_joined_ms', 'low', '', 1 / 1000, origNote);
row('', 'first packet p50 (ms)', 'joins', 'results.first_packet.p50_ms', 'low', '', 1, partial);
row('', 'first packet p99 (ms)', 'joins', 'results.first_packet.p99_ms', 'low', '', 1, partial);
row('', 'frames received by all clients', 'joins', 'results.frames_received', 'low', '', 1, gaveUp ? { o: '(until it gave up)' } : {});
const ps = load('partyroom-joins-small');
if (ps) {
  const n = fmt(ps.params.clients, 0);
  row(`join storm, ${n} clients, 1 room`, 'all have their first packet (s)', 'joins-small', 'results.all_joined_ms', 'low', '', 1 / 1000);
  row('', 'first packet p50 (ms)', 'joins-small', 'results.first_packet.p50_ms', 'low');
  row('', 'first packet p99 (ms)', 'joins-small', 'results.first_packet.p99_ms', 'low');
  row('', 'frames received by all clients', 'joins-small', 'results.frames_received', 'low');
}
const pm = load('partyroom-moves');
const mv = pm ? `${pm.params.clients} clients × ${pm.params.rate} moves/s, ${pm.params.seconds} s` : 'moves';
row(`moves, ${mv}`, 'move-to-echo p50 (ms)', 'moves', 'results.move_to_echo.p50_ms', 'low');
row('', 'p95 (ms)', 'moves', 'results.move_to_echo.p95_ms', 'low');
row('', 'p99 (ms)', 'moves', 'results.move_to_echo.p99_ms', 'low');
row('', 'p999 (ms)', 'moves', 'results.move_to_echo.p999_ms', 'low');
row('', 'frames received per second', 'moves', 'results.window.packets_per_second', 'low');
row('', 'KiB received per second', 'moves', 'results.window.bytes_per_second', 'low', '', 1 / 1024);
row('', 'server CPU (% of one core)', 'moves', 'results.processes.server.cpu_percent_of_one_core', 'low');
const pt = load('partyroom-throughput');
row(`closed loop, ${pt ? pt.params.clients : '?'} clients, ${pt ? pt.params.seconds : '?'} s`, '**saturation throughput (moves/s acknowledged)**', 'throughput', 'results.saturation_moves_per_second', 'high');
row('', 'move-to-echo p50 (ms)', 'throughput', 'results.move_to_echo.p50_ms', 'low');
row('', 'p99 (ms)', 'throughput', 'results.move_to_echo.p99_ms', 'low');
row('', 'frames received per second', 'throughput', 'results.window.packets_per_second', 'high');
row('', 'server CPU (% of one core)', 'throughput', 'results.processes.server.cpu_percent_of_one_core', 'low');
row('', 'load generator CPU (% of one core)', 'throughput', 'results.processes.load_generator.cpu_percent_of_one_core', 'low');
row(`moves at the original's saturation load (${fmt(+sat, 0)} moves/s: ${pt ? pt.params.clients : '?'} × ${satRate}/s, ${pt ? pt.params.seconds : '?'} s)`, 'move-to-echo p50 (ms)', 'moves-at-saturation', 'results.move_to_echo.p50_ms', 'low');
row('', 'p99 (ms)', 'moves-at-saturation', 'results.move_to_echo.p99_ms', 'low');
row('', 'moves acknowledged per second', 'moves-at-saturation', 'results.window.moves_acked_per_second', 'high');
row('', 'server CPU (% of one core)', 'moves-at-saturation', 'results.processes.server.cpu_percent_of_one_core', 'low');
const pi = load('partyroom-idle'), oi = load('original-idle');
const idleLabel = pi && oi && pi.params.clients !== oi.params.clients
  ? `idle, ${fmt(pi.params.clients, 0)} (original: ${fmt(oi.params.clients, 0)}) clients over ${pi.params.rooms} rooms, held ${pi.params.seconds} s`
  : `idle, ${pi ? fmt(pi.params.clients, 0) : '?'} clients over ${pi ? pi.params.rooms : '?'} rooms, held ${pi ? pi.params.seconds : '?'} s`;
row(idleLabel, '**server RSS per client (KiB)**', 'idle', 'results.server_rss_bytes_per_client', 'low', '', 1 / 1024);
row('', 'server RSS with all clients (MiB)', 'idle', 'results.processes.server.rss_kib_end', 'low', '', 1 / 1024);
row('', 'time to connect them all (s)', 'idle', 'results.connected_ms', 'low', '', 1 / 1000);
const pr = load('partyroom-reconnect');
row(`reconnect storm, ${pr ? fmt(pr.params.clients, 0) : '?'} clients, 1 room`, 'all have their first packet again (s)', 'reconnect', 'results.all_reconnected_ms', 'low', '', 1 / 1000);
row('', 'reconnect p99 (ms)', 'reconnect', 'results.reconnect.p99_ms', 'low');
row('', 'clients that kept their pId', 'reconnect', 'results.kept_pid', 'high');

// Batched sync: median server CPU of the runs, against the targets.
const batched = [];
const median = (xs) => {
  const v = xs.filter((x) => x != null).sort((a, b) => a - b);
  return v.length ? v[Math.floor((v.length - 1) / 2)] : null;
};
for (const [name, target] of [['batched-slow', 5], ['batched-fast', 10]]) {
  const runs = (kind) => {
    const list = [];
    for (let i = 1; ; i++) {
      let r;
      try { r = JSON.parse(fs.readFileSync(`${out}/${kind}-${name}-${i}.json`, 'utf8')); } catch { break; }
      if (!r.error) list.push(r);
    }
    return list;
  };
  const p = runs('partyroom'), o = runs('original');
  if (!p.length) continue;
  const cpu = (rs) => rs.map((r) => get(r, 'results.processes.server.cpu_percent_of_one_core'));
  const pc = median(cpu(p)), oc = median(cpu(o));
  const first = p[0];
  const moves = first.params.clients * first.params.rate;
  const lat = (rs, k) => median(rs.map((r) => get(r, `results.move_to_echo.${k}`)));
  const sent = (rs) => median(rs.map((r) => get(r, 'results.window.moves_sent_per_second')));
  const echoed = (rs) => median(rs.map((r) => get(r, 'results.window.moves_acked_per_second')));
  const range = (xs) => { const v = xs.filter((x) => x != null); return v.length > 1 ? ` (${fmt(Math.min(...v), 1)}–${fmt(Math.max(...v), 1)})` : ''; };
  const ratio = pc && oc ? `${fmt(oc / pc, oc / pc >= 10 ? 0 : 1)}×` : 'n/a';
  batched.push(`| ${first.params.clients} clients × ${first.params.rate} moves/s (${fmt(moves, 0)} moves/s), ${p.length} × ${first.params.seconds} s | server CPU (% of one core), median${p.length > 1 ? ' (range)' : ''} | **${fmt(pc, 1)}**${range(cpu(p))} | ${fmt(oc, 1)}${range(cpu(o))} | ${ratio} | ≤ ${target} |`);
  const ticks = (rs) => rs.map((r) => get(r, 'results.processes.server.cpu_percent_of_one_core_from_ticks'));
  if (ticks(p).some((x) => x != null)) {
    batched.push(`|  | the same from clock ticks (what \`top\` shows), median (range) | ${fmt(median(ticks(p)), 1)}${range(ticks(p))} | ${fmt(median(ticks(o)), 1)}${range(ticks(o))} |  |  |`);
  }
  batched.push(`|  | moves sent / echoed per second | ${fmt(sent(p), 0)} / ${fmt(echoed(p), 0)} | ${fmt(sent(o), 0)} / ${fmt(echoed(o), 0)} |  |  |`);
  batched.push(`|  | move-to-echo p50 / p99 (ms) | ${fmt(lat(p, 'p50_ms'))} / ${fmt(lat(p, 'p99_ms'))} | ${fmt(lat(o, 'p50_ms'))} / ${fmt(lat(o, 'p99_ms'))} |  |  |`);
}

// Limits worth knowing, from the results themselves.
const notes = [];
for (const kind of ['partyroom', 'original']) {
  for (const name of ['moves', 'throughput', 'moves-at-saturation', 'batched-slow-1', 'batched-fast-1', 'reconnect', 'joins', 'idle']) {
    const r = load(`${kind}-${name}`);
    if (!r) continue;
    const lg = get(r, 'results.processes.load_generator.cpu_percent_of_one_core') ?? get(r, 'whole_run.load_generator.cpu_percent_of_one_core');
    const sv = get(r, 'results.processes.server.cpu_percent_of_one_core') ?? get(r, 'whole_run.server.cpu_percent_of_one_core');
    if (lg != null && lg >= 85) notes.push(`${kind} ${name}: the load generator used ${fmt(lg, 0)}% of its core (server ${fmt(sv, 0)}%): it may be the bottleneck of this figure.`);
    const skipped = get(r, 'results.window.frames_skipped_by_load_generator');
    if (skipped) notes.push(`${kind} ${name}: the load generator skipped ${skipped} frames it could not read in time.`);
    const lost = get(r, 'results.moves_never_acked');
    if (lost) notes.push(`${kind} ${name}: ${lost} moves were never acknowledged.`);
    const capped = get(r, 'results.moves_delayed_by_rate_cap');
    const sentN = get(r, 'results.window.moves_sent') || 0;
    if (capped && capped >= 0.01 * sentN) notes.push(`${kind} ${name}: the per-client cap of ${get(r, 'results.max_rate_per_client')} moves/s (under partyroom's limit of 100 messages/s per client) held back ${fmt(capped, 0)} of ${fmt(sentN, 0)} moves: the closed loop was capped, not saturated, for those clients.`);
  }
}
// How busy the rest of the machine was (other processes, in % of one core).
const others = [];
for (const kind of ['partyroom', 'original']) {
  for (const name of ['joins', 'joins-small', 'moves', 'throughput', 'moves-at-saturation', 'idle', 'reconnect']) {
    const r = load(`${kind}-${name}`);
    const v = r && get(r, 'whole_run.other_processes_cpu_percent_of_one_core');
    if (v != null) others.push([`${kind} ${name}`, v]);
  }
}
if (others.length) {
  const avg = others.reduce((a, [, v]) => a + v, 0) / others.length;
  const [worstName, worst] = others.reduce((a, b) => (b[1] > a[1] ? b : a));
  notes.push(`Other processes on the machine used ${fmt(avg, 0)}% of one core on average during the scenarios (most: ${fmt(worst, 0)}% during ${worstName})${worst >= 10 ? '; figures taken while they ran are noisier' : ''}.`);
}
let cpu = 'unknown CPU';
try { cpu = os.cpus()[0].model; } catch {}
let nodeV = process.version;
const md = [
  `Command: \`bash bench/run.sh\` (one run, ${fmt(+elapsed / 60, 1)} min). Date: ${date}. Machine: ${os.cpus().length} cores (${cpu}), ${fmt(os.totalmem() / 2 ** 30, 0)} GiB, Linux ${os.release()}; Node ${nodeV}; ${pinning}; loopback.`,
  '',
  'Servers: partyroom\'s `partyroom-arena --memory` (release build, `RUST_LOG=warn`) and the original `@signe/room` 3.2.1 running the same arena room (`bench/reference/arena-server.mjs`, in-memory storage). Load: `partyroom-loadtest` (built on `partyroom-client`, without state mirror), one fresh server per scenario. Server CPU is the time the server\'s threads spent on a CPU during the measured window, in % of one core, from the scheduler\'s exact count (`/proc/<pid>/task/*/schedstat`); the kernel\'s clock-tick figure (`/proc/<pid>/stat`, what `top` shows, sampled at each kernel clock tick) is in the JSON too and, for the batched runs, in the table. Ratio = how many times better partyroom is (original ÷ partyroom for times, latencies, CPU and memory; partyroom ÷ original for throughput). In the closed loop, clients send their next move as soon as the previous one echoed, with no per-client cap, and partyroom runs with `--max-messages-per-second 1000000` (its default limit of 100 messages per second and client is a protection the original does not have).',
  '',
  '| Scenario | Figure | partyroom | @signe/room | Ratio |',
  '|---|---|---|---|---|',
  ...rows,
  '',
  ...(batched.length ? [
    'Batched sync: both servers with a 16 ms sync throttle (partyroom `--sync-throttle-ms 16`, the original\'s `throttleSync: 16`; at most one patch per 16 ms, leading and trailing edge: the mode Colyseus uses with its 16 ms patch rate, for which 13-16 % and 27 % of a core at these loads are reported for Colyseus 0.18 on this kind of machine; Colyseus is not run by this script). Runs alternate between the servers; the CPU figure is the median of the runs.',
    '',
    '| Load | Figure | partyroom | @signe/room | Ratio | Target (partyroom) |',
    '|---|---|---|---|---|---|',
    ...batched,
    '',
    'A move that is not echoed was merged into a later one of the same client: within one 16 ms window a server sends each player\'s last position only. Latency is counted for echoed moves.',
    '',
  ] : []),
  ...(notes.length ? ['Limits seen in this run:', '', ...notes.map((n) => `- ${n}`), ''] : []),
  'The load generator is one process on one core: where the notes above say it used most of its core, the server\'s figure is a lower bound (throughput) or an upper bound (times). (`partyroom-client` reads with a 4 KiB buffer; with tungstenite\'s default 128 KiB, zeroed before every read, the generator spent about 40 % of its CPU on that against the original.)',
  '',
  'Raw results (JSON, one per server and scenario) and plots of latency, throughput and CPU over time (SVG) are written to `target/bench-reference/`.',
];
fs.writeFileSync(tablePath, md.join('\n') + '\n');
NODE

cat "$TABLE"

if [ -z "${NO_WRITE:-}" ]; then
  node - "$ROOT/BENCHMARKS.md" "$TABLE" <<'NODE'
const fs = require('fs');
const [file, tablePath] = process.argv.slice(2);
const START = '<!-- reference-benchmark:start -->';
const END = '<!-- reference-benchmark:end -->';
let doc = fs.readFileSync(file, 'utf8');
const table = fs.readFileSync(tablePath, 'utf8').trimEnd();
if (!doc.includes(START) || !doc.includes(END)) {
  doc = doc.trimEnd() + `\n\n## partyroom vs @signe/room (reference benchmark)\n\n${START}\n${END}\n`;
}
const a = doc.indexOf(START) + START.length;
const b = doc.indexOf(END);
doc = doc.slice(0, a) + '\n' + table + '\n' + doc.slice(b);
fs.writeFileSync(file, doc);
NODE
  log "BENCHMARKS.md updated (section between the reference-benchmark markers)"
fi
