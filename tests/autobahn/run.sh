#!/usr/bin/env bash
# Run Autobahn|Testsuite's fuzzingclient against a WebSocket echo server and summarize.
#
#   tests/autobahn/run.sh URL [CASES] [OUTDIR]
#
#   URL     the echo server, e.g. ws://127.0.0.1:9001
#   CASES   comma-separated case patterns (default "*": all, 1.* to 13.*)
#   OUTDIR  where the spec and the reports go (default target/autobahn-reports in the
#           project root)
#
# Environment:
#   AUTOBAHN_EXCLUDE  comma-separated patterns to leave out (default "12.*,13.*", the
#                     permessage-deflate cases; set it to "" for a server that negotiates
#                     permessage-deflate, otherwise they all come out UNIMPLEMENTED)
#   AUTOBAHN_VENV     the venv (default target/autobahn-venv in the project root); made or
#                     brought up to date by install.sh
#   AUTOBAHN_AGENT    the server's name in the report (default "server")
#   AUTOBAHN_TIMEOUT  seconds before the run is stopped (default 3600)
#
# Prints one line per behavior class (OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED),
# the FAILED case ids and every case that is not a plain pass; exits 1 when a case FAILED,
# 2 on a usage or run error. Reports: OUTDIR/index.html (browsable), OUTDIR/index.json.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
url="${1:-}"
[ -n "$url" ] || { sed -n '2,22p' "$0" >&2; exit 2; }
cases="${2:-*}"
outdir="${3:-$root/target/autobahn-reports}"
exclude="${AUTOBAHN_EXCLUDE-12.*,13.*}"
venv="${AUTOBAHN_VENV:-$root/target/autobahn-venv}"
agent="${AUTOBAHN_AGENT:-server}"

venv="$(bash "$here/install.sh" "$venv")"
mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"
rm -f "$outdir"/index.json "$outdir"/*_case_*.json "$outdir"/*_case_*.html

"$venv/bin/python" - "$outdir/fuzzingclient.json" "$url" "$cases" "$exclude" "$outdir" "$agent" <<'PY'
import json, sys
spec_path, url, cases, exclude, outdir, agent = sys.argv[1:]
split = lambda s: [x.strip() for x in s.split(",") if x.strip()]
spec = {"outdir": outdir, "servers": [{"agent": agent, "url": url}],
        "cases": split(cases), "exclude-cases": split(exclude), "exclude-agent-cases": {}}
with open(spec_path, "w") as f:
    json.dump(spec, f, indent=2)
PY
echo "run.sh: spec $outdir/fuzzingclient.json (cases: $cases; excluded: ${exclude:-none})" >&2
set +e
( cd "$outdir" && timeout "${AUTOBAHN_TIMEOUT:-3600}" "$venv/bin/wstest" -m fuzzingclient -s "$outdir/fuzzingclient.json" ) > "$outdir/wstest.log" 2>&1
rc=$?
set -e
if [ ! -f "$outdir/index.json" ]; then
  echo "run.sh: wstest wrote no report (exit $rc); last lines of $outdir/wstest.log:" >&2
  tail -20 "$outdir/wstest.log" >&2
  exit 2
fi
if grep -q "Traceback" "$outdir/wstest.log"; then
  echo "run.sh: warning: wstest logged Python tracebacks (see $outdir/wstest.log)" >&2
fi
exec "$venv/bin/python" "$here/summarize.py" "$outdir"
