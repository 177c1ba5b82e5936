#!/usr/bin/env bash
# bench/backup.sh: backup and restore of a 1 GiB database (issue 11: within
# 1.2x of `pg_dump -Fc | zstd` and `pg_restore` of the same data), and the
# latency an app sees while a backup runs.
#
#   bench/backup.sh [COGNO_BINARY]     (default: target/release/cogno; as root)
#
# 1. A stack of the bundled servers (PostgreSQL, Redis, Temporal) on free
#    ports, `cogno up -d`, and BENCH_GIB GiB of trace-like rows in the app
#    database (random ids, names and JSON attributes, an index: data that
#    compresses as real data does, unlike pgbench's blank-padded filler).
# 2. Interleaved, BENCH_RUNS times each: `cogno backup` of the running stack
#    (every database, Redis and Temporal, packed, read back and verified)
#    and the peer `pg_dump -Fc -Z0 DB | zstd -3 -T0` (the one database, not
#    verified); sizes of both.
# 3. `cogno restore` of the archive into a new data directory (initdb, start,
#    load, stop) and the peer `pg_restore` of the dump into a new database of
#    the running server.
# 4. App latency: a pgbench client doing a point read and a small insert at
#    a fixed rate (BENCH_RATE/s), BENCH_LAT_SECS without a backup, then while
#    `cogno backup` runs, then while the peer dump runs; p50/p99/max of each.
# A benchmark, not a test: nothing fails.
#
# Knobs (environment): BENCH_GIB=1 BENCH_RUNS=3 BENCH_RATE=50 BENCH_LAT_SECS=20
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
COGNO=${1:-$REPO/target/release/cogno}
GIB=${BENCH_GIB:-1}
RUNS=${BENCH_RUNS:-3}
RATE=${BENCH_RATE:-50}
LAT_SECS=${BENCH_LAT_SECS:-20}

log() { printf '[backup] %s\n' "$*" >&2; }
[ -x "$COGNO" ] || { log "error: no $COGNO: run \`cargo build --release\` first"; exit 1; }
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
command -v zstd >/dev/null || { log "error: zstd is missing: apt-get install zstd"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/cogno-bench-backup.XXXXXX")
chmod 0755 "$WORK"
STACK=(--config "$WORK/cogno.yaml" --data "$WORK/data")
cleanup() {
    "$COGNO" down "${STACK[@]}" >/dev/null 2>&1 || true
    "$COGNO" down --config "$WORK/cogno.yaml" --data "$WORK/restored" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
printf 'services:\n  postgres: {kind: postgres, port: %s}\n  redis: {kind: redis, port: %s}\n  temporal: {kind: temporal, port: %s, ui_port: %s}\n' \
    "$(free_port)" "$(free_port)" "$(free_port)" "$(free_port)" >"$WORK/cogno.yaml"

secs() { python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.2f}")' "$1"; }
now() { date +%s.%N; }
size_mib() { du -sm "$1" | cut -f1; }
var() { "$COGNO" env --json "${STACK[@]}" | python3 -c "import json, sys; print(json.load(sys.stdin)['env']['$1'])"; }

log "$("$COGNO" --version), $(nproc) CPUs, load average $(cut -d" " -f1-3 /proc/loadavg)"
"$COGNO" up -d "${STACK[@]}" >/dev/null
DB=$(var DATABASE_URL)
# The superuser's connection, for the peer commands (what `cogno backup` uses too).
ADMIN_PW=$(sed -n 's/^POSTGRES_ADMIN_PASSWORD=//p' "$WORK/data/secrets/.env")
PGPORT=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlparse(sys.argv[1]).port)' "$DB")
export PGPASSWORD=$ADMIN_PW PGHOST=127.0.0.1 PGPORT PGUSER=postgres
APPDB=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlparse(sys.argv[1]).path[1:])' "$DB")

log "loading ${GIB} GiB of trace-like rows into $APPDB"
t=$(now)
psql -q -v ON_ERROR_STOP=1 -d "$APPDB" <<'SQL'
CREATE TABLE spans (
    id bigserial PRIMARY KEY,
    trace_id uuid NOT NULL,
    name text NOT NULL,
    started timestamptz NOT NULL,
    duration_ms integer NOT NULL,
    attributes jsonb NOT NULL
);
SQL
# ~330 bytes a row on disk with its index: 3.2 million rows a GiB, in batches.
rows=$((GIB * 3200000))
batch=400000
for ((done_rows = 0; done_rows < rows; done_rows += batch)); do
    psql -q -v ON_ERROR_STOP=1 -d "$APPDB" -c "
      INSERT INTO spans (trace_id, name, started, duration_ms, attributes)
      SELECT md5(i::text || random()::text)::uuid,
             (ARRAY['llm.call','retrieve','embed','tool.search','http.get'])[1 + (i % 5)] || '/' || (i % 997),
             now() - (i || ' seconds')::interval,
             (random() * 5000)::int,
             jsonb_build_object('model', (ARRAY['gpt-4o','claude-3','llama-3'])[1 + (i % 3)],
                                'tokens', (random() * 4000)::int,
                                'prompt', md5(random()::text) || md5(random()::text) || md5(random()::text),
                                'user', 'user-' || (i % 10007))
      FROM generate_series($done_rows + 1, $done_rows + $batch) i"
