#!/usr/bin/env bash
# `watch:` (issue 13): how fast a saved file restarts a service, against the
# floor of `cogno restart` and beside watchexec, and what watching a big tree
# costs cogno at rest.
#
#   bench/watch.sh [COGNO_BINARY]      (default target/release/cogno)
#
# (a) saved file → old process signalled: the service's SIGTERM handler
#     writes the time; (b) saved file → new process up: the new process
#     writes the time once started (the service is healthy at spawn,
#     startsecs 0, so this includes its own start, a Python interpreter's).
#     The same two for `cogno restart app` (from the command's start) and
#     for `watchexec -r` with the same debounce. p50/p95/max over
#     BENCH_RUNS (20) saves, BENCH_GAP (0.5 s) apart.
# (c) RSS (anonymous: what watching allocates) added to cogno by watching a tree of BENCH_FILES (100,000) files,
#     nine in ten under node_modules (ignored by default), and cogno's
#     context switches (every thread) over BENCH_IDLE_SECS (10) at rest.
#
# watchexec comes from `cargo install watchexec-cli --locked --root
# /var/cache/cogno-bench/cargo` (skipped with a note if absent). Works in a
# fresh /dev/shm directory, removed on exit with every process it started.
set -euo pipefail
COGNO=$(realpath "${1:-target/release/cogno}")
WATCHEXEC=${WATCHEXEC:-/var/cache/cogno-bench/cargo/bin/watchexec}
export COGNO WATCHEXEC
export BENCH_RUNS=${BENCH_RUNS:-20} BENCH_GAP=${BENCH_GAP:-0.5}
export BENCH_FILES=${BENCH_FILES:-100000} BENCH_IDLE_SECS=${BENCH_IDLE_SECS:-10}
export BENCH_DEBOUNCE_MS=${BENCH_DEBOUNCE_MS:-150}
exec python3 - <<'EOF'
import os, shutil, signal, statistics, subprocess, sys, tempfile, time

COGNO = os.environ["COGNO"]
WATCHEXEC = os.environ["WATCHEXEC"]
RUNS = int(os.environ["BENCH_RUNS"])
GAP = float(os.environ["BENCH_GAP"])
FILES = int(os.environ["BENCH_FILES"])
IDLE = float(os.environ["BENCH_IDLE_SECS"])
DEBOUNCE = int(os.environ["BENCH_DEBOUNCE_MS"])

work = tempfile.mkdtemp(prefix="cogno-bench-watch.", dir="/dev/shm")
started = []

APP = """\
import os, signal, sys, time
log = sys.argv[1]
def note(what):
    with open(log, "a") as f:
        f.write(f"{time.time():.6f} {what} {os.getpid()}\\n")
def term(*_):
    note("TERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
note("UP")
while True:
    signal.pause()
"""


def cleanup():
    # SIGTERM first: watchexec runs its command in a process group of its
    # own, which a SIGKILL of watchexec's group would leave running.
    for p in started:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in started:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    # Whatever still runs from the work directory was started here.
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if work.encode() in f.read():
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    shutil.rmtree(work, ignore_errors=True)


def spawn(argv, cwd):
    p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    started.append(p)
    return p


def entries(log):
    try:
        with open(log) as f:
            return [l.split() for l in f if l.strip()]
    except FileNotFoundError:
        return []


def wait_for(log, n, what, limit=30):
    """Waits until `log` holds n lines of `what`; returns the n-th time."""
    end = time.time() + limit
    while time.time() < end:
        seen = [float(t) for t, w, _ in entries(log) if w == what]
        if len(seen) >= n:
            return seen[n - 1]
        time.sleep(0.005)
    sys.exit(f"timed out waiting for {what} #{n} in {log}")


def stack(dir, watch, extra=""):
    os.makedirs(f"{dir}/src", exist_ok=True)
    with open(f"{dir}/app.py", "w") as f:
        f.write(APP)
    block = f"""
    watch:
      paths: [{watch}]
      debounce: {DEBOUNCE}ms{extra}""" if watch else ""
    with open(f"{dir}/cogno.yaml", "w") as f:
        f.write(f"""services:
  app:
    command: [python3, {dir}/app.py, {dir}.log]
    startsecs: 0s
    stop_timeout: 5s{block}
""")


