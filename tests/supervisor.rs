//! End-to-end behaviour of `cogno up` with real processes (the fixtures in
//! tests/fixtures): start order and gating, restarts and backoff, leftover
//! processes, shutdown, reaping, exit reasons, output and environment.
//!
//! Timing assertions only ever say "this happened after that" (from times the
//! fixtures record themselves) or "within a bound far above what is needed";
//! how fast cogno is is measured in bench/, not here.

use crate::common::*;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// Slack for comparing two `time.time()` values written by different
/// processes (the same clock; only float formatting differs).
const EPS: f64 = 0.001;

fn index_of(c: &Cogno, needle: &str) -> usize {
    c.find(needle)
        .unwrap_or_else(|| panic!("no line containing {needle:?} in:\n{}", c.output()))
}

fn assert_before(c: &Cogno, first: &str, then: &str) {
    let (a, b) = (index_of(c, first), index_of(c, then));
    assert!(
        a < b,
        "{first:?} (line {a}) should come before {then:?} (line {b}):\n{}",
        c.output()
    );
}

/// Waits for `n` lines of a service's output ending with "ready" (trap.py).
fn wait_ready(c: &Cogno, names: &[&str]) {
    for name in names {
        c.wait_line_by(&format!("`{name} | ready`"), TIMEOUT, |l| {
            l.starts_with(&format!("{name} ")) && l.ends_with("| ready")
        });
    }
}

