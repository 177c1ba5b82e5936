#!/bin/bash
# The design's own quick-start entrypoint (what cogno replaces), rebuilt for
# bench/infra.sh. Runs as root, as the container's PID 1 (the harness puts it
# in a fresh PID namespace with `unshare --pid --fork`, as `docker run` does).
#
#   1. secrets: generated once with `openssl rand -hex` into DATA/.env
#   2. first start only: initdb (as postgres), append md5 lines to pg_hba.conf,
#      start postgres, a fixed `sleep 3`, create role and database with psql
#   3. `exec supervisord -n` (postgres + redis at priority 100, temporal 200)
#
# The design paths (/data, 5432, 6379, 7233) are defaults; the benchmark
# overrides them so the run never touches a real installation.
set -euo pipefail

export DATA=${DATA:-/data}
export PG_PORT=${PG_PORT:-5432}
export REDIS_PORT=${REDIS_PORT:-6379}
export TEMPORAL_PORT=${TEMPORAL_PORT:-7233}
export PG_BIN=${PG_BIN:-$(pg_config --bindir)}
export TEMPORAL_BIN=${TEMPORAL_BIN:-$(command -v temporal)}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

PGDATA=$DATA/postgresql
ENV_FILE=$DATA/.env

mkdir -p "$DATA/redis" "$DATA/temporal" "$DATA/run"
chown redis:redis "$DATA/redis"
chown postgres:postgres "$DATA/run"

# --- secrets -----------------------------------------------------------------
if [ ! -f "$ENV_FILE" ]; then
    echo "[entrypoint] generating secrets"
    {
        echo "NEXTAUTH_SECRET=$(openssl rand -hex 32)"
        echo "INTERNAL_API_SECRET=$(openssl rand -hex 32)"
        echo "JWT_SHARED_SECRET=$(openssl rand -hex 32)"
        echo "POSTGRES_PASSWORD=$(openssl rand -hex 16)"
        echo "REDIS_PASSWORD=$(openssl rand -hex 16)"
    } > "$ENV_FILE"
fi
set -a
# shellcheck source=/dev/null
. "$ENV_FILE"
set +a

# --- PostgreSQL cluster, first start only ---------------------------------------
if [ ! -f "$PGDATA/PG_VERSION" ]; then
    echo "[entrypoint] initdb"
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDATA" -E UTF8 > /dev/null
    echo "host all all 127.0.0.1/32 md5" >> "$PGDATA/pg_hba.conf"

    echo "[entrypoint] starting postgres, waiting 3 s"
    runuser -u postgres -- "$PG_BIN/postgres" -D "$PGDATA" -p "$PG_PORT" \
        -k "$DATA/run" -c listen_addresses=127.0.0.1 &
    pg=$!
    sleep 3
    runuser -u postgres -- psql -h "$DATA/run" -p "$PG_PORT" -v ON_ERROR_STOP=1 -q \
        -c "CREATE ROLE cognobserve LOGIN PASSWORD '$POSTGRES_PASSWORD'" \
        -c "CREATE DATABASE cognobserve OWNER cognobserve"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop > /dev/null
    wait "$pg" || true
    touch "$DATA/.initialized"
fi

echo "[entrypoint] exec supervisord"
exec supervisord -n -c "$HERE/supervisord.conf"
