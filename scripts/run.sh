#!/usr/bin/env bash
# scripts/run.sh — what `make run` calls after building: starts (or reuses) a
# PostgreSQL cluster under var/pg when no AHA_DATABASE_URL is set, applies the
# migrations, creates an admin API key on first start, runs aha-server in the
# foreground and prints its URL and key. Ctrl-C stops the server and the
# database it started. A second run reuses the cluster, its port and the key.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VAR=${AHA_DATA_DIR:-var}
mkdir -p "$VAR"
VAR=$(cd "$VAR" && pwd)
SERVER=${AHA_SERVER:-$ROOT/build/aha-server}
HOST=${AHA_HOST:-127.0.0.1}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
STARTED_PG=0
SERVER_PID=

say() { printf 'run: %s\n' "$*"; }
die() { printf 'run: %s\n' "$*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_free() { python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1",int(sys.argv[1])))' "$1" 2>/dev/null; }
# PostgreSQL refuses to run as root: as root, its tools run as `postgres`.
as_pg() { if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }

[ -x "$SERVER" ] || die "$SERVER is missing: run make first"

cleanup() {
    trap - INT TERM EXIT
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ "$STARTED_PG" = 1 ]; then
        say "stopping PostgreSQL"
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null || true
    fi
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

if [ -z "${AHA_DATABASE_URL:-}" ]; then
    [ -x "$PGBIN/initdb" ] || die "PostgreSQL server binaries not found (apt-get install postgresql)"
    # The cluster lives in var/pg, its socket in var/run. PostgreSQL runs as
    # `postgres` when we are root; if that user cannot reach var/ (a checkout
    # under root's closed home directory), the cluster goes to
    # /var/lib/aha/<hash of var/> instead, and var/pg points there.
    PGHOME=$VAR
    if [ "$(id -u)" = 0 ]; then
        mkdir -p "$VAR/run"
        chmod o+x "$VAR"
        if ! runuser -u postgres -- test -x "$VAR" 2>/dev/null; then
            PGHOME=/var/lib/aha/$(printf '%s' "$VAR" | sha256sum | cut -c1-16)
            mkdir -p "$PGHOME"
            say "user postgres cannot reach $VAR; the cluster lives in $PGHOME"
            [ -e "$VAR/pg" ] || ln -s "$PGHOME/pg" "$VAR/pg"
        fi
    fi
    PGDATA_DIR=$PGHOME/pg
    SOCK=$PGHOME/run
    mkdir -p "$SOCK" "$PGDATA_DIR"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$PGDATA_DIR" "$SOCK"
        chmod 700 "$PGDATA_DIR"
        chmod o+x "$PGHOME"
        as_pg test -w "$SOCK" ||
            die "PostgreSQL runs as user postgres, which cannot reach $PGHOME; set AHA_DATABASE_URL to use another database"
    fi
    if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
        say "initialising PostgreSQL in $PGDATA_DIR"
        as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -A trust -U aha -E UTF8 >"$VAR/pg-initdb.log" \
            || die "initdb failed: see $VAR/pg-initdb.log"
    fi
    if as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
        PGPORT=$(sed -n 4p "$PGDATA_DIR/postmaster.pid")
        say "reusing the running PostgreSQL on port $PGPORT"
    else
        PGPORT=$(cat "$VAR/pg.port" 2>/dev/null || true)
        if [ -z "$PGPORT" ] || ! port_free "$PGPORT"; then PGPORT=$(free_port); fi
        echo "$PGPORT" >"$VAR/pg.port"
        say "starting PostgreSQL on port $PGPORT (socket in $SOCK)"
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$SOCK/postgresql.log" -w \
            -o "-p $PGPORT -k $SOCK -c listen_addresses=''" start >/dev/null \
            || die "PostgreSQL did not start: see $SOCK/postgresql.log"
        STARTED_PG=1
    fi
    export AHA_DATABASE_URL="postgresql://aha@/postgres?host=$SOCK&port=$PGPORT"
fi

"$SERVER" migrate --data-dir "$VAR"
if [ ! -s "$VAR/admin.key" ]; then
    "$SERVER" keys create --name admin --scope admin | tail -n 1 >"$VAR/admin.key.new"
    chmod 600 "$VAR/admin.key.new"
    mv "$VAR/admin.key.new" "$VAR/admin.key"
    say "created an admin API key (kept in $VAR/admin.key)"
fi
KEY=$(cat "$VAR/admin.key")

PORT=${AHA_PORT:-8080}
if ! port_free "$PORT"; then
    [ -n "${AHA_PORT:-}" ] && die "port $PORT is in use"
    PORT=$(free_port)
fi

"$SERVER" --host "$HOST" --port "$PORT" --data-dir "$VAR" &
SERVER_PID=$!
for _ in $(seq 100); do
    curl -fs "http://$HOST:$PORT/healthz" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "aha-server exited; see the messages above"
    sleep 0.1
done
cat <<MSG

  aha is serving on http://$HOST:$PORT
  dashboard: http://$HOST:$PORT/dashboard/ (sign in with the key below)
  admin key: $KEY
  models:    $VAR/models/<id>/ (config.json, model.safetensors, tokenizer.json)

  curl -s http://$HOST:$PORT/v1/models -H "Authorization: Bearer $KEY"
  curl -s http://$HOST:$PORT/v1/chat/completions -H "Authorization: Bearer $KEY" \\
       -H "Content-Type: application/json" \\
       -d '{"model":"tiny-base","messages":[{"role":"user","content":"What is 12 + 7?"}],"max_tokens":64}'

  Ctrl-C stops the server and the database.
MSG
set +e
wait "$SERVER_PID"
status=$?
SERVER_PID=
exit $status