/// The timestamp of the first line of a trap.py log whose event is `what`.
fn event_time(log: &str, what: &str) -> f64 {
    let lines = read_lines_of(log);
    let line = lines
        .iter()
        .find(|l| l.ends_with(&format!(" {what}")))
        .unwrap_or_else(|| panic!("{log} has no {what}: {lines:?}"));
    line.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn tiers_start_in_priority_order_each_after_the_previous_is_ready() {
    let s = Stack::new("tiers");
    let (port_a, port_c) = (free_port().to_string(), free_port().to_string());
    let (a, a_up, a2) = (s.file("a.start"), s.file("a.up"), s.file("a2.start"));
    let (b, b_end) = (s.file("b.start"), s.file("b.end"));
    let (c, c_up, d) = (s.file("c.start"), s.file("c.up"), s.file("d.start"));
    let (stamp, exit, http) = (
        fixture("stamp.py"),
        fixture("exit.py"),
        fixture("http_health.py"),
    );
    // Written in reverse order: only the priorities order them.
    s.write(&format!(
        r#"
services:
  t400:
    priority: 400
    command: {cmd_d}
    startsecs: 200ms
  t300:
    priority: 300
    command: {cmd_c}
    health:
      http: http://127.0.0.1:{port_c}/health
      start_interval: 50ms
  t200:
    priority: 200
    oneshot: true
    command: {cmd_b}
  t100:
    priority: 100
    command: {cmd_a}
    health:
      http: http://127.0.0.1:{port_a}/health
      start_interval: 50ms
  t100-plain:
    priority: 100
    command: {cmd_a2}
    startsecs: 1s
"#,
        cmd_a = argv(&[
            &stamp,
            &a,
            "--",
            &http,
            &port_a,
            "--delay",
            "0.3",
            "--up-file",
            &a_up
        ]),
        cmd_a2 = fx("stamp.py", &[&a2]),
        cmd_b = argv(&[
            &stamp,
            &b,
            "--",
            &exit,
            "--delay",
            "0.3",
            "--end-file",
            &b_end,
            "0"
        ]),
        cmd_c = argv(&[
            &stamp,
            &c,
            "--",
            &http,
            &port_c,
            "--delay",
            "0.8",
            "--up-file",
            &c_up
        ]),
        cmd_d = fx("stamp.py", &[&d]),
    ));
    let mut cogno = Cogno::up(&s);
    cogno.wait_line("t400: healthy");

    // cogno's own account, in order.
    assert_before(&cogno, "t100: healthy", "t200: started");
    assert_before(&cogno, "t100-plain: healthy", "t200: started");
    assert_before(&cogno, "t200: completed", "t300: started");
    assert_before(&cogno, "t300: healthy", "t400: started");

    // The processes' own clocks: each tier started after the previous one
    // was ready (an endpoint's time is written just before it listens).
    let (ta, ta_up, ta2) = (first_time(&a), first_time(&a_up), first_time(&a2));
    let (tb, tb_end) = (first_time(&b), first_time(&b_end));
    let (tc, tc_up, td) = (first_time(&c), first_time(&c_up), first_time(&d));
    assert!(ta_up - ta >= 0.3 - EPS);
    assert!(
        tb > ta_up,
        "t200 started ({tb}) before t100's health endpoint came up ({ta_up})"
    );
    assert!(tb > ta2, "t200 started ({tb}) before t100-plain ({ta2})");
    assert!(
        tc > tb_end,
        "t300 started ({tc}) before the t200 oneshot completed ({tb_end})"
    );
    assert!(tc_up - tc >= 0.8 - EPS);
    assert!(
        td > tc_up,
        "t400 started ({td}) before t300's health endpoint came up ({tc_up})"
    );
    for f in [&a, &a2, &b, &c, &d] {
        assert_eq!(read_lines_of(f).len(), 1, "{f}: started more than once");
    }

    cogno.signal(Signal::SIGTERM);
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
}

#[test]
fn depends_on_conditions_started_healthy_completed() {
    let s = Stack::new("depends");
    let port = free_port();
    let port_s = port.to_string();
    let (stamp, exit, http) = (
        fixture("stamp.py"),
        fixture("exit.py"),
        fixture("http_health.py"),
    );
    let (db, db_up, side) = (s.file("db.start"), s.file("db.up"), s.file("sidecar.start"));
    let (mig, mig_end, web) = (
        s.file("migrate.start"),
        s.file("migrate.end"),
        s.file("web.start"),
    );
    s.write(&format!(
        r#"
services:
  web:
    command: {cmd_web}
    startsecs: 200ms
    depends_on:
      migrate: completed
      db: healthy
  migrate:
    oneshot: true
    command: {cmd_mig}
    depends_on:
      db: healthy
  sidecar:
    command: {cmd_side}
    startsecs: 200ms
    depends_on:
      db: started
  db:
    command: {cmd_db}
    health:
      http: http://127.0.0.1:{port}/health
      start_interval: 50ms
"#,
        cmd_web = fx("stamp.py", &[&web]),
        cmd_mig = argv(&[
            &stamp,
            &mig,
            "--",
            &exit,
            "--delay",
            "0.3",
            "--end-file",
            &mig_end,
            "0"
        ]),
        cmd_side = fx("stamp.py", &[&side]),
        cmd_db = argv(&[
            &stamp,
            &db,
            "--",
            &http,
            &port_s,
            "--delay",
            "1.5",
            "--up-file",
            &db_up
        ]),
    ));
    let mut cogno = Cogno::up(&s);
    cogno.wait_line("web: healthy");

    // started: the sidecar did not wait for db's health check.
    assert_before(&cogno, "db: started", "sidecar: started");
    assert_before(&cogno, "sidecar: started", "db: healthy");
    let (t_db, t_up, t_side) = (first_time(&db), first_time(&db_up), first_time(&side));
    assert!(
        t_side < t_up,
        "sidecar ({t_side}) waited for db's endpoint ({t_up}) though it only needs db started"
    );
    assert!(t_db <= t_up);
    // healthy: migrate started after db's endpoint was up.
    assert_before(&cogno, "db: healthy", "migrate: started");
    let (t_mig, t_mig_end, t_web) = (first_time(&mig), first_time(&mig_end), first_time(&web));
    assert!(
        t_mig > t_up,
        "migrate ({t_mig}) started before db was healthy ({t_up})"
    );
    // completed: web started after migrate had finished.
    assert_before(&cogno, "migrate: completed", "web: started");
    assert!(
        t_web > t_mig_end,
        "web ({t_web}) started before migrate completed ({t_mig_end})"
    );

    cogno.signal(Signal::SIGTERM);
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
}

#[test]
fn dependants_of_a_failed_oneshot_are_blocked_and_never_start() {
    let s = Stack::new("blocked");
    let (app, later, by) = (
        s.file("app.start"),
        s.file("later.start"),
        s.file("bystander.start"),
    );
    s.write(&format!(
        r#"
services:
  setup:
    oneshot: true
    command: {setup}
  app:
    command: {app_cmd}
    depends_on:
      setup: completed
  later:
    priority: 200
    command: {later_cmd}
  bystander:
    command: {by_cmd}
    startsecs: 200ms
"#,
        setup = fx("exit.py", &["--err", "schema is broken", "3"]),
        app_cmd = fx("stamp.py", &[&app]),
        later_cmd = fx("stamp.py", &[&later]),
        by_cmd = fx("stamp.py", &[&by]),
    ));
    let mut cogno = Cogno::up(&s);
    let failed = cogno.wait_line("setup: failed");
    assert!(
        failed.contains("setup: failed: exited with code 3 after"),
        "{failed}"
    );
    let why = "blocked: setup is failed (exited with code 3)";
    let app_line = cogno.wait_line("app: blocked");
    assert!(app_line.contains(&format!("app: {why}")), "{app_line}");
    // `later` waits for setup through its lower priority.
    let later_line = cogno.wait_line("later: blocked");
    assert!(
        later_line.contains(&format!("later: {why}")),
        "{later_line}"
    );
    cogno.wait_line("bystander: healthy");

    // The stack keeps running what it can; the blocked services stay down.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !cogno.exited(),
        "cogno exited though bystander runs:\n{}",
        cogno.output()
    );
    assert!(!std::path::Path::new(&app).exists(), "app was started");
    assert!(!std::path::Path::new(&later).exists(), "later was started");
    assert_eq!(cogno.count("app: started"), 0);
    assert_eq!(cogno.count("later: started"), 0);
    assert_eq!(read_lines_of(&by).len(), 1);

    cogno.signal(Signal::SIGTERM);
    cogno.wait_exit(TIMEOUT);
    assert_eq!(
        cogno.count("app: started") + cogno.count("later: started"),
        0
    );
}

