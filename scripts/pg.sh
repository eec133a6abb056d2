#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests and benchmarks, from Debian's `postgresql`
# package (scripts/setup.sh installs it), on a free loopback port.
#
#   scripts/pg.sh start DIR   creates a cluster in DIR/data if there is none (user secsgate,
#                             password auth on TCP), starts it on 127.0.0.1 (a free port the
#                             first time, the same port again after a stop), writes DIR/pid
#                             and DIR/url, and prints the URL:
#                             postgres://secsgate:PASSWORD@127.0.0.1:PORT/postgres
#   scripts/pg.sh stop DIR    stops the server by its PID (fast shutdown) and waits for it
#   scripts/pg.sh url DIR     prints the URL again
#
# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user the
# package creates, and DIR is handed to it (DIR's parent must let that user through, as /tmp
# does).
set -euo pipefail

usage() { echo "usage: $0 start|stop|url DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "pg.sh: no PostgreSQL server under /usr/lib/postgresql/*/bin; run scripts/setup.sh" >&2
  exit 1
fi

as_owner=()
if [ "$(id -u)" -eq 0 ]; then
  as_owner=(runuser -u postgres --)
fi

case "$cmd" in
  start)
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      cat "$dir/url"
      exit 0
    fi
    if [ "$(id -u)" -eq 0 ]; then
      chown postgres:postgres "$dir"
      chmod 700 "$dir"
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
      printf '%s\n' "$password" > "$dir/password"
      [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$dir/password"
      "${as_owner[@]}" "$bin/initdb" -D "$dir/data" -U secsgate -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 --pwfile="$dir/password" >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        exit 1
      }
    fi
    if [ ! -f "$dir/port" ]; then
      python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' > "$dir/port"
    fi
    port=$(cat "$dir/port")
    # -w: pg_ctl returns once the server accepts connections (it reads postmaster.pid).
    "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -c listen_addresses=127.0.0.1 -k $dir" start >/dev/null || {
      tail -n 20 "$dir/server.log" >&2
      exit 1
    }
    head -n 1 "$dir/data/postmaster.pid" > "$dir/pid"
    printf 'postgres://secsgate:%s@127.0.0.1:%s/postgres\n' "$(cat "$dir/password")" "$port" > "$dir/url"
    cat "$dir/url"
    ;;
  stop)
    [ -f "$dir/pid" ] || exit 0
    pid=$(cat "$dir/pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -INT "$pid"   # fast shutdown: sessions ended, then the server exits
      timeout 60 tail --pid="$pid" -f /dev/null
    fi
    rm -f "$dir/pid"
    ;;
  url)
    cat "$dir/url"
    ;;
  *)
    usage
    ;;
esac
