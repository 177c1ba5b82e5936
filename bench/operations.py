#!/usr/bin/env python3
"""bench/operations.py: the operations surface's costs (issue 14).

    bench/operations.py [COGNO]        (default: target/release/cogno)

1. Metrics scrape: a stack of 50 services (10 with an exec probe, so the
   health histograms are filled); BENCH_SCRAPES GET /metrics over the control
   socket; cogno's CPU per scrape from /proc/PID/stat utime+stime (clock
   ticks) and from the threads' schedstat run time (nanoseconds). Target:
   under 1 ms of cogno's CPU per scrape.
2. Event latency: `cogno events --json` as the subscriber; a service is
   SIGKILLed BENCH_KILLS times; for each, the time from the kill to the
   subscriber reading the service's first transition, and from the event's
   own timestamp to that read. Target: under 5 ms.
3. Idle wakeups: cogno's voluntary context switches (all threads, from
   /proc/PID/task/*/status) over BENCH_IDLE_SECS of an idle stack of 50
   services: without probes; with exec probes (interval 5s); with the same
   probes plus liveness (on_unhealthy: restart) and a start_timeout. The
   last two should match: liveness and deadlines add no wakeups of their
   own beyond the probes.

A benchmark, not a test: it prints figures, nothing fails.
Knobs (environment): BENCH_SCRAPES=1000 BENCH_KILLS=30 BENCH_IDLE_SECS=10
"""
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COGNO = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "target/release/cogno")
SCRAPES = int(os.environ.get("BENCH_SCRAPES", "1000"))
KILLS = int(os.environ.get("BENCH_KILLS", "30"))
IDLE_SECS = float(os.environ.get("BENCH_IDLE_SECS", "10"))
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[operations] {msg}", file=sys.stderr, flush=True)


def service_yaml(i, probe, liveness):
    s = f'  s{i:02d}:\n    command: ["sleep", "{100000 + i}"]\n    startsecs: 100ms\n'
    s += "    backoff: {initial: 10ms, max: 100ms}\n"
    if probe:
        s += '    health:\n      exec: ["true"]\n      interval: 5s\n      start_interval: 100ms\n'
        if liveness:
            s += "      on_unhealthy: restart\n    start_timeout: 60s\n"
    return s


class Stack:
    """A `cogno up` of 50 services in a fresh directory; stopped on exit."""

    def __init__(self, name, probes=0, liveness=False):
        self.dir = tempfile.mkdtemp(prefix=f"cogno-bench-ops-{name}.")
        self.data = os.path.join(self.dir, "data")
        config = os.path.join(self.dir, "cogno.yaml")
        with open(config, "w") as f:
            f.write("data_dir: ./data\nservices:\n")
            for i in range(50):
                f.write(service_yaml(i, i < probes, liveness))
        self.log = open(os.path.join(self.dir, "up.log"), "w")
        self.up = subprocess.Popen(
            [COGNO, "up", "--config", config], stdout=self.log, stderr=subprocess.STDOUT
        )
        for _ in range(600):
            if self.cli("healthcheck").returncode == 0:
                break
            time.sleep(0.1)
        else:
            sys.exit(f"the stack did not become ready; see {self.log.name}")
        self.socket = os.path.join(self.data, "run", "cogno.sock")

    def cli(self, *args):
        return subprocess.run(
            [COGNO, args[0], "--data", self.data, *args[1:]], capture_output=True, text=True
        )

    def get(self, path):
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.socket)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: cogno\r\nConnection: close\r\n\r\n".encode())
        while s.recv(65536):
            pass
        s.close()

    def close(self):
        self.up.send_signal(signal.SIGTERM)
        self.up.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def run_ns(pid):
    return sum(int(open(t).read().split()[0]) for t in glob.glob(f"/proc/{pid}/task/*/schedstat"))


def wakeups(pid):
    total = 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        for line in open(status):
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def scrape_cost():
    st = Stack("metrics", probes=10)
    try:
        pid = st.up.pid
        for _ in range(20):  # warm-up
            st.get("/metrics")
        t0, n0 = cpu_ticks(pid), run_ns(pid)
        for _ in range(SCRAPES):
            st.get("/metrics")
        ticks, ns = cpu_ticks(pid) - t0, run_ns(pid) - n0
        print(
            f"metrics scrape, 50 services: {ticks / TICK * 1000 / SCRAPES:.3f} ms CPU per scrape "
            f"(utime+stime over {SCRAPES} scrapes); {ns / 1e6 / SCRAPES:.3f} ms (schedstat)"
        )
    finally:
        st.close()


def event_latency():
    st = Stack("events")
    try:
        sub = subprocess.Popen(
            [COGNO, "events", "--json", "--data", st.data],
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        time.sleep(0.5)  # let the subscription be made before the first kill
        from_kill, from_event = [], []
        for k in range(KILLS):
            status = json.loads(st.cli("status", "--json").stdout)
            svc = status["services"][k % 50]
            os.kill(svc["pid"], signal.SIGKILL)
            killed = time.time()
            first = None
            while True:
                ev = json.loads(sub.stdout.readline())
                got = time.time()
                if ev.get("service") != svc["name"] or ev.get("kind") != "transition":
                    continue
                if first is None:
                    first = True
                    from_kill.append((got - killed) * 1000)
                    stamp = datetime.strptime(ev["t"], "%Y-%m-%dT%H:%M:%S.%fZ")
                    evt = stamp.replace(tzinfo=timezone.utc).timestamp()
                    from_event.append((got - evt) * 1000)
                if ev.get("to") == "running":
                    break
        sub.kill()

        def pct(xs, p):
            xs = sorted(xs)
            return xs[min(len(xs) - 1, int(p * len(xs)))]

        for name, xs in (("kill → subscriber", from_kill), ("event time → subscriber", from_event)):
            print(
                f"event latency, {name}: p50 {pct(xs, 0.5):.2f} ms, p95 {pct(xs, 0.95):.2f} ms, "
                f"max {max(xs):.2f} ms ({len(xs)} kills)"
            )
    finally:
        st.close()


def idle_wakeups():
    for name, probes, liveness in (
        ("no probes", 0, False),
        ("50 exec probes every 5s", 50, False),
        ("the same + liveness + start_timeout", 50, True),
    ):
        st = Stack("idle", probes=probes, liveness=liveness)
        try:
            time.sleep(1)  # past the start probes
            w0 = wakeups(st.up.pid)
            time.sleep(IDLE_SECS)
            w = wakeups(st.up.pid) - w0
            print(f"idle wakeups, {name}: {w} in {IDLE_SECS:g} s ({w / IDLE_SECS:.1f}/s)")
        finally:
            st.close()


def main():
    if not os.access(COGNO, os.X_OK):
        sys.exit(f"no {COGNO}: run `cargo build --release` first, or pass a cogno binary")
    version = subprocess.run([COGNO, "--version"], capture_output=True, text=True).stdout.strip()
    load = open("/proc/loadavg").read().split()[:3]
    log(f"{version}, {os.cpu_count()} CPUs, load average {' '.join(load)}")
    scrape_cost()
    event_latency()
    idle_wakeups()


main()