#[test]
fn failing_service_backs_off_with_growing_delays_then_is_fatal() {
    let s = Stack::new("backoff");
    let starts = s.file("flaky.starts");
    let steady = s.file("steady.start");
    let cmd = argv(&[
        &fixture("stamp.py"),
        &starts,
        "--",
        &fixture("exit.py"),
        "--out",
        "attempt output",
        "--err",
        "boom: cannot bind",
        "1",
    ]);
    s.write(&format!(
        r#"
services:
  flaky:
    command: {cmd}
    # Never up long enough to count as started, however slow the machine.
    startsecs: 10s
    max_restarts: 4
    backoff:
      initial: 100ms
      multiplier: 2
  steady:
    command: {steady_cmd}
    startsecs: 200ms
"#,
        steady_cmd = fx("stamp.py", &[&steady]),
    ));
    let mut cogno = Cogno::up(&s);
    let fatal_at = cogno.wait_line_index("flaky: FATAL");
    let lines = cogno.lines();
    let fatal = &lines[fatal_at];
    assert!(
        fatal.contains(
            "flaky: FATAL: gave up after 4 failed starts in a row: exited with code 1 after "
        ),
        "{fatal}"
    );
    // The report ends with the service's last lines of output.
    assert!(
        fatal.contains("its last 8 lines of output:"),
        "{}",
        cogno.output()
    );
    let report: Vec<&str> = lines[fatal_at + 1..]
        .iter()
        .take_while(|l| l.starts_with("    "))
        .map(|l| l.as_str())
        .collect();
    assert_eq!(report.len(), 8, "report: {report:?}\n{}", cogno.output());
    assert_eq!(
        report
            .iter()
            .filter(|l| **l == "    attempt output")
            .count(),
        4,
        "{report:?}"
    );
    assert_eq!(
        report
            .iter()
            .filter(|l| **l == "    ! boom: cannot bind")
            .count(),
        4,
        "{report:?}"
    );

    for (attempt, delay) in [(1, "100ms"), (2, "200ms"), (3, "400ms")] {
        let needle = format!("attempt {attempt} of 4, retrying in {delay}");
        assert_eq!(
            cogno.count(&needle),
            1,
            "no {needle:?} in:\n{}",
            cogno.output()
        );
    }
    assert!(cogno.count("flaky: failed to start (exited with code 1 after ") == 3);

    // Each gap between starts is at least the configured delay: 100, 200, 400 ms.
    let t = times(&starts);
    assert_eq!(t.len(), 4, "flaky should start exactly 4 times: {t:?}");
    for (k, want) in [0.1, 0.2, 0.4].iter().enumerate() {
        let gap = t[k + 1] - t[k];
        assert!(
            gap >= want - EPS,
            "gap {k} between starts is {gap:.3}s, less than the {want}s backoff"
        );
    }

    // Not critical: the rest of the stack keeps running, flaky stays down.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!cogno.exited(), "cogno exited:\n{}", cogno.output());
    assert_eq!(cogno.count("stopping the stack"), 0);
    assert_eq!(cogno.count("flaky: started"), 4);
    assert_eq!(times(&starts).len(), 4);
    let steady_pid = cogno.service_pid("steady");
    assert!(proc_stat(steady_pid).is_some_and(|p| p.state != 'Z'));
    assert_eq!(read_lines_of(&steady).len(), 1, "steady was restarted");

    cogno.signal(Signal::SIGTERM);
    // Exit status 1 is for a critical failure or a forced kill: neither happened.
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
}

#[test]
fn crash_of_a_service_that_closed_its_output_restarts_at_once() {
    // Its output pipes reach end-of-file long before it dies, so the SIGCHLD
    // is the last event about it: the restart must follow from that signal
    // alone, not wait for some later event (it once waited for the 2 s
    // leftover-cleanup timer).
    let s = Stack::new("closedout");
    s.write(
        r#"
services:
  quiet:
    command: ["sh", "-c", "echo up; exec sleep 1000 >/dev/null 2>&1"]
    startsecs: 0s
"#,
    );
    let mut cogno = Cogno::up(&s);
    cogno.wait_line("quiet | up");
    let pid = cogno.service_pid("quiet");
    // Let both forwarders see end-of-file before the kill.
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    signal(pid, Signal::SIGKILL);
    cogno.wait_count("quiet: started", 2);
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "the restart took {took:?}:\n{}",
        cogno.output()
    );
    cogno.signal(Signal::SIGTERM);
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
}

#[test]
fn crash_after_being_healthy_restarts_at_once() {
    let s = Stack::new("crash");
    let starts = s.file("crashy.starts");
    let cmd = argv(&[
        &fixture("stamp.py"),
        &starts,
        "--",
        &fixture("exit.py"),
        "--only-first",
        &s.file("first.flag"),
        "--delay",
        "1",
        "--err",
        "lost connection",
        "1",
    ]);
    s.write(&format!(
        r#"
services:
  crashy:
    command: {cmd}
    startsecs: 300ms
    backoff:
      initial: 5s
"#
    ));
    let mut cogno = Cogno::up(&s);
    let restart = cogno.wait_line("crashy: exited with code 1 after running");
    assert!(restart.ends_with("; restarting now"), "{restart}");
    cogno.wait_line_by("`crashy | again`", TIMEOUT, |l| {
        l.starts_with("crashy ") && l.ends_with("| again")
    });
    assert_before(
        &cogno,
        "crashy: healthy",
        "crashy: exited with code 1 after running",
    );
    assert_eq!(cogno.count("crashy: started"), 2);
    assert_eq!(
        cogno.count("retrying in"),
        0,
        "a crash after healthy is not a failed start"
    );
    let t = times(&starts);
    assert_eq!(t.len(), 2);
    // Not held back by `backoff.initial: 5s`: restarted right after the crash.
    assert!(t[1] - t[0] < 5.0, "restart waited for the backoff: {t:?}");

    cogno.signal(Signal::SIGTERM);
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
}

