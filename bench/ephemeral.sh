#!/usr/bin/env bash
# bench/ephemeral.sh: the overhead of `cogno run --ephemeral` (issue 13).
#
#   bench/ephemeral.sh [COGNO_BINARY]     (default: target/release/cogno)
#
# Runs `cogno run --ephemeral -- CMD` on the built-in stack (PostgreSQL,
# Redis, Temporal; no stack file) BENCH_RUNS times, one after the other, the
# command only recording the time it starts and the time it ends. Figures:
# from launching `cogno run` to the command's start (a throwaway data
# directory, initdb, every server started and healthy), and from the
# command's end to `cogno run`'s exit (the stack stopped in order, the
# directory removed). A benchmark, not a test: it prints figures, nothing fails.
#
# Knobs (environment): BENCH_RUNS=5
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
COGNO=$(realpath "${1:-$REPO/target/release/cogno}")
RUNS=${BENCH_RUNS:-5}

log() { printf '[ephemeral] %s\n' "$*" >&2; }
[ -x "$COGNO" ] || { log "error: no $COGNO: run \`cargo build --release\` first"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cogno-bench-ephemeral.XXXXXX")
chmod 755 "$WORK"
trap 'rm -rf "$WORK"' EXIT

log "$("$COGNO" --version), $(nproc) CPUs, load average $(cut -d" " -f1-3 /proc/loadavg), $RUNS runs"
# No stack file in the working directory and none named: the built-in stack.
cd "$WORK"
unset COGNO_CONFIG COGNO_DATA_DIR
python3 - "$COGNO" "$RUNS" "$WORK" <<'PY'
import statistics, subprocess, sys, time
cogno, runs, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
script = f'date +%s.%N > {work}/begin; date +%s.%N > {work}/end'
up, down = [], []
for i in range(runs):
    t0 = time.time()
    p = subprocess.run([cogno, "run", "--ephemeral", "--", "sh", "-c", script],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t1 = time.time()
    if p.returncode != 0:
        sys.exit(f"run {i + 1} failed ({p.returncode}):\n{p.stderr}")
    begin = float(open(f"{work}/begin").read())
    end = float(open(f"{work}/end").read())
    up.append((begin - t0) * 1000)
    down.append((t1 - end) * 1000)
    print(f"run {i + 1}: start -> command {up[-1]:8.0f} ms, command end -> exit {down[-1]:8.0f} ms",
          file=sys.stderr)
print(f"{'figure':<26} {'median':>8} {'min':>8} {'max':>8}  (ms, {runs} runs)")
for name, xs in [("start -> command starts", up), ("command end -> exit", down)]:
    print(f"{name:<26} {statistics.median(xs):8.0f} {min(xs):8.0f} {max(xs):8.0f}")
PY
