#!/usr/bin/env bash
# bench/core.sh: supervisor-core figures for cogno and its peers (issue 2).
#
#   bench/core.sh [--only NAME[,NAME...]] [--figure N[,N...]]
#
# NAME: cogno supervisord s6 runit horust pm2 tini   (default: all)
# N:    1 RSS, 2 idle CPU + wakeups, 3 time to 200 services, 4 first restart,
#       5 log throughput, 6 SIGTERM-to-exit              (default: all)
#
# A benchmark, not a test: it prints figures, one line per supervisor as
# `name figure unit  # note`, under a `## figN ...` header, and appends them as
# TSV to $BENCH_RESULTS. There are no thresholds. Run bench/install-peers.sh first.
#
# Knobs (environment):
#   BENCH_IDLE_SECS=30      fig 2 window        BENCH_SETTLE_SECS=2   settle before sampling
#   BENCH_SCALE_N=200       fig 3 services      BENCH_RESTART_RUNS=5  fig 4 kills (median)
#   BENCH_SCALE_RUNS=5      fig 3 launches per supervisor (median)
#   BENCH_RESTART_GAP=3     fig 4 s between kills (past every tool's restart-reset window)
#   BENCH_FLOOD_LINES=2000000                   BENCH_CACHE=/var/cache/cogno-bench
#   BENCH_FLOOD_RUNS=5      fig 5 floods per supervisor (median ratio, each to its own /dev/null run)
#   BENCH_RESULTS=$BENCH_CACHE/results.tsv      COGNO_BIN=target/release/cogno
#   BENCH_STDOUT=pipe       supervisor stdout: pipe to cat > file (as a container runtime), or file
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
BENCH_CACHE=${BENCH_CACHE:-/var/cache/cogno-bench}
IDLE_SECS=${BENCH_IDLE_SECS:-30}
SETTLE=${BENCH_SETTLE_SECS:-2}
SCALE_N=${BENCH_SCALE_N:-200}
SCALE_RUNS=${BENCH_SCALE_RUNS:-5}
RESTART_RUNS=${BENCH_RESTART_RUNS:-5}
RESTART_GAP=${BENCH_RESTART_GAP:-3}
FLOOD_LINES=${BENCH_FLOOD_LINES:-2000000}
FLOOD_RUNS=${BENCH_FLOOD_RUNS:-5}
RESULTS=${BENCH_RESULTS:-$BENCH_CACHE/results.tsv}
COGNO=${COGNO_BIN:-$REPO/target/release/cogno}
HORUST=${HORUST_BIN:-$BENCH_CACHE/cargo/bin/horust}
PM2_RUNTIME=${PM2_RUNTIME_BIN:-$BENCH_CACHE/npm/bin/pm2-runtime}
BIN=$BENCH_CACHE/bin
ALL_SUPS=(cogno supervisord s6 runit horust pm2 tini)
ALL_FIGS=(1 2 3 4 5 6)

# Unique argv[1] per figure, so /proc matching (bench/procwatch.c) finds our services only.
IDLE_ARG=1000000 SCALE_ARG=1000001 KILL_ARG=1000002 STOP_ARG=1000003