/// The main process is SIGKILLed while a process it started lives on; the
/// restarted service must not find that process still there.
fn killed_main_leaves_nothing_behind(mode: &str) {
    let s = Stack::new(&format!("leftover-{mode}"));
    let pids = s.file("pids");
    s.write(&format!(
        r#"
services:
  worker:
    command: {cmd}
    startsecs: 300ms
    backoff:
      initial: 100ms
"#,
        cmd = fx("orphan.py", &[&pids, "--mode", mode]),
    ));
    let mut cogno = Cogno::up(&s);
    cogno.wait_line("worker: healthy");
    let key = if mode == "group" {
        "child"
    } else {
        "grandchild"
    };
    let line = wait_lines(&pids, 2)
        .into_iter()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in {pids}"));
    let main = recorded_pids(&pids, "main")[0];
    let kid: i32 = line.split(' ').nth(1).unwrap().parse().unwrap();
    assert_eq!(cogno.service_pid("worker"), main);
    let st = proc_stat(kid).expect("the child runs");
    if mode == "group" {
        assert_eq!(st.pgrp, main, "the child is in the service's process group");
    } else {
        assert_ne!(st.session, main, "the daemon left the service's session");
        assert_ne!(st.pgrp, main, "the daemon left the service's process group");
        assert_eq!(
            st.ppid,
            cogno.pid(),
            "the daemon was adopted by cogno (subreaper)"
        );
        assert!(environ(kid).contains(&"COGNO_SERVICE=worker".to_owned()));
    }

    signal(main, Signal::SIGKILL);
    let restart = cogno.wait_line("worker: killed by SIGKILL after running");
    assert!(restart.ends_with("restarting now"), "{restart}");
    cogno.wait_count("worker: started, pid", 2);
    assert!(
        !exists(kid),
        "the old instance's {key} (pid {kid}, {:?}) still exists when the new instance starts",
        proc_stat(kid)
    );
    // The new instance works as the first did.
    wait_lines(&pids, 4);
    assert_ne!(recorded_pids(&pids, "main")[1], main);

    cogno.signal(Signal::SIGTERM);
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
}

#[test]
fn killed_main_process_takes_its_process_group_child_with_it() {
    killed_main_leaves_nothing_behind("group");
}

#[test]
fn killed_main_process_takes_its_daemonized_grandchild_with_it() {
    killed_main_leaves_nothing_behind("daemon");
}

#[test]
fn critical_service_fatal_stops_the_stack_with_its_status() {
    let s = Stack::new("critical");
    s.write(&format!(
        r#"
services:
  core:
    critical: true
    command: {core}
    startsecs: 10s
    max_restarts: 2
    backoff:
      initial: 50ms
  other:
    command: {other}
    startsecs: 200ms
"#,
        core = fx("exit.py", &["--err", "config invalid", "2"]),
        other = fx("trap.py", &[&s.file("other.log")]),
    ));
    let mut cogno = Cogno::up(&s);
    // Issue 14: its exit status, as tini passes its child's on.
    assert_eq!(cogno.wait_code(TIMEOUT), 2, "{}", cogno.output());
    let fatal = cogno.wait_line("core: FATAL");
    assert!(
        fatal.contains("core: FATAL: gave up after 2 failed starts in a row: exited with code 2"),
        "{fatal}"
    );
    assert_before(
        &cogno,
        "core: FATAL",
        "core: critical service is fatal: stopping the stack",
    );
    assert_before(&cogno, "stopping the stack", "other: stopped (");
    assert!(cogno.output().contains("(exit status 2)"));
}

#[test]
fn shutdown_stops_dependants_before_their_dependencies() {
    let s = Stack::new("order");
    let (base, mid, top) = (s.file("base.log"), s.file("mid.log"), s.file("top.log"));
    s.write(&format!(
        r#"
shutdown_budget: 30s
services:
  base:
    priority: 100
    command: {base_cmd}
    startsecs: 200ms
  mid:
    priority: 200
    command: {mid_cmd}
    startsecs: 200ms
  top:
    priority: 300
    command: {top_cmd}
    startsecs: 200ms
"#,
        base_cmd = fx("trap.py", &[&base, "--exit-delay", "0.3"]),
        mid_cmd = fx("trap.py", &[&mid, "--exit-delay", "0.3"]),
        top_cmd = fx("trap.py", &[&top, "--exit-delay", "0.3"]),
    ));
    let mut cogno = Cogno::up(&s);
    cogno.wait_line("top: healthy");
    wait_ready(&cogno, &["base", "mid", "top"]);

    let asked = Instant::now();
    cogno.signal(Signal::SIGTERM);
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "shutdown took {took:?}, budget 30s"
    );

    for log in [&base, &mid, &top] {
        let lines = read_lines_of(log);
        let terms = lines.iter().filter(|l| l.ends_with(" SIGTERM")).count();
        assert_eq!(terms, 1, "{log}: {lines:?}");
    }
    // Each got SIGTERM only after its dependants had exited.
    let (top_exit, mid_term) = (event_time(&top, "EXIT"), event_time(&mid, "SIGTERM"));
    assert!(
        mid_term >= top_exit - EPS,
        "mid got SIGTERM ({mid_term}) before top exited ({top_exit})"
    );
    let (mid_exit, base_term) = (event_time(&mid, "EXIT"), event_time(&base, "SIGTERM"));
    assert!(
        base_term >= mid_exit - EPS,
        "base got SIGTERM ({base_term}) before mid exited ({mid_exit})"
    );
    assert_before(
        &cogno,
        "top: stopped (exited with code 0)",
        "mid: stopped (exited with code 0)",
    );
    assert_before(
        &cogno,
        "mid: stopped (exited with code 0)",
        "base: stopped (exited with code 0)",
    );
    assert!(cogno.output().contains("(exit status 0)"));
    assert_eq!(cogno.count("SIGKILL"), 0);
}

