#!/usr/bin/env bash
# Cluster mode, measured in one run on one machine (release builds, a throwaway PostgreSQL):
#
#   1. failover: the process test `kill_9_owner_under_load_fails_over` with a 3 s lease
#      (FAILOVER_LEASE_TTL_MS) over FAILOVER_ROUNDS kills: time from the kill -9 of a room's
#      owner to the first sync of the slowest of its 4 players on another node, p50/p99;
#   2. relay overhead: two nodes on core 0, a room owned by node 1 (a client holds it there);
#      100 clients x 1.5 moves/s connect to node 1 (direct) or node 2 (relayed), alternating
#      RELAY_ROUNDS times; move-to-echo p50/p99 of each;
#   3. throughput per core-second: two closed loops at once (100 clients each, no rate cap,
#      two load generators on core 1), on two rooms: both owned by one cluster node, then
#      each owned by one of two cluster nodes (servers on core 0); acknowledged moves per
#      second of server CPU, 2 nodes / 1 node. The same load on a standalone server (no
#      cluster, memory storage) gives the cost of cluster mode itself. The load is the same in
#      all three cases, so only the number of server processes (and cluster mode) differs.
#
#   bash bench/cluster.sh
#
# Prints the figures; raw JSON and server logs in target/bench-cluster/. SKIP_BUILD=1 reuses
# target/release; PARTS (default "failover relay throughput") runs only some parts;
# RELAY_CORE=1 puts the relaying node on the load generator's core instead of the owner's. Needs Debian's `postgresql` package (installed when missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-cluster}
FAILOVER_ROUNDS=${FAILOVER_ROUNDS:-20}
FAILOVER_LEASE_TTL_MS=${FAILOVER_LEASE_TTL_MS:-3000}
RELAY_ROUNDS=${RELAY_ROUNDS:-3}
THROUGHPUT_ROUNDS=${THROUGHPUT_ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
PARTS=${PARTS:-failover relay throughput}
part() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
BIN=target/release
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log

apt_install() {
  [ "$(id -u)" = 0 ] || { echo "install $* first" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v node >/dev/null || apt_install nodejs
# shellcheck source=scripts/lib/postgres.sh
. scripts/lib/postgres.sh
# shellcheck source=bench/lib.sh
. bench/lib.sh
ulimit -n 8192 2>/dev/null || true

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --quiet -p partyroom-arena -p partyroom-loadtest
fi
pg_start /tmp/partyroom-bench-pg 55632 partyroom_bench fsync=off max_connections=300
SECRET=bench-cluster-secret

PIDS=()
stop_nodes() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop_nodes; pg_stop' EXIT

# node NAME PREFIX [ARGS...]: start a cluster node (tables PREFIX) on core 0; sets NODE_PID
# and NODE_PORT.
node_start() {
  local name=$1 prefix=$2 log="$OUT/$1.log"
  shift 2
  : >"$log"
  local pin=("${PIN_SERVER[@]}")
  if [ -n "${NODE_CORE:-}" ] && [ ${#PIN_SERVER[@]} -gt 0 ]; then pin=(taskset -c "$NODE_CORE"); fi
  RUST_LOG=warn "${pin[@]}" "$BIN/partyroom-arena" --host 127.0.0.1 --port 0 \
    --cluster "$PG_URL" --node-id "$name" --cluster-secret "$SECRET" \
    --cluster-table-prefix "$prefix" --max-messages-per-second 1000000 "$@" >"$log" 2>&1 &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
  NODE_PORT=$(arena_port "$log" 20)
}

# load NAME PORT PID ARGS...: one load generator run on core 1, JSON to $OUT/NAME.json.
load() {
  local name=$1 port=$2 pid=$3
  shift 3
  "${PIN_LOAD[@]}" "$BIN/partyroom-loadtest" --url "ws://127.0.0.1:$port" --server-pid "$pid" \
    --label "$name" --json --no-progress "$@" >"$OUT/$name.json"
}

FAILOVER="not measured"
if part failover; then
echo "== 1. failover (lease ${FAILOVER_LEASE_TTL_MS} ms, ${FAILOVER_ROUNDS} kills)" >&2
PARTYROOM_TEST_POSTGRES_URL=$PG_URL FAILOVER_LEASE_TTL_MS=$FAILOVER_LEASE_TTL_MS \
  FAILOVER_ROUNDS=$FAILOVER_ROUNDS \
  cargo test --release --quiet -p partyroom-arena --test cluster \
  kill_9_owner_under_load_fails_over -- --nocapture 2>&1 | tee "$OUT/failover.log" >&2
FAILOVER=$(grep -o 'rounds=.*' "$OUT/failover.log" | tail -1)
fi

if part relay; then
echo "== 2. relay overhead" >&2
node_start relay-n1 bench_relay
n1_pid=$NODE_PID n1_port=$NODE_PORT
NODE_CORE=${RELAY_CORE:-} node_start relay-n2 bench_relay
n2_pid=$NODE_PID n2_port=$NODE_PORT
# The holder claims the room on node 1 and keeps it loaded there during the runs.
"$BIN/partyroom-loadtest" --url "ws://127.0.0.1:$n1_port" --json --no-progress \
  moves --room relay --clients 1 --rate 1 --seconds 100000 >/dev/null 2>&1 &
holder=$!
"$BIN/partyroom-loadtest" --url "ws://127.0.0.1:$n1_port" --json --no-progress \
  moves --room relay-light --clients 1 --rate 1 --seconds 100000 >/dev/null 2>&1 &
holder_light=$!
sleep 2
for round in $(seq "$RELAY_ROUNDS"); do
  order="direct relayed"
  [ $((round % 2)) -eq 0 ] && order="relayed direct"
  for kind in $order; do
    if [ "$kind" = direct ]; then port=$n1_port; else port=$n2_port; fi
    load "relay-$kind-$round" "$port" "$n1_pid" moves --room relay --clients 100 --rate 1.5 \
      --seconds "$SECONDS_PER_RUN"
    load "relay-light-$kind-$round" "$port" "$n1_pid" moves --room relay-light --clients 10 \
      --rate 5 --seconds "$SECONDS_PER_RUN"
  done
done
owner=$(curl -fsS "http://127.0.0.1:$n1_port/cluster" || true)
kill "$holder" "$holder_light" 2>/dev/null || true
wait "$holder" "$holder_light" 2>/dev/null || true
stop_nodes
echo "$owner" >"$OUT/relay-owner.json"
else RELAY_ROUNDS=0
fi

if part throughput; then
echo "== 3. throughput per core-second" >&2
closed() { echo throughput --clients 100 --seconds "$SECONDS_PER_RUN" --warmup 2 --max-rate 0 --room "$1"; }
# drive NAME PORT_A PID_A PORT_B PID_B: two closed loops at once, rooms NAME-a and NAME-b,
# through the two ports (the same one for a single server).
drive() {
  local name=$1 la lb
  # shellcheck disable=SC2046
  load "$name-a" "$2" "$3" $(closed "$name-a") &
  la=$!
  # shellcheck disable=SC2046
  load "$name-b" "$4" "$5" $(closed "$name-b") &
  lb=$!
  wait "$la" "$lb"
}
for round in $(seq "$THROUGHPUT_ROUNDS"); do
  # standalone: no cluster, memory storage, both rooms on it
  log="$OUT/standalone-$round.log"
  RUST_LOG=warn "${PIN_SERVER[@]}" "$BIN/partyroom-arena" --port 0 --memory \
    --max-messages-per-second 1000000 >"$log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  port=$(arena_port "$log" 20)
  sleep 0.5
  drive "standalone-$round" "$port" "$pid" "$port" "$pid"
  stop_nodes

  # one cluster node owning both rooms
  node_start "one-$round" "bench_tp$round"
  sleep 0.5
  drive "one-$round" "$NODE_PORT" "$NODE_PID" "$NODE_PORT" "$NODE_PID"
  stop_nodes

  # two cluster nodes, each owning one of the rooms
  node_start "two-a-$round" "bench_tq$round"
  a_pid=$NODE_PID a_port=$NODE_PORT
  node_start "two-b-$round" "bench_tq$round"
  b_pid=$NODE_PID b_port=$NODE_PORT
  sleep 0.5
  drive "two-$round" "$a_port" "$a_pid" "$b_port" "$b_pid"
  stop_nodes
  echo "throughput round $round of $THROUGHPUT_ROUNDS done" >&2
done
else THROUGHPUT_ROUNDS=0
fi

node - "$OUT" "$RELAY_ROUNDS" "$THROUGHPUT_ROUNDS" "$FAILOVER" <<'JS'
const fs = require("fs");
const [dir, relayRounds, tpRounds, failover] = [process.argv[2], +process.argv[3], +process.argv[4], process.argv[5]];
const read = (n) => JSON.parse(fs.readFileSync(`${dir}/${n}.json`, "utf8")).results;
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const f = (x, d = 2) => x.toFixed(d);
console.log(`failover: ${failover}`);
if (relayRounds) {
for (const [name, prefix, what] of [["", "relay", "100 clients x 1.5 moves/s"], [" light", "relay-light", "10 clients x 5 moves/s"]]) {
  const lat = { direct: { p50: [], p99: [] }, relayed: { p50: [], p99: [] } };
  for (let i = 1; i <= relayRounds; i++) for (const k of ["direct", "relayed"]) {
    const r = read(`${prefix}-${k}-${i}`).move_to_echo;
    lat[k].p50.push(r.p50_ms); lat[k].p99.push(r.p99_ms);
  }
  for (const k of ["direct", "relayed"]) console.log(`relay${name} ${k} (${what}): move-to-echo p50 ${lat[k].p50.map((x) => f(x)).join("; ")} ms, p99 ${lat[k].p99.map((x) => f(x)).join("; ")} ms`);
  const d50 = median(lat.relayed.p50) - median(lat.direct.p50), d99 = median(lat.relayed.p99) - median(lat.direct.p99);
  console.log(`relay${name} overhead (medians of the rounds): p50 +${f(d50)} ms, p99 +${f(d99)} ms`);
}
}
if (tpRounds) {
// Two load generators per case; a single server's CPU is sampled by both (take their mean),
// two servers' CPU is the sum.
const tp = { standalone: [], one: [], two: [] }, rate = { standalone: [], one: [], two: [] };
for (let i = 1; i <= tpRounds; i++) for (const k of ["standalone", "one", "two"]) {
  const a = read(`${k}-${i}-a`), b = read(`${k}-${i}-b`);
  const moves = a.saturation_moves_per_second + b.saturation_moves_per_second;
  const [ca, cb] = [a.processes.server.cpu_percent_of_one_core, b.processes.server.cpu_percent_of_one_core];
  const cpu = (k === "two" ? ca + cb : (ca + cb) / 2) / 100;
  tp[k].push(moves / cpu); rate[k].push(moves);
}
for (const k of ["standalone", "one", "two"]) console.log(`throughput ${k}: ${rate[k].map((x) => Math.round(x)).join("; ")} moves/s; per core-second ${tp[k].map((x) => Math.round(x)).join("; ")} (median ${Math.round(median(tp[k]))})`);
console.log(`two nodes / one node, per core-second: ${f(median(tp.two) / median(tp.one), 3)}`);
console.log(`one cluster node / standalone, per core-second: ${f(median(tp.one) / median(tp.standalone), 3)}`);
}
JS
