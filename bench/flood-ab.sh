#!/usr/bin/env bash
# bench/flood-ab.sh: figure 5 (log forwarding) for one or more cogno builds against the plain
# pipe references, interleaved run by run so that this VM's drift hits them all alike.
#
#   bench/flood-ab.sh [-n RUNS] COGNO_BIN [COGNO_BIN...]
#
# Each round runs, in turn: flood > /dev/null, flood | cat > file, flood | cat | cat > file, and
# each cogno build with the flood as its one service (stdout a FIFO read by cat > file, as in
# bench/core.sh). Prints the median producer wall time of each, and its ratio to /dev/null.
# A benchmark, not a test: no thresholds. Use it to tell a forwarder change from noise.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_CACHE=${BENCH_CACHE:-/var/cache/cogno-bench}
LINES=${BENCH_FLOOD_LINES:-2000000}
RUNS=15
if [ "${1:-}" = -n ]; then RUNS=$2; shift 2; fi
[ $# -ge 1 ] || { sed -n '2,11p' "$0"; exit 2; }

mkdir -p "$BENCH_CACHE/bin"
FLOOD=$BENCH_CACHE/bin/flood
[ -x "$FLOOD" ] && [ "$FLOOD" -nt "$HERE/flood.c" ] || gcc -O2 -Wall -o "$FLOOD" "$HERE/flood.c"

WORK=$(mktemp -d /dev/shm/cogno-flood-ab.XXXXXX)
trap 'pkill -KILL -f "$WORK" 2>/dev/null || true; rm -rf "$WORK"' EXIT
TF=$WORK/time OUT=$WORK/out

# One run of variant $1; prints the producer's wall time.
run() {
    rm -f "$TF"
    case $1 in
        null) "$FLOOD" "$TF" "$LINES" >/dev/null ;;
        cat) "$FLOOD" "$TF" "$LINES" | cat >"$OUT" ;;
        catcat) "$FLOOD" "$TF" "$LINES" | cat | cat >"$OUT" ;;
        *)
            printf 'services:\n  flood:\n    command: ["%s", "%s", "%s", "linger"]\n' \
                "$FLOOD" "$TF" "$LINES" >"$WORK/cogno.yaml"
            rm -rf "$WORK/data" "$WORK/fifo"
            mkfifo "$WORK/fifo"
            cat "$WORK/fifo" >"$OUT" &
            local cat_pid=$!
            setsid "$1" up --config "$WORK/cogno.yaml" --data "$WORK/data" >"$WORK/fifo" 2>/dev/null </dev/null &
            local pid=$!
            while [ ! -s "$TF" ]; do sleep 0.05; done
            kill "$pid"
            wait "$pid" "$cat_pid" 2>/dev/null || true
            ;;
    esac
    cat "$TF"
}

variants=(null cat catcat "$@")
declare -A times
for ((r = 0; r < RUNS; r++)); do
    for v in "${variants[@]}"; do times[$v]+="$(run "$v") "; done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
base=$(median <<<"${times[null]}")
for v in "${variants[@]}"; do
    m=$(median <<<"${times[$v]}")
    printf '%-40s %s s  %sx\n' "$v" "$m" "$(awk -v a="$m" -v b="$base" 'BEGIN{printf "%.2f", a/b}')"
done