#[test]
fn service_ignoring_sigterm_is_killed_after_stop_timeout() {
    let s = Stack::new("stubborn");
    let (stubborn, polite) = (s.file("stubborn.log"), s.file("polite.log"));
    s.write(&format!(
        r#"
shutdown_budget: 30s
services:
  stubborn:
    command: {stubborn_cmd}
    stop_timeout: 1s
    startsecs: 200ms
  polite:
    priority: 200
    command: {polite_cmd}
    startsecs: 200ms
"#,
        stubborn_cmd = fx("trap.py", &[&stubborn, "--ignore", "SIGTERM"]),
        polite_cmd = fx("trap.py", &[&polite]),
    ));
    let mut cogno = Cogno::up(&s);
    cogno.wait_line("polite: healthy");
    wait_ready(&cogno, &["stubborn", "polite"]);
    let pid = cogno.service_pid("stubborn");

    let asked = Instant::now();
    cogno.signal(Signal::SIGTERM);
    assert_eq!(cogno.wait_code(TIMEOUT), 1, "{}", cogno.output());
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "shutdown took {took:?}, budget 30s"
    );

    let kill = cogno.wait_line("sending SIGKILL");
    assert!(
        kill.contains("stubborn: still running 1s after SIGTERM; sending SIGKILL"),
        "{kill}"
    );
    assert!(cogno
        .output()
        .contains("stubborn: stopped (killed by SIGKILL)"));
    assert!(cogno
        .output()
        .contains("polite: stopped (exited with code 0)"));
    assert!(cogno.output().contains("(exit status 1)"));
    // It did get SIGTERM first (and ignored it), after its dependant exited.
    let term = event_time(&stubborn, "SIGTERM");
    assert!(term >= event_time(&polite, "EXIT") - EPS);
    assert!(!exists(pid));
}

#[test]
fn second_sigterm_kills_everything_at_once() {
    let s = Stack::new("twice");
    let (a, b) = (s.file("a.log"), s.file("b.log"));
    s.write(&format!(
        r#"
shutdown_budget: 60s
services:
  a:
    command: {a_cmd}
    stop_timeout: 30s
    startsecs: 200ms
  b:
    command: {b_cmd}
    stop_timeout: 30s
    startsecs: 200ms
"#,
        a_cmd = fx("trap.py", &[&a, "--ignore", "SIGTERM"]),
        b_cmd = fx("trap.py", &[&b, "--ignore", "SIGTERM"]),
    ));
    let mut cogno = Cogno::up(&s);
    cogno.wait_line("a: healthy");
    cogno.wait_line("b: healthy");
    wait_ready(&cogno, &["a", "b"]);
    let (pa, pb) = (cogno.service_pid("a"), cogno.service_pid("b"));

    cogno.signal(Signal::SIGTERM);
    cogno.wait_line("SIGTERM received: stopping the stack");
    wait_lines(&a, 1);
    wait_lines(&b, 1);
    assert!(!cogno.exited());

    let again = Instant::now();
    cogno.signal(Signal::SIGTERM);
    assert_eq!(cogno.wait_code(TIMEOUT), 1, "{}", cogno.output());
    let took = again.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "took {took:?}: it waited for the 30s stop_timeout"
    );
    assert!(cogno
        .output()
        .contains("SIGTERM received again: killing everything now"));
    assert!(!exists(pa) && !exists(pb), "a service survived");
}