done
psql -q -d "$APPDB" -c "CREATE INDEX spans_trace ON spans (trace_id)" -c "VACUUM ANALYZE spans"
DBSIZE=$(psql -tAd "$APPDB" -c "SELECT pg_database_size(current_database())")
log "loaded in $(secs "$t") s: database $((DBSIZE >> 20)) MiB"

mkdir -p "$WORK/out"
for ((r = 1; r <= RUNS; r++)); do
    rm -f "$WORK/out/"*
    t=$(now)
    "$COGNO" backup "${STACK[@]}" --to "$WORK/out/cogno.tar.zst" >/dev/null 2>"$WORK/backup.err"
    cb=$(secs "$t")
    t=$(now)
    "$PGBIN/pg_dump" -Fc -Z0 -d "$APPDB" | zstd -q -3 -T0 -o "$WORK/out/peer.dump.zst"
    pb=$(secs "$t")
    printf 'backup run %d: cogno backup %s s (%s MiB) | pg_dump -Fc -Z0 | zstd -3 -T0: %s s (%s MiB) | ratio %s\n' \
        "$r" "$cb" "$(size_mib "$WORK/out/cogno.tar.zst")" "$pb" "$(size_mib "$WORK/out/peer.dump.zst")" \
        "$(python3 -c "print(f'{$cb / $pb:.2f}')")"
done
cat "$WORK/backup.err" >&2

for ((r = 1; r <= RUNS; r++)); do
    "$COGNO" down --config "$WORK/cogno.yaml" --data "$WORK/restored" >/dev/null 2>&1 || true
    rm -rf "$WORK/restored"
    t=$(now)
    "$COGNO" restore "$WORK/out/cogno.tar.zst" --config "$WORK/cogno.yaml" --data "$WORK/restored" >/dev/null 2>"$WORK/restore.err"
    cr=$(secs "$t")
    psql -q -d postgres -c "DROP DATABASE IF EXISTS peer_restore" -c "CREATE DATABASE peer_restore"
    t=$(now)
    zstd -q -dc "$WORK/out/peer.dump.zst" | "$PGBIN/pg_restore" --no-owner -d peer_restore
    pr=$(secs "$t")
    printf 'restore run %d: cogno restore %s s | zstd -d | pg_restore: %s s | ratio %s\n' \
        "$r" "$cr" "$pr" "$(python3 -c "print(f'{$cr / $pr:.2f}')")"
done
cat "$WORK/restore.err" >&2
psql -q -d postgres -c "DROP DATABASE peer_restore"

# The app's view: a point read and an insert, at a fixed rate, logged per transaction.
cat >"$WORK/app.sql" <<'SQL'
\set id random(1, 3000000)
SELECT name, duration_ms FROM spans WHERE id = :id;
INSERT INTO spans (trace_id, name, started, duration_ms, attributes)
  VALUES (gen_random_uuid(), 'bench', now(), 1, '{}');
SQL
latency() { # $1: label; runs pgbench for LAT_SECS, prints p50/p99/max in ms
    rm -f "$WORK"/lat.*
    (cd "$WORK" && "$PGBIN/pgbench" -n -c 1 -R "$RATE" -T "$LAT_SECS" -l --log-prefix=lat -f app.sql "$APPDB" >/dev/null 2>&1)
    cat "$WORK"/lat.* | python3 -c '
import sys
us = sorted(int(l.split()[2]) for l in sys.stdin if l.strip())
p = lambda q: us[min(len(us) - 1, int(q * len(us)))] / 1000
print(f"{sys.argv[1]}: {len(us)} transactions, p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, max {us[-1] / 1000:.2f} ms")' "$1"
}
latency "app latency, no backup"
( sleep 1; "$COGNO" backup "${STACK[@]}" --to "$WORK/out/during.tar.zst" >/dev/null 2>&1 ) &
bpid=$!
latency "app latency, cogno backup running"
wait "$bpid"
( sleep 1; "$PGBIN/pg_dump" -Fc -Z0 -d "$APPDB" | zstd -q -3 -T0 -o "$WORK/out/during.dump.zst" ) &
bpid=$!
latency "app latency, pg_dump -Fc -Z0 | zstd -3 -T0 running"
wait "$bpid"
