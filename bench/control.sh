#!/usr/bin/env bash
# bench/control.sh: control-plane latency (issue 4).
#
#   bench/control.sh
#
# Starts `cogno up` with 10 `sleep` services, waits until it is ready, then
# measures with hyperfine the wall time of a whole `cogno healthcheck` and
# `cogno status` (process start, connect, one request, answer, exit), both
# with --data (the socket path given, as `HEALTHCHECK` would with
# COGNO_DATA_DIR) and with --config only (the stack file is read to find the
# data directory). A benchmark, not a test: it prints figures, nothing fails.
#
# Knobs (environment): COGNO_BIN=target/release/cogno  BENCH_RUNS=1000  BENCH_WARMUP=50
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
COGNO=${COGNO_BIN:-$REPO/target/release/cogno}
RUNS=${BENCH_RUNS:-1000}
WARMUP=${BENCH_WARMUP:-50}

log() { printf '[control] %s\n' "$*" >&2; }
[ -x "$COGNO" ] || { log "error: no $COGNO: run \`cargo build --release\` first"; exit 1; }
command -v hyperfine >/dev/null || { log "error: hyperfine is not installed"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cogno-bench-control.XXXXXX")
UP_PID=
cleanup() {
    if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null; then
        kill -TERM "$UP_PID" 2>/dev/null || true
        wait "$UP_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

{
    echo "services:"
    for i in $(seq 1 10); do
        printf '  s%02d:\n    command: ["sleep", "%d"]\n    startsecs: 100ms\n' "$i" $((100000 + i))
    done
} >"$WORK/cogno.yaml"
echo "data_dir: ./data" >>"$WORK/cogno.yaml"

"$COGNO" up --config "$WORK/cogno.yaml" >"$WORK/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 1 100); do
    "$COGNO" healthcheck --data "$WORK/data" >/dev/null 2>&1 && break
    sleep 0.1
done
"$COGNO" healthcheck --data "$WORK/data" >/dev/null || { log "the stack did not become ready:"; cat "$WORK/up.log" >&2; exit 1; }

log "$("$COGNO" --version), $(nproc) CPUs, load average $(cut -d" " -f1-3 /proc/loadavg), $RUNS runs each"
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/result.json" \
    -n "healthcheck --data" "$COGNO healthcheck --data $WORK/data" \
    -n "status --data" "$COGNO status --data $WORK/data" \
    -n "healthcheck --config" "$COGNO healthcheck --config $WORK/cogno.yaml" \
    -n "status --config" "$COGNO status --config $WORK/cogno.yaml" >&2

python3 - "$WORK/result.json" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
print(f"{'command':<22} {'mean':>8} {'median':>8} {'p95':>8} {'p99':>8} {'max':>8}  (ms)")
for r in res:
    t = sorted(x * 1000 for x in r["times"])
    q = lambda p: t[min(len(t) - 1, int(p * len(t)))]
    print(f"{r['command']:<22} {r['mean']*1000:8.2f} {r['median']*1000:8.2f} {q(0.95):8.2f} {q(0.99):8.2f} {t[-1]:8.2f}")
EOF