#[test]
fn orphans_of_a_service_are_reaped_no_zombies_left() {
    let s = Stack::new("zombies");
    let pids = s.file("spawner.pids");
    s.write(&format!(
        r#"
services:
  spawner:
    command: {cmd}
    startsecs: 200ms
"#,
        cmd = fx(
            "orphan.py",
            &[
                &pids,
                "--mode",
                "orphan",
                "--repeat",
                "40",
                "--interval",
                "0.03",
                "--child-life",
                "0.05"
            ]
        ),
    ));
    let mut cogno = Cogno::up(&s);
    cogno.wait_line_by("`spawner | done`", TIMEOUT, |l| {
        l.starts_with("spawner ") && l.ends_with("| done")
    });
    let cogno_pid = cogno.pid();
    let lines: Vec<String> = read_lines_of(&pids)
        .into_iter()
        .filter(|l| l.starts_with("grandchild "))
        .collect();
    assert_eq!(lines.len(), 40, "{lines:?}");
    for l in &lines {
        let ppid: i32 = l.split(' ').nth(2).unwrap().parse().unwrap();
        assert_eq!(ppid, cogno_pid, "orphan not adopted by cogno: {l}");
    }
    let orphans = recorded_pids(&pids, "grandchild");
    // A zombie can exist for an instant between exit and reaping; one that
    // cogno never reaps stays forever.
    let clean = eventually(Duration::from_secs(5), || {
        zombies_of(cogno_pid).is_empty() && orphans.iter().all(|&p| !exists(p))
    });
    assert!(
        clean,
        "zombies of cogno: {:?}; orphans left: {:?}",
        zombies_of(cogno_pid),
        orphans
            .iter()
            .filter(|&&p| exists(p))
            .map(|&p| proc_stat(p))
            .collect::<Vec<_>>()
    );
    assert!(!cogno.exited());
    assert_eq!(cogno.count("spawner: started"), 1);

    cogno.signal(Signal::SIGTERM);
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
}

#[test]
fn exit_codes_and_signals_are_reported_exactly() {
    let s = Stack::new("codes");
    let codes = [0, 1, 2, 3, 42, 127, 255];
    let sigs = ["SIGKILL", "SIGSEGV", "SIGTERM"];
    let mut yaml = String::from("services:\n");
    for c in codes {
        yaml.push_str(&format!(
            "  code{c}:\n    oneshot: true\n    restart: never\n    command: {}\n",
            fx("exit.py", &[&c.to_string()])
        ));
    }
    for sig in sigs {
        yaml.push_str(&format!(
            "  {}:\n    oneshot: true\n    restart: never\n    command: {}\n",
            sig.to_lowercase(),
            fx("exit.py", &[sig])
        ));
    }
    s.write(&yaml);
    let mut cogno = Cogno::up(&s);
    // Everything ends: nothing is left to run, and failures make it status 1.
    assert_eq!(cogno.wait_code(TIMEOUT), 1, "{}", cogno.output());
    let out = cogno.output();
    assert!(out.contains("code0: completed in "), "{out}");
    for c in &codes[1..] {
        let want = format!("code{c}: failed: exited with code {c} after ");
        assert!(out.contains(&want), "no {want:?} in:\n{out}");
    }
    for sig in sigs {
        let name = sig.to_lowercase();
        let line = cogno.wait_line(&format!("{name}: failed: "));
        let reason = line.split(&format!("{name}: failed: ")).nth(1).unwrap();
        assert!(
            reason.starts_with(&format!("killed by {sig} after "))
                || reason.starts_with(&format!("killed by {sig} (core dumped) after ")),
            "{line}"
        );
    }
    assert_eq!(cogno.count("failed: "), codes.len() - 1 + sigs.len());
    assert!(out.contains("nothing left to run"));
}

/// A memory cgroup with a small limit, removed on drop. None where this
/// machine offers none that a test may create (not root, no memory controller).
struct MemoryCgroup {
    dir: std::path::PathBuf,
}

impl MemoryCgroup {
    const LIMIT: &'static str = "50331648"; // 48 MiB