def up(dir):
    p = spawn([COGNO, "up", "--config", f"{dir}/cogno.yaml", "--data", f"{dir}/data"], dir)
    wait_for(f"{dir}.log", 1, "UP")
    # Until the control socket answers, the stack is still starting.
    end = time.time() + 30
    while subprocess.run([COGNO, "status", "--data", f"{dir}/data"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
        if time.time() > end:
            sys.exit("cogno did not answer")
        time.sleep(0.05)
    return p


def latency(dir, trigger):
    """Per run: trigger → TERM of the old process, trigger → UP of the new."""
    # Beside the watched tree: a log inside it would restart the app forever.
    log = f"{dir}.log"
    sig, new = [], []
    for i in range(RUNS):
        time.sleep(GAP)
        t0 = trigger(i)
        sig.append(wait_for(log, i + 1, "TERM") - t0)
        new.append(wait_for(log, i + 2, "UP") - t0)
    return sig, new


def save(dir):
    def go(i):
        t0 = time.time()
        with open(f"{dir}/src/main.py", "w") as f:
            f.write(f"# save {i}\n")
        return t0
    return go


def restart(dir):
    def go(i):
        t0 = time.time()
        subprocess.run([COGNO, "restart", "app", "--data", f"{dir}/data"],
                       stdout=subprocess.DEVNULL, check=True)
        return t0
    return go


def ms(xs):
    xs = sorted(x * 1000 for x in xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return f"{statistics.median(xs):7.1f} {p95:7.1f} {xs[-1]:7.1f}"


def row(name, sig, new):
    print(f"{name:<28} signalled p50/p95/max {ms(sig)} ms   up p50/p95/max {ms(new)} ms", flush=True)


def per_thread(pid, key):
    seen = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(key):
                        seen[tid] = seen.get(tid, 0) + int(line.split()[1])
        except FileNotFoundError:
            pass  # the thread ended meanwhile
    return seen


def watches(pid):
    """inotify watches held by `pid`, from its descriptors' fdinfo."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    n += sum(1 for l in f if l.startswith("inotify wd:"))
        except OSError:
            pass
    return n


def rss_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])


def switches(pid):
    """Context switches of every thread, by thread id."""
    v = per_thread(pid, "voluntary_ctxt_switches:")
    for tid, n in per_thread(pid, "nonvoluntary_ctxt_switches:").items():
        v[tid] = v.get(tid, 0) + n
    return v


def woken(before, after):
    """Switches between two samples; a thread born meanwhile counts whole."""
    return sum(n - before.get(tid, 0) for tid, n in after.items())


def tree(dir):
    """FILES files: nine in ten under node_modules (100 per directory), the rest in src."""
    mods = FILES * 9 // 10
    for i in range(mods):
        d = f"{dir}/node_modules/pkg{i // 1000}/lib{(i // 100) % 10}"
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        open(f"{d}/f{i}.js", "w").close()
    for i in range(FILES - mods):
        d = f"{dir}/src/mod{i // 50}"
        if i % 50 == 0:
            os.makedirs(d, exist_ok=True)
        open(f"{d}/f{i}.py", "w").close()


def at_rest(p, label):
    time.sleep(2)
    # Anonymous memory is what watching allocates; the file-backed rest of
    # VmRSS is the binary's pages, which come and go with the page cache.
    anon, rss = rss_kib(p.pid, "RssAnon:"), rss_kib(p.pid, "VmRSS:")
    before = switches(p.pid)
    time.sleep(IDLE)
    woke = woken(before, switches(p.pid))
    print(f"{label:<44} RssAnon {anon / 1024:6.2f} MiB (VmRSS {rss / 1024:6.2f})   "
          f"{watches(p.pid):5d} inotify watches   context switches in {IDLE:.0f} s at rest: {woke}", flush=True)
    return anon


try:
    print(f"cogno {COGNO}; debounce {DEBOUNCE} ms; {RUNS} runs; load {os.getloadavg()[0]:.2f}", flush=True)
    # (a), (b): cogno's watch, against cogno restart.
    d = f"{work}/cogno"
    stack(d, "src")
    c = up(d)
    row("cogno watch: (save)", *latency(d, save(d)))
    # The first UP of this series is the running one: count from it.
    with open(f"{d}.log", "w") as f:
        f.write(f"{time.time():.6f} UP 0\n")
    row("cogno restart app (floor)", *latency(d, restart(d)))
    c.send_signal(signal.SIGTERM)
    c.wait()

    if os.access(WATCHEXEC, os.X_OK):
        w = f"{work}/watchexec"
        stack(w, None)
        spawn([WATCHEXEC, "-w", "src", "--debounce", f"{DEBOUNCE}ms", "-r", "-n",
               "--stop-signal", "SIGTERM", "--", "python3", f"{w}/app.py", f"{w}.log"], w)
        wait_for(f"{w}.log", 1, "UP")
        row("watchexec -r (save)", *latency(w, save(w)))
    else:
        print(f"watchexec: not installed at {WATCHEXEC}; skipped")

    # (c): RSS and wakeups, without and with watching the big tree.
    t = f"{work}/tree"
    os.makedirs(t)
    started_tree = time.time()
    tree(t)
    print(f"tree: {FILES} files made in {time.time() - started_tree:.1f} s", flush=True)
    stack(t, None)
    c = up(t)
    base = at_rest(c, "cogno, no watch:")
    c.send_signal(signal.SIGTERM)
    c.wait()
    stack(t, ".")
    c = up(t)
    watched = at_rest(c, "cogno, watch: [.] (node_modules ignored)")
    print(f"RssAnon added by watching: {(watched - base) / 1024:.2f} MiB", flush=True)
    c.send_signal(signal.SIGTERM)
    c.wait()
    # The same tree with node_modules walked and watched too, for comparison.
    stack(t, ".", "\n      default_ignore: false")
    c = up(t)
    every = at_rest(c, "cogno, watch: [.], default_ignore: false")
    print(f"RssAnon added by watching everything: {(every - base) / 1024:.2f} MiB", flush=True)
    c.send_signal(signal.SIGTERM)
    c.wait()
    if os.access(WATCHEXEC, os.X_OK):
        p = spawn([WATCHEXEC, "-w", ".", "-i", "node_modules/**", "-r", "-n",
                   "--", "python3", f"{t}/app.py", f"{t}.log"], t)
        at_rest(p, "watchexec -w . -i 'node_modules/**'")
finally:
    cleanup()
EOF