log() { printf '[core] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- options -----------------------------------------------------------------
sups=("${ALL_SUPS[@]}") figs=("${ALL_FIGS[@]}")
while (($#)); do
    case $1 in
        --only) IFS=, read -ra sups <<<"$2"; shift 2 ;;
        --figure) IFS=, read -ra figs <<<"$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "run as root (the peers are measured as a container init would run them)"

# --- helpers: build, work dir, cleanup ---------------------------------------
mkdir -p "$BIN" "$(dirname "$RESULTS")"
for prog in procwatch flood stopslow; do
    if [ ! -x "$BIN/$prog" ] || [ "$HERE/$prog.c" -nt "$BIN/$prog" ]; then
        gcc -O2 -Wall -o "$BIN/$prog" "$HERE/$prog.c"
    fi
done
PW=$BIN/procwatch

WORK=$(mktemp -d /dev/shm/cogno-bench.XXXXXX)
SUP_PID=""          # the supervisor under test (its own session: setsid)
CAT_PID=""          # the copier of its stdout pipe
EXTRA_PIDS=()       # anything else we started (baselines)

# Kill whatever we started: the supervisor's process group, then any service that
# outlived it (matched by our unique argv[1]), each by pid.
kill_leftovers() {
    local arg pid
    for arg in "$IDLE_ARG" "$SCALE_ARG" "$KILL_ARG" "$STOP_ARG" "$@"; do
        # An empty marker would match every process whose argv[1] is empty
        # (npm and npx rewrite their command line so): never kill by it.
        [ -n "$arg" ] || continue
        for pid in $("$PW" pids "$arg"); do kill -KILL "$pid" 2>/dev/null || true; done
    done
}

# stop_sup [SIGNAL]: orderly stop with a 15 s bound, then SIGKILL the whole group.
stop_sup() {
    local sig=${1:-TERM} i
    [ -n "$SUP_PID" ] || return 0
    kill -"$sig" "$SUP_PID" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$SUP_PID" 2>/dev/null && [ "$(awk '{print $3}' /proc/"$SUP_PID"/stat 2>/dev/null)" != Z ] || break
        sleep 0.1
    done
    kill -KILL -- -"$SUP_PID" 2>/dev/null || true
    wait "$SUP_PID" 2>/dev/null || true
    SUP_PID=""
    kill_leftovers "${FLOOD_TIMEFILE:-}"
    # The stdout copier ends at EOF, once nothing holds the pipe any more.
    if [ -n "$CAT_PID" ]; then
        for ((i = 0; i < 50; i++)); do kill -0 "$CAT_PID" 2>/dev/null || break; sleep 0.1; done
        kill "$CAT_PID" 2>/dev/null || true
        wait "$CAT_PID" 2>/dev/null || true
        CAT_PID=""
    fi
}

cleanup() {
    local rc=$?
    stop_sup KILL
    local p
    for p in "${EXTRA_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    kill_leftovers "${FLOOD_TIMEFILE:-}"
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# emit FIG SUP METRIC VALUE UNIT [NOTE]: print a figure line and record it.
emit() {
    local fig=$1 sup=$2 metric=$3 value=$4 unit=$5 note=${6:-}
    [[ ${QUIET:-} == BUSY* && $note != *BUSY* ]] && note="${note:+$note; }$QUIET"
    printf '%-12s %s %s%s\n' "$sup" "$value" "$unit" "${note:+  # $note}"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$fig" "$metric" "$sup" "$value" "$unit" "$note" "${QUIET:-}" >>"$RESULTS"
}
header() { printf '\n## %s\n' "$*"; }

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

# --- /proc accounting --------------------------------------------------------
# descendants PID: every live descendant of PID (not PID itself).
descendants() {
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END { for (p in parent) { q = parent[p]; while (q > 1) { if (q == root) { print p; break } q = parent[q] } } }'
}
# helpers_of PID ARG: descendants that are not services (s6-supervise, runsv, s6-log, ...).
helpers_of() {
    local svc
    svc=" $("$PW" pids "$2" | tr '\n' ' ') "
    local p
    for p in $(descendants "$1"); do
        [[ $svc == *" $p "* ]] || echo "$p"
    done
}
pss_kib() { local s=0 p v; for p in "$@"; do v=$(awk '/^Pss:/ {print $2}' /proc/"$p"/smaps_rollup 2>/dev/null || true); s=$((s + ${v:-0})); done; echo "$s"; }
rss_kib() { local s=0 p v; for p in "$@"; do v=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null || true); s=$((s + ${v:-0})); done; echo "$s"; }
cpu_ticks() { local s=0 p v; for p in "$@"; do v=$(sed 's/.*) //' /proc/"$p"/stat 2>/dev/null | awk '{print $12 + $13}' || true); s=$((s + ${v:-0})); done; echo "$s"; }
ctxsw() {
    local p
    for p in "$@"; do cat /proc/"$p"/task/*/status 2>/dev/null || true; done |
        awk '/^(non)?voluntary_ctxt_switches:/ {s += $2} END {print s + 0}'
}
CLK_TCK=$(getconf CLK_TCK)

# --- service spec -> per-supervisor config -----------------------------------
# A figure sets SVC_N and SVC_CMD (argv array) and calls launch SUP. Every
# supervisor gets SVC_N services s1..sN running SVC_CMD, restart always,
# stop timeout 5 s, output forwarded the way that tool does it in a container.
# FIG5=1 adds the tool's log forwarder where it has a separate one (s6-log, svlogd).
SVC_N=1 SVC_CMD=() FIG5=0

multi_service() { [ "$1" != tini ]; }          # tini supervises exactly one child
stop_signal() { if [ "$1" = runit ]; then echo HUP; else echo TERM; fi; }

write_run() { # DIR: an sh run script that execs SVC_CMD (s6, runit)
    mkdir -p "$1"
    printf '#!/bin/sh\nexec %s\n' "${SVC_CMD[*]}" >"$1/run"
    chmod +x "$1/run"
}

gen_cogno() {
    local d=$1 i
    {
        echo "shutdown_budget: 10s"
        echo "services:"
        for ((i = 1; i <= SVC_N; i++)); do
            printf '  s%d:\n    command: [%s]\n    restart: always\n    stop_timeout: 5s\n' \
                "$i" "$(printf '"%s", ' "${SVC_CMD[@]}" | sed 's/, $//')"
        done
    } >"$d/cogno.yaml"
    mkdir -p "$d/data"
    CMD=("$COGNO" up --config "$d/cogno.yaml" --data "$d/data")
    LOGS=("$d/out.log")
}
gen_supervisord() {
    local d=$1 i
    {
        printf '[supervisord]\nnodaemon=true\nlogfile=%s/supervisord.log\nlogfile_maxbytes=0\npidfile=%s/supervisord.pid\nchildlogdir=%s\n' "$d" "$d" "$d"
        for ((i = 1; i <= SVC_N; i++)); do
            printf '\n[program:s%d]\ncommand=%s\nautorestart=true\nstartsecs=1\nstopwaitsecs=5\n' "$i" "${SVC_CMD[*]}"
            printf 'redirect_stderr=true\nstdout_logfile=/dev/stdout\nstdout_logfile_maxbytes=0\n'
        done
    } >"$d/supervisord.conf"
    CMD=(supervisord -n -c "$d/supervisord.conf")
    LOGS=("$d/out.log")
}
gen_s6() {
    local d=$1 i
    for ((i = 1; i <= SVC_N; i++)); do write_run "$d/scan/s$i"; done
    LOGS=("$d/out.log")
    if ((FIG5)); then
        mkdir -p "$d/scan/s1/log"
        # n100 files of s=256 MiB (the maximum): nothing is rotated away during the run.
        printf '#!/bin/sh\nexec s6-log n100 s268435455 %s/s6log\n' "$d" >"$d/scan/s1/log/run"
        chmod +x "$d/scan/s1/log/run"
        LOGS=("$d/s6log/@*" "$d/s6log/current")
    fi
    CMD=(s6-svscan "$d/scan")
}
gen_runit() {
    local d=$1 i
    for ((i = 1; i <= SVC_N; i++)); do write_run "$d/sv/s$i"; done
    LOGS=("$d/out.log")
    if ((FIG5)); then
        mkdir -p "$d/sv/s1/log" "$d/svlog"
        printf 's0\nn0\n' >"$d/svlog/config"     # no rotation, keep everything
        printf '#!/bin/sh\nexec svlogd %s/svlog\n' "$d" >"$d/sv/s1/log/run"
        chmod +x "$d/sv/s1/log/run"
        LOGS=("$d/svlog/@*" "$d/svlog/current")
    fi
    CMD=(runsvdir -P "$d/sv")
}
gen_horust() {
    local d=$1 i
    mkdir -p "$d/services"
    for ((i = 1; i <= SVC_N; i++)); do
        printf 'command = "%s"\n\n[restart]\nstrategy = "always"\n\n[termination]\nwait = "5s"\n' \
            "${SVC_CMD[*]}" >"$d/services/s$i.toml"
    done
    CMD=("$HORUST" --services-path "$d/services" --uds-folder-path "$d" --config-path "$d/horust.toml")
    LOGS=("$d/out.log")
}
gen_pm2() {
    local d=$1 i args
    args=$(printf '"%s", ' "${SVC_CMD[@]:1}" | sed 's/, $//')
    {
        echo '{"apps": ['
        for ((i = 1; i <= SVC_N; i++)); do
            ((i > 1)) && echo ','
            printf '{"name": "s%d", "script": "%s", "args": [%s], "interpreter": "none", "autorestart": true, "kill_timeout": 5000, "out_file": "%s/pm2-out.log", "error_file": "%s/pm2-err.log", "merge_logs": true}' \
                "$i" "$(command -v "${SVC_CMD[0]}")" "$args" "$d" "$d"
        done
        echo ']}'
    } >"$d/ecosystem.json"
    export PM2_HOME=$d/pm2home
    CMD=("$PM2_RUNTIME" start "$d/ecosystem.json")
    LOGS=("$d/pm2-out.log")
}
gen_tini() {
    CMD=(tini -s -- "${SVC_CMD[@]}")
    LOGS=("$1/out.log")
}

available() {
    case $1 in
        cogno) [ -x "$COGNO" ] ;;
        supervisord) command -v supervisord >/dev/null ;;
        s6) command -v s6-svscan >/dev/null ;;
        runit) command -v runsvdir >/dev/null ;;
        horust) [ -x "$HORUST" ] ;;
        pm2) [ -x "$PM2_RUNTIME" ] ;;
        tini) command -v tini >/dev/null ;;
        *) return 1 ;;
    esac
}

# launch SUP: fresh dir, generate the config, start the supervisor in its own
# session. Its stdout goes, as in a container, into a pipe; a `cat` copies that to
# $RUN_DIR/out.log on /dev/shm (BENCH_STDOUT=file: straight to the file instead;
# supervisord's stdout_logfile=/dev/stdout then reopens that file with its own
# offset and overwrites its own log lines). stderr goes to err.log.
# Sets SUP_PID, CAT_PID, RUN_DIR, LOGS; T_LAUNCH is the wall clock just before exec.
launch() {
    local sup=$1
    RUN_DIR=$(mktemp -d "$WORK/$sup.XXXX")
    local n=$SVC_N
    multi_service "$sup" || SVC_N=1
    PATH=$BIN:$PATH "gen_$sup" "$RUN_DIR"
    SVC_N=$n
    echo "${CMD[*]}" >"$RUN_DIR/cmdline"
    local out=$RUN_DIR/out.log
    if [ "${BENCH_STDOUT:-pipe}" = pipe ]; then
        out=$RUN_DIR/stdout.fifo
        mkfifo "$out"
        cat <"$out" >"$RUN_DIR/out.log" &
        CAT_PID=$!
    fi
    T_LAUNCH=$EPOCHREALTIME
    PATH=$BIN:$PATH setsid "${CMD[@]}" >"$out" 2>"$RUN_DIR/err.log" </dev/null &
    SUP_PID=$!
}

# wait_services ARG N TIMEOUT: until N services run; fails (with the tail of the
# supervisor's stderr) otherwise.
wait_services() {
    if ! "$PW" wait-count "$1" "$2" "$3" >/dev/null; then
        log "$SUP: $2 services with argv[1]=$1 did not appear within $3 s; stderr tail:"
        tail -5 "$RUN_DIR/err.log" "$RUN_DIR/out.log" >&2 || true
        return 1
    fi
}

# --- figures -----------------------------------------------------------------
fig1_rss() {
    SVC_N=10 SVC_CMD=(sleep "$IDLE_ARG")
    launch "$SUP"
    local note=""; multi_service "$SUP" || note="1 child"
    [[ $QUIET == BUSY* ]] && note="${note:+$note; }$QUIET"
    wait_services "$IDLE_ARG" "$(multi_service "$SUP" && echo 10 || echo 1)" 30 || { stop_sup; return; }
    sleep "$SETTLE"
    local helpers; helpers=$(helpers_of "$SUP_PID" "$IDLE_ARG" | tr '\n' ' ')
    local own all
    own=$(rss_kib "$SUP_PID")
    all=$(rss_kib "$SUP_PID" $helpers)
    # VmRSS counts shared library pages once per process; PSS splits them (a note only).
    local pss_own pss_all
    pss_own=$(awk -v k="$(pss_kib "$SUP_PID")" 'BEGIN{printf "%.2f", k/1024}')
    pss_all=$(awk -v k="$(pss_kib "$SUP_PID" $helpers)" 'BEGIN{printf "%.2f", k/1024}')
    R1_OWN+=("$SUP $(awk -v k="$own" 'BEGIN{printf "%.2f", k/1024}') MiB  # PSS $pss_own MiB${note:+; $note}")
    R1_ALL+=("$SUP $(awk -v k="$all" 'BEGIN{printf "%.2f", k/1024}') MiB  # helpers: $(echo $helpers | wc -w); PSS $pss_all MiB${note:+; $note}")
    printf '%s\t%s\n' "$SUP" "$(for p in $helpers; do cat /proc/"$p"/comm 2>/dev/null; done | sort | uniq -c | xargs)" >>"$WORK/fig1.helpers"
    emit 1 "$SUP" rss_supervisor "$(awk -v k="$own" 'BEGIN{printf "%.2f", k/1024}')" MiB "PSS $pss_own MiB${note:+; $note}" >/dev/null
    emit 1 "$SUP" rss_with_helpers "$(awk -v k="$all" 'BEGIN{printf "%.2f", k/1024}')" MiB "helpers: $(echo $helpers | wc -w); PSS $pss_all MiB${note:+; $note}" >/dev/null
    stop_sup "$(stop_signal "$SUP")"
}

fig2_idle() {
    SVC_N=10 SVC_CMD=(sleep "$IDLE_ARG")
    launch "$SUP"
    local note=""; multi_service "$SUP" || note="1 child"
    [[ $QUIET == BUSY* ]] && note="${note:+$note; }$QUIET"
    wait_services "$IDLE_ARG" "$(multi_service "$SUP" && echo 10 || echo 1)" 30 || { stop_sup; return; }
    sleep "$SETTLE"
    local helpers; helpers=$(helpers_of "$SUP_PID" "$IDLE_ARG" | tr '\n' ' ')
    local c0 a0 s0 h0 t0 c1 a1 s1 h1 t1
    c0=$(cpu_ticks "$SUP_PID"); a0=$(cpu_ticks "$SUP_PID" $helpers)
    s0=$(ctxsw "$SUP_PID"); h0=$(ctxsw "$SUP_PID" $helpers); t0=$EPOCHREALTIME
    sleep "$IDLE_SECS"
    c1=$(cpu_ticks "$SUP_PID"); a1=$(cpu_ticks "$SUP_PID" $helpers)
    s1=$(ctxsw "$SUP_PID"); h1=$(ctxsw "$SUP_PID" $helpers); t1=$EPOCHREALTIME
    local secs; secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')
    local cpu_own cpu_all wk_own wk_all
    cpu_own=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" 'BEGIN{printf "%.0f", t*1000/hz}')
    cpu_all=$(awk -v t=$((a1 - a0)) -v hz="$CLK_TCK" 'BEGIN{printf "%.0f", t*1000/hz}')
    wk_own=$(awk -v n=$((s1 - s0)) -v s="$secs" 'BEGIN{printf "%.2f", n/s}')
    wk_all=$(awk -v n=$((h1 - h0)) -v s="$secs" 'BEGIN{printf "%.2f", n/s}')
    R2_CPU+=("$SUP $cpu_own ms  # +helpers: $cpu_all ms${note:+; $note}")
    R2_WK+=("$SUP $wk_own /s  # +helpers ($(echo $helpers | wc -w)): $wk_all /s${note:+; $note}")
    emit 2 "$SUP" idle_cpu_ms "$cpu_own" ms "window ${IDLE_SECS}s${note:+; $note}" >/dev/null
    emit 2 "$SUP" idle_cpu_ms_with_helpers "$cpu_all" ms "window ${IDLE_SECS}s${note:+; $note}" >/dev/null
    emit 2 "$SUP" idle_wakeups "$wk_own" /s "${note}" >/dev/null
    emit 2 "$SUP" idle_wakeups_with_helpers "$wk_all" /s "${note}" >/dev/null
    stop_sup "$(stop_signal "$SUP")"
}

fig3_scale() {
    if ! multi_service "$SUP"; then emit 3 "$SUP" start_${SCALE_N} n/a "" "supervises one child"; return; fi
    SVC_N=$SCALE_N SVC_CMD=(sleep "$SCALE_ARG")
    local r t1 runs=() note=""
    for ((r = 0; r < SCALE_RUNS; r++)); do
        launch "$SUP"
        if t1=$("$PW" wait-count "$SCALE_ARG" "$SCALE_N" 120); then
            runs+=("$(awk -v a="$T_LAUNCH" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')")
        else
            runs+=(timeout) note="; $("$PW" count "$SCALE_ARG") of $SCALE_N after 120 s"
        fi
        stop_sup "$(stop_signal "$SUP")"
    done
    local med; med=$(printf '%s\n' "${runs[@]}" | grep -v timeout | median)
    emit 3 "$SUP" start_${SCALE_N} "${med:-timeout}" s "median of ${#runs[@]}: ${runs[*]}$note"
}

fig3_baseline() {
    local r t0 t1 runs=()
    for ((r = 0; r < SCALE_RUNS; r++)); do
        t0=$EPOCHREALTIME
        bash -c 'for i in $(seq '"$SCALE_N"'); do sleep '"$SCALE_ARG"' & done; wait' 2>/dev/null &
        EXTRA_PIDS+=($!)
        t1=$("$PW" wait-count "$SCALE_ARG" "$SCALE_N" 60) || t1=""
        runs+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN{if (b=="") print "timeout"; else printf "%.3f", b-a}')")
        kill_leftovers
        wait "${EXTRA_PIDS[-1]}" 2>/dev/null || true
    done
    local med; med=$(printf '%s\n' "${runs[@]}" | grep -v timeout | median)
    emit 3 "shell-loop" start_${SCALE_N} "${med:-timeout}" s \
        "median of ${#runs[@]}: ${runs[*]}; bash: for i in \$(seq $SCALE_N); do sleep $SCALE_ARG & done"
}

fig4_restart() {
    if ! multi_service "$SUP"; then emit 4 "$SUP" first_restart n/a "" "does not restart its child"; return; fi
    # cogno: one kill per fresh start (its backoff state is not what is measured here).
    local fresh=0 runs=() i ms
    [ "$SUP" = cogno ] && fresh=1
    SVC_N=1 SVC_CMD=(sleep "$KILL_ARG")
    for ((i = 0; i < RESTART_RUNS; i++)); do
        if [ -z "$SUP_PID" ]; then
            launch "$SUP"
            wait_services "$KILL_ARG" 1 30 || { stop_sup; break; }
            sleep "$SETTLE"
        fi
        if ms=$("$PW" restart "$KILL_ARG" 10); then runs+=("$ms"); else runs+=(timeout); fi
        if ((fresh)); then stop_sup "$(stop_signal "$SUP")"; elif ((i + 1 < RESTART_RUNS)); then sleep "$RESTART_GAP"; fi
    done
    stop_sup "$(stop_signal "$SUP")"
    local med; med=$(printf '%s\n' "${runs[@]}" | grep -v timeout | median)
    emit 4 "$SUP" first_restart "$med" ms "median of ${#runs[@]}: ${runs[*]}$( ((fresh)) && echo '; fresh start per kill')"
}

# flood_wall DEST...: median producer wall time of 3 runs writing to DEST
# (a file path, or "|cat FILE" / "|cat|cat FILE" for a pipe into one or two cats).
flood_wall() {
    local tf=$WORK/flood-base.time i
    for i in 1 2 3; do
        case $1 in
            /dev/null) "$BIN/flood" "$tf" "$FLOOD_LINES" >/dev/null ;;
            '|cat') "$BIN/flood" "$tf" "$FLOOD_LINES" | cat >"$2" ;;
            '|cat|cat') "$BIN/flood" "$tf" "$FLOOD_LINES" | cat | cat >"$2" ;;
            *) "$BIN/flood" "$tf" "$FLOOD_LINES" >"$1" ;;
        esac
        cat "$tf"
    done | median
}
flood_baselines() {
    local t out=$WORK/flood-base.out
    FLOOD_BASE=$(flood_wall /dev/null)
    emit 5 "direct" flood_wall "$FLOOD_BASE" s "flood > /dev/null: the 1.00x reference (median of 3)"
    t=$(flood_wall "$out")
    emit 5 "direct-file" flood_wall "$t" s "flood > file on /dev/shm: $(awk -v a="$t" -v b="$FLOOD_BASE" 'BEGIN{printf "%.2fx", a/b}')"
    t=$(flood_wall '|cat' "$out")
    emit 5 "pipe-cat" flood_wall "$t" s "flood | cat > file on /dev/shm: $(awk -v a="$t" -v b="$FLOOD_BASE" 'BEGIN{printf "%.2fx", a/b}')"
    # What a forwarder that copies without any work of its own costs: the floor for a
    # supervisor whose stdout is itself a pipe (as under a container runtime).
    t=$(flood_wall '|cat|cat' "$out")
    emit 5 "pipe-cat-cat" flood_wall "$t" s "flood | cat | cat > file on /dev/shm: $(awk -v a="$t" -v b="$FLOOD_BASE" 'BEGIN{printf "%.2fx", a/b}')"
    rm -f "$out"
}

# Total bytes in the capture files (globs expanded now).
capture_bytes() { local f s=0; for f in $1; do [ -f "$f" ] && s=$((s + $(stat -c %s "$f"))); done; echo "$s"; }

# One flood through the supervisor: sets F5_RATIO, the producer's wall time over a
# /dev/null run measured just before (so that this VM's drift between runs cancels
# out), and F5_CHECK, what checklines.py found in the captured output.
fig5_once() {
    local base; base=$(flood_wall /dev/null)
    FLOOD_TIMEFILE=$WORK/$SUP.flood.time
    rm -f "$FLOOD_TIMEFILE"
    SVC_N=1 SVC_CMD=("$BIN/flood" "$FLOOD_TIMEFILE" "$FLOOD_LINES" linger) FIG5=1
    launch "$SUP"
    FIG5=0
    local i deadline=$((SECONDS + 600))
    while [ ! -s "$FLOOD_TIMEFILE" ] && ((SECONDS < deadline)); do sleep 0.2; done
    if [ ! -s "$FLOOD_TIMEFILE" ]; then
        stop_sup "$(stop_signal "$SUP")"
        F5_RATIO=timeout F5_CHECK="producer did not finish in 600 s"; return
    fi
    # Let the forwarder drain: until the captures (and the supervisor's own stdout,
    # which pm2-runtime also copies every line to) stop growing for 2 s, or for 0.6 s
    # once they hold every payload byte; bounded by the deadline.
    local want=$((FLOOD_LINES * 100)) last=-1 same=0 now watch="${LOGS[*]}"
    [[ " $watch " == *" $RUN_DIR/out.log "* ]] || watch="$watch $RUN_DIR/out.log"
    while ((SECONDS < deadline)); do
        now=$(capture_bytes "$watch")
        if ((now == last)); then ((++same)); else same=0; fi
        if ((same >= 10)) || { ((now >= want)) && ((same >= 3)); }; then break; fi
        last=$now; sleep 0.2
    done
    stop_sup "$(stop_signal "$SUP")"
    local t files=() f check
    t=$(cat "$FLOOD_TIMEFILE")
    for f in ${LOGS[*]}; do [ -f "$f" ] && files+=("$f"); done
    check=$(python3 "$HERE/checklines.py" "$FLOOD_LINES" "${files[@]}")
    # pm2-runtime writes the lines both to out_file and to its own stdout.
    [ "$SUP" = pm2 ] && check="$check; its stdout: $(python3 "$HERE/checklines.py" "$FLOOD_LINES" "$RUN_DIR/out.log")"
    rm -rf "$RUN_DIR"/*.log "$RUN_DIR"/s6log "$RUN_DIR"/svlog
    F5_RATIO=$(awk -v a="$t" -v b="$base" 'BEGIN{printf "%.2f", a/b}') F5_CHECK=$check
}

fig5_logs() {
    local r ratios=() checks=()
    for ((r = 0; r < FLOOD_RUNS; r++)); do
        fig5_once
        ratios+=("$F5_RATIO") checks+=("$F5_CHECK")
    done
    local med; med=$(printf '%s\n' "${ratios[@]}" | grep -v timeout | median)
    local how
    case $SUP in
        s6) how="s6-log logdir" ;; runit) how="svlogd logdir" ;; pm2) how="pm2-runtime out_file" ;;
        horust|tini) how="inherited stdout, no forwarder" ;; supervisord) how="stdout_logfile=/dev/stdout, maxbytes=0" ;;
        *) how="supervisor stdout" ;;
    esac
    # Every run's check is shown when they differ; one when they all agree.
    local uniq; uniq=$(printf '%s\n' "${checks[@]}" | sort -u | paste -sd'|')
    emit 5 "$SUP" flood_ratio "${med:-timeout}" x "median of ${#ratios[@]}: ${ratios[*]}; $how; $uniq"
}

fig6_term() {
    local n=10 note=""
    if ! multi_service "$SUP"; then n=1 note="1 child"; fi
    SVC_N=10 SVC_CMD=("$BIN/stopslow" "$STOP_ARG")
    launch "$SUP"
    wait_services "$STOP_ARG" "$n" 30 || { stop_sup; return; }
    sleep "$SETTLE"
    local sig secs
    sig=$(stop_signal "$SUP")
    if secs=$("$PW" term-exit "$SUP_PID" "$(kill -l "$sig")" "$STOP_ARG" 60); then
        [ "$sig" = HUP ] && note="${note:+$note; }SIGHUP (runsvdir exits on TERM without stopping services)"
        emit 6 "$SUP" term_to_exit "$secs" s "$note"
    else
        emit 6 "$SUP" term_to_exit timeout "" "sup or services still alive after 60 s${note:+; $note}"
    fi
    stop_sup KILL
}

# --- main --------------------------------------------------------------------
versions() {
    local v
    echo "# machine: nproc=$(nproc) kernel=$(uname -r) cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo) mem=$(awk '/^MemTotal/ {printf "%.0fGiB", $2/1048576}' /proc/meminfo) os=$(. /etc/os-release && echo "$PRETTY_NAME")"
    for v in supervisor s6 runit tini; do
        printf '# %s %s\n' "$v" "$(dpkg-query -W -f='${Version}' "$v" 2>/dev/null || echo missing)"
    done
    printf '# horust %s\n' "$(cargo install --list --root "$(dirname "$(dirname "$HORUST")")" 2>/dev/null | awk '/^horust/ {print $2}' | tr -d v: || echo missing)"
    printf '# pm2 %s (node %s)\n' "$(PM2_HOME=$WORK/pm2v "$PM2_RUNTIME" --version 2>/dev/null | tail -1 || echo missing)" "$(node --version 2>/dev/null)"
    printf '# cogno %s\n' "$( [ -x "$COGNO" ] && { "$COGNO" --version 2>/dev/null || echo "built $(date -u -r "$COGNO" +%FT%TZ)"; } || echo "not built ($COGNO)")"
    printf '# python %s, gcc %s\n' "$(python3 --version 2>&1 | cut -d' ' -f2)" "$(gcc -dumpfullversion)"
}

echo "# cogno bench/core.sh $(date -u +%FT%TZ)  load=$(cut -d' ' -f1-3 /proc/loadavg)"
versions
if awk '{exit !($1 > 0.5)}' /proc/loadavg; then log "warning: load average $(cut -d' ' -f1 /proc/loadavg): figures will be noisy"; fi

# wait_quiet: the box has 2 cores and other work (cargo builds) may share it. Before
# each measurement wait, up to BENCH_QUIET_MAX s (default 90), until the CPUs were
# >= 85 % idle over one second. QUIET says what was found (kept in the TSV notes).
cpu_idle_pct() {
    local a b
    a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
    local i tot=0 idle
    for ((i = 1; i < ${#a[@]}; i++)); do tot=$((tot + b[i] - a[i])); done
    idle=$((b[4] - a[4] + b[5] - a[5]))
    echo $((tot > 0 ? idle * 100 / tot : 100))
}
wait_quiet() {
    local deadline=$((SECONDS + ${BENCH_QUIET_MAX:-90})) pct
    while :; do
        pct=$(cpu_idle_pct)
        if ((pct >= 85)); then QUIET="idle ${pct}%"; return; fi
        if ((SECONDS >= deadline)); then QUIET="BUSY: idle only ${pct}%"; log "$QUIET"; return; fi
    done
}

run_fig() {
    local fig=$1
    for SUP in "${sups[@]}"; do
        if ! available "$SUP"; then
            case $fig in
                1) R1_OWN+=("$SUP pending  # not installed/built"); R1_ALL+=("$SUP pending") ;;
                2) R2_CPU+=("$SUP pending  # not installed/built"); R2_WK+=("$SUP pending") ;;
                *) emit "$fig" "$SUP" - pending "" "not installed/built" ;;
            esac
            continue
        fi
        wait_quiet
        log "fig $fig: $SUP ($QUIET)"
        "$2"
    done
}

R1_OWN=() R1_ALL=() R2_CPU=() R2_WK=() QUIET=""
for fig in "${figs[@]}"; do
    case $fig in
        1)  header "fig1 RSS, 10 idle sleep services, after ${SETTLE}s settle"
            : >"$WORK/fig1.helpers"
            run_fig 1 fig1_rss >/dev/null
            echo "# supervisor only"; printf '%s\n' "${R1_OWN[@]}" | awk '{printf "%-12s %s", $1, $2; $1=$2=""; print substr($0,2)}'
            echo "# supervisor + per-service helpers"; printf '%s\n' "${R1_ALL[@]}" | awk '{printf "%-12s %s", $1, $2; $1=$2=""; print substr($0,2)}'
            sed 's/^/# helpers of /' "$WORK/fig1.helpers" ;;
        2)  header "fig2 idle ${IDLE_SECS}s, 10 sleep services"
            run_fig 2 fig2_idle >/dev/null
            echo "# CPU time (utime+stime) in the window, supervisor only"; printf '%s\n' "${R2_CPU[@]}" | awk '{printf "%-12s %s", $1, $2; $1=$2=""; print substr($0,2)}'
            echo "# wakeups = context switches (all threads) per second"; printf '%s\n' "${R2_WK[@]}" | awk '{printf "%-12s %s", $1, $2; $1=$2=""; print substr($0,2)}' ;;
        3)  header "fig3 seconds from launch until $SCALE_N sleep services exist"
            wait_quiet; fig3_baseline
            run_fig 3 fig3_scale ;;
        4)  header "fig4 ms from SIGKILL of a service to its replacement's exec (median of $RESTART_RUNS)"
            run_fig 4 fig4_restart ;;
        5)  header "fig5 log throughput: producer wall time for $FLOOD_LINES x 100 B lines, ratio to > /dev/null"
            wait_quiet; flood_baselines
            run_fig 5 fig5_logs ;;
        6)  header "fig6 seconds from SIGTERM to supervisor exit + all services gone, 10 services x 1 s stop"
            run_fig 6 fig6_term ;;
        *) die "unknown figure $fig" ;;
    esac
done