    fn create() -> Option<MemoryCgroup> {
        let name = format!("cogno-test-oom-{}", std::process::id());
        let v2 = std::path::Path::new("/sys/fs/cgroup");
        let v2_memory = std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
        let (dir, limits): (_, &[&str]) = if v2_memory {
            let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+memory");
            (v2.join(name), &["memory.max", "memory.swap.max"])
        } else {
            (
                std::path::Path::new("/sys/fs/cgroup/memory").join(name),
                &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
            )
        };
        std::fs::create_dir(&dir).ok()?;
        let cg = MemoryCgroup { dir };
        std::fs::write(cg.dir.join(limits[0]), Self::LIMIT).ok()?;
        // Without swap in the limit, the kernel would swap instead of killing.
        let _ = std::fs::write(
            cg.dir.join(limits[1]),
            if v2_memory { "0" } else { Self::LIMIT },
        );
        Some(cg)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Empty once every process of the test is reaped, which may lag a little.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn sigkill_by_the_oom_killer_is_named_as_likely_oom() {
    let Some(cgroup) = MemoryCgroup::create() else {
        eprintln!(
            "skipped: cannot create a memory cgroup here (needs root and a memory controller)"
        );
        return;
    };
    let s = Stack::new("oom");
    s.write(
        r#"
services:
  hog:
    oneshot: true
    restart: never
    command: ["python3", "-c", "b = b'x' * (512 << 20)"]
  victim:
    command: ["sleep", "1000"]
    restart: never
    startsecs: 0s
"#,
    );
    let mut cmd = s.up_command();
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.dir.join("cgroup.procs"))
        .expect("open cgroup.procs");
    let procs_fd = std::os::fd::AsRawFd::as_raw_fd(&procs);
    use std::os::unix::process::CommandExt;
    // SAFETY: write(2) on an fd opened before the fork: async-signal-safe.
    // "0" moves the writing process, cogno-to-be, into the cgroup.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) == 1 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut cogno = Cogno::spawn(&s, cmd);
    cogno.wait_line(
        "hog: failed: killed by SIGKILL, likely by the kernel's OOM killer \
         (the oom_kill count of cogno's memory cgroup rose)",
    );
    // A SIGKILL from someone else, with no OOM kill since, is just a SIGKILL.
    signal(cogno.service_pid("victim"), Signal::SIGKILL);
    let line = cogno.wait_line("victim: killed by SIGKILL");
    assert!(line.contains("victim: killed by SIGKILL after "), "{line}");
    assert_eq!(cogno.wait_code(TIMEOUT), 1, "{}", cogno.output());
    drop(cogno);
    drop(cgroup);
}

/// Issue 15.5: a program that does not exist, or cannot be executed, is
/// permanent: FATAL at its first attempt (no retries, the path tried said
/// once), where it was once retried `max_restarts` times, each attempt
/// printing the whole PATH again.
#[test]
fn command_that_cannot_be_run_is_fatal_at_once() {
    let s = Stack::new("spawnfail");
    let notexec = s.file("notexec.sh");
    std::fs::write(&notexec, "#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&notexec, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Executable, but its interpreter is missing: only the exec itself can
    // tell, in the child, after the spawn has returned.
    let badinterp = s.file("badinterp.sh");
    std::fs::write(
        &badinterp,
        "#!/nonexistent/cogno-test/interpreter
echo hi
",
    )
    .unwrap();
    std::fs::set_permissions(&badinterp, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.write(&format!(
        r#"
services:
  missing:
    command: ["/nonexistent/cogno-test/no-such-program", "--flag"]
    max_restarts: 3
    backoff:
      initial: 50ms
  notinpath:
    command: ["no-such-program-cogno-test"]
    max_restarts: 3
    backoff:
      initial: 50ms
  notexec:
    command: [{notexec:?}]
    max_restarts: 3
    backoff:
      initial: 50ms
  badinterp:
    command: [{badinterp:?}]
    max_restarts: 3
    backoff:
      initial: 50ms
"#
    ));
    let mut cogno = Cogno::up(&s);
    assert_eq!(cogno.wait_code(TIMEOUT), 1, "{}", cogno.output());
    let out = cogno.output();
    let cases = [
        (
            "missing",
            "cannot execute /nonexistent/cogno-test/no-such-program: no such file".to_owned(),
        ),
        (
            "notinpath",
            "`no-such-program-cogno-test` was not found in PATH (".to_owned(),
        ),
        (
            "notexec",
            format!("cannot execute {notexec}: permission denied"),
        ),
        (
            "badinterp",
            format!(
                "cannot execute {badinterp}: its interpreter (the `#!` line) or dynamic loader was not found"
            ),
        ),
    ];
    for (name, why) in &cases {
        // Said once, with the path tried, as FATAL at the first attempt.
        assert_eq!(cogno.count(why), 1, "{name}: {why:?} once in:\n{out}");
        let fatal = format!("{name}: FATAL: could not start: {why}");
        assert!(out.contains(&fatal), "no {fatal:?} in:\n{out}");
        assert!(
            out.contains(&format!("once the program is there, `cogno start {name}`")),
            "{out}"
        );
    }
    assert!(!out.contains("retrying in"), "{out}");
    // What can be checked before the fork never gets as far as a process.
    for name in ["missing", "notinpath", "notexec"] {
        assert_eq!(cogno.count(&format!("{name}: started")), 0, "{out}");
    }
    assert_eq!(cogno.count("badinterp: started"), 1, "{out}");
}

/// Issue 15.6: a service that exits 0 before it is up (a migration without
/// `oneshot: true`) says what probably happened and what to write.
#[test]
fn an_exit_0_before_being_up_suggests_oneshot() {
    let s = Stack::new("forgot-oneshot");
    s.write(
        r#"
services:
  migrate:
    command: ["sh", "-c", "echo migrated"]
  web:
    depends_on: [migrate]
    command: ["sleep", "3600"]
"#,
    );
    let mut cogno = Cogno::up(&s);
    let line = cogno.wait_line("migrate: exited: exited with code 0 after");
    assert!(
        line.contains(
            "it exited 0 before it was up, as a one-off task (a migration, a setup step) does: \
             if it is one, mark it `oneshot: true`, and its dependants will wait for it to complete"
        ),
        "{line}"
    );
    cogno.wait_line("web: blocked: migrate is exited (exited with code 0)");
    assert_eq!(cogno.wait_code(TIMEOUT), 1, "{}", cogno.output());
}

#[test]
fn stdout_flood_arrives_complete_in_order_with_prefix() {
    let s = Stack::new("flood");
    const N: usize = 200_000;
    // Lines far longer than one read (64 KiB) must not be split either.
    const WIDE: usize = 300_000;
    s.write(&format!(
        r#"
services:
  flood:
    oneshot: true
    command: {cmd}
  wide:
    oneshot: true
    command: {wide}
"#,
        cmd = fx("flood.py", &[&N.to_string(), "--err", "3"]),
        wide = fx("flood.py", &["10", "--width", &WIDE.to_string()]),
    ));
    let mut cogno = Cogno::up(&s);
    assert_eq!(
        cogno.wait_code(Duration::from_secs(60)),
        0,
        "{}",
        cogno.output()
    );
    let lines = cogno.lines();
    let pad = "x".repeat(40);
    let wide_pad = "x".repeat(WIDE);
    let (mut n, mut w) = (0, 0);
    let mut errs = Vec::new();
    for l in &lines {
        if let Some(text) = l.strip_prefix("flood | ") {
            n += 1;
            let want = format!("line {n:07} {pad}");
            assert_eq!(text, want, "stdout line {n} is wrong");
        } else if let Some(text) = l.strip_prefix("flood ! ") {
            errs.push(text.to_owned());
        } else if let Some(text) = l.strip_prefix("wide  | ") {
            w += 1;
            assert!(
                text.len() == WIDE + 13 && text == format!("line {w:07} {wide_pad}"),
                "wide line {w} is wrong: {} bytes, starts {:?}",
                text.len(),
                &text[..text.len().min(30)]
            );
        } else {
            assert!(
                l.starts_with("cogno | "),
                "unexpected line: {:?}",
                &l[..l.len().min(80)]
            );
        }
    }
    assert_eq!(n, N, "stdout lines received");
    assert_eq!(w, 10, "wide lines received");
    assert_eq!(errs, ["err 1", "err 2", "err 3"]);
    assert!(cogno.output().contains("flood: completed in"));
    assert_eq!(cogno.count("dropped"), 0);
}

#[test]
fn environment_precedence_and_service_marker() {
    let s = Stack::new("env");
    s.write(&format!(
        r#"
env:
  COGNO_T_A: stack
  COGNO_T_B: stack
services:
  envsvc:
    oneshot: true
    command: {cmd}
    env:
      COGNO_T_B: service
      COGNO_T_C: service
      COGNO_T_E: "${{COGNO_T_D}}-interpolated"
      COGNO_SERVICE: spoofed
"#,
        cmd = fx(
            "printenv.py",
            &[
                "COGNO_T_A",
                "COGNO_T_B",
                "COGNO_T_C",
                "COGNO_T_D",
                "COGNO_T_E",
                "COGNO_SERVICE",
                "COGNO_T_UNSET"
            ]
        ),
    ));
    let mut cmd = s.up_command();
    for k in ["COGNO_T_A", "COGNO_T_B", "COGNO_T_C", "COGNO_T_D"] {
        cmd.env(k, "cogno");
    }
    cmd.env_remove("COGNO_T_UNSET");
    let mut cogno = Cogno::spawn(&s, cmd);
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
    let got: Vec<String> = service_output(&cogno.lines(), "envsvc")
        .into_iter()
        .map(|(mark, text)| {
            assert_eq!(mark, '|');
            text
        })
        .collect();
    assert_eq!(
        got,
        [
            "COGNO_T_A=stack",              // stack env over cogno's
            "COGNO_T_B=service",            // service env over stack env
            "COGNO_T_C=service",            // service env over cogno's
            "COGNO_T_D=cogno",              // inherited from cogno
            "COGNO_T_E=cogno-interpolated", // ${VAR} from cogno's environment
            "COGNO_SERVICE=envsvc",         // the marker cannot be overridden
            "COGNO_T_UNSET is unset",
        ],
        "{}",
        cogno.output()
    );
}

/// A stack whose every service counts as healthy the moment it is spawned
/// (`startsecs: 0s`) had nothing left to wake the loop after the first
/// starts, so "ready" (and the banner, and the first-ready marker) never came.
#[test]
fn a_stack_healthy_at_spawn_is_announced_ready() {
    let s = Stack::new("ready-at-spawn");
    s.write("services:\n  idle:\n    command: [\"sleep\", \"600\"]\n    startsecs: 0s\n");
    let mut cogno = Cogno::up(&s);
    cogno.wait_line("stack is ready: 1 service healthy in");
    cogno.signal(Signal::SIGTERM);
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
}

/// What cogno says reads as meant (issue 15.8): counts agree with their
/// noun, a completed oneshot is "completed" and not "running" in the ready
/// banner, and the time in a "stopped" line is how long the service ran.
#[test]
fn start_ready_and_stop_lines_say_what_happened() {
    let s = Stack::new("wording");
    s.write(
        "services:\n  migrate:\n    oneshot: true\n    command: [\"true\"]\n  \
         web:\n    command: [\"sleep\", \"600\"]\n    startsecs: 0s\n    \
         depends_on:\n      migrate: completed\n",
    );
    let mut cogno = Cogno::up(&s);
    cogno.wait_line("starting 2 services in 2 tiers");
    cogno.wait_line("stack is ready: 1 service healthy, 1 oneshot completed in");
    let banner = cogno.wait_line("  migrate ");
    assert!(banner.ends_with("completed (oneshot)"), "{banner}");
    cogno.signal(Signal::SIGTERM);
    assert_eq!(cogno.wait_code(TIMEOUT), 0, "{}", cogno.output());
    let out = cogno.output();
    assert!(
        out.contains("web: stopped (killed by SIGTERM) after running "),
        "{out}"
    );

    let single = Stack::new("wording-one");
    single.write("services:\n  web:\n    command: [\"sleep\", \"600\"]\n");
    let check = std::process::Command::new(COGNO)
        .arg("check")
        .arg("--config")
        .arg(&single.config)
        .output()
        .expect("run cogno check");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains(": ok, 1 service in 1 tier\n"), "{text}");
}
