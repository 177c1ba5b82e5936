#!/usr/bin/env bash
# bench/killstorm.sh: how fast the bundled servers come back from SIGKILL,
# with their default restart settings (issue 16.4).
#
#   bench/killstorm.sh [--kills N] [--gap S] [--only postgres|redis]
#
# Starts `cogno up` with PostgreSQL and Redis (no `backoff:` written, so the
# bundled defaults apply) in a fresh data dir under /var/tmp, waits until the
# stack is ready, then N times per server: SIGKILL its main process (the
# postmaster, redis-server) and time until `cogno status --json` shows it
# `running` (its health check passed) with a new pid. Kills follow each other
# GAP seconds after recovery (default 1), all within a minute or so, so the
# crash streak is never reset: the case where an exponential backoff grows.
# Prints every recovery, then p50 / p95 / max per server (target: p95 < 3 s).
#
# A benchmark, not a test: it prints figures, no thresholds.
# Knobs (environment): COGNO_BIN=target/release/cogno  BENCH_KEEP=1 (keep the work dir)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
KILLS=20
GAP=1
SERVERS=(postgres redis)
READY_TIMEOUT=120    # s, the first start (initdb included)
BACK_TIMEOUT=60      # s, one recovery

log() { printf '[killstorm] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

while (($#)); do
    case $1 in
        --kills) KILLS=$2; shift 2 ;;
        --gap) GAP=$2; shift 2 ;;
        --only) IFS=, read -ra SERVERS <<<"$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "run as root (postgres and redis run as their own users, as in the image)"
for cmd in pg_config redis-server python3; do
    command -v "$cmd" >/dev/null || die "$cmd not found (apt-get install postgresql redis-server python3)"
done
COGNO=${COGNO_BIN:-$REPO/target/release/cogno}
[ -x "$COGNO" ] || die "$COGNO not found: cargo build --release (or set COGNO_BIN)"

WORK=$(mktemp -d /var/tmp/cogno-killstorm.XXXXXX)
chmod 755 "$WORK"      # postgres and redis must traverse it
COGNO_PID=
cleanup() {
    if [ -n "$COGNO_PID" ] && kill -0 "$COGNO_PID" 2>/dev/null; then
        kill -TERM "$COGNO_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$COGNO_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$COGNO_PID" 2>/dev/null || true
    fi
    if [ -n "${BENCH_KEEP:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cat >"$WORK/cogno.yaml" <<YAML
services:
  postgres: {kind: postgres, port: $(free_port)}
  redis: {kind: redis, port: $(free_port)}
YAML

# "NAME STATE PID" for one service, from the control socket.
state_of() {
    "$COGNO" status --json --data "$WORK/data" 2>/dev/null | python3 -c '
import json, sys
for s in json.load(sys.stdin)["services"]:
    if s["name"] == sys.argv[1]:
        print(s["state"], s["pid"] or 0)' "$1" || true
}

now() { date +%s.%N; }

"$COGNO" up --config "$WORK/cogno.yaml" --data "$WORK/data" >"$WORK/cogno.log" 2>&1 &
COGNO_PID=$!
deadline=$(( $(date +%s) + READY_TIMEOUT ))
until grep -q "stack is ready" "$WORK/cogno.log"; do
    kill -0 "$COGNO_PID" 2>/dev/null || die "cogno exited; its output: $WORK/cogno.log"
    (( $(date +%s) < deadline )) || die "not ready within ${READY_TIMEOUT}s"
    sleep 0.2
done
log "ready; $KILLS kills per server, ${GAP}s apart"

for server in "${SERVERS[@]}"; do
    : >"$WORK/$server.times"
    for i in $(seq "$KILLS"); do
        read -r state pid <<<"$(state_of "$server")"
        [ "$state" = running ] && [ "$pid" -gt 0 ] || die "$server is $state before kill $i"
        t0=$(now)
        kill -KILL "$pid"
        while :; do
            read -r state newpid <<<"$(state_of "$server")"
            [ "$state" = running ] && [ "$newpid" != "$pid" ] && break
            python3 -c "import sys; sys.exit(float('$(now)') - $t0 > $BACK_TIMEOUT)" \
                || die "$server not back within ${BACK_TIMEOUT}s after kill $i"
            sleep 0.02
        done
        took=$(python3 -c "print(f'{$(now) - $t0:.3f}')")
        echo "$took" >>"$WORK/$server.times"
        printf '%s\tkill %d\tback in %ss\n' "$server" "$i" "$took"
        sleep "$GAP"
    done
done

for server in "${SERVERS[@]}"; do
    python3 - "$server" "$WORK/$server.times" <<'PY'
import sys
name, path = sys.argv[1], sys.argv[2]
t = sorted(float(l) for l in open(path) if l.strip())
pct = lambda p: t[min(len(t) - 1, max(0, round(p / 100 * len(t) + 0.5) - 1))]
print(f"{name}\tkills {len(t)}\tp50 {pct(50):.2f}s\tp95 {pct(95):.2f}s\tmax {t[-1]:.2f}s")
PY
done
