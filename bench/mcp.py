#!/usr/bin/env python3
"""bench/mcp.py: `cogno mcp` tool-call latency (issue 14; target < 50 ms).

    bench/mcp.py [COGNO]        (default: target/release/cogno)

Starts `cogno up` with 10 `sleep` services and one that prints 1,000 lines
(every 100th says `needle`), waits until it is ready, opens one MCP session
with the Python `mcp` SDK (as an agent would: `cogno mcp --data DIR` over
stdio) and times, client side, round trip included, BENCH_RUNS calls of
`list_services` and of `logs` with `grep` over the 1,000 lines. Prints
p50/p95/max per tool. A benchmark, not a test: nothing fails on a figure.

Knobs (environment): BENCH_RUNS=200  BENCH_WARMUP=20
"""

import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# This file is mcp.py: its own directory first in sys.path would shadow the
# `mcp` package it uses.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

REPO = os.path.dirname(HERE)
COGNO = os.path.abspath(
    sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "target/release/cogno")
)
RUNS = int(os.environ.get("BENCH_RUNS", "200"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "20"))
LINES = 1000


def log(msg):
    print(f"[mcp] {msg}", file=sys.stderr)


def stack_file(work):
    lines = ["services:"]
    for i in range(1, 11):
        lines.append(f"  s{i:02d}:\n    command: [sleep, '{100000 + i}']\n    startsecs: 100ms")
    printer = (
        f"i=0; while [ $i -lt {LINES} ]; do i=$((i+1)); "
        "if [ $((i % 100)) = 0 ]; then echo \"line $i needle\"; else echo \"line $i hay\"; fi; "
        "done; exec sleep 100000"
    )
    lines.append(f"  printer:\n    command: [sh, -c, '{printer}']\n    startsecs: 100ms")
    lines.append("data_dir: ./data")
    path = os.path.join(work, "cogno.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def ready(data):
    return subprocess.run([COGNO, "healthcheck", "--data", data], capture_output=True).returncode == 0


async def timed(session, tool, args):
    figures = []
    for i in range(WARMUP + RUNS):
        start = time.perf_counter()
        r = await session.call_tool(tool, args)
        took = (time.perf_counter() - start) * 1000
        if r.is_error:
            raise SystemExit(f"{tool} failed: {r.content}")
        if i >= WARMUP:
            figures.append(took)
    return figures


def report(name, figures):
    figures.sort()
    p = lambda q: figures[min(len(figures) - 1, int(q * len(figures)))]
    print(f"{name}\tp50 {p(0.5):.2f} ms\tp95 {p(0.95):.2f} ms\tmax {figures[-1]:.2f} ms\tmean {statistics.mean(figures):.2f} ms")


async def bench(data):
    params = StdioServerParameters(command=COGNO, args=["mcp", "--data", data])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            found = await session.call_tool("logs", {"services": ["printer"], "grep": "needle", "lines": LINES})
            hits = found.content[0].text.count("needle")
            if hits != LINES // 100:
                raise SystemExit(f"the search found {hits} lines, not {LINES // 100}")
            report("list_services", await timed(session, "list_services", {}))
            report(
                f"logs grep over {LINES} lines",
                await timed(session, "logs", {"services": ["printer"], "grep": "needle", "lines": LINES}),
            )


def main():
    if not os.access(COGNO, os.X_OK):
        raise SystemExit(f"[mcp] error: no {COGNO}: run `cargo build --release` first")
    work = tempfile.mkdtemp(prefix="cogno-bench-mcp.")
    up = None
    try:
        config = stack_file(work)
        data = os.path.join(work, "data")
        up = subprocess.Popen(
            [COGNO, "up", "--config", config],
            stdout=open(os.path.join(work, "up.log"), "w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not ready(data):
            if time.monotonic() > deadline:
                raise SystemExit("[mcp] the stack did not become ready:\n" + open(os.path.join(work, "up.log")).read())
            time.sleep(0.1)
        version = subprocess.run([COGNO, "--version"], capture_output=True, text=True).stdout.strip()
        log(f"{version}, {os.cpu_count()} CPUs, load average {' '.join(open('/proc/loadavg').read().split()[:3])}, {RUNS} calls each")
        asyncio.run(bench(data))
    finally:
        if up is not None and up.poll() is None:
            up.send_signal(signal.SIGTERM)
            up.wait()
        shutil.rmtree(work, ignore_errors=True)


main()
