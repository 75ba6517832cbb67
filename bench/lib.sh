# Shared by bench/ab.sh and bench/instructions.sh (sourced, not run).

# Cores: the server on core 0, the load generator on core 1, when there are two.
PIN_SERVER=()
PIN_LOAD=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0)
  PIN_LOAD=(taskset -c 1)
fi

# arena_port LOGFILE SECONDS: the port a starting arena server printed to LOGFILE, waiting up
# to SECONDS; exits with the log when it never does.
arena_port() {
  local logfile=$1 port=
  for _ in $(seq $(($2 * 10))); do
    port=$(sed -n 's/^partyroom listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$logfile" | head -1 || true)
    [ -n "$port" ] && { echo "$port"; return; }
    sleep 0.1
  done
  cat "$logfile" >&2
  echo "the server did not start" >&2
  exit 1
}
