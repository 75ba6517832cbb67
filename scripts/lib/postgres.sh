# shellcheck shell=bash
# A throwaway PostgreSQL server in a directory of its own, for scripts/test.sh (the storage and
# cluster tests) and scripts/cluster-demo.sh. Source this file, then:
#
#   pg_start DIR FIRST_PORT DBNAME [SERVER_OPTIONS...]
#
# initializes a server in DIR (as the `postgres` user when run as root; DIR is removed first),
# starts it on 127.0.0.1 on the first free port from FIRST_PORT, creates DBNAME, sets PG_URL to
# its address and arranges for `pg_stop` to run on exit. Needs Debian's `postgresql` package
# (installed with `apt_install` if that function is defined and the server is missing).

pg_bin=
pg_dir=

pg_as_postgres() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

pg_stop() {
  if [ -n "$pg_bin" ] && [ -n "$pg_dir" ] && [ -f "$pg_dir/data/postmaster.pid" ]; then
    pg_as_postgres "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  [ -n "$pg_dir" ] && rm -rf "$pg_dir"
}

pg_start() {
  local dir=$1 port=$2 db=$3
  shift 3
  if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    if declare -F apt_install >/dev/null; then apt_install postgresql; else
      echo "PostgreSQL is not installed (Debian: apt-get install postgresql)" >&2
      return 1
    fi
  fi
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  pg_dir=$dir
  pg_stop
  pg_dir=$dir
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  if [ "$(id -u)" = 0 ]; then install -d -o postgres -g postgres -m 700 "$dir"; else install -d -m 700 "$dir"; fi
  pg_as_postgres "$pg_bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
  trap pg_stop EXIT
  local opts="-p $port -k $dir -c listen_addresses=127.0.0.1"
  local o
  for o in "$@"; do opts="$opts -c $o"; done
  if ! pg_as_postgres "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o "$opts" >/dev/null; then
    cat "$dir/server.log" >&2
    return 1
  fi
  "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$port" -t 30
  # A database whose default collation is not byte order (ICU), so the tests show that the
  # storage sorts keys byte-wise by itself; plain UTF-8 if this server has no ICU.
  "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U postgres -T template0 --locale-provider=icu \
    --icu-locale=en-US "$db" 2>/dev/null \
    || "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db"
  PG_URL="postgres://postgres@127.0.0.1:$port/$db"
  echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}
