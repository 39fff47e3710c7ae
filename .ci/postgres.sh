#!/usr/bin/env bash
# A private PostgreSQL server for the search tests, on 127.0.0.1 at a free port, in a temporary folder.
#
#   eval "$(.ci/postgres.sh start)"   # installs postgresql if missing; exports PRETUNE_TEST_POSTGRES_URL
#   ...run tests...
#   .ci/postgres.sh stop              # stops the server and deletes its folder ($PRETUNE_PG_DIR)
#
# stdout carries only the export lines; progress goes to stderr. Set PRETUNE_PYTHON to a venv python to also
# install the psycopg 3 driver (the postgres extra's) there when it has no PostgreSQL driver.
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

pg_bin() {
    # Debian keeps the server tools outside PATH, under /usr/lib/postgresql/<version>/bin.
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
        log "installing postgresql from Debian packages"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq postgresql >&2
        dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    echo "$dir"
}

as_pg() {
    # initdb refuses to run as root: run the server as the postgres user when we are root.
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
    local bin dir port db=pretune_test user
    bin=$(pg_bin)
    dir=$(mktemp -d /tmp/pretune-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    user=$( [ "$(id -u)" = 0 ] && echo postgres || id -un )
    port=$(free_port)
    as_pg "$bin/initdb" -D "$dir/data" -U "$user" --auth=trust -E UTF8 >/dev/null
    # Loopback only, socket in our folder (not /var/run), no fsync: a throwaway test server.
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=50" start >/dev/null
    as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U "$user" "$db"
    if [ -n "${PRETUNE_PYTHON:-}" ] && ! "$PRETUNE_PYTHON" -c "import psycopg" 2>/dev/null \
            && ! "$PRETUNE_PYTHON" -c "import psycopg2" 2>/dev/null; then
        log "installing psycopg[binary] into $PRETUNE_PYTHON"
        "$PRETUNE_PYTHON" -m pip install -q 'psycopg[binary]>=3.1' >&2
    fi
    log "server running on 127.0.0.1:$port (folder $dir)"
    echo "export PRETUNE_PG_DIR=$dir"
    echo "export PRETUNE_TEST_POSTGRES_URL=postgresql://$user@127.0.0.1:$port/$db"
}

stop() {
    local dir=${1:-${PRETUNE_PG_DIR:-}}
    if [ -z "$dir" ] || [ ! -d "$dir/data" ]; then
        log "nothing to stop (pass the folder or set PRETUNE_PG_DIR)"
        return 0
    fi
    as_pg "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    rm -rf "$dir"
    log "stopped and removed $dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    *) echo "usage: $0 start | stop [DIR]" >&2; exit 2 ;;
esac
