#!/usr/bin/env bash
# Install Autobahn|Testsuite's `wstest` (fuzzingclient mode) for Python 3 into a venv.
#
#   tests/autobahn/install.sh [VENV]     (default: target/autobahn-venv in the project root)
#
# autobahntestsuite 25.10.1 (the last release) is Python 2 code. This takes its sdist from
# PyPI, applies the Python 3 port kept beside this script (*.patch, made against the sdist
# with its CRLF line ends turned into LF), and installs it with pinned dependencies
# (requirements.txt). Needs python3 with venv (Debian: python3-venv), `patch`, and PyPI.
# Idempotent: a venv already made from the same pins and patches is left as it is. Prints
# the venv's path on stdout (the rest goes to stderr).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/target/autobahn-venv}"
python="${PYTHON:-python3}"
suite=autobahntestsuite
version=25.10.1

mkdir -p "$(dirname "$venv")"
venv="$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")"
stamp="$venv/.autobahn-installed"
want="$(cat "$here/requirements.txt" "$here"/*.patch | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/wstest" -a >/dev/null 2>&1; then
  echo "$venv"
  exit 0
fi

log() { echo "install.sh: $*" >&2; }
command -v "$python" >/dev/null 2>&1 || { log "no $python (set PYTHON=)"; exit 2; }
command -v patch >/dev/null 2>&1 || { log "no patch command (Debian: apt-get install patch)"; exit 2; }
if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  # Missing, or left half-made (say by a python3 without venv support): made anew.
  if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then log "$venv exists and is not a venv"; exit 2; fi
  log "creating venv $venv"
  "$python" -m venv --clear "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
log "installing pinned dependencies"
"${pip[@]}" install -r "$here/requirements.txt" >&2

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log "fetching $suite $version (sdist) and applying the Python 3 port"
"${pip[@]}" download --no-deps --no-binary :all: --no-build-isolation -d "$work" "$suite==$version" >&2
tar -xzf "$work/$suite-$version.tar.gz" -C "$work"
src="$work/$suite-$version"
find "$src" -type f \( -name '*.py' -o -name '*.txt' -o -name '*.cfg' -o -name '*.in' \) -exec sed -i 's/\r$//' {} +
for p in "$here"/*.patch; do
  patch -d "$src" -p1 --quiet --forward < "$p" >&2
done
"${pip[@]}" install --no-deps --no-build-isolation --force-reinstall "$src" >&2
"$venv/bin/wstest" -a >&2
echo "$want" > "$stamp"
echo "$venv"
