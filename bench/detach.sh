#!/usr/bin/env bash
# bench/detach.sh: how long `cogno up --detach` takes to return once the
# stack is ready (issue 13: within 100 ms).
#
#   bench/detach.sh [COGNO_BINARY]     (default: target/release/cogno)
#
# Each run starts a stack of 5 `sleep` services with `cogno up -d` (which
# waits, by default, following GET /events), notes the wall-clock time at
# which the command returned, and compares it with the timestamp of the
# stack's `ready` event (the `cogno` stream of `cogno logs --json`, stamped
# by the detached cogno when it published it); then `cogno down`. Prints
# p50/p95/max of (returned - ready). A benchmark, not a test: nothing fails.
#
# Knobs (environment): BENCH_RUNS=20
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
COGNO=${1:-$REPO/target/release/cogno}
RUNS=${BENCH_RUNS:-20}

log() { printf '[detach] %s\n' "$*" >&2; }
[ -x "$COGNO" ] || { log "error: no $COGNO: run \`cargo build --release\` first"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cogno-bench-detach.XXXXXX")
cleanup() {
    "$COGNO" down --data "$WORK/data" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

{
    echo "services:"
    for i in $(seq 1 5); do
        printf '  s%02d:\n    command: ["sleep", "%d"]\n    startsecs: 100ms\n' "$i" $((200000 + i))
    done
} >"$WORK/cogno.yaml"

log "$("$COGNO" --version), $(nproc) CPUs, load average $(cut -d" " -f1-3 /proc/loadavg), $RUNS runs"
python3 - "$COGNO" "$WORK" "$RUNS" <<'PY'
import datetime, json, subprocess, sys, time

cogno, work, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
common = ["--config", f"{work}/cogno.yaml", "--data", f"{work}/data"]
deltas = []
for _ in range(runs):
    subprocess.run([cogno, "up", "-d", *common], check=True, stdout=subprocess.DEVNULL)
    returned = time.time()
    out = subprocess.run([cogno, "logs", "cogno", "--json", "-n", "1000", *common[2:]],
                         check=True, capture_output=True, text=True).stdout
    ready = [json.loads(l)["t"] for l in out.splitlines() if "stack is ready" in l]
    subprocess.run([cogno, "down", *common[2:]], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not ready:
        sys.exit("no ready event in the `cogno` stream")
    t = datetime.datetime.fromisoformat(ready[-1].replace("Z", "+00:00")).timestamp()
    deltas.append((returned - t) * 1000)
deltas.sort()
pick = lambda q: deltas[min(len(deltas) - 1, int(q * len(deltas)))]
print(f"up -d returned after the ready event: p50 {pick(0.5):.1f} ms, "
      f"p95 {pick(0.95):.1f} ms, max {deltas[-1]:.1f} ms ({len(deltas)} runs; "
      "the event's time has millisecond resolution)")
PY
